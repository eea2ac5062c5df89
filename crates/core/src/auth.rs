//! The seams for authentication and authorization. The runtime calls an [`Authenticator`]
//! once per CONNECT and an [`Authorizer`] per action; the security layer (username/password,
//! X.509, service-account tokens, custom HTTP; attribute-based rules) implements them.
//! [`AllowAll`] is the anonymous default of the embedded configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use bytestring::ByteString;

use edgemq_codec::ReasonCode;

/// Who a connected client is, as decided by authentication. The input to authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    /// Attributes granted by the authentication method that admitted the client.
    pub attributes: Vec<(String, String)>,
}

/// Why credentials are being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A CONNECT.
    Connect,
    /// An MQTT 5 AUTH with reason 0x19 on an established connection.
    Reauthenticate,
}

/// The credentials a CONNECT (or a re-authentication AUTH) presents. `Debug` omits the
/// password and authentication data so a log line can never show a secret.
pub struct ConnectRequest<'a> {
    pub kind: RequestKind,
    pub listener: &'a str,
    /// The listener port the client connected to.
    pub port: u16,
    pub peer: SocketAddr,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a Bytes>,
    pub authentication_method: Option<&'a str>,
    pub authentication_data: Option<&'a Bytes>,
    /// The certificate chain the client presented in the TLS handshake (DER, leaf first),
    /// accepted but not yet verified by the TLS layer; empty without one.
    pub client_certificates: &'a [Bytes],
}

impl std::fmt::Debug for ConnectRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("kind", &self.kind)
            .field("listener", &self.listener)
            .field("port", &self.port)
            .field("peer", &self.peer)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("authentication_method", &self.authentication_method)
            .field("client_certificates", &self.client_certificates.len())
            .finish()
    }
}

/// What an admitted client is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Attributes for authorization, from the method that admitted the client.
    pub attributes: Vec<(String, String)>,
    /// The principal's user name for authorization when the method defines one (an X.509
    /// leaf's CN); `None` keeps the CONNECT user name.
    pub username: Option<String>,
    /// When the credentials stop being valid: the client must re-authenticate before then
    /// (MQTT 5 AUTH) or is disconnected.
    pub expires_at: Option<SystemTime>,
    /// The enhanced authentication method to echo in CONNACK / AUTH, when one was used.
    pub authentication_method: Option<String>,
}

/// The result of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    Allow(Admission),
    /// Refuse with this CONNACK reason (0x86 bad user name or password, 0x87 not authorized,
    /// 0x8C bad authentication method, ...).
    Deny(ReasonCode),
}

/// A CONNECT naming an enhanced authentication method the listener's chain does not
/// handle is refused with 0x8C Bad authentication method [MQTT-4.12.0-1], before any
/// credential is looked at. `None`: no method, or a supported one.
pub fn unsupported_method(
    method: Option<&str>,
    authenticator: &dyn Authenticator,
) -> Option<ReasonCode> {
    method
        .filter(|m| !authenticator.supports_method(m))
        .map(|_| ReasonCode::BadAuthenticationMethod)
}

/// What a re-authentication's decision means for the connection [MQTT-4.12.1].
#[derive(Debug)]
pub enum Reauthenticated {
    /// AUTH 0x00 Success; the connection takes the new credentials (attributes, expiry).
    Admitted(Admission),
    /// The verifier could not answer (a token reviewer down, a rate limit): AUTH 0x18
    /// Continue authentication; the client keeps its current credentials until they expire
    /// and may try again.
    Retry,
    /// Refused: DISCONNECT with the decision's reason [MQTT-4.12.1-2].
    Refused(crate::protocol::Violation),
}

