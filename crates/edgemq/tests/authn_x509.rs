//! X.509 client-certificate authentication with real clients and real certificates: the
//! seed walkthrough (server chain root → intermediate → `mqtts-endpoint` on a manual-TLS
//! port, clients from a `Clients42` chain), with certificates made by the openssl recipe
//! operators copy — including its mistakes — and the refusals an operator must be able to
//! understand from the log.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::path::{Path, PathBuf};
use std::process::Command;

use edgemq_testkit::broker::{free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::pki::{self, OpensslCa, DAY};

/// The client PKI of the walkthrough, made with the openssl commands of the field report.
/// `proper_intermediate`: issue the intermediate with `basicConstraints=critical,CA:TRUE`
/// (the corrected recipe); false reproduces the report's exact commands (an X.509 v1
/// intermediate, which cannot act as a CA).
struct ClientPki {
    ca: OpensslCa,
}

impl ClientPki {
    fn openssl(dir: &Path, proper_intermediate: bool) -> ClientPki {
        let ca = OpensslCa::new(
            dir,
            "clients42",
            "Clients42 Root CA",
            "Clients42 Intermediate CA 1",
            proper_intermediate,
        );
        let pki = ClientPki { ca };
        for name in ["client42a", "client42b"] {
            pki.v1_leaf(name);
        }
        pki
    }

    /// A client leaf as the recipe makes it (`openssl x509 -req` without extensions: X.509
    /// v1), plus `NAME-bundle.crt` = leaf + intermediate.
    fn v1_leaf(&self, name: &str) {
        self.ca.leaf(name, None, 365, "bundle");
    }

    /// A v3 leaf with the given extensions, signed by the intermediate.
    fn v3_leaf(&self, name: &str, extensions: &str) {
        self.ca.leaf(name, Some(extensions), 365, "bundle");
    }

    /// A leaf whose validity ended in 2020, made with `openssl ca` (which takes dates).
    fn expired_leaf(&self, name: &str) {
        self.ca.expired_leaf(name, false, "", "bundle");
    }

    fn path(&self, file: &str) -> String {
        self.ca.path(file).to_str().unwrap().to_string()
    }

    fn root_pem(&self) -> String {
        self.ca.read("clients42_root_ca.crt")
    }
}

/// The server side: "AIO42 Root CA" → "AIO42 Intermediate CA 1" → `mqtts-endpoint` with
/// SAN 127.0.0.1, written as the `broker-server-cert` secret folder; returns the root PEM.
fn server_chain(d: &Dirs) -> PathBuf {
    let root = pki::root_ca("AIO42 Root CA", 30 * DAY);
    let int = pki::intermediate_ca(&root, "AIO42 Intermediate CA 1", 30 * DAY);
    let (chain_pem, key_pem) = pki::server_cert(&int, "mqtts-endpoint", &[], &["127.0.0.1"]);
    d.write("secrets/broker-server-cert/tls.crt", &chain_pem);
    d.write("secrets/broker-server-cert/tls.key", &key_pem);
    d.file("aio42_root_ca.crt", root.cert_pem())
}

/// The walkthrough's listeners (ports free on this machine): a plain port without
/// authentication and the X.509 port with manual TLS.
fn seed_config(d: &Dirs, client_ca_pem: &str, attributes: &str) -> (u16, u16) {
    let (plain, secure) = (free_port(), free_port());
    d.write(
        "listeners.yaml",
        &[
            listener("nodeport-listener", "ClusterIp", &plain_port(plain)),
            listener(
                "loadbalancer-listener",
                "LoadBalancer",
                &manual_tls_port(secure, "broker-server-cert").replace(
                    "      protocol: Mqtt\n",
                    "      protocol: Mqtt\n      authenticationRef: x509-policy\n",
                ),
            )
            .replace("serviceType: LoadBalancer", "serviceType: ClusterIp"),
        ]
        .join("---\n"),
    );
    d.write(
        "authentication.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: x509-policy\nspec:\n  authenticationMethods:\n    - method: X509\n      x509Settings:\n        trustedClientCaCert: clients42-ca\n{attributes}"),
    );
    d.write("configmaps/clients42-ca/client_ca.pem", client_ca_pem);
    (plain, secure)
}

