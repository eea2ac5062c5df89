//! The configuration folder: every `*.yaml`/`*.yml` file (sorted by name, not recursive), each
//! document in order, then the `secrets/NAME/` and `configmaps/NAME/` folders. A name defined
//! twice is reported at the second definition and that definition is dropped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diags, Origin, Severity};
use crate::reader::Located;
use crate::resources::{self, data, name_group, Resources};
use crate::yaml::parse_documents;

pub(crate) fn read_dir(dir: &Path, diags: &Diags) -> Resources {
    let mut out = Resources::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            file_problem(
                diags,
                Severity::Error,
                dir,
                None,
                format!("cannot read the configuration folder: {e}"),
            );
            return out;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            yaml && p.is_file()
        })
        .collect();
    files.sort();
    for file in &files {
        read_file(file, diags, &mut out);
    }
    for (sub, is_secret) in [("secrets", true), ("configmaps", false)] {
        for folder in subfolders(&dir.join(sub), diags) {
            if is_secret {
                out.secrets.push(data::read_secret_folder(&folder, diags));
            } else {
                out.config_maps
                    .push(data::read_config_map_folder(&folder, diags));
            }
        }
    }
    dedupe(&mut out, diags);
    out
}

fn file_problem(
    diags: &Diags,
    severity: Severity,
    file: &Path,
    line: Option<usize>,
    message: String,
) {
    diags.push(Diagnostic {
        severity,
        file: file.to_path_buf(),
        line,
        kind: String::new(),
        name: String::new(),
        field: String::new(),
        message,
    });
}

fn read_file(file: &Path, diags: &Diags, out: &mut Resources) {
    let text = match fs::read(file).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => {
            file_problem(diags, Severity::Error, file, None, "not UTF-8 text".into());
            return;
        }
        Err(e) => {
            file_problem(
                diags,
                Severity::Error,
                file,
                None,
                format!("cannot read: {e}"),
            );
            return;
        }
    };
    match parse_documents(&text) {
        Ok(docs) => {
            for doc in &docs {
                resources::read_document(file, doc, diags, out);
            }
        }
        Err(e) => file_problem(
            diags,
            Severity::Error,
            file,
            e.line,
            format!("invalid YAML: {e}"),
        ),
    }
}

/// `DIR/secrets/*` folders, sorted; anything else there is reported and skipped.
fn subfolders(dir: &Path, diags: &Diags) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            file_problem(
                diags,
                Severity::Error,
                dir,
                None,
                format!("cannot read folder: {e}"),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            out.push(path);
        } else {
            file_problem(
                diags,
                Severity::Warning,
                &path,
                None,
                "not a folder (each secret or config map is a folder of key files); ignored".into(),
            );
        }
    }
    out.sort();
    out
}

/// First definition wins; later ones are errors and are dropped so the model stays unambiguous.
fn dedupe(out: &mut Resources, diags: &Diags) {
    let mut seen: BTreeMap<(&'static str, String), Origin> = BTreeMap::new();
    let mut check = |origin: &Origin, name: &Located<String>| -> bool {
        let key = (name_group(&origin.kind), name.value.clone());
        if let Some(first) = seen.get(&key) {
            let line = origin.line.map(|_| name.line);
            origin.error(
                diags,
                line,
                if origin.line.is_some() {
                    "metadata.name"
                } else {
                    ""
                },
                format!(
                    "\"{}\" is defined twice; first definition: {}/{} at {}",
                    name.value,
                    first.kind,
                    first.name,
                    first.location()
                ),
            );
            false
        } else {
            seen.insert(key, origin.clone());
            true
        }
    };
    out.brokers.retain(|r| check(&r.origin, &r.name));
    out.listeners.retain(|r| check(&r.origin, &r.name));
    out.authentications.retain(|r| check(&r.origin, &r.name));
    out.authorizations.retain(|r| check(&r.origin, &r.name));
    out.secrets.retain(|r| check(&r.origin, &r.name));
    out.config_maps.retain(|r| check(&r.origin, &r.name));
    out.issuers.retain(|r| check(&r.origin, &r.name));
}
