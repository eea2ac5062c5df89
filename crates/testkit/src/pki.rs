//! Certificate factory: chains generated with edgemq-tls (as the broker's own issuer makes
//! them), and the openssl recipes operators copy from the documentation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgemq_tls::{CertificateAuthority, KeyAlgorithm, ServerCertSpec};

use crate::broker::run_with_timeout;
use crate::fixtures::WAIT;

pub const DAY: Duration = Duration::from_secs(86_400);

/// A root CA named `name`, EC P-256, valid for `validity`.
pub fn root_ca(name: &str, validity: Duration) -> CertificateAuthority {
    CertificateAuthority::generate_root(name, KeyAlgorithm::Ec256, validity).unwrap()
}

/// An intermediate CA named `name` under `root`, EC P-256, valid for `validity`.
pub fn intermediate_ca(
    root: &CertificateAuthority,
    name: &str,
    validity: Duration,
) -> CertificateAuthority {
    CertificateAuthority::generate_intermediate(root, name, KeyAlgorithm::Ec256, validity).unwrap()
}

/// A server certificate (EC P-256, 30 days) for `common_name` with the SANs `dns` and `ip`,
/// issued by `ca`: (chain PEM, key PEM).
pub fn server_cert(
    ca: &CertificateAuthority,
    common_name: &str,
    dns: &[&str],
    ip: &[&str],
) -> (String, String) {
    let issued = ca
        .issue_server(&ServerCertSpec {
            common_name: common_name.into(),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ip: ip.iter().map(|a| a.parse().unwrap()).collect(),
            algorithm: KeyAlgorithm::Ec256,
            validity: 30 * DAY,
            previous_key_pem: None,
        })
        .unwrap();
    (issued.chain_pem, issued.key_pem)
}

/// Run a shell command (bash) in `dir`; it must succeed.
pub fn sh(dir: &Path, cmd: &str) {
    let (code, out, err) = run_with_timeout(
        Command::new("bash").args(["-c", cmd]).current_dir(dir),
        WAIT,
    );
    assert_eq!(code, Some(0), "{cmd}\n{out}{err}");
}

/// openssl options for a new EC P-256 key without a passphrase.
pub const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A two-level CA made with the openssl commands of the seed walkthrough, in `dir`:
/// `PREFIX_root_ca.{crt,key}` ("ROOT_CN") signs `PREFIX_int_ca.{crt,key}` ("INT_CN").
/// `proper_intermediate: false` is the recipe exactly as published: `openssl x509 -req`
/// without extensions makes the intermediate an X.509 v1 certificate, which cannot be a CA.
pub struct OpensslCa {
    pub dir: PathBuf,
    prefix: String,
}

impl OpensslCa {
    pub fn new(
        dir: &Path,
        prefix: &str,
        root_cn: &str,
        int_cn: &str,
        proper_intermediate: bool,
    ) -> OpensslCa {
        std::fs::create_dir_all(dir).unwrap();
        let p = prefix;
        sh(dir, &format!("openssl req -x509 -new {EC} -keyout {p}_root_ca.key -out {p}_root_ca.crt -days 365 -subj '/CN={root_cn}'"));
        sh(dir, &format!("openssl req -new {EC} -keyout {p}_int_ca.key -out {p}_int_ca.csr -subj '/CN={int_cn}'"));
        let ext = if proper_intermediate {
            "-extfile <(printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n')"
        } else {
            ""
        };
        sh(dir, &format!("openssl x509 -req -in {p}_int_ca.csr -CA {p}_root_ca.crt -CAkey {p}_root_ca.key -CAcreateserial -out {p}_int_ca.crt -days 365 {ext}"));
        OpensslCa {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
        }
    }

    /// The intermediate's certificate file name.
    pub fn int_crt(&self) -> String {
        format!("{}_int_ca.crt", self.prefix)
    }

    /// `NAME.crt` / `NAME.key` signed by the intermediate (`openssl x509 -req`, valid for
    /// `days`; with `extensions`, an extfile of those lines, else an X.509 v1 leaf), and
    /// `NAME-SUFFIX.crt` = leaf + intermediate.
    pub fn leaf(&self, name: &str, extensions: Option<&str>, days: u32, suffix: &str) {
        let int = self.int_crt();
        let key = format!("{}_int_ca.key", self.prefix);
        let ext = extensions
            .map(|e| format!(" -extfile <(printf '{e}')"))
            .unwrap_or_default();
        sh(
            &self.dir,
            &format!("openssl req -new {EC} -keyout {name}.key -out {name}.csr -subj '/CN={name}'"),
        );
        sh(&self.dir, &format!("openssl x509 -req -in {name}.csr -CA {int} -CAkey {key} -CAcreateserial -out {name}.crt -days {days}{ext}"));
        sh(
            &self.dir,
            &format!("cat {name}.crt {int} > {name}-{suffix}.crt"),
        );
    }

    /// A leaf whose validity ended in 2020, made with `openssl ca` (which takes dates);
    /// `copy_extensions` copies the request's extensions (`req_args`, e.g. `-addext ...`).
    /// Chain file as in [`OpensslCa::leaf`].
    pub fn expired_leaf(&self, name: &str, copy_extensions: bool, req_args: &str, suffix: &str) {
        let int = self.int_crt();
        let key = format!("{}_int_ca.key", self.prefix);
        let copy = if copy_extensions {
            "copy_extensions=copy\\n"
        } else {
            ""
        };
        sh(&self.dir, &format!("touch index.txt && echo 1000 > serial && printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\nserial=serial\\ndefault_md=sha256\\npolicy=p\\n{copy}[p]\\ncommonName=supplied\\n' > ca.cnf"));
        sh(
            &self.dir,
            &format!("openssl req -new {EC} -keyout {name}.key -out {name}.csr -subj '/CN={name}'{req_args}"),
        );
        sh(&self.dir, &format!("openssl ca -batch -config ca.cnf -cert {int} -keyfile {key} -in {name}.csr -out {name}.crt -startdate 20200101000000Z -enddate 20200201000000Z -notext"));
        sh(
            &self.dir,
            &format!("cat {name}.crt {int} > {name}-{suffix}.crt"),
        );
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }
}
