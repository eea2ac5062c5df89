//! A CA that signs: loaded from PEM (cert-manager `ca` issuers, `edgemq certs --ca`) or
//! generated (roots, intermediates, the built-in issuer).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::algorithm::KeyAlgorithm;
use crate::error::{rcgen_err, TlsError};
use crate::issue::{self, IssuedCert, ServerCertSpec};

/// A CA certificate and its key. Cheap to clone (shared).
#[derive(Clone)]
pub struct CertificateAuthority(Arc<Inner>);

struct Inner {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate alone.
    cert_pem: String,
    /// As given (or as generated): never re-encoded, so PKCS#1/SEC1 stay what they were.
    key_pem: String,
    /// What follows a leaf in a server's chain: empty for a root; otherwise this certificate
    /// and the intermediates above it (roots are left out: clients must already have them).
    chain: Vec<CertificateDer<'static>>,
    subject: String,
    not_after: OffsetDateTime,
    algorithm: KeyAlgorithm,
}

impl CertificateAuthority {
    /// `cert_pem` holds the CA certificate first, optionally followed by its issuers;
    /// `key_pem` is the CA's key (PKCS#8, PKCS#1 or SEC1). Checks that the certificate is a
    /// CA and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let certs = crate::pem::parse_certificates(cert_pem.as_bytes())?;
        let key = issue::parse_key(key_pem)?;
        Self::from_parts(certs, key, key_pem.to_string())
    }

    /// A new self-signed root CA.
    pub fn generate_root(
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Duration,
    ) -> Result<Self, TlsError> {
        let params = ca_params(common_name, validity, None)?;
        let key = crate::algorithm::generate(algorithm)?;
        let cert = params.self_signed(&key).map_err(rcgen_err)?;
        let key_pem = key.serialize_pem();
        Self::from_parts(vec![cert.der().clone()], key, key_pem)
    }

    /// A new intermediate CA signed by `parent`. Its validity ends no later than the parent's.
    pub fn generate_intermediate(
        parent: &CertificateAuthority,
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Duration,
    ) -> Result<Self, TlsError> {
        parent.check_not_expired()?;
        let mut params = ca_params(common_name, validity, Some(parent.0.not_after))?;
        params.use_authority_key_identifier_extension = true;
        let key = crate::algorithm::generate(algorithm)?;
        let cert = params
            .signed_by(&key, &parent.0.issuer)
            .map_err(rcgen_err)?;
        let mut certs = vec![cert.der().clone()];
        certs.extend(parent.0.chain.iter().cloned());
        let key_pem = key.serialize_pem();
        Self::from_parts(certs, key, key_pem)
    }

    fn from_parts(
        certs: Vec<CertificateDer<'static>>,
        key: KeyPair,
        key_pem: String,
    ) -> Result<Self, TlsError> {
        let Some(first) = certs.first() else {
            return Err(crate::pem::PemError::NoCertificate.into());
        };
        let x509 = parse(first)?;
        let subject = x509.subject().to_string();
        let is_ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(TlsError::NotACa { subject });
        }
        if rcgen::PublicKeyData::subject_public_key_info(&key) != x509.public_key().raw {
            return Err(TlsError::CaKeyMismatch { subject });
        }
        let algorithm = crate::algorithm::algorithm_of(&key)?;
        let not_after = x509.validity().not_after.to_datetime();
        let cert_pem = crate::pem::encode_certificate(first);
        // Keep intermediates, drop self-signed roots (a root in the chain is only noise).
        let mut chain = Vec::with_capacity(certs.len());
        for der in &certs {
            if !is_self_issued(&parse(der)?) {
                chain.push(der.clone());
            }
        }
        let issuer = Issuer::from_ca_cert_der(first, key)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        Ok(CertificateAuthority(Arc::new(Inner {
            issuer,
            cert_pem,
            key_pem,
            chain,
            subject,
            not_after,
            algorithm,
        })))
    }

    /// A server leaf: serverAuth, digitalSignature, SANs exactly `spec.dns` + `spec.ip`,
    /// CA:FALSE. Its validity ends no later than this CA's.
    pub fn issue_server(&self, spec: &ServerCertSpec) -> Result<IssuedCert, TlsError> {
        let sans = issue::server_sans(spec)?;
        self.issue(
            &spec.common_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            spec.algorithm,
            spec.validity,
            spec.previous_key_pem.as_deref(),
        )
    }

    /// A client leaf for X.509 authentication: clientAuth, CN = `common_name`, no SANs.
    pub fn issue_client(
        &self,
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Duration,
    ) -> Result<IssuedCert, TlsError> {
        self.issue(
            common_name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            algorithm,
            validity,
            None,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<rcgen::SanType>,
        eku: ExtendedKeyUsagePurpose,
        algorithm: KeyAlgorithm,
        validity: Duration,
        previous_key_pem: Option<&str>,
    ) -> Result<IssuedCert, TlsError> {
        self.check_not_expired()?;
        let (not_before, not_after) = issue::validity_window(validity, Some(self.0.not_after))?;
        let params = issue::leaf_params(common_name, sans, eku, not_before, not_after)?;
        let (key, key_pem) = issue::leaf_key(algorithm, previous_key_pem)?;
        let leaf = params.signed_by(&key, &self.0.issuer).map_err(rcgen_err)?;
        let leaf_pem = leaf.pem();
        let mut chain_pem = leaf_pem.clone();
        chain_pem.push_str(&self.chain_pem());
        Ok(IssuedCert {
            chain_pem,
            leaf_pem,
            key_pem,
            not_before: not_before.into(),
            not_after: not_after.into(),
        })
    }

    fn check_not_expired(&self) -> Result<(), TlsError> {
        if self.0.not_after <= OffsetDateTime::now_utc() {
            return Err(TlsError::CaExpired {
                subject: self.0.subject.clone(),
                not_after: crate::inspect::rfc3339(self.0.not_after.into()),
            });
        }
        Ok(())
    }

    /// This CA's certificate (PEM), what clients put in their trust store (for a root).
    pub fn cert_pem(&self) -> &str {
        &self.0.cert_pem
    }

    /// This CA's private key (PEM). Keep it out of logs.
    pub fn key_pem(&self) -> &str {
        &self.0.key_pem
    }

    /// The certificates a leaf issued by this CA is followed by (PEM; empty for a root).
    pub fn chain_pem(&self) -> String {
        self.0
            .chain
            .iter()
            .map(|der| crate::pem::encode_certificate(der))
            .collect()
    }

    /// The subject in RFC 4514 form, e.g. `CN=edgemq internal CA`.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    pub fn not_after(&self) -> SystemTime {
        self.0.not_after.into()
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.0.algorithm
    }

    /// Self-signed (a root) rather than an intermediate.
    pub fn is_root(&self) -> bool {
        self.0.chain.is_empty()
    }
}

/// Never prints the key.
impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.0.subject)
            .field("algorithm", &self.0.algorithm)
            .field("not_after", &self.0.not_after)
            .finish_non_exhaustive()
    }
}

fn ca_params(
    common_name: &str,
    validity: Duration,
    cap: Option<OffsetDateTime>,
) -> Result<CertificateParams, TlsError> {
    let (not_before, not_after) = issue::validity_window(validity, cap)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = issue::common_name_dn(common_name)?;
    // No path length limit: the seed's flow (root → intermediate → leaves) needs one level,
    // and operators sometimes add a second; webpki enforces what the certificates say.
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(issue::random_serial()?);
    Ok(params)
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))
}

fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}
