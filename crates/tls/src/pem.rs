//! PEM → DER, with errors an operator can act on.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("invalid PEM certificate: {0}")]
    BadCertificate(String),
    #[error("no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("invalid PEM private key: {0}")]
    BadKey(String),
    #[error("unsupported private key: {0}")]
    UnsupportedKey(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

/// Every certificate in `pem`, in order (leaf first for a chain).
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::BadCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::NoKey,
        other => PemError::BadKey(other.to_string()),
    })
}

/// A certificate chain and its key, checked to belong together, ready for rustls.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::sign::CertifiedKey, PemError> {
    let chain = parse_certificates(chain_pem)?;
    let key = parse_private_key(key_pem)?;
    let provider = crate::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PemError::UnsupportedKey(e.to_string()))?;
    let ck = rustls::sign::CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PemError::KeyMismatch)
        }
        // The key type cannot report its public key: accept, rustls will fail the handshake.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(e) => Err(PemError::BadCertificate(e.to_string())),
    }
}

/// DER → PEM with 64-column lines, the layout openssl and every MQTT client read.
pub fn encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A certificate as PEM.
pub fn encode_certificate(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn matching_pair_loads() {
        let (cert, key) = pair();
        certified_key(cert.as_bytes(), key.as_bytes()).expect("matching pair");
    }

    #[test]
    fn mismatched_key_is_reported() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        assert_eq!(
            certified_key(cert.as_bytes(), other_key.as_bytes()).err(),
            Some(PemError::KeyMismatch)
        );
    }

    #[test]
    fn encode_round_trips() {
        for len in 0..70usize {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = encode_certificate(&der);
            if len == 0 {
                continue; // an empty body is not a certificate
            }
            let back = parse_certificates(pem.as_bytes()).expect("round trip");
            assert_eq!(back[0].as_ref(), der.as_slice(), "length {len}");
        }
        let (cert, _) = pair();
        let der = parse_certificates(cert.as_bytes()).expect("rcgen pem");
        assert_eq!(encode_certificate(&der[0]), cert.replace("\r\n", "\n"));
    }

    #[test]
    fn garbage_is_reported() {
        assert_eq!(
            parse_certificates(b"hello").err(),
            Some(PemError::NoCertificate)
        );
        assert_eq!(parse_private_key(b"hello").err(), Some(PemError::NoKey));
        let (cert, _) = pair();
        assert_eq!(
            parse_private_key(cert.as_bytes()).err(),
            Some(PemError::NoKey)
        );
    }
}
