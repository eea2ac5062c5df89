//! Configurations that load: the seed's three listeners, the v1beta1 forms (mapping to the same
//! model as v1), the ways of writing a secret, service types → bind addresses, defaults.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{b64, ca, kubectl_tls_secret, load_ok, tempdir, write, y, Pair, PASSWORDS_TOML};
use edgemq_config::{
    AuthnMethod, AutoCert, BrokerMethod, BrokerSettings, Config, IssuerKind, KeyAlgorithm,
    Listener, Port, Protocol, QueueLimit, QueueStrategy, SatVerification, SelfCheck, ServiceType,
    SubjectAttributes, Tls, X509Auth, BUILTIN_ISSUER,
};

/// `check` and `serve` both warn, once per ServiceAccountToken method verified in the
/// cluster, when not running in one; no other warning.
fn assert_only_in_cluster_sat_warnings(warnings: &[edgemq_config::Diagnostic], methods: usize) {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let sat = warnings
        .iter()
        .filter(|w| {
            w.message.starts_with(
                "cannot verify service account tokens: not running in a Kubernetes cluster",
            )
        })
        .count();
    assert_eq!(
        (sat, warnings.len()),
        if in_cluster {
            (0, 0)
        } else {
            (methods, methods)
        },
        "{warnings:?}"
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

const SEED_LISTENERS: &str = r#"
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerListener
    metadata:
      name: default
      namespace: azure-iot-operations
    spec:
      brokerRef: default
      serviceType: ClusterIp
      serviceName: aio-broker
      ports:
        - port: 18883
          protocol: Mqtt
          authenticationRef: default
          tls:
            mode: Automatic
            certManagerCertificateSpec:
              issuerRef:
                group: cert-manager.io
                kind: ClusterIssuer
                name: azure-iot-operations-aio-certificate-issuer
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerListener
    metadata:
      name: nodeport-listener
    spec:
      brokerRef: default
      serviceType: NodePort
      ports:
        - port: 1883
          nodePort: 31883
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerListener
    metadata:
      name: loadbalancer-listener
    spec:
      brokerRef: default
      serviceType: LoadBalancer
      ports:
        - port: 8883
          protocol: Mqtt
          authenticationRef: x509-policy
          tls:
            mode: Manual
            manual:
              secretRef: broker-server-cert
    "#;

const SEED_AUTHN: &str = r#"
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerAuthentication
    metadata:
      name: default
    spec:
      authenticationMethods:
        - method: ServiceAccountToken
          serviceAccountTokenSettings:
            audiences: [aio-internal]
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerAuthentication
    metadata:
      name: x509-policy
    spec:
      authenticationMethods:
        - method: X509
          x509Settings:
            trustedClientCaCert: clients42-ca
    "#;

#[test]
fn seed_three_listeners() {
    let server_ca = ca("AIO42 Root CA");
    let server = server_ca.leaf("mqtts-endpoint", &["127.0.0.1"]);
    let clients = ca("Clients42 Root CA");
    let dir = tempdir();
    write(
        dir.path(),
        &[
            ("listeners.yaml", y(SEED_LISTENERS)),
            ("authentication.yaml", y(SEED_AUTHN)),
            (
                "secrets/broker-server-cert/tls.crt",
                server.cert_pem.clone(),
            ),
            ("secrets/broker-server-cert/tls.key", server.key_pem.clone()),
            (
                "configmaps/clients42-ca/client_ca.pem",
                clients.cert_pem.clone(),
            ),
        ],
    );
    let loaded = load_ok(dir.path());
    assert_only_in_cluster_sat_warnings(&loaded.warnings, 1);
    let file: PathBuf = dir.path().join("listeners.yaml");
    // No san: the defaults (serviceName, host name, localhost, 127.0.0.1).
    let mut dns = vec!["aio-broker".to_string()];
    dns.extend(edgemq_config::host_name().filter(|h| h != "localhost" && h != "aio-broker"));
    dns.push("localhost".into());
    let builtin = AutoCert {
        issuer: BUILTIN_ISSUER.into(),
        issuer_kind: IssuerKind::BuiltIn,
        dns,
        ip: vec!["127.0.0.1".parse().unwrap()],
        duration: Duration::from_secs(2160 * 3600),
        renew_before: Duration::from_secs(5 * 3600),
        algorithm: KeyAlgorithm::Ec256,
        rotate_key: true,
    };
    let expected = vec![
        Listener {
            name: "default".into(),
            service_type: ServiceType::ClusterIp,
            ports: vec![Port {
                port: 18883,
                node_port: None,
                bind: addr("127.0.0.1:18883"),
                protocol: Protocol::Mqtt,
                tls: Some(Tls::Automatic(builtin)),
                authentication: Some("default".into()),
                authorization: None,
                max_connections: None,
            }],
            file: file.clone(),
            line: 1,
        },
        Listener {
            name: "nodeport-listener".into(),
            service_type: ServiceType::NodePort,
            ports: vec![Port {
                port: 1883,
                node_port: Some(31883),
                bind: addr("0.0.0.0:31883"),
                protocol: Protocol::Mqtt,
                tls: None,
                authentication: None,
                authorization: None,
                max_connections: None,
            }],
            file: file.clone(),
            line: 22,
        },
        Listener {
            name: "loadbalancer-listener".into(),
            service_type: ServiceType::LoadBalancer,
            ports: vec![Port {
                port: 8883,
                node_port: None,
                bind: addr("0.0.0.0:8883"),
                protocol: Protocol::Mqtt,
                tls: Some(Tls::Manual {
                    secret: "broker-server-cert".into(),
                    chain_pem: server.cert_pem.into_bytes(),
                    key_pem: server.key_pem.into_bytes(),
                }),
                authentication: Some("x509-policy".into()),
                authorization: None,
                max_connections: None,
            }],
            file,
            line: 33,
        },
    ];
    let config = loaded.config;
    assert_eq!(config.listeners, expected);
    assert_eq!(
        config.authentications["default"].methods,
        [AuthnMethod::ServiceAccountToken {
            audiences: vec!["aio-internal".into()],
            verification: SatVerification::InCluster,
        }]
    );
    assert_eq!(
        config.authentications["x509-policy"].methods,
        [AuthnMethod::X509(X509Auth {
            trusted_client_ca_config_map: "clients42-ca".into(),
            attributes: BTreeMap::new(),
            attributes_secret: None,
        })]
    );
    assert_eq!(config.issuers.keys().collect::<Vec<_>>(), [BUILTIN_ISSUER]);
    assert_eq!(config.broker, BrokerSettings::default());
    assert_eq!(
        config.config_maps["clients42-ca"]["client_ca.pem"],
        clients.cert_pem
    );
}

/// Files every version of the "full" configuration below needs.
fn shared_files(
    custom_client: &Pair,
    issuer_ca: &Pair,
    client_ca_pem: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("secrets/custom-auth-client-cert/tls.crt", custom_client.cert_pem.clone()),
        ("secrets/custom-auth-client-cert/tls.key", custom_client.key_pem.clone()),
        ("secrets/my-ca/tls.crt", issuer_ca.cert_pem.clone()),
        ("secrets/my-ca/tls.key", issuer_ca.key_pem.clone()),
        ("secrets/passwords-db/passwords.toml", PASSWORDS_TOML.into()),
        (
            "secrets/x509-attributes/x509Attributes.toml",
            "[root]\nsubject = \"CN = Contoso Root CA Cert, OU = Engineering, C = US\"\n[root.attributes]\norganization = \"contoso\"\n\n[smart-fan]\nsubject = \"CN = smart-fan\"\n[smart-fan.attributes]\nbuilding = \"17\"\n".into(),
        ),
        ("configmaps/custom-auth-ca/ca.pem", client_ca_pem.into()),
        ("configmaps/client-ca/client_ca.pem", client_ca_pem.into()),
        (
            "issuer.yaml",
            "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata:\n  name: my-ca-issuer\nspec:\n  ca:\n    secretName: my-ca\n".into(),
        ),
    ]
}

const V1_FULL: &str = r#"
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: Broker
    metadata: {name: broker}
    spec:
      diagnostics:
        logs: {level: debug}
        selfCheck: {mode: Disabled}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerListener
    metadata: {name: listener}
    spec:
      brokerRef: broker
      serviceType: LoadBalancer
      ports:
        - port: 8883
          protocol: WebSockets
          authenticationRef: authn
          authorizationRef: authz
          tls:
            mode: Automatic
            certManagerCertificateSpec:
              issuerRef: {name: my-ca-issuer, kind: Issuer, group: cert-manager.io}
              duration: 720h
              renewBefore: 240h
              san: {dns: [n013edge.local], ip: [10.13.100.11]}
              privateKey: {algorithm: Ec384, rotationPolicy: Never}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerAuthentication
    metadata: {name: authn}
    spec:
      authenticationMethods:
        - method: Custom
          customSettings:
            endpoint: https://auth-server:443
            caCertConfigMap: custom-auth-ca
            auth: {x509: {secretRef: custom-auth-client-cert}}
            headers: {X-Tenant: edge-1}
        - method: ServiceAccountToken
          serviceAccountTokenSettings: {audiences: [aio-mq, my-audience]}
        - method: UsernamePassword
          usernamePasswordSettings: {secretRef: passwords-db}
        - method: X509
          x509Settings:
            trustedClientCaCert: client-ca
            authorizationAttributes:
              root:
                subject: "CN = Contoso Root CA Cert, OU = Engineering, C = US"
                attributes: {organization: contoso}
              smart-fan:
                subject: "CN = smart-fan"
                attributes: {building: "17"}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1
    kind: BrokerAuthorization
    metadata: {name: authz}
    spec:
      authorizationPolicies:
        cache: Disabled
        rules:
          - principals:
              clientIds: [temperature-sensor]
              attributes: [{city: seattle}]
            brokerResources:
              - method: Connect
              - method: Publish
                topics: ["/telemetry/{principal.clientId}"]
    "#;

/// `V1_FULL` in the legacy `mq.iotoperations.azure.com/v1beta1` shapes.
const LEGACY_FULL: &str = r#"
    apiVersion: mq.iotoperations.azure.com/v1beta1
    kind: Broker
    metadata: {name: broker}
    spec:
      diagnostics:
        logLevel: debug
        enableSelfCheck: false
    ---
    apiVersion: mq.iotoperations.azure.com/v1beta1
    kind: BrokerListener
    metadata: {name: listener}
    spec:
      brokerRef: broker
      serviceType: loadBalancer
      serviceName: aio-mq-dmqtt-frontend
      port: 8883
      protocol: websockets
      authenticationEnabled: true
      authorizationEnabled: true
      tls:
        automatic:
          issuerRef: {name: my-ca-issuer, kind: Issuer, group: cert-manager.io}
          duration: 720h
          renewBefore: 240h
          san: {dns: [n013edge.local], ip: [10.13.100.11]}
          privateKey: {algorithm: ECDSA, size: 384, rotationPolicy: never}
    ---
    apiVersion: mq.iotoperations.azure.com/v1beta1
    kind: BrokerAuthentication
    metadata: {name: authn}
    spec:
      listenerRef: [listener]
      authenticationMethods:
        - custom:
            endpoint: https://auth-server:443
            caCert: custom-auth-ca
            auth: {x509: {secretName: custom-auth-client-cert, namespace: azure-iot-operations}}
            headers: {X-Tenant: edge-1}
        - sat: {audiences: ["aio-mq", "my-audience"]}
        - usernamePassword: {secretName: passwords-db}
        - x509: {trustedClientCaCert: client-ca, attributes: {secretName: x509-attributes}}
    ---
    apiVersion: mq.iotoperations.azure.com/v1beta1
    kind: BrokerAuthorization
    metadata: {name: authz}
    spec:
      listenerRef: [listener]
      authorizationPolicies:
        enableCache: false
        rules:
          - principals:
              clientids: [temperature-sensor]
              attributes: [{city: seattle}]
            brokerResources:
              - method: connect
              - method: publish
                topics: ["/telemetry/{principal.clientId}"]
    "#;

/// `V1_FULL` in the transitional `mqttbroker.iotoperations.azure.com/v1beta1` spellings.
const TRANSITIONAL_FULL: &str = r#"
    apiVersion: mqttbroker.iotoperations.azure.com/v1beta1
    kind: Broker
    metadata: {name: broker}
    spec:
      diagnostics:
        logs: {level: debug}
        selfCheck: {mode: Disabled}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1beta1
    kind: BrokerListener
    metadata: {name: listener}
    spec:
      brokerRef: broker
      serviceType: LoadBalancer
      ports:
        - port: 8883
          protocol: WebSockets
          authenticationRef: authn
          authorizationRef: authz
          tls:
            mode: Automatic
            automatic:
              issuerRef: {name: my-ca-issuer, kind: Issuer}
              duration: 720h
              renewBefore: 240h
              secretNamespace: azure-iot-operations
              san: {dns: [n013edge.local], ip: [10.13.100.11]}
              privateKey: {algorithm: Ec384, rotationPolicy: Never}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1beta1
    kind: BrokerAuthentication
    metadata: {name: authn}
    spec:
      authenticationMethods:
        - method: Custom
          custom:
            endpoint: https://auth-server:443
            caCertConfigMap: custom-auth-ca
            auth: {x509: {secretRef: custom-auth-client-cert}}
            headers: {X-Tenant: edge-1}
        - method: ServiceAccountToken
          serviceAccountToken: {audiences: [aio-mq, my-audience]}
        - method: UsernamePassword
          usernamePasswordSettings: {secretRef: passwords-db}
        - method: X509Credentials
          x509Credentials:
            trustedClientCaCert: client-ca
            authorizationAttributes:
              root:
                subject: "CN = Contoso Root CA Cert, OU = Engineering, C = US"
                attributes: {organization: contoso}
              smart-fan:
                subject: "CN = smart-fan"
                attributes: {building: 17}
    ---
    apiVersion: mqttbroker.iotoperations.azure.com/v1beta1
    kind: BrokerAuthorization
    metadata: {name: authz}
    spec:
      authorizationPolicies:
        enableCache: false
        rules:
          - principals:
              clientIds: [temperature-sensor]
              attributes: [{city: seattle}]
            brokerResources:
              - method: Connect
              - method: Publish
                topics: ["/telemetry/{principal.clientId}"]
    "#;

/// The model without where listeners were written (the only thing versions may change).
fn located_nowhere(mut c: Config) -> Config {
    for l in &mut c.listeners {
        l.file = PathBuf::new();
        l.line = 0;
    }
    c
}

#[test]
fn v1beta1_forms_map_to_the_v1_model() {
    let custom_client = common::self_signed("edgemq-broker");
    let issuer_ca_obj = ca("My CA");
    let issuer_ca = Pair {
        cert_pem: issuer_ca_obj.cert_pem.clone(),
        key_pem: issuer_ca_obj.key_pem.clone(),
    };
    let client_ca = ca("Contoso Root CA Cert");
    let load = |config: &str| {
        let dir = tempdir();
        let mut files = shared_files(&custom_client, &issuer_ca, &client_ca.cert_pem);
        files.push(("config.yaml", y(config)));
        write(dir.path(), &files);
        let loaded = load_ok(dir.path());
        assert_only_in_cluster_sat_warnings(&loaded.warnings, 1);
        located_nowhere(loaded.config)
    };
    let v1 = load(V1_FULL);
    // Legacy attributes come from a secret; the model says which, the rest is identical.
    let mut legacy = load(LEGACY_FULL);
    let Some(AuthnMethod::X509(x)) = legacy
        .authentications
        .get_mut("authn")
        .and_then(|a| a.methods.last_mut())
    else {
        panic!("legacy x509 method")
    };
    assert_eq!(
        x.attributes_secret.take().as_deref(),
        Some("x509-attributes")
    );
    assert_eq!(legacy, v1, "legacy v1beta1");
    assert_eq!(load(TRANSITIONAL_FULL), v1, "transitional v1beta1");

    // And the v1 model is what the YAML says.
    let port = &v1.listeners[0].ports[0];
    assert_eq!(port.protocol, Protocol::WebSockets);
    assert_eq!(port.authentication.as_deref(), Some("authn"));
    assert_eq!(port.authorization.as_deref(), Some("authz"));
    let Some(Tls::Automatic(auto)) = &port.tls else {
        panic!("automatic TLS")
    };
    assert_eq!(auto.issuer, "my-ca-issuer");
    assert!(matches!(&auto.issuer_kind, IssuerKind::Ca { secret, .. } if secret == "my-ca"));
    assert_eq!(auto.duration, Duration::from_secs(720 * 3600));
    assert_eq!(auto.renew_before, Duration::from_secs(240 * 3600));
    assert_eq!(auto.algorithm, KeyAlgorithm::Ec384);
    assert!(!auto.rotate_key);
    assert_eq!(auto.dns, ["n013edge.local"]);
    assert_eq!(
        auto.ip,
        ["10.13.100.11".parse::<std::net::IpAddr>().expect("ip")]
    );
    let methods = &v1.authentications["authn"].methods;
    assert_eq!(methods.len(), 4);
    let AuthnMethod::Custom(custom) = &methods[0] else {
        panic!("custom first")
    };
    assert_eq!(custom.endpoint, "https://auth-server:443");
    assert_eq!(custom.ca_config_map.as_deref(), Some("custom-auth-ca"));
    assert_eq!(
        custom.client_cert_secret.as_deref(),
        Some("custom-auth-client-cert")
    );
    assert_eq!(custom.headers["X-Tenant"], "edge-1");
    let AuthnMethod::X509(x) = &methods[3] else {
        panic!("x509 last")
    };
    assert_eq!(
        x.attributes["smart-fan"],
        SubjectAttributes {
            subject: "CN = smart-fan".into(),
            attributes: [("building".to_owned(), "17".to_owned())].into(),
        }
    );
    let authz = &v1.authorizations["authz"];
    assert!(!authz.cache);
    assert_eq!(authz.rules[0].principals.client_ids, ["temperature-sensor"]);
    assert_eq!(
        authz.rules[0].broker_resources[1].method,
        BrokerMethod::Publish
    );
    assert_eq!(v1.broker.log_level.as_deref(), Some("debug"));
    assert!(!v1.broker.self_check.enabled);
}

/// One manual-TLS listener, and the same secret written four ways.
#[test]
fn secret_forms_give_the_same_model() {
    let pair = common::self_signed("localhost");
    let listener = y(r#"
        apiVersion: mqttbroker.iotoperations.azure.com/v1
        kind: BrokerListener
        metadata: {name: lb}
        spec:
          serviceType: LoadBalancer
          ports:
            - port: 8883
              tls: {mode: Manual, manual: {secretRef: server-cert}}
        "#);
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let forms: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "folder",
            vec![
                ("secrets/server-cert/tls.crt", pair.cert_pem.clone()),
                ("secrets/server-cert/tls.key", pair.key_pem.clone()),
            ],
        ),
        (
            "data",
            vec![(
                "secret.yaml",
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: server-cert\n  namespace: azure-iot-operations\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                    b64(&pair.cert_pem),
                    b64(&pair.key_pem)
                ),
            )],
        ),
        (
            "stringData",
            vec![(
                "secret.yaml",
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: server-cert\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
                    indent(&pair.cert_pem),
                    indent(&pair.key_pem)
                ),
            )],
        ),
        ("kubectl", vec![("server-cert.yml", kubectl_tls_secret("server-cert", &pair))]),
    ];
    let mut models = Vec::new();
    for (form, files) in forms {
        let dir = tempdir();
        let mut files = files;
        files.push(("listener.yaml", listener.clone()));
        write(dir.path(), &files);
        let loaded = load_ok(dir.path());
        assert!(loaded.warnings.is_empty(), "{form}: {:?}", loaded.warnings);
        models.push((form, located_nowhere(loaded.config)));
    }
    let (_, first) = &models[0];
    for (form, model) in &models[1..] {
        assert_eq!(model, first, "{form} differs from the folder form");
    }
    assert_eq!(
        first.secrets["server-cert"].data["tls.key"],
        pair.key_pem.as_bytes()
    );
}

