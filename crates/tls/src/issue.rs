//! Leaf certificates: the request (`ServerCertSpec`), the result (`IssuedCert`), the
//! `selfSigned` issuer, and when to renew.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::algorithm::KeyAlgorithm;
use crate::error::{rcgen_err, TlsError};

/// Certificates start this long before "now", so a client whose clock is a little behind
/// does not see a certificate from the future.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What cert-manager's `certManagerCertificateSpec` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertSpec {
    pub common_name: String,
    pub dns: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub algorithm: KeyAlgorithm,
    /// From issuance; the certificate starts [`CLOCK_SKEW`] earlier than now.
    pub validity: Duration,
    /// Reuse this key (PEM) instead of generating one: `rotationPolicy: Never`.
    pub previous_key_pem: Option<String>,
}

/// A freshly issued certificate and its key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf, then the issuer chain up to but excluding the root (what a TLS server sends).
    pub chain_pem: String,
    /// The leaf alone (for `edgemq certs` without `--bundle`).
    pub leaf_pem: String,
    /// PKCS#8 for a generated key; the caller's PEM unchanged for a reused one.
    pub key_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl IssuedCert {
    /// The chain and key, ready for a [`crate::ServerCertSlot`].
    pub fn certified_key(&self) -> Result<rustls::sign::CertifiedKey, TlsError> {
        Ok(crate::pem::certified_key(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
        )?)
    }
}

/// Never prints the key.
impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("chain_pem", &self.chain_pem)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// When to renew a certificate: `not_after - renew_before`. If `renew_before` is at least the
/// whole lifetime, that moment would be before the certificate even started, so (like
/// cert-manager) renew at 2/3 of the lifetime instead. Never earlier than `not_before`.
pub fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Duration,
) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    if renew_before < lifetime {
        not_after - renew_before
    } else {
        not_before + lifetime * 2 / 3
    }
}

/// The `selfSigned` issuer: a leaf certificate signed by its own key (clients pin it as a
/// trust anchor). Not a CA, so it cannot be used to sign anything else.
pub fn self_signed_server(spec: &ServerCertSpec) -> Result<IssuedCert, TlsError> {
    let (not_before, not_after) = validity_window(spec.validity, None)?;
    let params = leaf_params(
        &spec.common_name,
        server_sans(spec)?,
        ExtendedKeyUsagePurpose::ServerAuth,
        not_before,
        not_after,
    )?;
    let (key, key_pem) = leaf_key(spec.algorithm, spec.previous_key_pem.as_deref())?;
    let cert = params.self_signed(&key).map_err(rcgen_err)?;
    Ok(IssuedCert {
        chain_pem: cert.pem(),
        leaf_pem: cert.pem(),
        key_pem,
        not_before: not_before.into(),
        not_after: not_after.into(),
    })
}

pub(crate) fn server_sans(spec: &ServerCertSpec) -> Result<Vec<SanType>, TlsError> {
    if spec.dns.is_empty() && spec.ip.is_empty() {
        return Err(TlsError::InvalidRequest(
            "a server certificate needs at least one DNS name or IP address (san.dns, san.ip)"
                .into(),
        ));
    }
    let mut sans = Vec::with_capacity(spec.dns.len() + spec.ip.len());
    for name in &spec.dns {
        sans.push(SanType::DnsName(dns_name(name)?));
    }
    sans.extend(spec.ip.iter().copied().map(SanType::IpAddress));
    Ok(sans)
}

/// A DNS SAN, checked the way clients will check it (a leading `*.` wildcard is allowed).
fn dns_name(name: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    let bad = |why: &str| TlsError::InvalidRequest(format!("DNS name {name:?} {why}"));
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.parse::<IpAddr>().is_ok() {
        return Err(bad("is an IP address; list it under san.ip"));
    }
    rustls::pki_types::DnsName::try_from(base).map_err(|_| bad("is not a valid host name"))?;
    rcgen::string::Ia5String::try_from(name).map_err(|_| bad("is not ASCII"))
}

