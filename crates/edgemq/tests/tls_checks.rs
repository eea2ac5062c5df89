//! Server TLS material is checked where it is loaded (`check`, `serve`, reload), failed
//! client handshakes are logged with the client's reason, and `ca export` never invents a
//! CA. Certificates are made here with the openssl commands operators copy (the seed
//! walkthrough's recipe included) and checked with real clients (mosquitto_pub,
//! openssl s_client).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::{Path, PathBuf};
use std::process::Command;

use edgemq_testkit::broker::{edgemq, free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::pki::{sh, OpensslCa, EC};

/// The seed walkthrough's server PKI, made with its openssl commands in `dir`:
/// "AIO42 Root CA" → "AIO42 Intermediate CA 1" → `mqtts-endpoint` (SAN `san`).
/// `proper_intermediate: false` is the recipe exactly as published: `openssl x509 -req`
/// without extensions makes the intermediate an X.509 v1 certificate, which cannot be a CA.
struct ServerPki {
    ca: OpensslCa,
}

impl ServerPki {
    fn openssl(dir: &Path, proper_intermediate: bool) -> ServerPki {
        let ca = OpensslCa::new(
            dir,
            "aio42",
            "AIO42 Root CA",
            "AIO42 Intermediate CA 1",
            proper_intermediate,
        );
        ServerPki { ca }
    }

    /// `NAME.crt` / `NAME.key` signed by the intermediate, with `subjectAltName=SAN`, valid
    /// for `days`; `NAME-chain.crt` = leaf + intermediate (what tls.crt holds).
    fn leaf(&self, name: &str, san: &str, days: u32) {
        let ext = format!("subjectAltName={san}");
        self.ca.leaf(name, Some(&ext), days, "chain");
    }

    /// A leaf whose validity ended in 2020 (`openssl ca` takes dates), chain as above.
    fn expired_leaf(&self, name: &str) {
        let san = " -addext subjectAltName=IP:127.0.0.1";
        self.ca.expired_leaf(name, true, san, "chain");
    }

    fn read(&self, file: &str) -> String {
        self.ca.read(file)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.ca.path(file)
    }
}

/// A ClusterIp listener (bound to 127.0.0.1) with one manual-TLS port and a plain port;
/// the secret `broker-server-cert` holds `chain` and `key`. Returns (tls port, plain port).
fn manual_config(d: &Dirs, chain: &str, key: &str) -> (u16, u16) {
    let (tls, plain) = (free_port(), free_port());
    write_secret(d, chain, key);
    d.write(
        "listeners.yaml",
        &[
            listener(
                "loadbalancer-listener",
                "ClusterIp",
                &manual_tls_port(tls, "broker-server-cert"),
            ),
            listener("plain", "ClusterIp", &plain_port(plain)),
        ]
        .join("---\n"),
    );
    (tls, plain)
}

fn write_secret(d: &Dirs, chain: &str, key: &str) {
    // Key first: the watcher must never see a new tls.crt with the old key.
    d.write("secrets/broker-server-cert/tls.key", key);
    d.write("secrets/broker-server-cert/tls.crt", chain);
}

fn check(d: &Dirs) -> (Option<i32>, String) {
    let (code, out, err) = edgemq(&["check", "--config", d.config.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

/// `serve` with this configuration must refuse to start: exit 1 and `needle` on stderr.
fn serve_refuses(d: &Dirs, needle: &str) -> String {
    let (code, all) = d.serve_to_exit();
    assert_eq!(code, Some(1), "serve did not refuse to start:\n{all}");
    assert!(all.contains(needle), "serve did not say {needle:?}:\n{all}");
    assert!(!all.contains("listening"), "a port was opened:\n{all}");
    all
}

/// mosquitto_pub over TLS to 127.0.0.1:`port` trusting `cafile`.
fn tls_publish(port: u16, cafile: &Path) -> (Option<i32>, String) {
    publish(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "tls/checks",
        "hello",
        &["--cafile", cafile.to_str().unwrap()],
    )
}

// =======================================================================================
// Expired and not-yet-valid server certificates
// =======================================================================================

#[test]
fn an_expired_manual_certificate_fails_check_and_serve_refuses_to_start() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.expired_leaf("mqtts-endpoint");
    manual_config(
        &d,
        &pki.read("mqtts-endpoint-chain.crt"),
        &pki.read("mqtts-endpoint.key"),
    );
    let expected = "tls.crt: the server certificate \"CN=mqtts-endpoint\" expired at 2020-02-01T00:00:00Z: every client refuses it";
    let (code, out) = check(&d);
    assert_eq!(
        code,
        Some(1),
        "check accepted an expired certificate:\n{out}"
    );
    assert!(out.contains(expected), "{out}");
    assert!(
        out.contains("spec.ports[0].tls.manual.secretRef: port")
            && out.contains("secret \"broker-server-cert\"")
            && out.contains("replace tls.crt and tls.key"),
        "the message names the field, the secret and the fix:\n{out}"
    );
    serve_refuses(&d, expected);
}

#[test]
fn a_not_yet_valid_manual_certificate_fails_check() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    // `openssl ca` with a start date in 2099.
    sh(&pki.ca.dir, "touch index.txt && echo 1000 > serial && printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\nserial=serial\\ndefault_md=sha256\\npolicy=p\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > ca.cnf");
    sh(&pki.ca.dir, &format!("openssl req -new {EC} -keyout future.key -out future.csr -subj '/CN=future' -addext subjectAltName=IP:127.0.0.1"));
    sh(&pki.ca.dir, "openssl ca -batch -config ca.cnf -cert aio42_int_ca.crt -keyfile aio42_int_ca.key -in future.csr -out future.crt -startdate 20990101000000Z -enddate 20991231000000Z -notext && cat future.crt aio42_int_ca.crt > future-chain.crt");
    manual_config(&d, &pki.read("future-chain.crt"), &pki.read("future.key"));
    let (code, out) = check(&d);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "the server certificate \"CN=future\" is not valid before 2099-01-01T00:00:00Z"
        ),
        "{out}"
    );
    serve_refuses(&d, "is not valid before 2099-01-01T00:00:00Z");
}

