//! Key generation for each [`KeyAlgorithm`] (whose names edgemq-formats parses), and the
//! algorithm of an existing key.

use rcgen::KeyPair;

use crate::error::TlsError;

pub use edgemq_formats::KeyAlgorithm;

/// A new random key pair. RSA keys take noticeably longer (8192 bits: seconds).
pub(crate) fn generate(algorithm: KeyAlgorithm) -> Result<KeyPair, TlsError> {
    let err = |e: rcgen::Error| TlsError::KeyGeneration {
        algorithm,
        reason: e.to_string(),
    };
    match algorithm {
        KeyAlgorithm::Ec256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Ec384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Ec521 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
        KeyAlgorithm::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyAlgorithm::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
        // rcgen's RsaKeySize stops at 4096; aws-lc-rs generates 8192 itself.
        KeyAlgorithm::Rsa8192 => return rsa8192(),
    }
    .map_err(err)
}

/// The algorithm of an existing key (for `rotationPolicy: Never` and loaded CAs).
pub(crate) fn algorithm_of(key: &KeyPair) -> Result<KeyAlgorithm, TlsError> {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Ok(KeyAlgorithm::Ec256)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Ok(KeyAlgorithm::Ec384)
    } else if alg == &rcgen::PKCS_ECDSA_P521_SHA512 {
        Ok(KeyAlgorithm::Ec521)
    } else if alg == &rcgen::PKCS_ED25519 {
        Ok(KeyAlgorithm::Ed25519)
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        let spki = rcgen::PublicKeyData::subject_public_key_info(key);
        let bits = x509_parser::prelude::FromDer::from_der(&spki)
            .ok()
            .and_then(
                |(_, info): (_, x509_parser::x509::SubjectPublicKeyInfo<'_>)| {
                    info.parsed().ok().map(|k| k.key_size())
                },
            )
            .unwrap_or(0);
        match bits {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            8192 => Ok(KeyAlgorithm::Rsa8192),
            other => Err(TlsError::UnsupportedKey(format!(
                "RSA key of {other} bits (supported: 2048, 4096, 8192)"
            ))),
        }
    } else {
        Err(TlsError::UnsupportedKey(format!("{alg:?}")))
    }
}

fn rsa8192() -> Result<KeyPair, TlsError> {
    use aws_lc_rs::encoding::AsDer;
    let err = |reason: String| TlsError::KeyGeneration {
        algorithm: KeyAlgorithm::Rsa8192,
        reason,
    };
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa8192)
        .map_err(|e| err(e.to_string()))?;
    let pkcs8 = key.as_der().map_err(|e| err(e.to_string()))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_ref().into(), &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_report_their_algorithm() -> Result<(), TlsError> {
        // RSA-8192 is covered by the handshake tests; generating it twice is slow.
        for alg in KeyAlgorithm::ALL
            .into_iter()
            .filter(|a| *a != KeyAlgorithm::Rsa8192)
        {
            assert_eq!(algorithm_of(&generate(alg)?)?, alg);
        }
        Ok(())
    }
}
