//! What a certificate says, for `edgemq certs inspect` and for log lines.

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TlsError;

/// One certificate, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// RFC 4514 form, e.g. `CN=mqtts-endpoint`.
    pub subject: String,
    pub issuer: String,
    /// Hex bytes separated by colons, as openssl prints it.
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// SANs of other kinds (`email:…`, `URI:…`), for completeness.
    pub other_sans: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// `None`: no limit (or not a CA).
    pub path_len: Option<u32>,
    /// RFC 5280 names: `digitalSignature`, `keyCertSign`, …
    pub key_usage: Vec<String>,
    /// `serverAuth`, `clientAuth`, … or the OID.
    pub extended_key_usage: Vec<String>,
    /// `EC P-256`, `RSA 2048`, `Ed25519`, …
    pub public_key: String,
    pub signature_algorithm: String,
    /// Subject equals issuer: a root CA or a self-signed leaf.
    pub self_signed: bool,
    pub sha256_fingerprint: String,
    /// X.509 version as written in certificates: 1 (no extensions) or 3.
    pub version: u32,
}

impl CertSummary {
    /// SANs as `DNS:name` / `IP:addr`, the way operators write them.
    pub fn sans(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
            .chain(self.other_sans.iter().cloned())
            .collect()
    }

    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// Every certificate in `input`: PEM (any number) or a single DER certificate.
pub fn inspect(input: &[u8]) -> Result<Vec<CertSummary>, TlsError> {
    match crate::pem::parse_certificates(input) {
        Ok(certs) => certs.iter().map(|c| inspect_der(c)).collect(),
        // `.der` / `.cer` files: a DER certificate is an ASN.1 SEQUENCE.
        Err(crate::pem::PemError::NoCertificate) if input.first() == Some(&0x30) => {
            Ok(vec![inspect_der(input)?])
        }
        Err(e) => Err(e.into()),
    }
}

/// One DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertSummary, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let bad = |e: x509_parser::error::X509Error| TlsError::BadCertificate(e.to_string());

    let (mut dns_names, mut ip_addresses, mut other_sans) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(bad)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                    Some(ip) => ip_addresses.push(ip),
                    None => other_sans.push(format!("IP:<{} bytes>", bytes.len())),
                },
                GeneralName::RFC822Name(e) => other_sans.push(format!("email:{e}")),
                GeneralName::URI(u) => other_sans.push(format!("URI:{u}")),
                other => other_sans.push(format!("{other:?}")),
            }
        }
    }
    let (is_ca, path_len) = match cert.basic_constraints().map_err(bad)? {
        Some(bc) => (bc.value.ca, bc.value.path_len_constraint),
        None => (false, None),
    };
    let key_usage = match cert.key_usage().map_err(bad)? {
        Some(ku) => KEY_USAGES
            .iter()
            .enumerate()
            .filter(|(bit, _)| ku.value.flags >> bit & 1 == 1)
            .map(|(_, name)| name.to_string())
            .collect(),
        None => Vec::new(),
    };
    let extended_key_usage = match cert.extended_key_usage().map_err(bad)? {
        Some(eku) => {
            let e = eku.value;
            [
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
                (e.any, "anyExtendedKeyUsage"),
            ]
            .into_iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| name.to_string())
            .chain(e.other.iter().map(|oid| oid.to_id_string()))
            .collect()
        }
        None => Vec::new(),
    };
    let fingerprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);

    Ok(CertSummary {
        version: cert.version().0 + 1,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex_colons(cert.raw_serial()),
        dns_names,
        ip_addresses,
        other_sans,
        not_before: cert.validity().not_before.to_datetime().into(),
        not_after: cert.validity().not_after.to_datetime().into(),
        is_ca,
        path_len,
        key_usage,
        extended_key_usage,
        public_key: describe_key(&cert),
        signature_algorithm: signature_name(&cert.signature_algorithm.algorithm.to_id_string()),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        sha256_fingerprint: hex_colons(fingerprint.as_ref()),
    })
}

/// One screen per certificate, for `edgemq certs inspect`.
impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = SystemTime::now();
        let status = if now < self.not_before {
            "NOT YET VALID".to_string()
        } else if now > self.not_after {
            "EXPIRED".to_string()
        } else {
            let left = self.not_after.duration_since(now).unwrap_or_default();
            format!("valid, {} days left", left.as_secs() / 86_400)
        };
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let ca = match (self.is_ca, self.path_len) {
            (false, _) => "no".to_string(),
            (true, None) => "yes".to_string(),
            (true, Some(n)) => format!("yes, path length {n}"),
        };
        writeln!(f, "Subject:     {}", self.subject)?;
        writeln!(
            f,
            "Issuer:      {}{}",
            self.issuer,
            if self.self_signed {
                " (self-signed)"
            } else {
                ""
            }
        )?;
        writeln!(f, "Serial:      {}", self.serial)?;
        writeln!(f, "Not before:  {}", rfc3339(self.not_before))?;
        writeln!(f, "Not after:   {} ({status})", rfc3339(self.not_after))?;
        writeln!(f, "SANs:        {}", list(&self.sans()))?;
        writeln!(f, "CA:          {ca}")?;
        writeln!(f, "Key usage:   {}", list(&self.key_usage))?;
        writeln!(f, "Ext. usage:  {}", list(&self.extended_key_usage))?;
        writeln!(f, "Public key:  {}", self.public_key)?;
        writeln!(f, "Signature:   {}", self.signature_algorithm)?;
        write!(f, "SHA-256:     {}", self.sha256_fingerprint)
    }
}

/// `2025-06-01T12:00:00Z`, for logs and `inspect`.
pub fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| format!("unix:{}", t.unix_timestamp()))
}

const KEY_USAGES: [&str; 9] = [
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn describe_key(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" => {
            let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
            format!("RSA {bits}")
        }
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "EC P-256".into(),
                Some("1.3.132.0.34") => "EC P-384".into(),
                Some("1.3.132.0.35") => "EC P-521".into(),
                Some(other) => format!("EC {other}"),
                None => "EC".into(),
            }
        }
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        other => other.to_string(),
    }
}

fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.3.101.112" => "Ed25519",
        other => other,
    }
    .to_string()
}
