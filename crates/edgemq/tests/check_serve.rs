//! `check` and `serve` agree (issue 18, items 1, 2 and 6): what `check` accepts, `serve`
//! starts; what `serve` refuses or warns about, `check` reports with the same text; security
//! typos fail closed; `authz explain` takes the port a client connects to and fills the
//! principal's values into the patterns it prints.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgemq_security::password::PasswordHash;
use edgemq_testkit::broker::{edgemq, free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::{Dirs, WAIT};

fn check(dir: &Path) -> (Option<i32>, String, String) {
    edgemq(&["check", "--config", dir.to_str().unwrap()])
}

/// The seed's and the README's `default` listener: automatic TLS from the built-in issuer,
/// no `san`.
fn default_listener(port: u16) -> String {
    format!(
        r#"apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: default
spec:
  serviceType: ClusterIp
  serviceName: aio-broker
  ports:
    - port: {port}
      protocol: Mqtt
      tls:
        mode: Automatic
        certManagerCertificateSpec:
          issuerRef:
            group: cert-manager.io
            kind: ClusterIssuer
            name: azure-iot-operations-aio-certificate-issuer
"#
    )
}

#[test]
fn automatic_tls_without_san_passes_check_and_serves_localhost() {
    let d = Dirs::new();
    let port = free_port();
    d.write("listeners.yaml", &default_listener(port));
    let (code, out, err) = check(&d.config);
    assert_eq!(code, Some(0), "{out}{err}");
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    assert!(
        b.wait_for_log("TLS certificate issued", WAIT),
        "{}",
        b.log()
    );
    assert!(
        b.log().contains(r#"dns=["aio-broker""#) && b.log().contains("127.0.0.1"),
        "{}",
        b.log()
    );
    // A real client that verifies the host name, as the README's does.
    let (_, ca, _) = edgemq(&["ca", "export", "--data-dir", d.data.to_str().unwrap()]);
    let cafile = d.file("ca.crt", &ca);
    for host in ["localhost", "127.0.0.1"] {
        let (code, out, err) = run_with_timeout(
            Command::new("mosquitto_pub").args([
                "-h",
                host,
                "-p",
                &port.to_string(),
                "--cafile",
                cafile.to_str().unwrap(),
                "-t",
                "t",
                "-m",
                "hello",
            ]),
            WAIT,
        );
        assert_eq!(code, Some(0), "{host}: {out}{err}");
    }
}

fn password_config(d: &Dirs, port: u16, hash: &str) {
    d.write(
        "config.yaml",
        &format!(
            r#"apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: l
spec:
  ports:
    - port: {port}
      authenticationRef: passwords
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerAuthentication
metadata:
  name: passwords
spec:
  authenticationMethods:
    - method: UsernamePassword
      usernamePasswordSettings:
        secretRef: passwords-db
"#
        ),
    );
    d.write(
        "secrets/passwords-db/passwords.toml",
        &format!("[client1]\npassword = \"{hash}\"\n"),
    );
}

#[test]
fn password_hashes_serve_refuses_are_refused_by_check() {
    let good = PasswordHash::new(b"pw", 1000).unwrap().to_phc();
    let parts: Vec<&str> = good.split('$').collect();
    let cases = [
        (
            format!("$pbkdf2-sha512$i=0,l=64${}${}", parts[3], parts[4]),
            "password: iterations must be between 1 and 10,000,000",
        ),
        (
            format!("$pbkdf2-sha512$i=1000,l=64$!!notbase64!!${}", parts[4]),
            "password: salt or hash is not standard base64 without padding",
        ),
        (
            format!("$pbkdf2-sha512$i=1000,l=32${}${}", parts[3], parts[4]),
            "password: the hash is 64 bytes but l=32",
        ),
    ];
    for (hash, message) in cases {
        let d = Dirs::new();
        password_config(&d, free_port(), &hash);
        refused_alike(&d, &format!(
            "18: BrokerAuthentication/passwords: spec.authenticationMethods[0].usernamePasswordSettings.secretRef: secret \"passwords-db\": passwords.toml: line 2: [client1] {message} (see edgemq password-hash)"
        ));
    }
}

/// `check` exits 1 printing `config.yaml:LINE_AND_MESSAGE`, and `serve` refuses to start
/// printing the same line.
fn refused_alike(d: &Dirs, line_and_message: &str) {
    let expected = format!(
        "{}:{line_and_message}",
        d.config.join("config.yaml").display()
    );
    let (code, out, _) = check(&d.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.lines().any(|l| l == expected),
        "{expected}\nnot in:\n{out}"
    );
    let (code, printed) = d.serve_to_exit();
    assert_eq!(code, Some(1), "{printed}");
    assert!(printed.contains(&expected), "{printed}");
}

/// One parser of key algorithm names (edgemq-formats) for resources and the certs tools:
/// it does not trim, so a padded name, which `check` once trimmed and accepted, is refused
/// by both with the same line.
#[test]
fn a_padded_key_algorithm_is_refused_by_check_and_serve_alike() {
    let d = Dirs::new();
    let listener =
        default_listener(free_port()) + "          privateKey: {algorithm: \" Ec384\"}\n";
    d.write("config.yaml", &listener);
    refused_alike(&d, "18: BrokerListener/default: spec.ports[0].tls.certManagerCertificateSpec.privateKey.algorithm: unknown key algorithm \" Ec384\"; expected one of: Ec256, Ec384, Ec521, Ed25519, Rsa2048, Rsa4096, Rsa8192");
}

#[test]
fn in_cluster_token_review_outside_a_cluster_check_warns_what_serve_logs() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return; // inside a cluster the verifier works and neither warns
    }
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "config.yaml",
        &format!(
            r#"apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: l
spec:
  ports:
    - port: {port}
      authenticationRef: default
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerAuthentication
metadata:
  name: default
spec:
  authenticationMethods:
    - method: ServiceAccountToken
      serviceAccountTokenSettings:
        audiences: [aio-internal]
"#
        ),
    );
    let warning = format!(
        "{}:16: warning: BrokerAuthentication/default: spec.authenticationMethods[0]: cannot verify service account tokens: not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set); every token will be refused; set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer",
        d.config.join("config.yaml").display()
    );
    let (code, out, _) = check(&d.config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l == warning), "{out}");
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    assert!(b.wait_for_log(&warning, WAIT), "{}", b.log());
    assert_eq!(
        b.log()
            .matches("cannot verify service account tokens")
            .count(),
        1,
        "{}",
        b.log()
    );
}