/// mosquitto_pub -V 5 over TLS with a client certificate; (exit code, output).
fn pub_with_cert(
    port: u16,
    server_ca: &Path,
    cert: Option<(&str, &str)>,
    client_id: &str,
) -> (Option<i32>, String) {
    let cafile = server_ca.to_str().unwrap();
    let mut args = vec![
        "-q",
        "1",
        "-t",
        "seed/x509",
        "-m",
        client_id,
        "--cafile",
        cafile,
    ];
    if let Some((crt, key)) = cert {
        args.extend(["--cert", crt, "--key", key]);
    }
    run_mosquitto_pub(port, "5", client_id, &args)
}

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A refusal: mosquitto_pub fails with v5 CONNACK 0x87 Not authorized, and the broker's
/// log explains it with `why`.
fn assert_refused(b: &Broker, outcome: (Option<i32>, String), client_id: &str, why: &str) {
    let (code, out) = outcome;
    assert_ne!(code, Some(0), "{client_id} was admitted: {out}");
    // mosquitto_pub prints the v5 reason string of CONNACK 0x87.
    assert!(
        out.contains("Not authorized"),
        "{client_id}: expected CONNACK 0x87: {out}"
    );
    let needle = format!("client_id=\"{client_id}\"");
    assert!(
        b.wait_for_log(&needle, WAIT) && b.wait_for_log(why, WAIT),
        "{client_id}: no log line saying {why:?}:\n{}",
        b.log()
    );
    let line = b
        .log()
        .lines()
        .find(|l| l.contains(&needle) && l.contains("authentication refused"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains(why),
        "{client_id}: the refusal line does not say {why:?}: {line}"
    );
    assert!(
        line.contains("listener=\"loadbalancer-listener\""),
        "{line}"
    );
}

#[test]
fn seed_walkthrough_x509_clients_publish_and_plain_subscribers_receive() {
    let d = Dirs::new();
    let pki = ClientPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    let server_ca = server_chain(&d);
    let (plain, secure) = seed_config(&d, &pki.root_pem(), "");
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let sub = Sub::start(addr(plain), "seed/#", &[]);

    // Client A sends leaf + intermediate (an X.509 v1 leaf, as the recipe makes it).
    for client in ["client42a", "client42b"] {
        let (code, out) = pub_with_cert(
            secure,
            &server_ca,
            Some((
                &pki.path(&format!("{client}-bundle.crt")),
                &pki.path(&format!("{client}.key")),
            )),
            client,
        );
        assert_eq!(code, Some(0), "{client} refused: {out}\n{}", b.log());
        assert_eq!(sub.message(), format!("seed/x509 {client}"));
    }
    assert!(b.wait_for_log("method=\"X509\"", WAIT), "{}", b.log());
}

#[test]
fn x509_refusals_say_why() {
    let d = Dirs::new();
    let pki = ClientPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    let other = ClientPki::openssl(&d.config.parent().unwrap().join("other"), true);
    pki.expired_leaf("expired");
    pki.v3_leaf("server-only", "extendedKeyUsage=serverAuth\\n");
    let server_ca = server_chain(&d);
    let (_plain, secure) = seed_config(&d, &pki.root_pem(), "");
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);

    // No certificate: no method finds the client relevant.
    let out = pub_with_cert(secure, &server_ca, None, "no-cert");
    assert_refused(
        &b,
        out,
        "no-cert",
        "no method found the credentials relevant",
    );
    // A certificate from another CA.
    let out = pub_with_cert(
        secure,
        &server_ca,
        Some((
            &other.path("client42a-bundle.crt"),
            &other.path("client42a.key"),
        )),
        "foreign",
    );
    assert_refused(&b, out, "foreign", "does not lead to a trusted client CA");
    // The leaf without its intermediate: the chain cannot be built.
    let out = pub_with_cert(
        secure,
        &server_ca,
        Some((&pki.path("client42a.crt"), &pki.path("client42a.key"))),
        "no-intermediate",
    );
    assert_refused(
        &b,
        out,
        "no-intermediate",
        "send the intermediates with the leaf",
    );
    // Expired.
    let out = pub_with_cert(
        secure,
        &server_ca,
        Some((&pki.path("expired-bundle.crt"), &pki.path("expired.key"))),
        "expired",
    );
    assert_refused(&b, out, "expired", "certificate has expired");
    // Made for servers only.
    let out = pub_with_cert(
        secure,
        &server_ca,
        Some((
            &pki.path("server-only-bundle.crt"),
            &pki.path("server-only.key"),
        )),
        "server-only",
    );
    assert_refused(&b, out, "server-only", "wrong usage");
}

