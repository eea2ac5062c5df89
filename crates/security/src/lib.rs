//! Authentication for edgemq listeners: an ordered chain of methods with the AIO semantics
//! (each method first decides whether the client's credentials are *relevant* to it, then
//! whether they are *valid*; the first relevant method decides).
//!
//! Methods are pure policy over [`ConnectRequest`]: they never see sockets. Slow work
//! (password hashing, HTTP calls) runs off the async workers or with a timeout, so a flood
//! of CONNECTs cannot starve message traffic.

pub mod authz;
pub mod chain;
pub mod custom;
mod https;
pub mod password;
pub mod sat;
pub mod x509;

use std::time::SystemTime;

use edgemq_codec::ReasonCode;
pub use edgemq_core::auth::{Admission, BoxFuture, ConnectRequest, RequestKind};

pub use chain::AuthChain;

/// What one method concluded about a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials are not for this method (or its server cannot be reached): the chain
    /// falls through to the next method. `why` is logged at debug (warn for an unreachable
    /// server, by the method itself).
    NotRelevant { why: String },
    /// Relevant and valid: the client is admitted.
    Admit(Admission),
    /// Relevant and invalid: the client is refused with `reason`; `why` is logged (it must
    /// never contain the secret).
    Refuse { reason: ReasonCode, why: String },
}

impl Outcome {
    pub fn not_relevant(why: impl Into<String>) -> Self {
        Outcome::NotRelevant { why: why.into() }
    }

    pub fn refuse(reason: ReasonCode, why: impl Into<String>) -> Self {
        Outcome::Refuse {
            reason,
            why: why.into(),
        }
    }

    /// Admitted with attributes and an optional credential expiry.
    pub fn admit(attributes: Vec<(String, String)>, expires_at: Option<SystemTime>) -> Self {
        Outcome::Admit(Admission {
            attributes,
            expires_at,
            ..Admission::default()
        })
    }
}

/// One authentication method of a chain.
pub trait Method: Send + Sync + 'static {
    /// The method's name as in the resource (`UsernamePassword`, `X509`,
    /// `ServiceAccountToken`, `Custom`), for logs.
    fn name(&self) -> &'static str;

    /// Decide relevance and validity for a CONNECT or a re-authentication.
    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome>;

    /// The MQTT 5 enhanced authentication method this method handles (`K8S-SAT`), if any.
    fn enhanced_method(&self) -> Option<&str> {
        None
    }

    /// Whether this method needs TLS ports to ask for a client certificate.
    fn wants_client_certificates(&self) -> bool {
        false
    }
}