#[test]
fn misspelt_security_fields_are_errors_and_serve_refuses_them() {
    let port = free_port();
    let cases: [(&str, String, &str); 3] = [
        (
            "authorizationref in a port",
            format!(
                "  ports:\n    - port: {port}\n      authorizationref: my-authz-policies\n"
            ),
            "spec.ports[0].authorizationref: unknown field (did you mean authorizationRef?); not ignored: ignoring it could leave a port with less authentication or authorization than written",
        ),
        (
            "authenticationref in a port",
            format!("  ports:\n    - port: {port}\n      authenticationref: authn\n"),
            "spec.ports[0].authenticationref: unknown field (did you mean authenticationRef?); not ignored: ignoring it could leave a port with less authentication or authorization than written",
        ),
        (
            "TLS in a port",
            format!("  ports:\n    - port: {port}\n      TLS: {{mode: Automatic}}\n"),
            "spec.ports[0].TLS: unknown field (did you mean tls?); not ignored: ignoring it could leave a port with less authentication or authorization than written",
        ),
    ];
    for (name, ports, message) in cases {
        let d = Dirs::new();
        d.write(
            "l.yaml",
            &format!("apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: BrokerListener\nmetadata:\n  name: l\nspec:\n{ports}"),
        );
        let expected = format!(
            "{}:8: BrokerListener/l: {message}",
            d.config.join("l.yaml").display()
        );
        let (code, out, _) = check(&d.config);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.lines().any(|l| l == expected), "{name}:\n{out}");
        let (code, printed) = d.serve_to_exit();
        assert_eq!(code, Some(1), "{name}: {printed}");
        assert!(printed.contains(&expected), "{name}: {printed}");
    }

    // Inside an authorization policy: a misspelt Connect clientIds would allow any client id.
    let d = Dirs::new();
    d.write(
        "a.yaml",
        &format!(
            r#"apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: l
spec:
  ports:
    - port: {port}
      authorizationRef: authz
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerAuthorization
metadata:
  name: authz
spec:
  authorizationPolicies:
    rules:
      - principals: {{usernames: [u]}}
        brokerResources:
          - method: Connect
            clientids: [sensor-*]
"#
        ),
    );
    let (code, out, _) = check(&d.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(": BrokerAuthorization/authz: spec.authorizationPolicies.rules[0].brokerResources[0].clientids: unknown field (did you mean clientIds?); not ignored"),
        "{out}"
    );

    // Elsewhere an unknown field stays a warning, and so does a harmless one in a port.
    let d = Dirs::new();
    d.write(
        "l.yaml",
        &format!("apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: BrokerListener\nmetadata:\n  name: l\nspec:\n  servicetype: ClusterIp\n  ports:\n    - port: {port}\n      protocl: Mqtt\n"),
    );
    let (code, out, _) = check(&d.config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("spec.servicetype: unknown field, ignored (did you mean serviceType?)"),
        "{out}"
    );
    assert!(
        out.contains("spec.ports[0].protocl: unknown field, ignored (did you mean protocol?)"),
        "{out}"
    );
}

