//! Certificates for edgemq: PEM parsing and key/certificate checks (used by configuration
//! validation), key generation, CAs that sign server and client certificates, the built-in
//! issuer kept in the data dir, server certificates that can be swapped while connections
//! stay up, and certificate inspection. No sockets: the transport layer turns the
//! [`server_config`] into a TLS acceptor.
//!
//! Choices worth knowing:
//! - Leaves start [`CLOCK_SKEW`] (one minute) before issuance and never outlive their CA.
//! - A chain is the leaf plus the intermediates above it; a self-signed root is never sent.
//! - Every [`KeyAlgorithm`] can be generated, RSA-8192 included (aws-lc-rs directly; rcgen
//!   stops at 4096). RSA generation is slow (4096: about a second, 8192: ten or more), so
//!   call issuing functions from a blocking context, not on an async worker.
//! - Serials are 16 random bytes, so re-issuing with a kept key never repeats one.

mod algorithm;
mod authority;
mod builtin;
mod check;
mod client_auth;
mod error;
mod inspect;
mod issue;
pub mod pem;
mod slot;

pub use algorithm::KeyAlgorithm;
pub use authority::CertificateAuthority;
pub use builtin::BuiltInIssuer;
pub use check::{check_server_chain, ChainProblem, Severity, EXPIRY_WARNING, NOT_A_CA_FIX};
pub use client_auth::{deferred_client_verifier, DeferredClientVerifier};
pub use error::TlsError;
pub use inspect::{inspect, inspect_der, rfc3339, CertSummary};
pub use issue::{renewal_time, self_signed_server, IssuedCert, ServerCertSpec, CLOCK_SKEW};
pub use slot::{optional_client_verifier, server_config, ServerCertSlot};

/// The crypto provider edgemq uses everywhere (aws-lc-rs). Installed as the process default by
/// the binary; library code passes it explicitly so two providers never collide.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
