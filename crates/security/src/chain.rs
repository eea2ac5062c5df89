//! The ordered chain of methods for one BrokerAuthentication.

use std::sync::Arc;

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{AuthDecision, Authenticator, BoxFuture, ConnectRequest};
use edgemq_core::logtext::{Attrs, Short, ShortOpt};

use crate::{Method, Outcome};

/// A BrokerAuthentication's methods, tried in order.
pub struct AuthChain {
    /// The resource name, for logs.
    name: String,
    methods: Vec<Arc<dyn Method>>,
}

impl AuthChain {
    pub fn new(name: impl Into<String>, methods: Vec<Arc<dyn Method>>) -> Self {
        AuthChain {
            name: name.into(),
            methods,
        }
    }

    /// Run the chain: the first relevant method decides; nobody relevant → refused.
    pub async fn decide(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        let mut skipped: Vec<String> = Vec::new();
        for method in &self.methods {
            match method.check(request).await {
                Outcome::NotRelevant { why } => {
                    tracing::debug!(
                        authentication = %self.name, method = method.name(),
                        listener = request.listener, port = request.port, peer = %request.peer,
                        client_id = ?Short(request.client_id), "not relevant: {why}"
                    );
                    skipped.push(format!("{}: {why}", method.name()));
                }
                Outcome::Admit(admission) => {
                    tracing::info!(
                        authentication = %self.name, method = method.name(),
                        listener = request.listener, port = request.port, peer = %request.peer,
                        client_id = ?Short(request.client_id), kind = ?request.kind,
                        attributes = %Attrs(&admission.attributes), "authenticated"
                    );
                    return AuthDecision::Allow(admission);
                }
                Outcome::Refuse { reason, why } => {
                    tracing::warn!(
                        authentication = %self.name, method = method.name(),
                        listener = request.listener, port = request.port, peer = %request.peer,
                        client_id = ?Short(request.client_id), username = %ShortOpt(request.username),
                        kind = ?request.kind, reason = format_args!("0x{:02X}", reason.0),
                        "authentication refused: {why}"
                    );
                    return AuthDecision::Deny(reason);
                }
            }
        }
        // Nobody recognised the credentials: an enhanced method nobody handles is 0x8C;
        // otherwise the client brought nothing this port accepts: 0x87 Not authorized (as
        // Mosquitto answers an anonymous client where anonymous access is off).
        let reason = match request.authentication_method {
            Some(m) if !self.supports(m) => ReasonCode::BadAuthenticationMethod,
            _ => ReasonCode::NotAuthorized,
        };
        tracing::warn!(
            authentication = %self.name, listener = request.listener, port = request.port,
            peer = %request.peer, client_id = ?Short(request.client_id), username = %ShortOpt(request.username),
            reason = format_args!("0x{:02X}", reason.0), skipped = ?skipped,
            "authentication refused: no method found the credentials relevant"
        );
        AuthDecision::Deny(reason)
    }

    fn supports(&self, method: &str) -> bool {
        self.methods
            .iter()
            .any(|m| m.enhanced_method() == Some(method))
    }
}

impl Authenticator for AuthChain {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(self.decide(request))
    }

    fn supports_method(&self, method: &str) -> bool {
        self.supports(method)
    }

    fn wants_client_certificates(&self) -> bool {
        self.methods.iter().any(|m| m.wants_client_certificates())
    }

    fn describe(&self) -> String {
        let methods: Vec<&str> = self.methods.iter().map(|m| m.name()).collect();
        format!("{}: {}", self.name, methods.join(", "))
    }
}
