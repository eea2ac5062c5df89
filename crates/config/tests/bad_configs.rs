//! The bad-configuration corpus: each case is a folder of files and the exact diagnostics
//! `load_dir` must print for it (`$DIR` stands for the folder). Warnings are listed too, so a
//! case also proves nothing else is reported.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod common;

use common::{b64, ca, load, rendered, self_signed, y, PASSWORDS_TOML};

struct Case {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    expected: Vec<&'static str>,
}

fn case(name: &'static str, files: Vec<(&'static str, String)>, expected: &[&'static str]) -> Case {
    Case {
        name,
        files,
        expected: expected.to_vec(),
    }
}

/// A LoadBalancer listener `lb`, port 8883, manual TLS from `secret` (secretRef on line 12).
fn manual_listener(secret: &str) -> String {
    y(&format!(
        r#"
        apiVersion: mqttbroker.iotoperations.azure.com/v1
        kind: BrokerListener
        metadata:
          name: lb
        spec:
          serviceType: LoadBalancer
          ports:
            - port: 8883
              tls:
                mode: Manual
                manual:
                  secretRef: {secret}
        "#
    ))
}

/// A ClusterIp listener `auto`, port 18883, automatic TLS from the built-in issuer; `extra`
/// lines go into certManagerCertificateSpec from line 14.
fn auto_listener(extra: &[&str]) -> String {
    let mut s = y(r#"
        apiVersion: mqttbroker.iotoperations.azure.com/v1
        kind: BrokerListener
        metadata:
          name: auto
        spec:
          ports:
            - port: 18883
              tls:
                mode: Automatic
                certManagerCertificateSpec:
                  issuerRef:
                    kind: ClusterIssuer
                    name: azure-iot-operations-aio-certificate-issuer
        "#);
    for line in extra {
        s.push_str("          ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A v1 listener `name` with one plain port.
fn plain_listener(name: &str, service_type: &str, port: u16) -> String {
    y(&format!(
        r#"
        apiVersion: mqttbroker.iotoperations.azure.com/v1
        kind: BrokerListener
        metadata:
          name: {name}
        spec:
          serviceType: {service_type}
          ports:
            - port: {port}
        "#
    ))
}

/// A v1 SAT authentication named `name`.
fn sat_authn(name: &str) -> String {
    y(&format!(
        r#"
        apiVersion: mqttbroker.iotoperations.azure.com/v1
        kind: BrokerAuthentication
        metadata:
          name: {name}
        spec:
          authenticationMethods:
            - method: ServiceAccountToken
              serviceAccountTokenSettings:
                audiences: [aio-internal]
        "#
    ))
}

fn string_secret(name: &str, entries: &[(&str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n");
    for (k, v) in entries {
        s.push_str(&format!("  {k}: |\n"));
        for line in v.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s
}

fn cases() -> Vec<Case> {
    let good = self_signed("localhost");
    let other = self_signed("localhost");
    let client_ca = ca("Clients Root CA");
    vec![
        case(
            "missing issuer",
            vec![
                ("l.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerListener
                    metadata:
                      name: tls-listener
                    spec:
                      serviceType: LoadBalancer
                      ports:
                        - port: 8883
                          tls:
                            mode: Automatic
                            certManagerCertificateSpec:
                              issuerRef:
                                kind: Issuer
                                name: my-issuer
                    "#)),
                ("issuers.yaml", y(r#"
                    apiVersion: cert-manager.io/v1
                    kind: Issuer
                    metadata:
                      name: other-ca
                    spec:
                      selfSigned: {}
                    "#)),
            ],
            &["$DIR/l.yaml:14: BrokerListener/tls-listener: spec.ports[0].tls.certManagerCertificateSpec.issuerRef.name: port 8883: issuer \"my-issuer\" not found; existing issuers: azure-iot-operations-aio-certificate-issuer, other-ca"],
        ),
        case(
            "service account token with two verifiers",
            vec![("a.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerAuthentication
                metadata:
                  name: sat
                spec:
                  authenticationMethods:
                    - method: ServiceAccountToken
                      serviceAccountTokenSettings:
                        audiences: [aio-internal]
                        kubeconfig: /etc/kubeconfig
                        jwksConfigMap: cluster-jwks
                "#))],
            &["$DIR/a.yaml:1: warning: BrokerAuthentication/sat: not used by any listener port (no authenticationRef names it)", "$DIR/a.yaml:8: BrokerAuthentication/sat: spec.authenticationMethods[0].serviceAccountTokenSettings: at most one of kubeconfig, jwksConfigMap, issuer"],
        ),
        case(
            "service account token issuer over http",
            vec![("a.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerAuthentication
                metadata:
                  name: sat
                spec:
                  authenticationMethods:
                    - method: ServiceAccountToken
                      serviceAccountTokenSettings:
                        audiences: [aio-internal]
                        issuer: http://oidc.example
                "#))],
            &["$DIR/a.yaml:1: warning: BrokerAuthentication/sat: not used by any listener port (no authenticationRef names it)", "$DIR/a.yaml:10: BrokerAuthentication/sat: spec.authenticationMethods[0].serviceAccountTokenSettings.issuer: the issuer must be an https:// URL"],
        ),
        case(
            "service account token JWKS config map missing",
            vec![("a.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerAuthentication
                metadata:
                  name: sat
                spec:
                  authenticationMethods:
                    - method: ServiceAccountToken
                      serviceAccountTokenSettings:
                        audiences: [aio-internal]
                        jwksConfigMap: cluster-jwks
                "#))],
            &["$DIR/a.yaml:1: warning: BrokerAuthentication/sat: not used by any listener port (no authenticationRef names it)", "$DIR/a.yaml:10: BrokerAuthentication/sat: spec.authenticationMethods[0].serviceAccountTokenSettings.jwksConfigMap: config map \"cluster-jwks\" not found; no config maps are defined"],
        ),
        case(
            "missing secret",
            vec![
                ("l.yaml", manual_listener("server-cert")),
                ("secrets/other/tls.crt", good.cert_pem.clone()),
            ],
            &["$DIR/l.yaml:12: BrokerListener/lb: spec.ports[0].tls.manual.secretRef: port 8883: secret \"server-cert\" not found; existing secrets: other"],
        ),
        case(
            "secret without tls.key",
            vec![
                ("l.yaml", manual_listener("server-cert")),
                ("secrets/server-cert/tls.crt", good.cert_pem.clone()),
            ],
            &["$DIR/l.yaml:12: BrokerListener/lb: spec.ports[0].tls.manual.secretRef: port 8883: secret \"server-cert\" has no key tls.key (keys: tls.crt)"],
        ),
        case(
            "key does not match the certificate",
            vec![
                ("l.yaml", manual_listener("server-cert")),
                ("s.yaml", string_secret("server-cert", &[("tls.crt", &good.cert_pem), ("tls.key", &other.key_pem)])),
            ],
            &["$DIR/l.yaml:12: BrokerListener/lb: spec.ports[0].tls.manual.secretRef: port 8883: secret \"server-cert\": tls.key does not match the certificate in tls.crt"],
        ),
        case(
            "unparseable certificate",
            vec![
                ("l.yaml", manual_listener("server-cert")),
                ("secrets/server-cert/tls.crt", "not a certificate\n".into()),
                ("secrets/server-cert/tls.key", good.key_pem.clone()),
            ],
            &["$DIR/l.yaml:12: BrokerListener/lb: spec.ports[0].tls.manual.secretRef: port 8883: secret \"server-cert\": tls.crt: no PEM certificate found"],
        ),
        case(
            "unparseable key",
            vec![
                ("l.yaml", manual_listener("server-cert")),
                ("secrets/server-cert/tls.crt", good.cert_pem.clone()),
                ("secrets/server-cert/tls.key", good.cert_pem.clone()),
            ],
            &["$DIR/l.yaml:12: BrokerListener/lb: spec.ports[0].tls.manual.secretRef: port 8883: secret \"server-cert\": tls.key: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)"],
        ),
        case(
            "NodePort out of range",
            vec![("l.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata:
                  name: np
                spec:
                  serviceType: NodePort
                  ports:
                    - port: 1883
                      nodePort: 1883
                "#))],
            &["$DIR/l.yaml:9: BrokerListener/np: spec.ports[0].nodePort: must be in the NodePort range 30000-32767, got 1883"],
        ),
        case(
            "port 0",
            vec![("l.yaml", plain_listener("p", "LoadBalancer", 0))],
            &["$DIR/l.yaml:8: BrokerListener/p: spec.ports[0].port: must be between 1 and 65535, got 0"],
        ),
        case(
            "port 70000",
            vec![("l.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata:
                  name: p
                spec:
                  ports:
                    - port: 1883
                    - port: 70000
                "#))],
            &["$DIR/l.yaml:8: BrokerListener/p: spec.ports[1].port: must be between 1 and 65535, got 70000"],
        ),
        case(
            "port maxConnections 0",
            vec![("l.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata:
                  name: p
                spec:
                  ports:
                    - port: 1883
                      maxConnections: 0
                "#))],
            &["$DIR/l.yaml:8: BrokerListener/p: spec.ports[0].maxConnections: must be between 1 and 4294967296, got 0"],
        ),
        case(
            "port is not a number",
            vec![("l.yaml", plain_listener("p", "LoadBalancer", 1).replace("port: 1", "port: \"abc\""))],
            &["$DIR/l.yaml:8: BrokerListener/p: spec.ports[0].port: expected an integer, found a string"],
        ),
        case(
            "same port on 0.0.0.0 and 127.0.0.1",
            vec![
                ("a.yaml", plain_listener("inside", "ClusterIp", 1883)),
                ("b.yaml", plain_listener("outside", "LoadBalancer", 1883)),
            ],
            &["$DIR/b.yaml:8: BrokerListener/outside: spec.ports[0].port: port 1883: address 0.0.0.0:1883 clashes with 127.0.0.1:1883 of listener \"inside\" port 1883 ($DIR/a.yaml:8)"],
        ),
        case(
            "nodePort clashes with a LoadBalancer port",
            vec![
                ("a.yaml", plain_listener("lb", "LoadBalancer", 31883)),
                ("b.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerListener
                    metadata:
                      name: np
                    spec:
                      serviceType: NodePort
                      ports:
                        - port: 1883
                          nodePort: 31883
                    "#)),
            ],
            &["$DIR/b.yaml:9: BrokerListener/np: spec.ports[0].nodePort: port 1883: address 0.0.0.0:31883 clashes with 0.0.0.0:31883 of listener \"lb\" port 31883 ($DIR/a.yaml:8)"],
        ),
        case(
            "duplicate listener name",
            vec![
                ("a.yaml", plain_listener("dup", "ClusterIp", 1883)),
                ("b.yaml", plain_listener("dup", "ClusterIp", 1884)),
            ],
            &["$DIR/b.yaml:4: BrokerListener/dup: metadata.name: \"dup\" is defined twice; first definition: BrokerListener/dup at $DIR/a.yaml:1"],
        ),
        case(
            "secret defined as manifest and as folder",
            vec![
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
                ("s.yaml", string_secret("creds", &[("token", "abc")])),
                ("secrets/creds/token", "abc".into()),
            ],
            &["$DIR/secrets/creds: Secret/creds: \"creds\" is defined twice; first definition: Secret/creds at $DIR/s.yaml:1"],
        ),
        case(
            "a kind that is not the broker's is skipped with a warning",
            vec![("x.yaml", y(r#"
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  name: web
                "#))],
            &["$DIR: warning: no BrokerListener is defined: the broker will accept no connections", "$DIR/x.yaml:2: warning: Deployment/web: kind: Deployment (apps/v1) is not a resource edgemq reads; skipped (edgemq reads: Broker, BrokerListener, BrokerAuthentication, BrokerAuthorization, Secret, ConfigMap, Issuer, ClusterIssuer, List)"],
        ),
        case(
            "wrong apiVersion",
            vec![("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("/v1\n", "/v2\n"))],
            &["$DIR/l.yaml:1: BrokerListener/l: apiVersion: \"mqttbroker.iotoperations.azure.com/v2\" is not supported for BrokerListener; expected mqttbroker.iotoperations.azure.com/v1 or mq.iotoperations.azure.com/v1beta1 or mqttbroker.iotoperations.azure.com/v1beta1"],
        ),
        case(
            "malformed YAML",
            vec![("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\ndata: {}\n".into())],
            &["$DIR/bad.yaml:5: invalid YAML: illegal placement of ':' indicator"],
        ),
        case(
            "duplicate YAML key",
            vec![("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("spec:\n", "spec:\n  serviceType: NodePort\n"))],
            &["$DIR/l.yaml:7: invalid YAML: duplicate mapping key: serviceType, set DuplicateKeyPolicy in Options if acceptable"],
        ),
        case(
            "unknown field is a warning",
            vec![("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("serviceType", "servicetype"))],
            &["$DIR/l.yaml:6: warning: BrokerListener/l: spec.servicetype: unknown field, ignored (did you mean serviceType?)"],
        ),
        case(
            "bad enum value",
            vec![("l.yaml", plain_listener("l", "Internal", 1883))],
            &["$DIR/l.yaml:6: BrokerListener/l: spec.serviceType: unknown value \"Internal\"; expected one of: ClusterIp, NodePort, LoadBalancer"],
        ),
        case(
            "bad duration",
            vec![("l.yaml", auto_listener(&["duration: 90 days"]))],
            &["$DIR/l.yaml:14: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.duration: invalid duration \"90 days\": expected numbers with units d, h, m, s, ms, us or ns (e.g. 2160h, 1h30m, 0d5h0s)"],
        ),
        case(
            "renewBefore equal to duration",
            vec![("l.yaml", auto_listener(&["duration: 5h", "renewBefore: 0d5h0s"]))],
            &["$DIR/l.yaml:15: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.renewBefore: renewBefore (5h) must be shorter than duration (5h)"],
        ),
        case(
            "duration shorter than the default renewBefore",
            vec![("l.yaml", auto_listener(&["duration: 4h"]))],
            &["$DIR/l.yaml:14: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.duration: renewBefore (5h, the default) must be shorter than duration (4h)"],
        ),
        case(
            "bad SAN IP and key algorithm",
            vec![("l.yaml", auto_listener(&["san:", "  ip: [10.0.0.1, n013edge.local]", "privateKey: {algorithm: Ec999, rotationPolicy: never}"]))],
            &[
                "$DIR/l.yaml:15: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.san.ip[1]: \"n013edge.local\" is not an IP address",
                "$DIR/l.yaml:16: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.privateKey.algorithm: unknown key algorithm \"Ec999\"; expected one of: Ec256, Ec384, Ec521, Ed25519, Rsa2048, Rsa4096, Rsa8192",
            ],
        ),
        case(
            // The one parser (edgemq-formats) does not trim, as the certs tools never did.
            "key algorithm with spaces around it",
            vec![("l.yaml", auto_listener(&["privateKey: {algorithm: \" Ec384\"}"]))],
            &["$DIR/l.yaml:14: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.privateKey.algorithm: unknown key algorithm \" Ec384\"; expected one of: Ec256, Ec384, Ec521, Ed25519, Rsa2048, Rsa4096, Rsa8192"],
        ),
        case(
            "issuerRef kind does not match",
            vec![("l.yaml", auto_listener(&[]).replace("kind: ClusterIssuer", "kind: Issuer"))],
            &["$DIR/l.yaml:13: BrokerListener/auto: spec.ports[0].tls.certManagerCertificateSpec.issuerRef.name: port 18883: issuer \"azure-iot-operations-aio-certificate-issuer\" is a ClusterIssuer, but issuerRef.kind says Issuer"],
        ),
        case(
            "Manual mode without manual",
            vec![("l.yaml", manual_listener("x").replace("        manual:\n          secretRef: x\n", ""))],
            &["$DIR/l.yaml:9: BrokerListener/lb: spec.ports[0].tls.manual: required when mode is Manual"],
        ),
        case(
            "both manual and certManagerCertificateSpec",
            vec![
                ("l.yaml", auto_listener(&[]).replace("mode: Automatic", "mode: Automatic\n        manual: {secretRef: server-cert}")),
                ("secrets/server-cert/tls.crt", good.cert_pem.clone()),
                ("secrets/server-cert/tls.key", good.key_pem.clone()),
            ],
            &["$DIR/l.yaml:10: BrokerListener/auto: spec.ports[0].tls.manual: not allowed with mode Automatic: set only certManagerCertificateSpec"],
        ),
        case(
            "dangling authenticationRef",
            vec![
                ("authn.yaml", sat_authn("authn")),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("- port: 1883", "- port: 1883\n      authenticationRef: nope")),
            ],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/authn: not used by any listener port (no authenticationRef names it)",
                "$DIR/l.yaml:9: BrokerListener/l: spec.ports[0].authenticationRef: port 1883: authentication \"nope\" not found; existing authentications: authn",
            ],
        ),
        case(
            "dangling authorizationRef",
            vec![
                ("authn.yaml", sat_authn("authn")),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("- port: 1883", "- port: 1883\n      authenticationRef: authn\n      authorizationRef: missing")),
            ],
            &["$DIR/authn.yaml:7: warning: BrokerAuthentication/authn: spec.authenticationMethods[0]: cannot verify service account tokens: not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set); every token will be refused; set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer", "$DIR/l.yaml:10: BrokerListener/l: spec.ports[0].authorizationRef: port 1883: authorization \"missing\" not found; no authorizations are defined"],
        ),
        case(
            "x509 config map without client_ca.pem",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerAuthentication
                    metadata:
                      name: x509
                    spec:
                      authenticationMethods:
                        - method: X509
                          x509Settings:
                            trustedClientCaCert: client-ca
                    "#)),
                ("configmaps/client-ca/ca.pem", client_ca.cert_pem.clone()),
            ],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/x509: not used by any listener port (no authenticationRef names it)",
                "$DIR/authn.yaml:9: BrokerAuthentication/x509: spec.authenticationMethods[0].x509Settings.trustedClientCaCert: config map \"client-ca\" has no key client_ca.pem (keys: ca.pem)",
            ],
        ),
        case(
            "x509 client CA does not parse",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerAuthentication
                    metadata:
                      name: x509
                    spec:
                      authenticationMethods:
                        - method: X509
                    "#)),
                ("configmaps/client-ca/client_ca.pem", "garbage".into()),
            ],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/x509: not used by any listener port (no authenticationRef names it)",
                "$DIR/authn.yaml:7: BrokerAuthentication/x509: spec.authenticationMethods[0].x509Settings.trustedClientCaCert: config map \"client-ca\": client_ca.pem: no PEM certificate found",
            ],
        ),
        case(
            "v1beta1 listener named by two authentications",
            vec![("legacy.yaml", y(r#"
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerListener
                metadata:
                  name: listener
                spec:
                  brokerRef: broker
                  port: 1883
                  authenticationEnabled: true
                ---
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerAuthentication
                metadata:
                  name: first
                spec:
                  listenerRef: [listener]
                  authenticationMethods:
                    - sat: {audiences: [a]}
                ---
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerAuthentication
                metadata:
                  name: second
                spec:
                  listenerRef: [listener]
                  authenticationMethods:
                    - sat: {audiences: [b]}
                "#))],
            &["$DIR/legacy.yaml:17: warning: BrokerAuthentication/first: spec.authenticationMethods[0]: cannot verify service account tokens: not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set); every token will be refused; set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer", "$DIR/legacy.yaml:24: BrokerAuthentication/second: spec.listenerRef[0]: listener \"listener\" is already served by BrokerAuthentication \"first\" ($DIR/legacy.yaml:10); a listener takes one authentication", "$DIR/legacy.yaml:26: warning: BrokerAuthentication/second: spec.authenticationMethods[0]: cannot verify service account tokens: not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set); every token will be refused; set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer"],
        ),
        case(
            "v1beta1 authenticationEnabled without an authentication",
            vec![("legacy.yaml", y(r#"
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerListener
                metadata:
                  name: listener
                spec:
                  brokerRef: broker
                  port: 1883
                  authenticationEnabled: true
                "#))],
            &["$DIR/legacy.yaml:8: BrokerListener/listener: spec.authenticationEnabled: authentication is enabled but no BrokerAuthentication lists listener \"listener\" in spec.listenerRef; no authentications are defined"],
        ),
        case(
            "v1beta1 listenerRef names no listener",
            vec![("legacy.yaml", y(r#"
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerAuthorization
                metadata:
                  name: authz
                spec:
                  listenerRef:
                    - listner
                  authorizationPolicies:
                    enableCache: true
                    rules:
                      - principals: {usernames: [a]}
                        brokerResources: [{method: Connect}]
                ---
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerListener
                metadata:
                  name: listener
                spec:
                  port: 1883
                "#))],
            &["$DIR/legacy.yaml:7: BrokerAuthorization/authz: spec.listenerRef[0]: listener \"listner\" not found; existing listeners: listener"],
        ),
        case(
            "two Broker resources",
            vec![
                ("broker.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: Broker
                    metadata:
                      name: default
                    ---
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: Broker
                    metadata:
                      name: other
                    "#)),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &["$DIR/broker.yaml:9: Broker/other: metadata.name: only one Broker is allowed; already defined: Broker/default at $DIR/broker.yaml:1"],
        ),
        case(
            "brokerRef names another broker",
            vec![
                ("broker.yaml", "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: Broker\nmetadata:\n  name: default\n".into()),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883).replace("spec:\n", "spec:\n  brokerRef: main\n")),
            ],
            &["$DIR/l.yaml:6: BrokerListener/l: spec.brokerRef: broker \"main\" not found; existing brokers: default"],
        ),
        case(
            "broker limits out of range",
            vec![
                ("broker.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: Broker
                    metadata:
                      name: default
                    spec:
                      advanced:
                        clients:
                          maxReceiveMaximum: 0
                          maxPacketSizeBytes: 300000000
                          subscriberQueueLimit: {length: 10, strategy: DropNewest}
                          maxClientIdLength: 22
                          maxSessionsPerAddress: 0
                      diagnostics:
                        selfCheck: {mode: Enabled, intervalSeconds: 10}
                    "#)),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &[
                "$DIR/broker.yaml:8: Broker/default: spec.advanced.clients.maxReceiveMaximum: must be between 1 and 65535, got 0",
                "$DIR/broker.yaml:9: Broker/default: spec.advanced.clients.maxPacketSizeBytes: must be between 1 and 268435456, got 300000000",
                "$DIR/broker.yaml:10: Broker/default: spec.advanced.clients.subscriberQueueLimit.strategy: unknown value \"DropNewest\"; expected one of: None, DropOldest",
                "$DIR/broker.yaml:11: Broker/default: spec.advanced.clients.maxClientIdLength: must be between 23 and 65535, got 22",
                "$DIR/broker.yaml:12: Broker/default: spec.advanced.clients.maxSessionsPerAddress: must be between 1 and 4294967296, got 0",
                "$DIR/broker.yaml:14: Broker/default: spec.diagnostics.selfCheck.intervalSeconds: must be between 30 and 300, got 10",
            ],
        ),
        case(
            "bad base64 in Secret data",
            vec![
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
                ("s.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: \"%%%\"\n".into()),
            ],
            &["$DIR/s.yaml:6: Secret/s: data[token]: invalid base64: Invalid symbol 37, offset 0."],
        ),
        case(
            "kubernetes.io/tls secret without tls.key",
            vec![
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
                ("s.yaml", format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n", b64(&good.cert_pem))),
            ],
            &["$DIR/s.yaml:5: Secret/s: type: a kubernetes.io/tls secret needs the key tls.key"],
        ),
        case(
            "CA issuer without its secret (and no cascade to the listener)",
            vec![
                ("i.yaml", y(r#"
                    apiVersion: cert-manager.io/v1
                    kind: Issuer
                    metadata:
                      name: ca-issuer
                    spec:
                      ca:
                        secretName: my-ca
                    "#)),
                ("l.yaml", auto_listener(&[]).replace("kind: ClusterIssuer", "kind: Issuer").replace("name: azure-iot-operations-aio-certificate-issuer", "name: ca-issuer")),
            ],
            &["$DIR/i.yaml:7: Issuer/ca-issuer: spec.ca.secretName: secret \"my-ca\" not found; no secrets are defined"],
        ),
        case(
            "CA issuer secret key mismatch",
            vec![
                ("i.yaml", "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: ca-issuer\nspec:\n  ca: {secretName: my-ca}\n".into()),
                ("secrets/my-ca/tls.crt", client_ca.cert_pem.clone()),
                ("secrets/my-ca/tls.key", good.key_pem.clone()),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &["$DIR/i.yaml:6: ClusterIssuer/ca-issuer: spec.ca.secretName: secret \"my-ca\": tls.key does not match the certificate in tls.crt"],
        ),
        case(
            "unsupported issuer type",
            vec![
                ("i.yaml", "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: letsencrypt\nspec:\n  acme:\n    server: https://acme.example\n".into()),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &["$DIR/i.yaml:6: ClusterIssuer/letsencrypt: spec.acme: unsupported issuer type: edgemq supports selfSigned and ca issuers"],
        ),
        case(
            "built-in issuer name is reserved",
            vec![
                ("i.yaml", "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata:\n  name: azure-iot-operations-aio-certificate-issuer\nspec:\n  selfSigned: {}\n".into()),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &["$DIR/i.yaml:4: ClusterIssuer/azure-iot-operations-aio-certificate-issuer: metadata.name: this name is reserved for the built-in issuer"],
        ),
        case(
            "custom endpoint without TLS",
            vec![("authn.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerAuthentication
                metadata:
                  name: custom
                spec:
                  authenticationMethods:
                    - method: Custom
                      customSettings:
                        endpoint: http://auth-server:80
                "#))],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/custom: not used by any listener port (no authenticationRef names it)",
                "$DIR/authn.yaml:9: BrokerAuthentication/custom: spec.authenticationMethods[0].customSettings.endpoint: \"http://auth-server:80\" must be an https:// URL (TLS is required)",
            ],
        ),
        case(
            "plain-text password in passwords.toml",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerAuthentication
                    metadata:
                      name: passwords
                    spec:
                      authenticationMethods:
                        - method: UsernamePassword
                          usernamePasswordSettings:
                            secretRef: passwords-db
                    "#)),
                ("secrets/passwords-db/passwords.toml", "[client1]\npassword = \"secret\"\n".into()),
            ],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/passwords: not used by any listener port (no authenticationRef names it)",
                "$DIR/authn.yaml:9: BrokerAuthentication/passwords: spec.authenticationMethods[0].usernamePasswordSettings.secretRef: secret \"passwords-db\": passwords.toml: line 2: [client1] password: not a PBKDF2-SHA512 hash: expected $pbkdf2-sha512$i=N,l=64$SALT$HASH (see edgemq password-hash)",
            ],
        ),
        case(
            "passwords.toml is not TOML",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mq.iotoperations.azure.com/v1beta1
                    kind: BrokerAuthentication
                    metadata:
                      name: authn
                    spec:
                      listenerRef: []
                      authenticationMethods:
                        - usernamePassword:
                            secretName: passwords-db
                    "#)),
                ("secrets/passwords-db/passwords.toml", format!("{PASSWORDS_TOML}[client3\n")),
            ],
            &["$DIR/authn.yaml:9: BrokerAuthentication/authn: spec.authenticationMethods[0].usernamePassword.secretName: secret \"passwords-db\": passwords.toml: line 12: unclosed table, expected `]`"],
        ),
        case(
            "v1beta1 x509Attributes.toml missing",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mq.iotoperations.azure.com/v1beta1
                    kind: BrokerAuthentication
                    metadata:
                      name: authn
                    spec:
                      listenerRef: []
                      authenticationMethods:
                        - x509:
                            trustedClientCaCert: client-ca
                            attributes:
                              secretName: x509-attributes
                    "#)),
                ("configmaps/client-ca/client_ca.pem", client_ca.cert_pem.clone()),
                ("secrets/x509-attributes/attributes.toml", "[root]\n".into()),
            ],
            &["$DIR/authn.yaml:11: BrokerAuthentication/authn: spec.authenticationMethods[0].x509.attributes.secretName: secret \"x509-attributes\" has no key x509Attributes.toml (keys: attributes.toml)"],
        ),
        case(
            // Parsed by edgemq-formats, as the X509 method parses it: reported at the line.
            "v1beta1 x509Attributes.toml with a subject that is not a name",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mq.iotoperations.azure.com/v1beta1
                    kind: BrokerAuthentication
                    metadata:
                      name: authn
                    spec:
                      listenerRef: []
                      authenticationMethods:
                        - x509:
                            trustedClientCaCert: client-ca
                            attributes:
                              secretName: x509-attributes
                    "#)),
                ("configmaps/client-ca/client_ca.pem", client_ca.cert_pem.clone()),
                (
                    "secrets/x509-attributes/x509Attributes.toml",
                    "[root]\nsubject = \"CN = Root\"\nattributes = { org = \"contoso\" }\n\n\
                     [fan]\nsubject = \"smart-fan\"\nattributes = { building = \"17\" }\n"
                        .into(),
                ),
            ],
            &["$DIR/authn.yaml:11: BrokerAuthentication/authn: spec.authenticationMethods[0].x509.attributes.secretName: secret \"x509-attributes\": x509Attributes.toml: line 6: [fan] subject \"smart-fan\": \"smart-fan\" is not TYPE = value"],
        ),
        case(
            "v1 authorizationAttributes with a subject that is not a name",
            vec![
                ("authn.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerAuthentication
                    metadata:
                      name: x509
                    spec:
                      authenticationMethods:
                        - method: X509
                          x509Settings:
                            trustedClientCaCert: client-ca
                            authorizationAttributes:
                              fan:
                                subject: " , "
                                attributes: {building: "17"}
                    "#)),
                ("configmaps/client-ca/client_ca.pem", client_ca.cert_pem.clone()),
            ],
            &[
                "$DIR/authn.yaml:1: warning: BrokerAuthentication/x509: not used by any listener port (no authenticationRef names it)",
                "$DIR/authn.yaml:12: BrokerAuthentication/x509: spec.authenticationMethods[0].x509Settings.authorizationAttributes[fan].subject: not a distinguished name: empty distinguished name",
            ],
        ),
        case(
            "authorization rules: missing topics and bad filters",
            vec![
                ("authz.yaml", y(r#"
                    apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerAuthorization
                    metadata:
                      name: authz
                    spec:
                      authorizationPolicies:
                        cache: Sometimes
                        rules:
                          - principals:
                              clientIds: [sensor]
                            brokerResources:
                              - method: Publish
                              - method: Subscribe
                                topics: ["a/#/b", "x/{principal.password}", "ok/+"]
                    "#)),
                ("l.yaml", plain_listener("l", "ClusterIp", 1883)),
            ],
            &[
                "$DIR/authz.yaml:1: warning: BrokerAuthorization/authz: not used by any listener port (no authorizationRef names it)",
                "$DIR/authz.yaml:7: BrokerAuthorization/authz: spec.authorizationPolicies.cache: unknown value \"Sometimes\"; expected one of: Enabled, Disabled",
                "$DIR/authz.yaml:12: BrokerAuthorization/authz: spec.authorizationPolicies.rules[0].brokerResources[0].topics: at least one topic is required for Publish and Subscribe",
                "$DIR/authz.yaml:14: BrokerAuthorization/authz: spec.authorizationPolicies.rules[0].brokerResources[1].topics[0]: topic \"a/#/b\": '#' must be a whole level and the last one",
                "$DIR/authz.yaml:14: BrokerAuthorization/authz: spec.authorizationPolicies.rules[0].brokerResources[1].topics[1]: topic \"x/{principal.password}\": unknown variable {principal.password}; expected {principal.clientId}, {principal.username} or {principal.attributes.NAME}",
            ],
        ),
        case(
            "missing metadata.name and spec.ports",
            vec![("l.yaml", y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata:
                  namespace: azure-iot-operations
                spec:
                  serviceType: ClusterIp
                "#))],
            &[
                "$DIR/l.yaml:3: BrokerListener/?: metadata.name: required field is missing",
                "$DIR/l.yaml:5: BrokerListener/?: spec.ports: required field is missing",
            ],
        ),
        case(
            "nodePort on a LoadBalancer is a warning",
            vec![("l.yaml", plain_listener("l", "LoadBalancer", 1883).replace("- port: 1883", "- port: 1883\n      nodePort: 31883"))],
            &["$DIR/l.yaml:9: warning: BrokerListener/l: spec.ports[0].nodePort: only used with serviceType NodePort; ignored"],
        ),
        case(
            "legacy Key Vault TLS",
            vec![("legacy.yaml", y(r#"
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerListener
                metadata:
                  name: listener
                spec:
                  port: 8883
                  tls:
                    keyVault:
                      vault: {url: https://v.vault.azure.net}
                "#))],
            &["$DIR/legacy.yaml:8: BrokerListener/listener: spec.tls.keyVault: Azure Key Vault certificates are not supported; use automatic or manual"],
        ),
    ]
}

#[test]
fn corpus() {
    let cases = cases();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (dir, result) = load(&c.files);
        let actual = rendered(dir.path(), &result);
        let expected: Vec<String> = c.expected.iter().map(|s| (*s).to_owned()).collect();
        if actual != expected {
            failures.push(format!(
                "case \"{}\":\n  expected:\n    {}\n  actual:\n    {}",
                c.name,
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
        let has_error = c.expected.iter().any(|e| !e.contains(": warning: "));
        assert_eq!(
            result.is_err(),
            has_error,
            "case \"{}\": Err iff an error is expected",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Problems in several files and kinds are all reported in one run, sorted by file and line.
#[test]
fn every_problem_is_reported_at_once() {
    let files = vec![
        (
            "a-listeners.yaml",
            y(r#"
            apiVersion: mqttbroker.iotoperations.azure.com/v1
            kind: BrokerListener
            metadata:
              name: l
            spec:
              serviceType: Internal
              ports:
                - port: 0
                - port: 1883
                  authenticationRef: nope
                  protocl: Mqtt
            ---
            apiVersion: v1
            kind: Deployment
            metadata:
              name: web
            "#),
        ),
        (
            "b-secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: \"%%%\"\n".into(),
        ),
        ("c-broken.yaml", "kind: [\n".into()),
    ];
    let (dir, result) = load(&files);
    assert!(result.is_err());
    assert_eq!(
        rendered(dir.path(), &result),
        vec![
            "$DIR/a-listeners.yaml:6: BrokerListener/l: spec.serviceType: unknown value \"Internal\"; expected one of: ClusterIp, NodePort, LoadBalancer",
            "$DIR/a-listeners.yaml:8: BrokerListener/l: spec.ports[0].port: must be between 1 and 65535, got 0",
            "$DIR/a-listeners.yaml:10: BrokerListener/l: spec.ports[1].authenticationRef: port 1883: authentication \"nope\" not found; no authentications are defined",
            "$DIR/a-listeners.yaml:11: warning: BrokerListener/l: spec.ports[1].protocl: unknown field, ignored (did you mean protocol?)",
            "$DIR/a-listeners.yaml:14: warning: Deployment/web: kind: Deployment (v1) is not a resource edgemq reads; skipped (edgemq reads: Broker, BrokerListener, BrokerAuthentication, BrokerAuthorization, Secret, ConfigMap, Issuer, ClusterIssuer, List)",
            "$DIR/b-secret.yaml:6: Secret/s: data[token]: invalid base64: Invalid symbol 37, offset 0.",
            "$DIR/c-broken.yaml:1: invalid YAML: unclosed bracket '['",
        ]
    );
}