#[test]
fn a_reload_with_an_expired_certificate_keeps_the_running_one() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.leaf("good", "IP:127.0.0.1", 365);
    pki.expired_leaf("old");
    let (tls, _) = manual_config(&d, &pki.read("good-chain.crt"), &pki.read("good.key"));
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let root = pki.path("aio42_root_ca.crt");
    let (code, out) = tls_publish(tls, &root);
    assert_eq!(code, Some(0), "{out}");

    write_secret(&d, &pki.read("old-chain.crt"), &pki.read("old.key"));
    assert!(
        b.wait_for_log("the running configuration stays", WAIT),
        "the reload was not rejected:\n{}",
        b.log()
    );
    assert!(
        b.log()
            .contains("the server certificate \"CN=old\" expired at 2020-02-01T00:00:00Z"),
        "{}",
        b.log()
    );
    // The port still serves the valid certificate.
    let (code, out) = tls_publish(tls, &root);
    assert_eq!(
        code,
        Some(0),
        "the expired certificate was swapped in: {out}"
    );
}

#[test]
fn a_certificate_expiring_within_14_days_is_a_warning() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.leaf("soon", "IP:127.0.0.1", 7);
    let (tls, _) = manual_config(&d, &pki.read("soon-chain.crt"), &pki.read("soon.key"));
    let (code, out) = check(&d);
    assert_eq!(code, Some(0), "{out}");
    let expected =
        "warning: BrokerListener/loadbalancer-listener: spec.ports[0].tls.manual.secretRef";
    assert!(out.contains(expected), "{out}");
    assert!(
        out.contains("the server certificate \"CN=soon\" expires at ")
            && out.contains("(6 days left)"),
        "{out}"
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    assert!(
        b.log().contains("WARN") && b.log().contains("(6 days left)"),
        "{}",
        b.log()
    );
    let (code, out) = tls_publish(tls, &pki.path("aio42_root_ca.crt"));
    assert_eq!(code, Some(0), "{out}");
}

