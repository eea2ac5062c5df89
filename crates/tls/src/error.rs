//! One error type for the crate, worded for the operator who has to fix the input.

use std::path::PathBuf;

use crate::algorithm::KeyAlgorithm;
use crate::pem::PemError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{algorithm} keys cannot be generated: {reason}")]
    KeyGeneration {
        algorithm: KeyAlgorithm,
        reason: String,
    },
    #[error("unsupported private key: {0} (use an EC P-256/P-384/P-521, Ed25519 or RSA key)")]
    UnsupportedKey(String),
    /// `rotationPolicy: Never` kept a key that no longer fits the requested algorithm.
    #[error("the previous private key is {found} but the certificate asks for {requested}; use rotationPolicy Always to get a new key")]
    PreviousKeyMismatch {
        requested: KeyAlgorithm,
        found: KeyAlgorithm,
    },
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
    #[error("certificate \"{subject}\" is not a CA (basicConstraints CA:TRUE is missing), so it cannot sign certificates")]
    NotACa { subject: String },
    #[error("the CA private key does not match the CA certificate \"{subject}\"")]
    CaKeyMismatch { subject: String },
    #[error("CA certificate \"{subject}\" expired at {not_after}; renew or replace the CA")]
    CaExpired { subject: String, not_after: String },
    #[error("signing the certificate failed: {0}")]
    Signing(String),
    /// The built-in CA's files exist but cannot be used. Never repaired automatically: a new CA
    /// would silently invalidate every client's trust store.
    #[error("built-in CA file {}: {reason}", path.display())]
    BuiltInCa { path: PathBuf, reason: String },
    /// `edgemq ca export` (which only reads) found no CA in the data dir.
    #[error("no built-in CA in {}: {reason}; `edgemq ca export` only reads the CA that `edgemq serve` creates there, so pass the --data-dir the broker runs with (edgemq serve --data-dir DIR; default edgemq-data)", dir.display())]
    NoBuiltInCa { dir: PathBuf, reason: &'static str },
    /// The built-in CA could not be written into the data dir. Names the data dir, never the
    /// temporary files the CA is written through.
    /// `cause` is part of the message (not a `source`), so a `{:#}` chain says it once.
    #[error("cannot create the built-in CA in {}: {cause}; make {} writable by the broker, or choose another with --data-dir", dir.display(), data_dir.display())]
    CreateBuiltInCa {
        dir: PathBuf,
        data_dir: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn rcgen_err(e: rcgen::Error) -> TlsError {
    TlsError::Signing(e.to_string())
}