/// `[now - CLOCK_SKEW, min(now + validity, cap)]`, whole seconds (what X.509 can hold, so
/// the returned times equal the certificate's).
pub(crate) fn validity_window(
    validity: Duration,
    cap: Option<OffsetDateTime>,
) -> Result<(OffsetDateTime, OffsetDateTime), TlsError> {
    if validity.is_zero() {
        return Err(TlsError::InvalidRequest(
            "the validity (duration) must be positive".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let now = now - time::Duration::nanoseconds(i64::from(now.nanosecond()));
    let too_long = || TlsError::InvalidRequest(format!("a validity of {validity:?} is too long"));
    let not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|v| now.checked_add(v))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(too_long)?;
    let not_after = cap.map_or(not_after, |cap| not_after.min(cap));
    Ok((now - CLOCK_SKEW, not_after))
}

/// Parameters shared by server and client leaves: CN, SANs, one EKU, digitalSignature,
/// CA:FALSE, a random serial (so re-issuing with the same key never repeats one).
pub(crate) fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name)?;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

pub(crate) fn common_name_dn(common_name: &str) -> Result<DistinguishedName, TlsError> {
    if common_name.trim().is_empty() {
        return Err(TlsError::InvalidRequest(
            "the common name must not be empty".into(),
        ));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

/// 16 random bytes, positive (RFC 5280 §4.1.2.2 asks for unique, positive, ≤ 20 octets).
pub(crate) fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| TlsError::Signing("the system random generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The leaf's key: the previous one when given (checked to be of the requested algorithm),
/// otherwise a new one.
pub(crate) fn leaf_key(
    algorithm: KeyAlgorithm,
    previous_pem: Option<&str>,
) -> Result<(KeyPair, String), TlsError> {
    match previous_pem {
        Some(pem) => {
            let key = parse_key(pem).map_err(|e| {
                TlsError::InvalidRequest(format!(
                    "the kept private key (rotationPolicy Never) cannot be used: {e}"
                ))
            })?;
            let found = crate::algorithm::algorithm_of(&key)?;
            if found != algorithm {
                return Err(TlsError::PreviousKeyMismatch {
                    requested: algorithm,
                    found,
                });
            }
            Ok((key, pem.to_string()))
        }
        None => {
            let key = crate::algorithm::generate(algorithm)?;
            let pem = key.serialize_pem();
            Ok((key, pem))
        }
    }
}

/// PKCS#8, PKCS#1 or SEC1 PEM → a key rcgen can sign with.
pub(crate) fn parse_key(pem: &str) -> Result<KeyPair, TlsError> {
    let der = crate::pem::parse_private_key(pem.as_bytes())?;
    KeyPair::try_from(&der).map_err(|e| TlsError::UnsupportedKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_whole_seconds_and_backdated() -> Result<(), TlsError> {
        let (nb, na) = validity_window(Duration::from_secs(3600), None)?;
        assert_eq!(nb.nanosecond(), 0);
        assert_eq!(na - nb, time::Duration::seconds(3660));
        let cap = na - time::Duration::seconds(600);
        let (_, capped) = validity_window(Duration::from_secs(3600), Some(cap))?;
        assert_eq!(capped, cap);
        assert!(validity_window(Duration::ZERO, None).is_err());
        assert!(validity_window(Duration::from_secs(u64::MAX), None).is_err());
        Ok(())
    }

    #[test]
    fn dns_names_are_checked() {
        assert!(dns_name("n013edge.local").is_ok());
        assert!(dns_name("*.example.com").is_ok());
        assert!(dns_name("10.0.0.1").is_err());
        assert!(dns_name("bad name").is_err());
        assert!(dns_name("bücher.example").is_err());
    }

    #[test]
    fn serials_differ() -> Result<(), TlsError> {
        assert_ne!(random_serial()?, random_serial()?);
        Ok(())
    }
}
