//! Certificates for edgemq: PEM parsing and key/certificate checks (used by configuration
//! validation), the built-in issuer, and server certificates that can be swapped while
//! connections stay up. No sockets: the transport layer turns these into TLS acceptors.

pub mod pem;

/// The crypto provider edgemq uses everywhere (aws-lc-rs). Installed as the process default by
/// the binary; library code passes it explicitly so two providers never collide.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