#[test]
fn seed_recipe_v1_intermediate_is_refused_with_the_fix_in_the_log() {
    // The field report's exact commands make the intermediate an X.509 v1 certificate
    // without basicConstraints CA:TRUE; OpenSSL 3 itself refuses that chain. edgemq refuses
    // it too and says how to fix it.
    let d = Dirs::new();
    let pki = ClientPki::openssl(&d.config.parent().unwrap().join("pki"), false);
    let server_ca = server_chain(&d);
    let (_plain, secure) = seed_config(&d, &pki.root_pem(), "");
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let out = pub_with_cert(
        secure,
        &server_ca,
        Some((
            &pki.path("client42a-bundle.crt"),
            &pki.path("client42a.key"),
        )),
        "client42a",
    );
    assert_refused(&b, out, "client42a", "basicConstraints=critical,CA:TRUE");
    assert!(
        b.wait_for_log("invalid CA certificate", WAIT),
        "{}",
        b.log()
    );
}

#[test]
fn x509_attributes_come_from_the_first_matching_subject_up_the_chain() {
    let d = Dirs::new();
    let pki = ClientPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    let server_ca = server_chain(&d);
    // The intermediate matches (written in the other order, with spaces); the leaf of
    // client42b matches itself first.
    let attributes = "        authorizationAttributes:\n          intermediate:\n            subject: \"CN = Clients42 Intermediate CA 1\"\n            attributes: {city: seattle}\n          fan:\n            subject: \"CN=client42b\"\n            attributes: {building: \"17\"}\n";
    let (_plain, secure) = seed_config(&d, &pki.root_pem(), attributes);
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    for (client, want) in [("client42a", "city=seattle"), ("client42b", "building=17")] {
        let (code, out) = pub_with_cert(
            secure,
            &server_ca,
            Some((
                &pki.path(&format!("{client}-bundle.crt")),
                &pki.path(&format!("{client}.key")),
            )),
            client,
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(
            b.wait_for_log(want, WAIT),
            "{client}: attributes {want} not granted:\n{}",
            b.log()
        );
    }
}

/// The walkthrough again with every certificate made by `edgemq certs` (no openssl).
#[test]
fn seed_walkthrough_with_certificates_from_edgemq_certs() {
    let d = Dirs::new();
    let pki = d.config.parent().unwrap().join("pki");
    let certs = |args: &[&str]| {
        let (code, out, err) = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_edgemq"))
                .arg("certs")
                .args(args)
                .current_dir(&pki),
            WAIT,
        );
        assert_eq!(code, Some(0), "edgemq certs {args:?}: {out}{err}");
    };
    std::fs::create_dir_all(&pki).unwrap();
    certs(&["root", "--name", "AIO42 Root CA", "--out", "aio42_root_ca"]);
    certs(&[
        "intermediate",
        "--name",
        "AIO42 Intermediate CA 1",
        "--ca",
        "aio42_root_ca",
        "--out",
        "aio42_int_ca",
    ]);
    certs(&[
        "server",
        "--name",
        "mqtts-endpoint",
        "--san",
        "127.0.0.1",
        "--ca",
        "aio42_int_ca",
        "--out",
        "mqtts-endpoint",
        "--bundle",
    ]);
    certs(&[
        "root",
        "--name",
        "Clients42 Root CA",
        "--out",
        "clients42_root_ca",
    ]);
    certs(&[
        "intermediate",
        "--name",
        "Clients42 Intermediate CA 1",
        "--ca",
        "clients42_root_ca",
        "--out",
        "clients42_int_ca",
    ]);
    certs(&[
        "client",
        "--name",
        "client42a",
        "--ca",
        "clients42_int_ca",
        "--out",
        "client42a",
        "--bundle",
    ]);
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    d.write(
        "secrets/broker-server-cert/tls.crt",
        &read("mqtts-endpoint.crt"),
    );
    d.write(
        "secrets/broker-server-cert/tls.key",
        &read("mqtts-endpoint.key"),
    );
    let (plain, secure) = seed_config(&d, &read("clients42_root_ca.crt"), "");
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let sub = Sub::start(addr(plain), "seed/#", &[]);
    let p = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let (code, out) = pub_with_cert(
        secure,
        &pki.join("aio42_root_ca.crt"),
        Some((&p("client42a.crt"), &p("client42a.key"))),
        "client42a",
    );
    assert_eq!(code, Some(0), "{out}\n{}", b.log());
    assert_eq!(sub.message(), "seed/x509 client42a");
    // The server's own root does not admit clients: it is not the client CA.
    certs(&[
        "client",
        "--name",
        "intruder",
        "--ca",
        "aio42_int_ca",
        "--out",
        "intruder",
        "--bundle",
    ]);
    let out = pub_with_cert(
        secure,
        &pki.join("aio42_root_ca.crt"),
        Some((&p("intruder.crt"), &p("intruder.key"))),
        "intruder",
    );
    assert_refused(&b, out, "intruder", "does not lead to a trusted client CA");
}