/// Decide what a re-authentication's `decision` does to the connection.
pub fn reauthenticated(decision: AuthDecision) -> Reauthenticated {
    match decision {
        AuthDecision::Allow(admission) => Reauthenticated::Admitted(admission),
        AuthDecision::Deny(ReasonCode::ServerUnavailable | ReasonCode::ServerBusy) => {
            Reauthenticated::Retry
        }
        AuthDecision::Deny(reason) => Reauthenticated::Refused(crate::protocol::Violation::new(
            reason,
            "[MQTT-4.12.1-2] re-authentication failed",
        )),
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides whether a CONNECT (or a re-authentication) is admitted. Asynchronous because
/// methods may call out (an HTTP auth server, a token review) or hash (run off the async
/// threads).
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision>;

    /// Whether this authenticator handles the MQTT 5 enhanced authentication `method`; a
    /// CONNECT naming any other gets CONNACK 0x8C.
    fn supports_method(&self, _method: &str) -> bool {
        false
    }

    /// What it checks, for operators: e.g. `x509-policy: X509, UsernamePassword`.
    fn describe(&self) -> String {
        "custom".to_string()
    }

    /// Whether TLS ports should ask clients for a certificate.
    fn wants_client_certificates(&self) -> bool {
        false
    }
}

/// An action a client asks to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Connect,
    Publish { topic: &'a str },
    Subscribe { filter: &'a str },
}

/// What an authorizer precomputed for one principal, kept by its connection (a policy: the
/// indices of the rules that apply to it, so a PUBLISH only tries those). `None`: nothing.
#[derive(Debug, Clone, Default)]
pub struct Prepared(pub Option<Arc<[u32]>>);

/// Decides whether a principal may perform an action. Synchronous and cheap: it runs on the
/// publish path.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, principal: &Principal, action: Action<'_>) -> bool;

    /// Precompute for a principal (at CONNECT, re-authentication and policy changes).
    fn prepare(&self, _principal: &Principal) -> Prepared {
        Prepared(None)
    }

    /// `authorize` with what `prepare` computed for this same principal and authorizer.
    fn authorize_prepared(
        &self,
        principal: &Principal,
        _prepared: &Prepared,
        action: Action<'_>,
    ) -> bool {
        self.authorize(principal, action)
    }

    /// Why `authorize` decides as it does (the rule, or why none matched), for the denial
    /// log line and `edgemq authz explain`. Called off the hot path.
    fn explain(&self, principal: &Principal, action: Action<'_>) -> String {
        if self.authorize(principal, action) {
            "allowed".into()
        } else {
            "denied".into()
        }
    }
}

/// Admits everyone and allows everything: the embedded default's anonymous listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate<'a>(&'a self, _request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(std::future::ready(
            AuthDecision::Allow(Admission::default()),
        ))
    }

    fn describe(&self) -> String {
        "anonymous (no authentication)".to_string()
    }
}

impl Authorizer for AllowAll {
    fn authorize(&self, _principal: &Principal, _action: Action<'_>) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_4_12_1_2_a_failed_reauthentication_disconnects_with_its_reason() {
        // [MQTT-4.12.1-2] If the re-authentication fails, the Client or Server SHOULD send
        // DISCONNECT with an appropriate Reason Code and MUST close the Network Connection.
        match reauthenticated(AuthDecision::Deny(ReasonCode::BadUserNameOrPassword)) {
            Reauthenticated::Refused(v) => {
                assert_eq!(v.reason, ReasonCode::BadUserNameOrPassword);
                assert!(v.rule.contains("MQTT-4.12.1-2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reauthenticated(AuthDecision::Deny(ReasonCode::NotAuthorized)),
            Reauthenticated::Refused(_)
        ));
    }

    #[derive(Debug)]
    struct SatOnly;

    impl Authenticator for SatOnly {
        fn authenticate<'a>(
            &'a self,
            _request: &'a ConnectRequest<'a>,
        ) -> BoxFuture<'a, AuthDecision> {
            Box::pin(async { AuthDecision::Deny(ReasonCode::NotAuthorized) })
        }

        fn supports_method(&self, method: &str) -> bool {
            method == "K8S-SAT"
        }
    }

    #[test]
    fn mqtt_4_12_0_1_an_unsupported_authentication_method_gets_0x8c() {
        // [MQTT-4.12.0-1] If the Server does not support the Authentication Method supplied
        // by the Client, it MAY send a CONNACK with a Reason Code of 0x8C (Bad
        // authentication method) or 0x87 (Not Authorized) and MUST close the Network
        // Connection.
        let refused = unsupported_method(Some("SCRAM-SHA-1"), &SatOnly);
        assert_eq!(refused, Some(ReasonCode::BadAuthenticationMethod));
        assert_eq!(unsupported_method(Some("K8S-SAT"), &SatOnly), None);
        assert_eq!(
            unsupported_method(None, &SatOnly),
            None,
            "no method: plain CONNECT"
        );
        assert!(unsupported_method(Some("K8S-SAT"), &AllowAll).is_some());
    }

    #[test]
    fn a_verifier_that_cannot_answer_leaves_the_credentials_until_they_expire() {
        for reason in [ReasonCode::ServerUnavailable, ReasonCode::ServerBusy] {
            assert!(matches!(
                reauthenticated(AuthDecision::Deny(reason)),
                Reauthenticated::Retry
            ));
        }
        let admitted = reauthenticated(AuthDecision::Allow(Admission::default()));
        assert!(matches!(admitted, Reauthenticated::Admitted(_)));
    }
}
