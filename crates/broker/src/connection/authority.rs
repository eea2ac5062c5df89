//! Who the client is and what it may do, while it is connected: the listener's policy (picked
//! up again when it changes), re-authentication and credentials that expire.

use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};

use edgemq_codec::{Auth, Packet, Properties, ReasonCode};
use edgemq_core::auth::{reauthenticated, Action, ConnectRequest, Reauthenticated, RequestKind};
use edgemq_core::logtext::{Attrs, Short, ShortOpt};
use edgemq_core::subscriptions::Router;

use super::{Connection, Exit};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// A timer for the credentials' expiry, if they have one.
    pub(super) fn credentials_timer(&self) -> Option<Pin<Box<tokio::time::Sleep>>> {
        self.credentials_expire
            .map(|_| Box::pin(tokio::time::sleep_until(self.credentials_deadline().into())))
    }

    /// When the credentials expire, as a monotonic instant (far away without an expiry).
    pub(super) fn credentials_deadline(&self) -> Instant {
        let now = self.bus.now();
        match self.credentials_expire {
            Some(at) => {
                now + at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            }
            None => now + Duration::from_secs(86_400 * 365),
        }
    }

    /// An MQTT 5 re-authentication [MQTT-4.12.1]: the chain decides again, and
    /// `auth::reauthenticated` what that means (AUTH 0x00 with new credentials, AUTH 0x18,
    /// or DISCONNECT with the chain's reason).
    pub(super) async fn reauthenticate(&mut self, auth: Auth) -> Result<(), Exit> {
        let request = ConnectRequest {
            kind: RequestKind::Reauthenticate,
            listener: &self.listener.name,
            port: self.listener.port,
            peer: self.peer.addr,
            client_id: &self.client_id,
            username: self.principal.username.as_deref(),
            password: None,
            authentication_method: auth.properties.authentication_method.as_deref(),
            authentication_data: auth.properties.authentication_data.as_ref(),
            client_certificates: &self.peer.client_certificates,
        };
        let authenticator = self.listener.authenticator();
        let decision = authenticator.authenticate(&request).await;
        self.bus.stats.authentication(&decision);
        match reauthenticated(decision) {
            Reauthenticated::Admitted(admission) => {
                self.principal.attributes = admission.attributes;
                self.authz_prepared = self.authorizer.prepare(&self.principal);
                self.credentials_expire = admission.expires_at;
                self.send(self.auth_packet(ReasonCode::Success));
                Ok(())
            }
            Reauthenticated::Retry => {
                self.send(self.auth_packet(ReasonCode::ContinueAuthentication));
                Ok(())
            }
            Reauthenticated::Refused(violation) => Err(self.violation(violation)),
        }
    }

    /// Remove subscriptions the current policy no longer allows (logged), so nothing more
    /// is delivered on them.
    pub(super) fn revoke_disallowed_subscriptions(&mut self) {
        let revoked: Vec<ByteString> = self
            .session
            .subscriptions
            .keys()
            .filter(|raw| {
                !self
                    .authorizer
                    .authorize(&self.principal, Action::Subscribe { filter: raw })
            })
            .cloned()
            .collect();
        for raw in revoked {
            if let Some((filter, _)) = self.session.subscriptions.remove(&raw) {
                self.bus.index.unsubscribe(&filter, self.session.key);
            }
            self.persist_session();
            tracing::warn!(
                listener = %self.listener.name, port = self.listener.port,
                username = %ShortOpt(self.principal.username.as_deref()), filter = %Short(&raw),
                "subscription revoked: {}",
                self.authorizer.explain(&self.principal, Action::Subscribe { filter: &raw })
            );
        }
    }

    /// Whether the policy allows `action`; a denial is logged (rate-limited) with the rule
    /// explanation.
    pub(super) fn authorized(&mut self, action: Action<'_>) -> bool {
        let allowed =
            (self.authorizer).authorize_prepared(&self.principal, &self.authz_prepared, action);
        if allowed {
            // Counted with the connection's traffic, once per wake-up (`Stats::add`).
            self.tally.authorized += 1;
            return true;
        }
        self.bus.stats.authorization(false);
        if let Some(events) = self.warnings.admit(self.bus.now()) {
            let suppressed = events - 1;
            let (kind, topic) = match action {
                Action::Connect => ("connect", ""),
                Action::Publish { topic } => ("publish", topic),
                Action::Subscribe { filter } => ("subscribe", filter),
            };
            tracing::warn!(
                listener = %self.listener.name, port = self.listener.port,
                username = %ShortOpt(self.principal.username.as_deref()),
                attributes = %Attrs(&self.principal.attributes), action = kind, topic = ?Short(topic),
                suppressed,
                "not authorized: {}", self.authorizer.explain(&self.principal, action)
            );
        }
        false
    }

    /// An AUTH carrying this connection's authentication method.
    pub(super) fn auth_packet(&self, reason: ReasonCode) -> Packet {
        Packet::Auth(Auth {
            reason,
            properties: Properties::from(edgemq_codec::PropertyValues {
                authentication_method: self.protocol.authentication_method().map(ByteString::from),
                ..Default::default()
            }),
        })
    }
}
