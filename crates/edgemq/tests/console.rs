//! The web console in a real headless Chromium: runs `python3 -m pytest
//! tests/python/test_console.py` (Selenium driving Debian's `chromium` through
//! `/usr/bin/chromedriver`, paho-mqtt 2.x clients) with `EDGEMQ_BIN` set to the binary Cargo
//! built, prints pytest's output and fails if pytest does.
//!
//! Like the paho suite it fails (never skips) when something is missing; `scripts/test`
//! installs `chromium chromium-driver` with apt-get and `selenium` with pip.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "install them with: apt-get install chromium chromium-driver && \
                       python3 -m pip install selenium \"paho-mqtt>=2,<3\" pytest (or run scripts/test)";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Fail with an actionable message unless the browser, its driver and the Python packages
/// are there.
fn require_deps(root: &Path) {
    for (var, default) in [
        ("EDGEMQ_CHROMIUM", "/usr/bin/chromium"),
        ("EDGEMQ_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ] {
        let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
        assert!(
            Path::new(&path).exists(),
            "{path} is missing: the console test needs Chromium and chromedriver; {INSTALL}"
        );
    }
    let check = "import pytest, selenium, paho.mqtt; print('selenium', selenium.__version__)";
    let out = Command::new("python3")
        .args(["-c", check])
        .current_dir(root)
        .output()
        .expect("python3 is required for the console test");
    assert!(
        out.status.success(),
        "the console test cannot run: {}; {INSTALL}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn console_in_headless_chromium() {
    let root = workspace_root();
    require_deps(&root);
    let out = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "tests/python/test_console.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEsxX",
        ])
        .current_dir(&root)
        .env("EDGEMQ_BIN", env!("CARGO_BIN_EXE_edgemq"))
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
        "the console test failed (pytest exit status {:?}); its output is above",
        out.status.code()
    );
}
