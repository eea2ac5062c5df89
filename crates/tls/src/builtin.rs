//! The built-in issuer (`azure-iot-operations-aio-certificate-issuer`): a root CA kept in the
//! data dir, like AIO's `aio-broker-internal-ca`. Created once; the same CA on every start,
//! so clients keep trusting what `edgemq ca export` gave them.

use std::fs;
use std::io::{self, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::algorithm::KeyAlgorithm;
use crate::authority::CertificateAuthority;
use crate::error::TlsError;

/// The built-in CA and where it lives.
#[derive(Debug, Clone)]
pub struct BuiltInIssuer {
    dir: PathBuf,
    ca: CertificateAuthority,
}

impl BuiltInIssuer {
    pub const COMMON_NAME: &'static str = "edgemq internal CA";
    /// Ten years (365-day years): far beyond any server certificate it signs.
    pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    pub const ALGORITHM: KeyAlgorithm = KeyAlgorithm::Ec256;

    /// Loads `DATA/ca/ca.crt` and `DATA/ca/ca.key`, or creates them if `DATA/ca` does not
    /// exist yet (or is empty). Anything else (one file missing, unreadable, not a CA, key not
    /// matching) is an error naming the file: replacing a CA behind the operator's back would
    /// break every client that trusts it.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, TlsError> {
        let dir = data_dir.join("ca");
        if !is_empty_or_missing(&dir)? {
            return Self::load(dir);
        }
        let ca = CertificateAuthority::generate_root(
            Self::COMMON_NAME,
            Self::ALGORITHM,
            Self::VALIDITY,
        )?;
        match publish(data_dir, &dir, &ca) {
            Ok(()) => Ok(BuiltInIssuer { dir, ca }),
            // Another process (say `edgemq ca export` next to `edgemq serve`) got there first:
            // use its CA, not ours.
            Err(_) if dir.join("ca.crt").exists() => Self::load(dir),
            Err(e) => Err(e),
        }
    }

    /// Loads `DATA/ca/ca.crt` and `DATA/ca/ca.key`; never creates anything. A data dir
    /// without a CA is [`TlsError::NoBuiltInCa`] naming it: a CA made here would not be
    /// the one the broker serves with, and clients trusting it would fail TLS.
    pub fn load_existing(data_dir: &Path) -> Result<Self, TlsError> {
        let dir = data_dir.join("ca");
        let reason = if !data_dir.exists() {
            "the directory does not exist"
        } else if is_empty_or_missing(&dir)? {
            "it has no ca/ca.crt and ca/ca.key"
        } else {
            return Self::load(dir);
        };
        Err(TlsError::NoBuiltInCa {
            dir: data_dir.to_path_buf(),
            reason,
        })
    }

    fn load(dir: PathBuf) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let cert_pem = read_part(&cert_path, &key_path)?;
        let key_pem = read_part(&key_path, &cert_path)?;
        let ca = match CertificateAuthority::from_pem(&cert_pem, &key_pem) {
            Ok(ca) => ca,
            Err(e) => {
                // Name the file that is wrong.
                let path = match e {
                    TlsError::Pem(
                        crate::pem::PemError::NoKey
                        | crate::pem::PemError::BadKey(_)
                        | crate::pem::PemError::UnsupportedKey(_),
                    )
                    | TlsError::UnsupportedKey(_)
                    | TlsError::CaKeyMismatch { .. } => key_path,
                    _ => cert_path,
                };
                return Err(TlsError::BuiltInCa {
                    path,
                    reason: format!(
                        "{e}; restore the CA from a backup, or remove {} to create a new CA \
                         (clients must then trust the new one)",
                        dir.display()
                    ),
                });
            }
        };
        Ok(BuiltInIssuer { dir, ca })
    }

    /// The CA certificate (PEM) clients use as `--cafile`.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    pub fn authority(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
}

impl Deref for BuiltInIssuer {
    type Target = CertificateAuthority;

    fn deref(&self) -> &CertificateAuthority {
        &self.ca
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_empty_or_missing(dir: &Path) -> Result<bool, TlsError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// One of the two files; a missing one makes the CA incomplete, which is said plainly.
fn read_part(path: &Path, other: &Path) -> Result<String, TlsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TlsError::BuiltInCa {
            path: path.to_path_buf(),
            reason: format!(
                "missing while {} exists: the built-in CA is incomplete; restore it from a \
                 backup, or remove {} to create a new CA (clients must then trust the new one)",
                other.display(),
                path.parent().unwrap_or(path).display()
            ),
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes the CA into a private temporary directory and renames it to `dir` in one step, so
/// a crash leaves either no CA or a complete one, and a concurrent creator cannot be
/// overwritten (renaming onto a non-empty directory fails).
fn publish(data_dir: &Path, dir: &Path, ca: &CertificateAuthority) -> Result<(), TlsError> {
    fs::create_dir_all(data_dir).map_err(|cause| TlsError::CreateBuiltInCa {
        dir: dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        cause,
    })?;
    // Unique per process (pid) and per call within it (counter).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = data_dir.join(format!(".ca.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        create_private_dir(&tmp)?;
        write_file(&tmp.join("ca.key"), ca.key_pem(), 0o600)?;
        write_file(&tmp.join("ca.crt"), ca.cert_pem(), 0o644)?;
        fs::rename(&tmp, dir)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(data_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    // The temporary directory is an implementation detail: name the operator's paths.
    result.map_err(|cause| TlsError::CreateBuiltInCa {
        dir: dir.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        cause,
    })
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
}