#[test]
fn service_types_bind_as_the_spec_says() {
    let dir = tempdir();
    write(
        dir.path(),
        &[
            (
                "v1.yaml",
                y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata: {name: cluster}
                spec:
                  ports: [{port: 1883}, {port: 1884, protocol: websockets}]
                ---
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata: {name: node}
                spec:
                  serviceType: nodeport
                  ports: [{port: 1883, nodePort: 31883}, {port: 1885}]
                ---
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: BrokerListener
                metadata: {name: balancer}
                spec:
                  serviceType: LOADBALANCER
                  ports: [{port: 8883}]
                "#),
            ),
            (
                "z-legacy.yml",
                y(r#"
                apiVersion: mq.iotoperations.azure.com/v1beta1
                kind: BrokerListener
                metadata: {name: legacy}
                spec:
                  serviceType: clusterIp
                  port: 2883
                "#),
            ),
            ("notes.txt", "not a resource".into()),
        ],
    );
    let config = load_ok(dir.path()).config;
    let binds: Vec<(&str, Vec<SocketAddr>)> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.ports.iter().map(|p| p.bind).collect()))
        .collect();
    assert_eq!(
        binds,
        [
            (
                "cluster",
                vec![addr("127.0.0.1:1883"), addr("127.0.0.1:1884")]
            ),
            ("node", vec![addr("0.0.0.0:31883"), addr("0.0.0.0:1885")]),
            ("balancer", vec![addr("0.0.0.0:8883")]),
            ("legacy", vec![addr("127.0.0.1:2883")]),
        ]
    );
    assert_eq!(config.listeners[0].ports[1].protocol, Protocol::WebSockets);
    assert_eq!(config.listeners[1].service_type, ServiceType::NodePort);
}

