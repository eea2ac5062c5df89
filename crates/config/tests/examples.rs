//! The spec's example folders: each reports exactly the secrets and config maps its README
//! says a test must add, and loads cleanly once the test adds them.
//!
//! Read from `shared/spec/examples` beside the repository when it is there, else from the copy
//! in `tests/fixtures/examples` (CI may run from a clone of the repository alone).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{ca, load_ok, tempdir, write, y, PASSWORDS_TOML};
use edgemq_config::{load_dir, AuthnMethod, Tls};

fn examples_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/spec/examples");
    if shared.is_dir() {
        shared
    } else {
        manifest.join("tests/fixtures/examples")
    }
}

/// Folders holding YAML files, relative to the root, one level of grouping deep.
fn example_dirs(root: &Path) -> Vec<String> {
    let has_yaml = |d: &Path| {
        fs::read_dir(d).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "yaml" || x == "yml")
            })
        })
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(root)
        .expect("examples folder")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if has_yaml(&path) {
            out.push(name);
            continue;
        }
        for sub in fs::read_dir(&path)
            .expect("group folder")
            .filter_map(Result::ok)
        {
            if sub.path().is_dir() && has_yaml(&sub.path()) {
                out.push(format!("{name}/{}", sub.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from)
        .expect("read example")
        .filter_map(Result::ok)
    {
        if entry.path().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// What each example's README says is missing, as `secret NAME` / `config map NAME`.
const MISSING: &[(&str, &[&str])] = &[
    (
        "aio-docs/authn-chain-v1beta1",
        &["config map custom-auth-ca"],
    ),
    ("aio-docs/authz-v1", &["secret passwords-db"]),
    ("aio-docs/x509-attributes-v1", &["config map client-ca"]),
    (
        "seed-walkthrough",
        &["config map clients42-ca", "secret broker-server-cert"],
    ),
];

/// The names in `… "NAME" not found` errors; any other error fails the test.
fn missing_names(dir: &Path) -> Vec<String> {
    let diags = load_dir(dir).expect_err("the example alone must not load");
    let mut out = Vec::new();
    for d in diags.iter().filter(|d| d.is_error()) {
        let found = ["secret", "config map"].iter().find_map(|what| {
            let rest = d.message.split_once(&format!("{what} \""))?.1;
            let (name, tail) = rest.split_once('"')?;
            tail.starts_with(" not found")
                .then(|| format!("{what} {name}"))
        });
        match found {
            Some(m) => out.push(m),
            None => panic!("unexpected error: {d}"),
        }
    }
    out.sort();
    out
}

/// Adds what the README says a test adds.
fn complete(example: &str, dir: &Path) {
    match example {
        "seed-walkthrough" => {
            let server_ca = ca("AIO42 Root CA");
            let server = server_ca.leaf("mqtts-endpoint", &["127.0.0.1"]);
            let clients = ca("Clients42 Root CA");
            write(
                dir,
                &[
                    ("secrets/broker-server-cert/tls.crt", server.cert_pem),
                    ("secrets/broker-server-cert/tls.key", server.key_pem),
                    ("configmaps/clients42-ca/client_ca.pem", clients.cert_pem),
                ],
            );
        }
        "aio-docs/authn-chain-v1beta1" => {
            let auth_ca = ca("Custom Auth CA");
            write(
                dir,
                &[("configmaps/custom-auth-ca/ca.pem", auth_ca.cert_pem)],
            );
        }
        "aio-docs/authz-v1" => {
            write(
                dir,
                &[(
                    "secrets/passwords-db/passwords.toml",
                    PASSWORDS_TOML.to_owned(),
                )],
            );
        }
        "aio-docs/x509-attributes-v1" => {
            let client_ca = ca("Contoso Root CA Cert");
            write(
                dir,
                &[
                    ("configmaps/client-ca/client_ca.pem", client_ca.cert_pem),
                    (
                        "listener.yaml",
                        y(r#"
                        apiVersion: mqttbroker.iotoperations.azure.com/v1
                        kind: BrokerListener
                        metadata:
                          name: x509-listener
                        spec:
                          serviceType: LoadBalancer
                          ports:
                            - port: 8884
                              authenticationRef: x509-with-attributes
                              tls:
                                mode: Automatic
                                certManagerCertificateSpec:
                                  issuerRef:
                                    kind: ClusterIssuer
                                    name: azure-iot-operations-aio-certificate-issuer
                                  san:
                                    ip: [127.0.0.1]
                        "#),
                    ),
                ],
            );
        }
        other => panic!("no completion for example {other}"),
    }
}

#[test]
fn every_example_is_covered() {
    let found = example_dirs(&examples_root());
    let known: Vec<String> = MISSING.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(found, known, "examples in {}", examples_root().display());
}

#[test]
fn examples_report_exactly_what_their_readme_says_is_missing() {
    let root = examples_root();
    for (example, missing) in MISSING {
        let dir = tempdir();
        copy_dir(&root.join(example), dir.path());
        let expected: Vec<String> = missing.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(missing_names(dir.path()), expected, "example {example}");
    }
}

/// Examples whose port uses a ServiceAccountToken method verified in the cluster.
const IN_CLUSTER_SAT: &[&str] = &["aio-docs/authn-chain-v1beta1", "seed-walkthrough"];
const OUTSIDE_A_CLUSTER: &str = "cannot verify service account tokens: not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set); every token will be refused; set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer";

#[test]
fn examples_load_once_completed() {
    let root = examples_root();
    for (example, _) in MISSING {
        let dir = tempdir();
        copy_dir(&root.join(example), dir.path());
        complete(example, dir.path());
        let loaded = load_ok(dir.path());
        let (sat, warnings): (Vec<String>, Vec<String>) = loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .partition(|w| w.contains(OUTSIDE_A_CLUSTER));
        assert!(warnings.is_empty(), "example {example}: {warnings:?}");
        // In-cluster token review is what `serve` would use: outside a cluster both `check`
        // and `serve` say so, once per such method.
        let expected_sat = usize::from(IN_CLUSTER_SAT.contains(example));
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert_eq!(sat.len(), expected_sat, "example {example}: {sat:?}");
        }
    }
}

#[test]
fn completed_examples_have_the_expected_shape() {
    let root = examples_root();
    let load = |example: &str| {
        let dir = tempdir();
        copy_dir(&root.join(example), dir.path());
        complete(example, dir.path());
        load_ok(dir.path()).config
    };

    let seed = load("seed-walkthrough");
    let names: Vec<&str> = seed.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["default", "nodeport-listener", "loadbalancer-listener"]
    );
    let lb = &seed.listeners[2].ports[0];
    assert!(matches!(&lb.tls, Some(Tls::Manual { secret, .. }) if secret == "broker-server-cert"));
    assert_eq!(lb.authentication.as_deref(), Some("x509-policy"));

    let chain = load("aio-docs/authn-chain-v1beta1");
    let port = &chain.listeners[0].ports[0];
    assert_eq!(port.authentication.as_deref(), Some("authn"));
    assert_eq!(port.authorization, None);
    let methods = &chain.authentications["authn"].methods;
    assert!(matches!(methods[0], AuthnMethod::Custom(_)));
    assert!(matches!(
        methods[1],
        AuthnMethod::ServiceAccountToken { .. }
    ));
    assert!(
        matches!(&methods[2], AuthnMethod::UsernamePassword { secret } if secret == "passwords-db")
    );

    let authz = load("aio-docs/authz-v1");
    let policy = &authz.authorizations["my-authz-policies"];
    assert!(policy.cache);
    assert_eq!(policy.rules.len(), 2);
    assert_eq!(policy.rules[1].principals.usernames, ["client2"]);

    let x509 = load("aio-docs/x509-attributes-v1");
    let AuthnMethod::X509(x) = &x509.authentications["x509-with-attributes"].methods[0] else {
        panic!("an X509 method");
    };
    assert_eq!(x.attributes["smart-fan"].attributes["building"], "17");
    assert_eq!(
        x.attributes["root"].subject,
        "CN = Contoso Root CA Cert, OU = Engineering, C = US"
    );
}
