//! The validated configuration: what the broker runs from. Every API version of every resource
//! maps to these types; references between resources are checked, so a name found here always
//! resolves (a port's `authentication` is a key of `Config::authentications`, and so on).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The ClusterIssuer that always exists: a CA kept in the broker's data dir.
pub const BUILTIN_ISSUER: &str = "azure-iot-operations-aio-certificate-issuer";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub broker: BrokerSettings,
    /// In file order (files sorted by name, documents in order).
    pub listeners: Vec<Listener>,
    pub authentications: BTreeMap<String, Authentication>,
    pub authorizations: BTreeMap<String, Authorization>,
    pub secrets: BTreeMap<String, Secret>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared issuers plus the built-in one ([`BUILTIN_ISSUER`], [`IssuerKind::BuiltIn`]).
    pub issuers: BTreeMap<String, Issuer>,
}

/// Broker-wide settings from the `Broker` resource; `None` = no limit configured (the broker
/// applies its own defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerSettings {
    pub max_session_expiry_secs: Option<u32>,
    pub max_message_expiry_secs: Option<u32>,
    pub max_packet_size: Option<u32>,
    pub max_receive_maximum: Option<u16>,
    pub max_keep_alive_secs: Option<u16>,
    pub subscriber_queue: Option<QueueLimit>,
    /// edgemq extension `maxTopicLevels`: most levels in a topic name or filter.
    pub max_topic_levels: Option<usize>,
    /// edgemq extension `maxFiltersPerPacket`: most filters in one (UN)SUBSCRIBE.
    pub max_filters_per_packet: Option<usize>,
    /// edgemq extension `maxInflightMessages`: QoS 1/2 messages in flight to one client (caps its Receive Maximum).
    pub max_inflight_messages: Option<u16>,
    /// edgemq extension `maxInflightBytes`: message bytes in flight to one client.
    pub max_inflight_bytes: Option<usize>,
    /// edgemq extension `maxQueuedBytes`: message bytes queued per session before the overflow policy applies.
    pub max_queued_bytes: Option<usize>,
    /// edgemq extension `maxSubscriptionsPerSession`: subscriptions one session may hold.
    pub max_subscriptions_per_session: Option<usize>,
    /// edgemq extension `maxSessions`: sessions (online and offline).
    pub max_sessions: Option<usize>,
    /// edgemq extension `maxRetainedMessages`: retained messages.
    pub max_retained_messages: Option<usize>,
    /// edgemq extension `maxRetainedBytes`: bytes of retained messages.
    pub max_retained_bytes: Option<usize>,
    /// edgemq extension `maxConnections`: open connections.
    pub max_connections: Option<usize>,
    /// edgemq extension `maxConnectionsPerAddress`: open connections from one source address.
    pub max_connections_per_address: Option<usize>,
    /// edgemq extension `maxConnectRatePerAddress`: CONNECTs per second from one source address.
    pub max_connect_rate_per_address: Option<u32>,
    /// edgemq extension `v3SessionExpirySeconds`: session expiry of MQTT 3.1.1 persistent sessions, seconds.
    pub v3_session_expiry: Option<u32>,
    /// edgemq extension `memoryBudgetBytes`: resident memory the broker defends (0 = none).
    pub memory_budget: Option<u64>,
    /// edgemq extension `maxSubscriptions`: subscriptions in the broker.
    pub max_subscriptions: Option<usize>,
    /// AIO `persistence.maxSize`: bytes of records the store may hold.
    pub max_store_bytes: Option<u64>,
    /// edgemq extension `serverTopicAliases`: topic aliases the broker assigns on what it
    /// sends to v5 clients that allow them.
    pub server_topic_aliases: Option<u16>,
    /// edgemq extension `maxSessionsPerAddress`: sessions created from one source address.
    pub max_sessions_per_address: Option<usize>,
    /// edgemq extension `maxClientIdLength`: longest client identifier accepted, bytes.
    pub max_client_id_length: Option<usize>,
    /// edgemq extension `advanced.sysIntervalSeconds`: seconds between publications of the
    /// `$SYS` topics (0 = none).
    pub sys_interval_secs: Option<u32>,
    /// edgemq extension `advanced.adminListen`: admin ports, loopback only (docs/admin.md).
    pub admin_listen: Vec<std::net::SocketAddr>,
    pub self_check: SelfCheck,
    pub log_level: Option<String>,
    /// AIO `diagnostics.metrics.prometheusPort`: `/metrics` (and health) served on this port
    /// of every address; `None` when `metrics` is absent (no port opened), 9600 (AIO's
    /// default) when `metrics` has no port, 0 = off.
    pub prometheus_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    pub length: usize,
    pub strategy: QueueStrategy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStrategy {
    /// Never drop (until the session expires).
    None,
    DropOldest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfCheck {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for SelfCheck {
    fn default() -> Self {
        SelfCheck {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub service_type: ServiceType,
    pub ports: Vec<Port>,
    /// Where the listener is defined (first line of its document), for log lines.
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// Binds 127.0.0.1:port.
    ClusterIp,
    /// Binds 0.0.0.0:nodePort (or port when no nodePort is given).
    NodePort,
    /// Binds 0.0.0.0:port.
    LoadBalancer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub node_port: Option<u16>,
    /// The address to listen on, from the service type (spec README §3).
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// `None` = plain TCP.
    pub tls: Option<Tls>,
    /// A key of `Config::authentications`; `None` = anonymous.
    pub authentication: Option<String>,
    /// A key of `Config::authorizations`; `None` = allow all.
    pub authorization: Option<String>,
    /// edgemq extension `maxConnections`: open connections on this port; `None` = the
    /// broker's `--max-connections-per-listener`.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    WebSockets,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Tls {
    /// A `kubernetes.io/tls` secret; checked: the chain parses and the key matches the leaf.
    Manual {
        secret: String,
        chain_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
    Automatic(AutoCert),
}

/// A server certificate the broker issues (and renews) itself, as cert-manager would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCert {
    pub issuer: String,
    pub issuer_kind: IssuerKind,
    pub dns: Vec<String>,
    pub ip: Vec<IpAddr>,
    /// Default 2160h (90 days).
    pub duration: Duration,
    /// Default 5h; always less than `duration`.
    pub renew_before: Duration,
    pub algorithm: KeyAlgorithm,
    /// rotationPolicy `Always` (default) = a new key at every renewal.
    pub rotate_key: bool,
}

/// Parsed by edgemq-formats, the parser the certificate tools use too.
pub use edgemq_formats::KeyAlgorithm;

#[derive(Clone, PartialEq, Eq)]
pub enum IssuerKind {
    /// The broker's own CA in the data dir.
    BuiltIn,
    /// The server certificate signs itself.
    SelfSigned,
    /// A CA from a secret (`tls.crt`, `tls.key`; checked to parse and match).
    Ca {
        secret: String,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub name: String,
    /// A `ClusterIssuer` (the built-in one is).
    pub cluster: bool,
    pub kind: IssuerKind,
}

/// Key → bytes. `Debug` shows key names and sizes only: secrets never reach a log.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret {
    pub data: BTreeMap<String, Vec<u8>>,
}

/// An ordered authentication chain (security.md §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub name: String,
    pub methods: Vec<AuthnMethod>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthnMethod {
    Custom(CustomAuth),
    ServiceAccountToken {
        audiences: Vec<String>,
        verification: SatVerification,
    },
    X509(X509Auth),
    /// A secret holding `passwords.toml` (checked to exist and parse).
    UsernamePassword {
        secret: String,
    },
}

/// How service account tokens are verified (edgemq extension fields of
/// `serviceAccountTokenSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SatVerification {
    /// TokenReview with the pod's own service account (`KUBERNETES_SERVICE_HOST`).
    InCluster,
    /// TokenReview through the cluster and credentials of this kubeconfig file.
    Kubeconfig(String),
    /// Offline against the JWKS in this config map (key `jwks.json`).
    Jwks { config_map: String },
    /// Offline against the JWKS of this OIDC issuer (`/.well-known/openid-configuration`).
    Issuer {
        url: String,
        ca_config_map: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomAuth {
    /// Always `https://…`.
    pub endpoint: String,
    /// A config map whose every value is PEM certificates; `None` = system roots.
    pub ca_config_map: Option<String>,
    /// A TLS secret (`tls.crt`, `tls.key`) the broker presents to the auth server.
    pub client_cert_secret: Option<String>,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Auth {
    /// A config map with key `client_ca.pem` (checked to parse as certificates).
    pub trusted_client_ca_config_map: String,
    /// Entry name → subject and attributes: v1 `authorizationAttributes`, or the parsed
    /// `x509Attributes.toml` of a v1beta1 `attributes.secretName`.
    pub attributes: BTreeMap<String, SubjectAttributes>,
    /// The v1beta1 secret the attributes came from.
    pub attributes_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectAttributes {
    /// A distinguished name as written (`CN = Contoso Root CA Cert, OU = Engineering, C = US`).
    pub subject: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub name: String,
    /// `cache: Enabled` (v1, the default) / `enableCache: true` (v1beta1).
    pub cache: bool,
    /// No rules = deny everything.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub principals: Principals,
    pub broker_resources: Vec<BrokerResource>,
    pub state_store_resources: Vec<StateStoreResource>,
}

/// A rule applies when any field matches (OR); an attributes map matches when all its pairs do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principals {
    pub client_ids: Vec<String>,
    pub usernames: Vec<String>,
    pub attributes: Vec<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerResource {
    pub method: BrokerMethod,
    /// Topic filters, possibly with `{principal.*}` variables; non-empty for Publish/Subscribe.
    pub topics: Vec<String>,
    /// Connect only: client ids allowed to connect (trailing `*` and variables allowed).
    pub client_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMethod {
    Connect,
    Publish,
    Subscribe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateStoreResource {
    pub method: StateStoreMethod,
    pub key_type: StateStoreKeyType,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStoreMethod {
    Read,
    Write,
    ReadWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStoreKeyType {
    Pattern,
    String,
    Binary,
}

// Hand-written Debug impls keep private keys and secret values out of logs and panics.

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.data {
            m.entry(k, &format_args!("<{} bytes>", v.len()));
        }
        m.finish()
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::Manual {
                secret, chain_pem, ..
            } => f
                .debug_struct("Manual")
                .field("secret", secret)
                .field("chain_pem", &format_args!("<{} bytes>", chain_pem.len()))
                .field("key_pem", &"<redacted>")
                .finish(),
            Tls::Automatic(a) => f.debug_tuple("Automatic").field(a).finish(),
        }
    }
}

impl fmt::Debug for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuerKind::BuiltIn => f.write_str("BuiltIn"),
            IssuerKind::SelfSigned => f.write_str("SelfSigned"),
            IssuerKind::Ca {
                secret, cert_pem, ..
            } => f
                .debug_struct("Ca")
                .field("secret", secret)
                .field("cert_pem", &format_args!("<{} bytes>", cert_pem.len()))
                .field("key_pem", &"<redacted>")
                .finish(),
        }
    }
}
