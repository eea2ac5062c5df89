//! Configuration parsers: the YAML folder loader (`edgemq_config::load_dir`), the
//! `passwords.toml` parser (`edgemq_security::password::PasswordDb::parse`) and the
//! `x509Attributes.toml` reader (reached through `load_dir`, it is crate-private) plus the
//! X.509 method's subject (DN) parser (through `X509Method::new`). Invariant: no panic —
//! every input ends in `Ok` or diagnostics.
//!
//! The first byte selects the mode; the rest is the text. `load_dir` needs a folder: one per
//! process under the temp dir, rewritten for each input.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use edgemq_security::password::PasswordDb;
use edgemq_security::x509::X509Method;
use libfuzzer_sys::fuzz_target;

/// A self-signed CA (EC P-256, valid to 2126) so `X509Method::new` gets past the bundle and
/// parses the subjects.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIUdRIMGSDWoUuwK5yFD70/E8IBDpUwCgYIKoZIzj0EAwIw
IzEQMA4GA1UEAwwHZnV6eiBDQTEPMA0GA1UECgwGZWRnZW1xMCAXDTI2MTIwNDIy
MTkxNFoYDzIxMjYxMTEwMjIxOTE0WjAjMRAwDgYDVQQDDAdmdXp6IENBMQ8wDQYD
VQQKDAZlZGdlbXEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASPy+C87wRluOBr
vQcdBkTV/K0Ae1QcV9xqRulTfN08Te1Mz4JcICP7ZtwXzR9pasZ9qqQ1wssCuN3f
xvPqRiu9o2MwYTAdBgNVHQ4EFgQUNH1NI55L3q9ODDGKlSHOrkIug4MwHwYDVR0j
BBgwFoAUNH1NI55L3q9ODDGKlSHOrkIug4MwDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAgQwCgYIKoZIzj0EAwIDSAAwRQIhAK0D6Vc5J2ZrjfflSaMwnzUr
lNg/EDp4AhKUHCeJxu3LAiBxEmuzApLEnjRbOhT23CBm0FhfgHdQ80PfQADu6Mkx
bQ==
-----END CERTIFICATE-----
";

/// Resources referring to the two TOML secrets, so that mode 1 reaches their parsers.
const SECRETS_YAML: &str = r#"apiVersion: mq.iotoperations.azure.com/v1beta1
kind: BrokerListener
metadata: {name: listener}
spec:
  brokerRef: broker
  port: 1883
  authenticationEnabled: true
  authorizationEnabled: false
---
apiVersion: mq.iotoperations.azure.com/v1beta1
kind: BrokerAuthentication
metadata: {name: authn}
spec:
  listenerRef: [listener]
  authenticationMethods:
    - usernamePassword: {secretName: passwords-db}
    - x509: {trustedClientCaCert: client-ca, attributes: {secretName: x509-attributes}}
"#;

fn work_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edgemq-fuzz-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    })
}

fn write(rel: &str, bytes: &[u8]) {
    let path = work_dir().join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create dir");
    }
    std::fs::write(path, bytes).expect("write");
}

fn load() {
    match edgemq_config::load_dir(work_dir()) {
        Ok(loaded) => {
            let _ = format!("{:?}", loaded.config);
        }
        Err(diags) => {
            for d in &diags {
                let _ = d.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        // A whole config.yaml (invalid UTF-8 included: the loader must report it).
        0 => {
            let _ = std::fs::remove_dir_all(work_dir().join("secrets"));
            let _ = std::fs::remove_dir_all(work_dir().join("configmaps"));
            write("config.yaml", rest);
            load();
        }
        // passwords.toml and x509Attributes.toml (split at the first NUL) behind fixed YAML.
        1 => {
            let (passwords, attributes) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            write("config.yaml", SECRETS_YAML.as_bytes());
            write("secrets/passwords-db/passwords.toml", passwords);
            write("secrets/x509-attributes/x509Attributes.toml", attributes);
            write("configmaps/client-ca/client_ca.pem", CA_PEM.as_bytes());
            load();
        }
        // The runtime's passwords.toml parser.
        2 => {
            if let Ok(db) = PasswordDb::parse(&text) {
                let _ = db.len();
                let _ = db.user("client1");
            }
        }
        // X.509 subjects: each line `entry<TAB>subject<TAB>k=v,…`.
        _ => {
            let mut attributes = BTreeMap::new();
            for line in text.lines().take(16) {
                let mut fields = line.splitn(3, '\t');
                let entry = fields.next().unwrap_or_default().to_string();
                let subject = fields.next().unwrap_or_default().to_string();
                let attrs: BTreeMap<String, String> = fields
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                attributes.insert(entry, (subject, attrs));
            }
            let _ = X509Method::new(CA_PEM.as_bytes(), &attributes);
        }
    }
});
