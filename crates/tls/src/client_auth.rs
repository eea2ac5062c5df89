//! Client certificates on ports whose authentication chain has an X.509 method: requested
//! during the TLS handshake, never required, and judged at CONNECT by the chain.
//!
//! Why not rustls' `WebPkiClientVerifier`: it refuses X.509 v1 leaves, which the openssl
//! recipes operators follow produce (`openssl x509 -req` without extensions), and a refusal
//! at the TLS layer shows the client only a reset. So the TLS layer checks what only it can
//! — that the client holds the private key of the leaf it sent (the CertificateVerify
//! signature) — and the chain itself is verified at CONNECT, where the log can say why.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// Requests a client certificate, accepts any chain, and checks the client's proof of
/// possession of the leaf's key. `hint_subjects` are sent as acceptable CA names.
#[derive(Debug)]
pub struct DeferredClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    hint_subjects: Vec<DistinguishedName>,
}

/// A verifier for [`crate::server_config`]. `hint_ca_pem`: the trusted client CAs, whose
/// subjects are offered to clients as acceptable issuers (clients choosing among several
/// certificates use them); unparseable input gives no hints rather than failing.
pub fn deferred_client_verifier(hint_ca_pem: Option<&[u8]>) -> Arc<dyn ClientCertVerifier> {
    let hint_subjects = hint_ca_pem
        .and_then(|pem| crate::pem::parse_certificates(pem).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| DistinguishedName::from(c.subject().as_raw().to_vec()))
        })
        .collect();
    Arc::new(DeferredClientVerifier {
        algorithms: crate::provider().signature_verification_algorithms,
        hint_subjects,
    })
}

/// The leaf's SubjectPublicKeyInfo (works for v1 and v3 certificates alike).
fn leaf_spki(cert: &CertificateDer<'_>) -> Result<Vec<u8>, Error> {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec())
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
}

/// The subjectPublicKey bits of an SPKI, which the signature algorithms take.
fn public_key_bits(cert: &CertificateDer<'_>) -> Result<Vec<u8>, Error> {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| {
            c.tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .to_vec()
        })
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hint_subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Trust is decided at CONNECT (see the module comment); here the leaf must at
        // least be a certificate whose key the signature check below can use.
        leaf_spki(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // TLS 1.2 does not pin the scheme to one algorithm: try each candidate, as rustls'
        // own verifier does, but against the raw key so v1 leaves work too.
        let key = public_key_bits(cert)?;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        for alg in candidates {
            if alg.verify_signature(&key, message, dss.signature()).is_ok() {
                return Ok(HandshakeSignatureValid::assertion());
            }
        }
        Err(Error::InvalidCertificate(
            rustls::CertificateError::BadSignature,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let spki = leaf_spki(cert)?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