/// The documented denial: with the typo, the port accepted any PUBLISH. Now the broker does
/// not start on it, and with the field spelt right, the PUBLISH is refused.
#[test]
fn a_misspelt_authorization_ref_never_opens_the_port() {
    let port = free_port();
    let policy = |key: &str| {
        format!(
            r#"apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: l
spec:
  ports:
    - port: {port}
      {key}: my-authz-policies
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerAuthorization
metadata:
  name: my-authz-policies
spec:
  authorizationPolicies:
    rules:
      - principals: {{clientIds: [allowed]}}
        brokerResources:
          - method: Connect
          - method: Publish
            topics: ["ok/#"]
"#
        )
    };
    let d = Dirs::new();
    d.write("config.yaml", &policy("authorizationref"));
    let (code, printed) = d.serve_to_exit();
    assert_eq!(code, Some(1), "{printed}");
    d.write("config.yaml", &policy("authorizationRef"));
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "stranger",
            "-t",
            "ok/x",
            "-m",
            "x",
        ]),
        WAIT,
    );
    assert_ne!(code, Some(0), "{out}{err}\n{}", b.log());
}

#[test]
fn resources_of_other_kinds_are_skipped_with_one_warning_each() {
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "export.yaml",
        &format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: aio-broker
spec:
  ports: [{{port: 18883}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: default
---
apiVersion: mqttbroker.iotoperations.azure.com/v1
kind: BrokerListener
metadata:
  name: l
spec:
  ports:
    - port: {port}
"#
        ),
    );
    let (code, out, err) = check(&d.config);
    assert_eq!(code, Some(0), "{out}{err}");
    let file = d.config.join("export.yaml");
    let reads = "(edgemq reads: Broker, BrokerListener, BrokerAuthentication, BrokerAuthorization, Secret, ConfigMap, Issuer, ClusterIssuer, List)";
    for (line, what) in [
        (2, "Service/aio-broker: kind: Service (v1)"),
        (9, "Deployment/web: kind: Deployment (apps/v1)"),
        (14, "DataflowEndpoint/default: kind: DataflowEndpoint (connectivity.iotoperations.azure.com/v1)"),
    ] {
        let expected = format!(
            "{}:{line}: warning: {what} is not a resource edgemq reads; skipped {reads}",
            file.display()
        );
        assert_eq!(out.lines().filter(|l| *l == expected).count(), 1, "{out}");
    }
    // A misspelt broker kind is still an error: it could be a listener's security.
    d.write(
        "typo.yaml",
        "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: BrokerAuthorisation\nmetadata:\n  name: p\n",
    );
    let (code, out, _) = check(&d.config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("BrokerAuthorisation/p: kind: unknown kind \"BrokerAuthorisation\" (did you mean BrokerAuthorization?)"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Every fixture folder: what check accepts, serve starts (every listener).
// ---------------------------------------------------------------------------------------

fn fixture_roots() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![manifest.join("../config/tests/fixtures/examples")];
    let shared = manifest.join("../../../shared/spec/examples");
    if shared.is_dir() {
        roots.push(shared);
    }
    roots
}

/// Folders holding YAML files under `root` (any depth).
fn yaml_folders(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut has_yaml = false;
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            yaml_folders(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            has_yaml = true;
        }
    }
    if has_yaml {
        out.push(root.to_path_buf());
    }
}

/// A free port in the NodePort range on every address.
fn free_node_port(taken: &mut Vec<u16>) -> u16 {
    let start = 30000 + (std::process::id() % 2700) as u16;
    (0..2768u16)
        .map(|i| 30000 + (start - 30000 + i) % 2768)
        .find(|p| !taken.contains(p) && TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .inspect(|p| taken.push(*p))
        .expect("a free NodePort")
}

/// Copy a fixture folder with every `port:` / `nodePort:` moved to a free port.
fn copy_with_free_ports(from: &Path, to: &Path) {
    let mut taken = Vec::new();
    for e in std::fs::read_dir(from).unwrap().filter_map(Result::ok) {
        let p = e.path();
        if !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let trimmed = line.trim_start().trim_start_matches("- ");
            let indent = &line[..line.len() - trimmed.len()];
            let new = if let Some(n) = trimmed.strip_prefix("nodePort:") {
                let _ = n;
                format!("{indent}nodePort: {}", free_node_port(&mut taken))
            } else if trimmed.starts_with("port:") {
                format!("{indent}port: {}", free_port())
            } else {
                line.to_string()
            };
            out.push_str(&new);
            out.push('\n');
        }
        std::fs::write(to.join(e.file_name()), out).unwrap();
    }
}

/// What the fixtures' READMEs say a test adds: every missing config map gets a CA bundle
/// (`client_ca.pem`), every missing secret a server certificate (`tls.crt`, `tls.key`) and
/// a `passwords.toml`.
fn complete(dir: &Path, check_output: &str, pki: &Path) {
    let crt = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    let key = std::fs::read_to_string(pki.join("server.key")).unwrap();
    let ca = std::fs::read_to_string(pki.join("root.crt")).unwrap();
    let hash = PasswordHash::new(b"password", 1000).unwrap().to_phc();
    for (what, folder) in [("config map \"", "configmaps"), ("secret \"", "secrets")] {
        for rest in check_output.split(what).skip(1) {
            let Some((name, tail)) = rest.split_once('"') else {
                continue;
            };
            if !tail.starts_with(" not found") {
                continue;
            }
            let d = dir.join(folder).join(name);
            std::fs::create_dir_all(&d).unwrap();
            if folder == "configmaps" {
                std::fs::write(d.join("client_ca.pem"), &ca).unwrap();
            } else {
                std::fs::write(d.join("tls.crt"), &crt).unwrap();
                std::fs::write(d.join("tls.key"), &key).unwrap();
                std::fs::write(
                    d.join("passwords.toml"),
                    format!("[client1]\npassword = \"{hash}\"\n"),
                )
                .unwrap();
            }
        }
    }
}

#[test]
fn every_fixture_folder_that_check_accepts_starts_every_listener() {
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path().to_str().unwrap();
    let (c1, o1, e1) = edgemq(&[
        "certs",
        "root",
        "--name",
        "Fixture Root CA",
        "--out",
        &format!("{p}/root"),
    ]);
    assert_eq!(c1, Some(0), "{o1}{e1}");
    let (c2, o2, e2) = edgemq(&[
        "certs",
        "server",
        "--name",
        "localhost",
        "--san",
        "localhost",
        "--san",
        "127.0.0.1",
        "--ca",
        &format!("{p}/root"),
        "--out",
        &format!("{p}/server"),
    ]);
    assert_eq!(c2, Some(0), "{o2}{e2}");

    let mut folders = Vec::new();
    for root in fixture_roots() {
        yaml_folders(&root, &mut folders);
    }
    assert!(folders.len() >= 4, "{folders:?}");
    let mut started = 0;
    for folder in &folders {
        // As written, then completed with what the README says a test adds.
        for completed in [false, true] {
            let d = Dirs::new();
            copy_with_free_ports(folder, &d.config);
            if completed {
                let (_, out, _) = check(&d.config);
                complete(&d.config, &out, pki.path());
            }
            let (code, out, err) = check(&d.config);
            let ports: usize = out
                .lines()
                .find_map(|l| {
                    l.rsplit_once(" listeners, ")?
                        .1
                        .strip_suffix(" ports)")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            match code {
                // A folder with no listener (an authentication alone): nothing to start.
                Some(0) if ports == 0 => {}
                Some(0) => {
                    // Every listener port: `listening` lines from the real binary.
                    let b = Broker::start_config(&d.config, &d.data, ports, &[]);
                    assert_eq!(
                        b.listening().len(),
                        ports,
                        "{}: {}",
                        folder.display(),
                        b.log()
                    );
                    started += 1;
                }
                _ => {
                    // Refused by check: serve refuses it too, with the same errors.
                    let (code, printed) = d.serve_to_exit();
                    assert_eq!(
                        code,
                        Some(1),
                        "{}: check said\n{out}{err}\nserve:\n{printed}",
                        folder.display()
                    );
                    for error in out.lines().filter(|l| !l.contains(": warning: ")) {
                        assert!(
                            printed.contains(error),
                            "{}: serve did not report\n{error}\n{printed}",
                            folder.display()
                        );
                    }
                }
            }
        }
    }
    // Not vacuous: the repository's own fixtures start 3 configurations, the shared
    // specification's (when the checkout has it beside it) at least one more.
    let shared = fixture_roots().len() > 1;
    let least = if shared { 4 } else { 3 };
    assert!(started >= least, "only {started} configurations started");
}

// ---------------------------------------------------------------------------------------
// authz explain: the client's port and the client's values.
// ---------------------------------------------------------------------------------------

const AUTHZ_EXAMPLE: &str =
    include_str!("../../config/tests/fixtures/examples/aio-docs/authz-v1/config.yaml");

#[test]
fn authz_explain_takes_the_node_port_and_fills_in_the_principal() {
    let d = Dirs::new();
    let node_port = free_node_port(&mut Vec::new());
    d.write(
        "config.yaml",
        &AUTHZ_EXAMPLE
            .replace("serviceType: LoadBalancer", "serviceType: NodePort")
            .replace(
                "- port: 1884",
                &format!("- port: 1884\n      nodePort: {node_port}"),
            ),
    );
    let hash = PasswordHash::new(b"password", 1000).unwrap().to_phc();
    d.write(
        "secrets/passwords-db/passwords.toml",
        &format!("[client1]\npassword = \"{hash}\"\n[client1.attributes]\nfloor = \"floor1\"\nsite = \"site1\"\n"),
    );
    let explain = |port: u16, extra: &[&str]| {
        let mut args = vec![
            "authz".to_string(),
            "explain".into(),
            "--config".into(),
            d.config.to_str().unwrap().into(),
            "--port".into(),
            port.to_string(),
            "--client-id".into(),
            "dev1".into(),
            "--username".into(),
            "client1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (code, out, err) =
            run_with_timeout(Command::new(env!("CARGO_BIN_EXE_edgemq")).args(&args), WAIT);
        (code, format!("{out}{err}"))
    };
    // The port the client connects to (nodePort) and the port as written both work.
    for port in [node_port, 1884] {
        let (code, out) = explain(
            port,
            &[
                "--attr",
                "floor=floor1",
                "--attr",
                "site=site1",
                "--publish",
                "telemetry/floor2/dev1",
            ],
        );
        assert_eq!(code, Some(1), "{out}");
        assert_eq!(
            out.trim(),
            "denied: denied by BrokerAuthorization/my-authz-policies: no rule matched; rules for this client: rules[0] (Publish on telemetry/floor1/dev1)"
        );
    }
    // A variable the client has no value for says so.
    let (code, out) = explain(
        node_port,
        &["--attr", "site=site1", "--publish", "telemetry/x/dev1"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Publish on telemetry/{principal.attributes.floor}/dev1 (matches nothing: no usable attribute floor)"), "{out}");
    let (code, out) = explain(9, &["--connect"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("no listener port is reachable at 9; clients can connect to: {node_port} (BrokerListener/")), "{out}");

    // The broker's denial log line fills the values in too.
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_pub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &node_port.to_string(),
            "-i",
            "dev1",
            "-u",
            "client1",
            "-P",
            "password",
            "-q",
            "1",
            "-t",
            "telemetry/floor2/dev1",
            "-m",
            "x",
        ]),
        WAIT,
    );
    let _ = (code, out, err);
    assert!(
        b.wait_for_log(
            "rules for this client: rules[0] (Publish on telemetry/floor1/dev1)",
            WAIT
        ),
        "{}",
        b.log()
    );
}
