//! Running the Python suites (`tests/python`, pytest) against the binary Cargo built.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root, where `tests/python` lives.
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `python3 -m pytest ARGS -q` from the workspace root with `EDGEMQ_BIN` = `edgemq_bin`;
/// prints pytest's output and fails the test (naming `suite`) if pytest does.
pub fn pytest(args: &[&str], edgemq_bin: &str, suite: &str) {
    let out = Command::new("python3")
        .args(["-m", "pytest"])
        .args(args)
        .args(["-q", "-p", "no:cacheprovider", "-rfEsxX"])
        .current_dir(workspace_root())
        .env("EDGEMQ_BIN", edgemq_bin)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("run python3 -m pytest");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        eprintln!("{stderr}");
    }
    assert!(
        out.status.success(),
        "the {suite} failed (pytest exit status {:?}); its output is above",
        out.status.code()
    );
}