#[test]
fn broker_settings_and_defaults() {
    let dir = tempdir();
    write(
        dir.path(),
        &[
            (
                "broker.yaml",
                y(r#"
                apiVersion: mqttbroker.iotoperations.azure.com/v1
                kind: Broker
                metadata: {name: default, namespace: azure-iot-operations}
                spec:
                  memoryProfile: Medium
                  advanced:
                    clients:
                      maxSessionExpirySeconds: 282277
                      maxMessageExpirySeconds: 1622
                      maxPacketSizeBytes: 268435456
                      maxReceiveMaximum: 15000
                      maxKeepAliveSeconds: 300
                      subscriberQueueLimit: {length: 1000, strategy: dropoldest}
                      maxTopicLevels: 64
                      maxFiltersPerPacket: 50
                      maxSessions: 5000
                      maxSessionsPerAddress: 20
                      maxClientIdLength: 256
                    sysIntervalSeconds: 0
                  diagnostics:
                    logs: {level: info}
                    metrics: {prometheusPort: 9601}
                    selfCheck: {mode: Enabled, intervalSeconds: 60, timeoutSeconds: 20}
                "#),
            ),
            (
                "listener.yaml",
                y(r#"
                apiVersion: v1
                kind: List
                items:
                  - apiVersion: mqttbroker.iotoperations.azure.com/v1
                    kind: BrokerListener
                    metadata: {name: l}
                    spec:
                      brokerRef: default
                      ports:
                        - port: 18883
                          maxConnections: 50
                          tls:
                            mode: automatic
                            certManagerCertificateSpec:
                              issuerRef: {name: azure-iot-operations-aio-certificate-issuer}
                              duration: 1h30m
                              renewBefore: 90s
                "#),
            ),
        ],
    );
    let loaded = load_ok(dir.path());
    let warnings: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| {
            w.to_string()
                .replace(&dir.path().display().to_string(), "$DIR")
        })
        .collect();
    assert_eq!(
        warnings,
        ["$DIR/broker.yaml:5: warning: Broker/default: spec.memoryProfile: has no effect in edgemq (it sizes an AIO cluster deployment); ignored"]
    );
    assert_eq!(
        loaded.config.broker,
        BrokerSettings {
            max_session_expiry_secs: Some(282277),
            max_message_expiry_secs: Some(1622),
            max_packet_size: Some(268435456),
            max_receive_maximum: Some(15000),
            max_keep_alive_secs: Some(300),
            subscriber_queue: Some(QueueLimit {
                length: 1000,
                strategy: QueueStrategy::DropOldest
            }),
            max_topic_levels: Some(64),
            max_filters_per_packet: Some(50),
            self_check: SelfCheck {
                enabled: true,
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(20),
            },
            log_level: Some("info".into()),
            max_sessions: Some(5000),
            max_sessions_per_address: Some(20),
            max_client_id_length: Some(256),
            sys_interval_secs: Some(0),
            prometheus_port: Some(9601),
            ..BrokerSettings::default()
        }
    );
    // edgemq extension on a port: its own connection limit.
    assert_eq!(
        loaded.config.listeners[0].ports[0].max_connections,
        Some(50)
    );
    let Some(Tls::Automatic(auto)) = &loaded.config.listeners[0].ports[0].tls else {
        panic!("automatic TLS")
    };
    assert_eq!(auto.duration, Duration::from_secs(5400));
    assert_eq!(auto.renew_before, Duration::from_secs(90));
    assert_eq!(auto.algorithm, KeyAlgorithm::Ec256);
    assert!(auto.rotate_key);
    assert_eq!(
        SelfCheck::default(),
        SelfCheck {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(15)
        }
    );
}

#[test]
fn an_empty_folder_loads_with_a_warning() {
    let dir = tempdir();
    let loaded = load_ok(dir.path());
    assert!(loaded.config.listeners.is_empty());
    assert_eq!(
        loaded.config.issuers[BUILTIN_ISSUER].kind,
        IssuerKind::BuiltIn
    );
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(
        loaded.warnings[0].to_string(),
        format!(
            "{}: warning: no BrokerListener is defined: the broker will accept no connections",
            dir.path().display()
        )
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let pair = common::self_signed("localhost");
    let dir = tempdir();
    write(
        dir.path(),
        &[
            ("secrets/server-cert/tls.crt", pair.cert_pem.clone()),
            ("secrets/server-cert/tls.key", pair.key_pem.clone()),
            (
                "l.yaml",
                "apiVersion: mqttbroker.iotoperations.azure.com/v1\nkind: BrokerListener\nmetadata: {name: lb}\nspec:\n  ports: [{port: 8883, tls: {mode: Manual, manual: {secretRef: server-cert}}}]\n".into(),
            ),
        ],
    );
    let debug = format!("{:?}", load_ok(dir.path()).config);
    let key_body = pair.key_pem.lines().nth(1).expect("key body");
    assert!(
        !debug.contains(key_body),
        "a private key leaked into Debug output"
    );
    assert!(debug.contains("<redacted>"));
}
