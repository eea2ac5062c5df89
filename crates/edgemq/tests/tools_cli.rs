//! `edgemq password-hash` and `edgemq certs`, run as an operator would, checked with the
//! real `openssl` command and edgemq-security's verifier.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::Path;
use std::process::{Command, Stdio};

use edgemq_security::password::PasswordHash;
use edgemq_testkit::broker::run_with_timeout;

const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn edgemq(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_edgemq"))
            .args(args)
            .current_dir(dir),
        WAIT,
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = edgemq(dir, args);
    assert_eq!(code, Some(0), "edgemq {args:?}: {out}{err}");
    out
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) =
        run_with_timeout(Command::new("openssl").args(args).current_dir(dir), WAIT);
    assert_eq!(code, Some(0), "openssl {args:?}: {out}{err}");
    out
}

/// The hash from `{"hash": "…"}`.
fn hash_of(json: &str) -> String {
    let rest = json.trim().strip_prefix("{\"hash\": \"").unwrap();
    rest.strip_suffix("\"}").unwrap().to_string()
}

#[test]
fn password_hash_prints_the_aio_json_and_the_hash_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let a = hash_of(&ok(dir.path(), &["password-hash", "--phrase", "s3cret"]));
    assert!(a.starts_with("$pbkdf2-sha512$i=210000,l=64$"), "{a}");
    let parsed: PasswordHash = a.parse().unwrap();
    assert!(parsed.verify(b"s3cret"));
    assert!(!parsed.verify(b"s3cret!"));
    let b = hash_of(&ok(dir.path(), &["password-hash", "--phrase", "s3cret"]));
    assert_ne!(a, b, "a fresh salt each time");

    let c = hash_of(&ok(
        dir.path(),
        &["password-hash", "--phrase", "x", "--iterations", "1000"],
    ));
    assert!(c.starts_with("$pbkdf2-sha512$i=1000,l=64$"), "{c}");

    // From standard input, so the phrase stays out of the shell history.
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgemq"))
        .args(["password-hash", "--phrase", "-", "--iterations", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let d: PasswordHash = hash_of(&String::from_utf8(out.stdout).unwrap())
        .parse()
        .unwrap();
    assert!(d.verify(b"from-stdin"));

    let (code, _, err) = edgemq(
        dir.path(),
        &["password-hash", "--phrase", "x", "--iterations", "0"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("iterations"), "{err}");
}

#[test]
fn certs_make_the_walkthrough_chain_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "certs",
            "root",
            "--name",
            "AIO42 Root CA",
            "--out",
            "pki/root",
        ],
    );
    ok(
        d,
        &[
            "certs",
            "intermediate",
            "--name",
            "AIO42 Intermediate CA 1",
            "--ca",
            "pki/root",
            "--out",
            "pki/int",
        ],
    );
    ok(
        d,
        &[
            "certs",
            "server",
            "--name",
            "mqtts-endpoint",
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--ca",
            "pki/int",
            "--out",
            "pki/server",
            "--bundle",
        ],
    );
    for client in ["client42a", "client42b"] {
        ok(
            d,
            &[
                "certs",
                "client",
                "--name",
                client,
                "--ca",
                "pki/int",
                "--out",
                &format!("pki/{client}"),
                "--bundle",
            ],
        );
    }
    let verify = |cert: &str, purpose: &str| {
        openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "pki/root.crt",
                "-untrusted",
                "pki/int.crt",
                "-purpose",
                purpose,
                cert,
            ],
        )
    };
    assert!(verify("pki/server.crt", "sslserver").contains("OK"));
    assert!(verify("pki/client42a.crt", "sslclient").contains("OK"));
    let server = openssl(d, &["x509", "-in", "pki/server.crt", "-noout", "-text"]);
    assert!(
        server.contains("IP Address:127.0.0.1") && server.contains("DNS:localhost"),
        "{server}"
    );
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    let int = openssl(d, &["x509", "-in", "pki/int.crt", "-noout", "-text"]);
    assert!(
        int.contains("CA:TRUE") && int.contains("Certificate Sign"),
        "{int}"
    );
    let client = openssl(d, &["x509", "-in", "pki/client42a.crt", "-noout", "-text"]);
    assert!(client.contains("TLS Web Client Authentication"), "{client}");
    assert!(client.contains("Subject: CN = client42a"), "{client}");
    // --bundle: leaf + intermediate.
    let bundle = std::fs::read_to_string(d.join("pki/client42a.crt")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    #[cfg(unix)]
    for key in ["root", "int", "server", "client42a"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.join(format!("pki/{key}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}.key");
    }
    // Existing files are never overwritten without --force.
    let (code, _, err) = edgemq(
        d,
        &["certs", "root", "--name", "again", "--out", "pki/root"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("pki/root.crt exists"), "{err}");
    ok(
        d,
        &[
            "certs", "root", "--name", "again", "--out", "pki/root", "--force",
        ],
    );
}

#[test]
fn key_types_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (kt, want) in [
        ("ec384", "NIST CURVE: P-384"),
        ("ed25519", "ED25519"),
        ("rsa2048", "(2048 bit)"),
    ] {
        ok(
            d,
            &[
                "certs",
                "root",
                "--name",
                kt,
                "--out",
                kt,
                "--key-type",
                kt,
                "--days",
                "2",
            ],
        );
        let text = openssl(d, &["x509", "-in", &format!("{kt}.crt"), "-noout", "-text"]);
        assert!(text.contains(want), "{kt}: {text}");
    }
    // --days 2: notAfter about two days from now (checked by openssl, not by a clock).
    let (code, _, _) = run_with_timeout(
        Command::new("openssl")
            .args([
                "x509",
                "-in",
                "ec384.crt",
                "-noout",
                "-checkend",
                &(86_400 * 2 - 3600).to_string(),
            ])
            .current_dir(d),
        WAIT,
    );
    assert_eq!(code, Some(0), "valid for at least 2 days minus an hour");
    let (code, _, _) = run_with_timeout(
        Command::new("openssl")
            .args([
                "x509",
                "-in",
                "ec384.crt",
                "-noout",
                "-checkend",
                &(86_400 * 2 + 3600).to_string(),
            ])
            .current_dir(d),
        WAIT,
    );
    assert_eq!(code, Some(1), "not valid for 2 days plus an hour");
    let (code, _, err) = edgemq(
        d,
        &[
            "certs",
            "root",
            "--name",
            "x",
            "--out",
            "x",
            "--key-type",
            "dsa",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown key algorithm"), "{err}");
}

#[test]
fn inspect_shows_the_chain_and_explains_a_v1_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["certs", "root", "--name", "Root", "--out", "root"]);
    ok(
        d,
        &[
            "certs",
            "intermediate",
            "--name",
            "Int",
            "--ca",
            "root",
            "--out",
            "int",
        ],
    );
    ok(
        d,
        &[
            "certs",
            "server",
            "--name",
            "srv",
            "--san",
            "127.0.0.1",
            "--ca",
            "int",
            "--out",
            "srv",
            "--bundle",
        ],
    );
    let out = ok(d, &["certs", "inspect", "srv.crt"]);
    assert!(
        out.contains("subject:   CN=srv") && out.contains("subject:   CN=Int"),
        "{out}"
    );
    assert!(out.contains("IP:127.0.0.1"), "{out}");
    assert!(out.contains("extKeyUsage: serverAuth"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    // The field report's recipe: an intermediate made by `openssl x509 -req` without
    // extensions is X.509 v1 and cannot be a CA.
    let sh = |cmd: &str| {
        let (code, out, err) =
            run_with_timeout(Command::new("bash").args(["-c", cmd]).current_dir(d), WAIT);
        assert_eq!(code, Some(0), "{cmd}: {out}{err}");
    };
    sh("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout r.key -out r.crt -days 30 -subj /CN=root");
    sh("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=int -keyout i.key -out i.csr");
    sh("openssl x509 -req -in i.csr -CA r.crt -CAkey r.key -CAcreateserial -days 30 -out i.crt");
    let out = ok(d, &["certs", "inspect", "i.crt"]);
    assert!(out.contains("version:   X.509 v1"), "{out}");
    assert!(out.contains("warning: X.509 v1 certificate without basicConstraints CA:TRUE: it cannot act as a CA (OpenSSL 3 says \"invalid CA certificate\"). Re-issue it with basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign,cRLSign"), "{out}");
    let (code, _, err) = edgemq(d, &["certs", "inspect", "missing.crt"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.crt"), "{err}");
}