// =======================================================================================
// Chains
// =======================================================================================

/// The seed's recipe: the intermediate is X.509 v1. Today clients fail with
/// "certificate verify failed" while the broker logged `TLS certificate loaded`; now the
/// configuration is refused with the fix, and the corrected recipe serves mosquitto_pub.
#[test]
fn the_seed_recipe_v1_intermediate_is_refused_and_the_fixed_recipe_serves() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let seed = ServerPki::openssl(&d.config.parent().unwrap().join("seed"), false);
    seed.leaf("mqtts-endpoint", "IP:127.0.0.1", 365);
    // What clients make of it (openssl verify stands in for every OpenSSL-based client).
    let (code, out, err) = run_with_timeout(
        Command::new("openssl")
            .args(["verify", "-CAfile", "aio42_root_ca.crt", "-untrusted"])
            .args(["aio42_int_ca.crt", "mqtts-endpoint.crt"])
            .current_dir(&seed.ca.dir),
        WAIT,
    );
    assert_ne!(code, Some(0), "openssl accepted the chain: {out}{err}");
    assert!(
        format!("{out}{err}").contains("invalid CA certificate"),
        "{out}{err}"
    );

    manual_config(
        &d,
        &seed.read("mqtts-endpoint-chain.crt"),
        &seed.read("mqtts-endpoint.key"),
    );
    let expected = "tls.crt: certificate 2 in the chain (\"CN=AIO42 Intermediate CA 1\"), the issuer of certificate 1, is an X.509 v1 certificate without basicConstraints CA:TRUE: it cannot act as a CA (OpenSSL 3 says \"invalid CA certificate\"). Re-issue it with basicConstraints=critical,CA:TRUE and keyUsage=keyCertSign,cRLSign";
    let (code, out) = check(&d);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(expected), "{out}");
    serve_refuses(&d, expected);

    // The corrected recipe loads, checks clean and serves a real client.
    let fixed = ServerPki::openssl(&d.config.parent().unwrap().join("fixed"), true);
    fixed.leaf("mqtts-endpoint", "IP:127.0.0.1", 365);
    let (tls, _) = manual_config(
        &d,
        &fixed.read("mqtts-endpoint-chain.crt"),
        &fixed.read("mqtts-endpoint.key"),
    );
    let (code, out) = check(&d);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
    let _b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let (code, out) = tls_publish(tls, &fixed.path("aio42_root_ca.crt"));
    assert_eq!(code, Some(0), "{out}");
}

/// The intermediate was re-created (same name, new key) after the server certificate was
/// issued: the chain names the right issuer, but its key did not sign the leaf.
#[test]
fn a_chain_whose_issuer_has_another_key_is_refused() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.leaf("mqtts-endpoint", "IP:127.0.0.1", 365);
    // Re-create the intermediate with a new key, then serve the old leaf with it.
    sh(&pki.ca.dir, &format!("openssl req -new {EC} -keyout aio42_int_ca.key -out aio42_int_ca.csr -subj '/CN=AIO42 Intermediate CA 1' && openssl x509 -req -in aio42_int_ca.csr -CA aio42_root_ca.crt -CAkey aio42_root_ca.key -CAcreateserial -out aio42_int_ca.crt -days 365 -extfile <(printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n') && cat mqtts-endpoint.crt aio42_int_ca.crt > stale-chain.crt"));
    manual_config(
        &d,
        &pki.read("stale-chain.crt"),
        &pki.read("mqtts-endpoint.key"),
    );
    let expected = "tls.crt: certificate 2 in the chain is named \"CN=AIO42 Intermediate CA 1\" like the issuer of certificate 1 (\"CN=mqtts-endpoint\") but its key did not sign it";
    let (code, out) = check(&d);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(expected), "{out}");
    serve_refuses(&d, expected);
}

