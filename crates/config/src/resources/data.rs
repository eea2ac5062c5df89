//! Secret and ConfigMap, from manifests (`data` base64, `stringData`, `binaryData`) or from
//! folders laid out the way Kubernetes mounts them (`secrets/NAME/KEY`, file name = key).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use base64::Engine as _;

use super::metadata;
use crate::diag::{Diags, Origin};
use crate::reader::{Located, Val};

pub(crate) struct RawSecret {
    pub origin: Origin,
    pub name: Located<String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

pub(crate) struct RawConfigMap {
    pub origin: Origin,
    pub name: Located<String>,
    pub data: BTreeMap<String, String>,
}

const SECRET: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "data",
    "stringData",
    "immutable",
];
const CONFIG_MAP: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "data",
    "binaryData",
    "immutable",
];

const TLS_TYPE: &str = "kubernetes.io/tls";

/// Kubernetes data keys: alphanumerics, `-`, `_`, `.`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_key(key: &str, v: &Val<'_>) -> bool {
    let ok = valid_key(key);
    if !ok {
        v.error("invalid key: use letters, digits, '-', '_' and '.'");
    }
    ok
}

fn decode_base64(v: &Val<'_>) -> Option<Vec<u8>> {
    let text = v.string().unwrap_or_default();
    // Manifests wrap long values; Kubernetes would not, but the intent is clear.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            v.error(format!("invalid base64: {e}"));
            None
        }
    }
}

pub(crate) fn read_secret(root: &Val<'_>) -> Option<RawSecret> {
    let obj = root.obj(SECRET)?;
    let name = metadata(&obj);
    let mut data = BTreeMap::new();
    for (key, v) in obj
        .get("data")
        .and_then(|d| d.entries())
        .unwrap_or_default()
    {
        if check_key(&key, &v) {
            if let Some(bytes) = decode_base64(&v) {
                data.insert(key, bytes);
            }
        }
    }
    // Like Kubernetes: stringData wins over data for the same key.
    for (key, v) in obj
        .get("stringData")
        .and_then(|d| d.entries())
        .unwrap_or_default()
    {
        if !check_key(&key, &v) {
            continue;
        }
        match v.node().scalar_text() {
            Some(s) => {
                data.insert(key, s.into_bytes());
            }
            None => v.error(format!("expected a string, found {}", v.node().type_name())),
        }
    }
    if let Some(t) = obj.get("type") {
        if t.string().as_deref() == Some(TLS_TYPE) {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    t.error(format!("a {TLS_TYPE} secret needs the key {key}"));
                }
            }
        }
    }
    Some(RawSecret {
        origin: obj.cx().origin.clone(),
        name: name?,
        data,
    })
}

pub(crate) fn read_config_map(root: &Val<'_>) -> Option<RawConfigMap> {
    let obj = root.obj(CONFIG_MAP)?;
    let name = metadata(&obj);
    let mut data = BTreeMap::new();
    for (key, v) in obj
        .get("data")
        .and_then(|d| d.entries())
        .unwrap_or_default()
    {
        if !check_key(&key, &v) {
            continue;
        }
        match v.node().scalar_text() {
            Some(s) => {
                data.insert(key, s);
            }
            None => v.error(format!("expected a string, found {}", v.node().type_name())),
        }
    }
    for (key, v) in obj
        .get("binaryData")
        .and_then(|d| d.entries())
        .unwrap_or_default()
    {
        if !check_key(&key, &v) {
            continue;
        }
        let Some(bytes) = decode_base64(&v) else {
            continue;
        };
        match String::from_utf8(bytes) {
            Ok(s) => {
                data.insert(key, s);
            }
            Err(_) => v.error("not UTF-8 text: edgemq config maps hold text (PEM certificates)"),
        }
    }
    Some(RawConfigMap {
        origin: obj.cx().origin.clone(),
        name: name?,
        data,
    })
}

/// The files of one mounted secret or config map folder, key → bytes. Kubernetes' own
/// bookkeeping entries (`..data`, `..2024_01_01…`) are skipped; the key files are symlinks
/// into them and are read through the link.
fn read_folder(dir: &Path, origin: &Origin, diags: &Diags) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            origin.error(diags, None, "", format!("cannot read folder: {e}"));
            return out;
        }
    };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(key) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            origin.error(
                diags,
                None,
                "",
                format!("{}: file name is not UTF-8", path.display()),
            );
            continue;
        };
        if key.starts_with("..") {
            continue;
        }
        if path.is_dir() {
            origin.warn(
                diags,
                None,
                &key,
                "a folder inside a secret or config map folder; ignored",
            );
            continue;
        }
        if !valid_key(&key) {
            origin.error(
                diags,
                None,
                &key,
                "invalid key: use letters, digits, '-', '_' and '.'",
            );
            continue;
        }
        match fs::read(&path) {
            Ok(bytes) => {
                out.insert(key, bytes);
            }
            Err(e) => origin.error(
                diags,
                None,
                &key,
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
    out
}

fn folder_name(dir: &Path) -> Located<String> {
    Located {
        value: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        line: 0,
        path: String::new(),
    }
}

pub(crate) fn read_secret_folder(dir: &Path, diags: &Diags) -> RawSecret {
    let name = folder_name(dir);
    let origin = Origin::new(dir, None, "Secret", &name.value);
    let data = read_folder(dir, &origin, diags);
    RawSecret { origin, name, data }
}

pub(crate) fn read_config_map_folder(dir: &Path, diags: &Diags) -> RawConfigMap {
    let name = folder_name(dir);
    let origin = Origin::new(dir, None, "ConfigMap", &name.value);
    let mut data = BTreeMap::new();
    for (key, bytes) in read_folder(dir, &origin, diags) {
        match String::from_utf8(bytes) {
            Ok(s) => {
                data.insert(key, s);
            }
            Err(_) => origin.error(
                diags,
                None,
                &key,
                "not UTF-8 text: edgemq config maps hold text (PEM certificates)",
            ),
        }
    }
    RawConfigMap { origin, name, data }
}
