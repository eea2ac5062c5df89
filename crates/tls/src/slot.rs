//! A server certificate that can be replaced while the listener runs, and the rustls server
//! configuration around it.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::error::TlsError;

/// The certificate every handshake on a port presents. `swap` affects new handshakes only:
/// established connections keep the keys they negotiated.
#[derive(Debug)]
pub struct ServerCertSlot {
    // A read lock held for one `Arc` clone: handshakes never wait on signing or I/O.
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertSlot {
    pub fn new(key: CertifiedKey) -> Self {
        ServerCertSlot {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// Presents `key` from the next handshake on.
    pub fn swap(&self, key: CertifiedKey) {
        *self.current.write() = Arc::new(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }

    /// The leaf's notAfter, if the leaf parses.
    pub fn current_not_after(&self) -> Option<SystemTime> {
        let current = self.current();
        let leaf = current.end_entity_cert().ok()?;
        let summary = crate::inspect::inspect_der(leaf).ok()?;
        Some(summary.not_after)
    }
}

impl ResolvesServerCert for ServerCertSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server config for one TLS port: TLS 1.3 and 1.2, the aws-lc-rs provider, the
/// certificate from `slot`, and client certificates checked by `client_auth` when given.
/// No ALPN: MQTT clients may offer "mqtt" or nothing, and rustls rejects a client whose
/// offer does not intersect a non-empty server list.
pub fn server_config(
    slot: Arc<ServerCertSlot>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        // The aws-lc-rs provider has suites for both versions; failing here is a build bug.
        .expect("aws-lc-rs supports TLS 1.2 and 1.3");
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_cert_resolver(slot))
}

/// Requests a client certificate chaining to one of `trusted_ca_pem`'s certificates, but does
/// not require one: a client without a certificate still connects, and the authentication
/// chain decides at CONNECT. A client presenting an untrusted certificate fails the handshake.
pub fn optional_client_verifier(
    trusted_ca_pem: &[u8],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in crate::pem::parse_certificates(trusted_ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::BadCertificate(format!("trusted client CA: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadCertificate(format!("trusted client CA: {e}")))
}