/// tls.crt holds the leaf followed by a CA that is not its issuer (here: the root, the
/// intermediate left out). Clients trusting only the root fail; the broker warns.
#[test]
fn a_chain_that_does_not_end_in_the_issuer_is_a_warning_that_explains_the_client_failure() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.leaf("mqtts-endpoint", "IP:127.0.0.1", 365);
    sh(
        &pki.ca.dir,
        "cat mqtts-endpoint.crt aio42_root_ca.crt > wrong-chain.crt",
    );
    let (tls, _) = manual_config(
        &d,
        &pki.read("wrong-chain.crt"),
        &pki.read("mqtts-endpoint.key"),
    );
    let expected = "tls.crt: the chain does not end in the issuer of certificate 1 (\"CN=mqtts-endpoint\" is issued by \"CN=AIO42 Intermediate CA 1\", but certificate 2 is \"CN=AIO42 Root CA\")";
    let (code, out) = check(&d);
    assert_eq!(code, Some(0), "a warning, not an error:\n{out}");
    assert!(out.contains("warning: ") && out.contains(expected), "{out}");
    // `certs inspect`, which the message points to, says the same.
    let (code, out, err) = edgemq(&[
        "certs",
        "inspect",
        pki.path("wrong-chain.crt").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("chain warning: the chain does not end in the issuer of certificate 1"),
        "{out}"
    );

    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    assert!(b.log().contains(expected), "{}", b.log());
    // The client that trusts only the root fails, and the log line says why.
    let (code, out) = tls_publish(tls, &pki.path("aio42_root_ca.crt"));
    assert_ne!(code, Some(0), "{out}");
    assert!(
        b.wait_for_log("the client sent alert UnknownCA", WAIT),
        "{}",
        b.log()
    );
}

// =======================================================================================
// SANs against the bound address
// =======================================================================================

#[test]
fn sans_that_do_not_cover_the_bound_address_are_a_warning() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    // The walkthrough's SAN is the node's LAN address; ClusterIp binds 127.0.0.1.
    pki.leaf("mqtts-endpoint", "IP:192.168.2.196,DNS:n013edge.local", 365);
    let (tls, _) = manual_config(
        &d,
        &pki.read("mqtts-endpoint-chain.crt"),
        &pki.read("mqtts-endpoint.key"),
    );
    let expected = "tls.crt: the port binds 127.0.0.1 but the server certificate's SANs (DNS:n013edge.local, IP:192.168.2.196) do not cover it";
    let (code, out) = check(&d);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(expected), "{out}");
    assert!(out.contains("IP:127.0.0.1 or DNS:localhost"), "{out}");

    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    assert!(b.log().contains(expected), "{}", b.log());
    // mosquitto_pub to 127.0.0.1 indeed fails host name verification (it sends alert
    // InternalError), and so does openssl s_client (alert BadCertificate); the log says why.
    let (code, out) = tls_publish(tls, &pki.path("aio42_root_ca.crt"));
    assert_ne!(code, Some(0), "{out}");
    assert!(
        b.wait_for_log("received fatal alert: InternalError (OpenSSL-based clients such as mosquitto_pub send InternalError when the server certificate does not name the host they connect to", WAIT),
        "{}",
        b.log()
    );
    let (_, out, err) = run_with_timeout(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
            .args(["-verify_ip", "127.0.0.1", "-verify_return_error", "-CAfile"])
            .arg(pki.path("aio42_root_ca.crt")),
        WAIT,
    );
    assert!(
        format!("{out}{err}").contains("IP address mismatch"),
        "{out}{err}"
    );
    assert!(
        b.wait_for_log("received fatal alert: BadCertificate (the client rejected the server certificate: usually the address it connects to is not among the certificate's SANs", WAIT),
        "{}",
        b.log()
    );
}

// =======================================================================================
// Failed handshakes in the log
// =======================================================================================

