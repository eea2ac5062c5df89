//! edgemq configuration: a folder of AIO-style Kubernetes resources (BrokerListener,
//! BrokerAuthentication, BrokerAuthorization, Broker, Secret, ConfigMap, cert-manager issuers,
//! in the v1, transitional and legacy v1beta1 API versions) → one validated [`Config`].
//!
//! [`load_dir`] reports every problem at once as [`Diagnostic`]s
//! (`file:line: Kind/name: field: message`). Pure library: no I/O beyond reading the folder.
//! Decisions where the spec is silent are in this crate's README.

mod diag;
mod duration;
mod load;
mod model;
mod reader;
mod resources;
mod san;
mod validate;
mod yaml;

use std::path::Path;

pub use diag::{Diagnostic, Severity};
pub use duration::{format_duration, parse_duration, DurationError};
pub use model::*;
pub use san::host_name;

/// A configuration that loaded without errors, and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Sorted by file, then line.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the configuration folder `dir` (spec README §2).
///
/// `Err` holds every diagnostic, warnings included, sorted by file then line, when at least
/// one is an error. File names in diagnostics are `dir` joined with the file name, as given.
pub fn load_dir(dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let diags = diag::Diags::default();
    let resources = load::read_dir(dir, &diags);
    let config = validate::build(resources, &diags);
    if config.listeners.is_empty() && !diags.has_errors() {
        diags.push(Diagnostic {
            severity: Severity::Warning,
            file: dir.to_path_buf(),
            line: None,
            kind: String::new(),
            name: String::new(),
            field: String::new(),
            message: "no BrokerListener is defined: the broker will accept no connections".into(),
        });
    }
    let all = diags.into_sorted();
    if all.iter().any(Diagnostic::is_error) {
        Err(all)
    } else {
        Ok(Loaded {
            config,
            warnings: all,
        })
    }
}
