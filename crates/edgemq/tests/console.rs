//! The web console in a real headless Chromium: runs `python3 -m pytest
//! tests/python/test_console.py` (Selenium driving Debian's `chromium` through
//! `/usr/bin/chromedriver`, paho-mqtt 2.x clients) with `EDGEMQ_BIN` set to the binary Cargo
//! built, prints pytest's output and fails if pytest does.
//!
//! Like the paho suite it fails (never skips) when something is missing; `scripts/test`
//! installs `chromium chromium-driver` with apt-get and `selenium` with pip.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::Path;

use edgemq_testkit::python::workspace_root;
use std::process::Command;

const INSTALL: &str = "install them with: apt-get install chromium chromium-driver && \
                       python3 -m pip install selenium \"paho-mqtt>=2,<3\" pytest (or run scripts/test)";

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
    require_deps(&workspace_root());
    let args = ["tests/python/test_console.py"];
    edgemq_testkit::python::pytest(&args, env!("CARGO_BIN_EXE_edgemq"), "console test");
}

/// `GET path` on `addr` with `token` as the bearer: (status, headers lower-cased, body).
fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let r = edgemq_testkit::http::request(addr, "GET", path, token);
    (r.status, r.headers.to_ascii_lowercase(), r.body)
}

/// Without a browser: the shell is served (with its CSP) even when a token is set, since the
/// page must load to ask for it; the data behind it is not.
#[test]
fn console_shell_is_open_and_data_needs_the_token() {
    use edgemq_testkit::broker::Broker;
    if !Broker::edgemq_only() {
        return;
    }
    const TOKEN: &str = "console-shell-token-0123456789";
    let dir = edgemq_testkit::broker::fresh_data_dir();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let b = Broker::start_with(&[
        "--in-memory",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    let admin = b.admin_addr("admin");
    let (status, head, body) = http_get(admin, "/", None);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(body.contains("<title>edgemq console</title>"));
    let (status, head, body) = http_get(admin, "/console/app.js", None);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("sessionStorage"));

    let (status, _, _) = http_get(admin, "/api/v1/listeners", None);
    assert_eq!(status, 401);
    let (status, _, body) = http_get(admin, "/api/v1/listeners", Some(TOKEN));
    assert_eq!(status, 200);
    let mqtt = b.listener_addr("default");
    let listeners: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listeners["listeners"][0]["name"], "default", "{listeners}");
    assert_eq!(listeners["listeners"][0]["address"], mqtt.to_string());
    let _ = std::fs::remove_dir_all(dir);
}