/// Authorization with X.509 attributes: `{principal.attributes.city}` from the intermediate's
/// subject and `{principal.username}` = the leaf CN.
#[test]
fn x509_attributes_feed_authorization_topics() {
    let d = Dirs::new();
    let pki = ClientPki::openssl(&d.config.parent().unwrap().join("pki"), true);
    let server_ca = server_chain(&d);
    let attributes = "        authorizationAttributes:\n          intermediate:\n            subject: \"CN = Clients42 Intermediate CA 1\"\n            attributes: {city: seattle}\n";
    let (plain, secure) = seed_config(&d, &pki.root_pem(), attributes);
    // The X.509 port gets a policy; rewrite its port entry to reference it.
    let listeners = std::fs::read_to_string(d.config.join("listeners.yaml")).unwrap();
    d.write(
        "listeners.yaml",
        &listeners.replace(
            "      authenticationRef: x509-policy\n",
            "      authenticationRef: x509-policy\n      authorizationRef: by-city\n",
        ),
    );
    d.write(
        "authorization.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthorization\nmetadata:\n  name: by-city\nspec:\n  authorizationPolicies:\n    rules:\n      - principals:\n          attributes:\n            - {{city: seattle}}\n        brokerResources:\n          - method: Connect\n          - method: Publish\n            topics: [\"sites/{{principal.attributes.city}}/{{principal.username}}\"]\n"),
    );
    let b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let sub = Sub::start(addr(plain), "sites/#", &[]);
    let publish = |topic: &str, id: &str| {
        let (code, out, err) = run_with_timeout(
            Command::new("mosquitto_pub")
                .args([
                    "-V",
                    "5",
                    "-q",
                    "1",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &secure.to_string(),
                    "-i",
                    id,
                ])
                .args(["--cafile", server_ca.to_str().unwrap()])
                .args([
                    "--cert",
                    &pki.path("client42a-bundle.crt"),
                    "--key",
                    &pki.path("client42a.key"),
                ])
                .args(["-t", topic, "-m", id]),
            WAIT,
        );
        (code, format!("{out}{err}"))
    };
    // Another city, and another device's name: refused (PUBACK 0x87), logged with the rule.
    let _ = publish("sites/paris/client42a", "denied-city");
    assert!(
        b.wait_for_log("topic=\"sites/paris/client42a\"", WAIT),
        "{}",
        b.log()
    );
    let _ = publish("sites/seattle/client42b", "denied-name");
    assert!(
        b.wait_for_log("topic=\"sites/seattle/client42b\"", WAIT),
        "{}",
        b.log()
    );
    // Its own city and CN: delivered, and it is the first message the subscriber sees.
    let (code, out) = publish("sites/seattle/client42a", "allowed");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "sites/seattle/client42a allowed");
}
