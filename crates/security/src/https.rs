//! What the methods that call HTTPS servers share (custom auth server, TokenReview, OIDC):
//! the trust anchors, and readable error chains.

use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder};

/// A rustls client builder (aws-lc-rs) trusting `ca_pem` only — a configured CA is the only
/// one trusted — or, without one, the system's trust store. `Err` says what is wrong with
/// the bundle.
pub(crate) fn trusting(
    ca_pem: Option<&str>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    let versions = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?;
    match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            if roots.is_empty() {
                return Err("no certificate in the bundle".into());
            }
            Ok(versions.with_root_certificates(roots))
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt as _;
            versions
                .with_platform_verifier()
                .map_err(|e| format!("system trust store: {e}"))
        }
    }
}

/// An error and its sources, `a: b: c` (reqwest hides the interesting part in the sources).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
