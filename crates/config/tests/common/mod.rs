//! Helpers shared by the configuration tests: folders in a tempdir, real certificates,
//! diagnostics rendered with the folder shown as `$DIR`.

#![allow(dead_code)]

use std::fs;
use std::path::Path;

use base64::Engine as _;
use edgemq_config::{load_dir, Diagnostic, Loaded};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Removes the first empty line and the common indentation, so YAML can be written indented
/// in test code and line 1 is its first line.
pub fn y(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text).trim_end();
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

/// Writes `files` (relative paths, folders created) into `dir`.
pub fn write(dir: &Path, files: &[(&str, String)]) {
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create folder");
        }
        fs::write(&path, content).expect("write file");
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Loads `files` from a fresh folder.
pub fn load(files: &[(&str, String)]) -> (tempfile::TempDir, Result<Loaded, Vec<Diagnostic>>) {
    let dir = tempdir();
    write(dir.path(), files);
    let result = load_dir(dir.path());
    (dir, result)
}

/// Every diagnostic (errors and warnings) rendered, with the folder replaced by `$DIR`.
pub fn rendered(dir: &Path, result: &Result<Loaded, Vec<Diagnostic>>) -> Vec<String> {
    let diags = match result {
        Ok(l) => &l.warnings,
        Err(d) => d,
    };
    let prefix = dir.display().to_string();
    diags
        .iter()
        .map(|d| d.to_string().replace(&prefix, "$DIR"))
        .collect()
}

/// Loads and expects no errors.
pub fn load_ok(dir: &Path) -> Loaded {
    match load_dir(dir) {
        Ok(l) => l,
        Err(diags) => {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("expected the configuration to load:\n{}", lines.join("\n"));
        }
    }
}

pub fn b64(data: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A CA that can sign leaves.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub fn ca(common_name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

impl Ca {
    /// A leaf for `sans`; the PEM chain is the leaf followed by this CA.
    pub fn leaf(&self, common_name: &str, sans: &[&str]) -> Pair {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Pair {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate chain and its key, as PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed(name: &str) -> Pair {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("rcgen");
    Pair {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
    }
}

/// A `kubernetes.io/tls` Secret manifest, as `kubectl create secret tls NAME --cert --key
/// --dry-run=client -o yaml` prints it.
pub fn kubectl_tls_secret(name: &str, pair: &Pair) -> String {
    format!(
        "apiVersion: v1\ndata:\n  tls.crt: {}\n  tls.key: {}\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: {name}\ntype: kubernetes.io/tls\n",
        b64(&pair.cert_pem),
        b64(&pair.key_pem)
    )
}

/// The two real PBKDF2 test vectors of security.md (`client1`/`password`, `client2`/`password2`).
pub use edgemq_testkit::fixtures::PASSWORDS_TOML;