#[test]
fn failed_handshakes_are_logged_with_the_clients_reason() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let pki = ServerPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    pki.leaf("mqtts-endpoint", "IP:127.0.0.1", 365);
    let other = ServerPki::openssl(&d.config.parent().unwrap().join("other"), true);
    let (tls, _) = manual_config(
        &d,
        &pki.read("mqtts-endpoint-chain.crt"),
        &pki.read("mqtts-endpoint.key"),
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);

    // openssl s_client trusting another root: it sends alert UnknownCA.
    let (_, out, err) = run_with_timeout(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
            .args(["-verify_return_error", "-CAfile"])
            .arg(other.path("aio42_root_ca.crt")),
        WAIT,
    );
    assert!(
        format!("{out}{err}").contains("unable to get local issuer certificate"),
        "{out}{err}"
    );
    assert!(
        b.wait_for_log("received fatal alert: UnknownCA (the client sent alert UnknownCA: it cannot chain the server certificate to a CA it trusts", WAIT),
        "{}",
        b.log()
    );

    // A plain MQTT client on the TLS port.
    let (code, out) = publish(
        std::net::SocketAddr::from(([127, 0, 0, 1], tls)),
        "tls/plain",
        "x",
        &[],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(
        b.wait_for_log(
            "(the client does not speak TLS: a plain MQTT client on a TLS port?",
            WAIT
        ),
        "{}",
        b.log()
    );
}

// =======================================================================================
// ca export
// =======================================================================================

#[test]
fn ca_export_never_creates_a_ca() {
    let root = tempfile::tempdir().unwrap();
    for data in [root.path().join("missing"), root.path().to_path_buf()] {
        let (code, out, err) = edgemq(&["ca", "export", "--data-dir", data.to_str().unwrap()]);
        assert_eq!(
            code,
            Some(1),
            "ca export succeeded in {}: {out}{err}",
            data.display()
        );
        assert!(out.is_empty(), "a CA was printed: {out}");
        assert!(
            err.contains(&format!("no built-in CA in {}", data.display()))
                && err.contains("serve --data-dir"),
            "{err}"
        );
        assert!(
            !data.join("ca").exists(),
            "a CA was created in {}",
            data.display()
        );
    }
    if !Broker::edgemq_only() {
        return;
    }
    // Once `serve` has made the CA, export prints exactly that one.
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "listeners.yaml",
        &listener("secure", "ClusterIp", &auto_tls_port(port, "")),
    );
    let _b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let (code, out, err) = edgemq(&["ca", "export", "--data-dir", d.data.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        std::fs::read_to_string(d.data.join("ca/ca.crt")).unwrap()
    );
}

/// The built-in CA cannot be written: the error names the data dir, not the temporary
/// directory the CA is written through.
#[test]
fn a_data_dir_that_cannot_hold_the_ca_is_named_in_the_error() {
    if !Broker::edgemq_only() {
        return;
    }
    // World-readable folders (the broker may run as another user), removed at the end.
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("config");
    let data = root.path().join("f-ro");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    std::fs::write(
        config.join("listeners.yaml"),
        listener("secure", "ClusterIp", &auto_tls_port(port, "")),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for dir in [root.path(), &config] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        config.join("listeners.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores permissions: run the broker as nobody then.
    let (_, uid, _) = run_with_timeout(Command::new("id").arg("-u"), WAIT);
    let as_root = uid.trim() == "0";
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_edgemq"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_edgemq"))
    };
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap(), "--in-memory"]);
    let (code, out, err) = run_with_timeout(&mut cmd, WAIT);
    let all = format!("{out}{err}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, Some(1), "{all}");
    assert!(
        !all.contains(".ca.tmp"),
        "a temporary path was named:\n{all}"
    );
    assert_eq!(
        all.matches("Permission denied").count(),
        1,
        "the cause is said once:\n{all}"
    );
    assert!(
        all.contains(&format!(
            "cannot create the built-in CA in {}: Permission denied",
            data.join("ca").display()
        )) && all.contains(&format!("make {} writable by the broker", data.display())),
        "{all}"
    );
}
