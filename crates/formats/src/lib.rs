//! # edgemq-formats: the one parser of each file format an operator writes
//!
//! `check` (edgemq-config) and `serve` (edgemq-security, edgemq-tls) both call these
//! functions, so what one accepts the other accepts: there is no second parser to drift.
//! Pure: text or bytes in, typed values or typed errors (with the line or level at fault)
//! out. No I/O, no runtime, no serde.
//!
//! # Layout
//! - [`passwords`]: `passwords.toml` and the PBKDF2 PHC hash strings it holds.
//! - [`topic_pattern`]: authorization topic filters with `{principal.*}` variables.
//! - [`key_algorithm`]: [`KeyAlgorithm`] names (`Ec256`, `Rsa2048`, …).
//! - [`x509_attributes`]: `x509Attributes.toml` and the distinguished names it matches.
//! - [`Problems`]: every error of one file, for callers that report them all.

pub mod key_algorithm;
pub mod passwords;
mod problems;
mod toml_doc;
pub mod topic_pattern;
pub mod x509_attributes;

pub use key_algorithm::KeyAlgorithm;
pub use problems::Problems;
pub use toml_doc::SyntaxError;
