//! The Python paho-mqtt 2.x suite (`tests/python`, MQTT 3.1.1 and 5.0) against the real
//! `edgemq` binary: runs `python3 -m pytest tests/python -q -p no:cacheprovider` from the
//! workspace root with `EDGEMQ_BIN` set to the binary Cargo built, prints pytest's output and
//! fails if pytest does. `test_console.py` (a browser test) is left to `console.rs`.
//!
//! It fails (never skips) when python3, pytest or paho-mqtt 2.x is missing; CI installs them
//! with `python3 -m pip install "paho-mqtt>=2,<3" pytest` (see `.ci/run`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::Path;

use edgemq_testkit::python::workspace_root;
use std::process::Command;

/// Run `python3 <args>`; `None` if python3 itself cannot be started.
fn python(args: &[&str], root: &Path) -> Option<std::process::Output> {
    Command::new("python3")
        .args(args)
        .current_dir(root)
        .output()
        .ok()
}

/// Fail with an actionable message unless python3, pytest and paho-mqtt 2.x are importable.
fn require_python_deps(root: &Path) {
    const INSTALL: &str = "install them with: python3 -m pip install \"paho-mqtt>=2,<3\" pytest";
    let Some(out) = python(&["--version"], root) else {
        panic!("python3 is required for the paho-mqtt suite but could not be run; {INSTALL}");
    };
    assert!(
        out.status.success(),
        "python3 --version failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = "import sys\n\
        try:\n    import pytest\n\
        except ImportError:\n    sys.exit('pytest is not installed')\n\
        try:\n    import paho.mqtt\n\
        except ImportError:\n    sys.exit('paho-mqtt is not installed')\n\
        v = paho.mqtt.__version__\n\
        if v.split('.')[0] != '2':\n    sys.exit('paho-mqtt 2.x is required, found ' + v)\n\
        print('pytest', pytest.__version__, 'paho-mqtt', v)\n";
    let out = python(&["-c", check], root).expect("python3");
    assert!(
        out.status.success(),
        "the paho-mqtt suite cannot run: {}{}; {INSTALL}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim(),
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn paho_mqtt_python_suite() {
    let root = workspace_root();
    require_python_deps(&root);
    let args = ["tests/python", "--ignore=tests/python/test_console.py"];
    edgemq_testkit::python::pytest(&args, env!("CARGO_BIN_EXE_edgemq"), "paho-mqtt suite");
}
