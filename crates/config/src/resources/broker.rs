//! Broker: client limits, self-check and log level. Cluster-sizing fields are accepted with a
//! warning: they have no meaning for one process.

use std::time::Duration;

use super::{metadata, ApiVersion};
use crate::diag::Origin;
use crate::model::{BrokerSettings, QueueLimit, QueueStrategy, SelfCheck};
use crate::reader::{Located, Obj, Val};

pub(crate) struct RawBroker {
    pub origin: Origin,
    pub name: Located<String>,
    pub settings: BrokerSettings,
}

const ROOT: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC: &[&str] = &[
    "memoryProfile",
    "cardinality",
    "generateResourceLimits",
    "advanced",
    "diagnostics",
    "diskBackedMessageBuffer",
    "persistence",
];
const PERSISTENCE: &[&str] = &[
    "maxSize",
    "persistentVolumeClaimSpec",
    "encryption",
    "retain",
    "subscriberQueue",
    "stateStore",
];
const ADVANCED: &[&str] = &[
    "clients",
    "encryptInternalTraffic",
    "internalCerts",
    // edgemq extensions (docs/observability.md, docs/admin.md).
    "sysIntervalSeconds",
    "adminListen",
];
const CLIENTS: &[&str] = &[
    "maxSessionExpirySeconds",
    "maxMessageExpirySeconds",
    "maxPacketSizeBytes",
    "maxReceiveMaximum",
    "maxKeepAliveSeconds",
    "subscriberQueueLimit",
    // edgemq extensions (docs/limits.md).
    "maxTopicLevels",
    "maxFiltersPerPacket",
    "maxInflightMessages",
    "maxInflightBytes",
    "maxQueuedBytes",
    "maxSubscriptionsPerSession",
    "maxSessions",
    "maxRetainedMessages",
    "maxRetainedBytes",
    "maxConnections",
    "maxConnectionsPerAddress",
    "maxConnectRatePerAddress",
    "v3SessionExpirySeconds",
    "memoryBudgetBytes",
    "maxSubscriptions",
    "serverTopicAliases",
    "maxSessionsPerAddress",
    "maxClientIdLength",
];
const QUEUE_LIMIT: &[&str] = &["length", "strategy"];
const DIAGNOSTICS: &[&str] = &["logs", "metrics", "selfCheck", "traces"];
const LOGS: &[&str] = &["level"];
const METRICS: &[&str] = &["prometheusPort"];
const SELF_CHECK: &[&str] = &["mode", "intervalSeconds", "timeoutSeconds"];
const LEGACY_SPEC: &[&str] = &[
    "mode",
    "cardinality",
    "memoryProfile",
    "encryptInternalTraffic",
    "internalCerts",
    "diskBackedMessageBufferSettings",
    "authImage",
    "brokerImage",
    "healthManagerImage",
    "diagnostics",
];
const LEGACY_DIAGNOSTICS: &[&str] = &[
    "diagnosticServiceEndpoint",
    "enableMetrics",
    "enableTracing",
    "logLevel",
    "logFormat",
    "enableSelfCheck",
    "enableSelfTracing",
    "metricUpdateFrequencySeconds",
    "selfCheckFrequencySeconds",
    "selfCheckTimeoutSeconds",
    "selfTraceFrequencySeconds",
    "spanChannelCapacity",
    "probeImage",
    "maxCellMapLifetime",
];

const CLUSTER: &str = "it sizes an AIO cluster deployment";

pub(crate) fn read(root: &Val<'_>, version: ApiVersion) -> Option<RawBroker> {
    let obj = root.obj(ROOT)?;
    let name = metadata(&obj);
    let mut settings = BrokerSettings::default();
    if let Some(spec) = obj.get("spec") {
        if version == ApiVersion::Legacy {
            read_legacy(&spec, &mut settings);
        } else {
            read_v1(&spec, &mut settings);
        }
    }
    Some(RawBroker {
        origin: obj.cx().origin.clone(),
        name: name?,
        settings,
    })
}

fn read_v1(spec: &Val<'_>, settings: &mut BrokerSettings) {
    let Some(spec) = spec.obj(SPEC) else { return };
    spec.no_effect("memoryProfile", CLUSTER);
    spec.no_effect("cardinality", CLUSTER);
    spec.no_effect("generateResourceLimits", CLUSTER);
    spec.no_effect(
        "diskBackedMessageBuffer",
        "queues live in memory and the data dir",
    );
    if let Some(p) = spec.get("persistence").and_then(|p| p.obj(PERSISTENCE)) {
        settings.max_store_bytes = p.req("maxSize").and_then(|v| v.quantity());
        for key in [
            "persistentVolumeClaimSpec",
            "encryption",
            "retain",
            "subscriberQueue",
            "stateStore",
        ] {
            p.no_effect(
                key,
                "durable state lives in the --data-dir folder; maxSize bounds it",
            );
        }
    }
    if let Some(adv) = spec.get("advanced").and_then(|a| a.obj(ADVANCED)) {
        adv.no_effect("encryptInternalTraffic", "there is no internal traffic");
        adv.no_effect("internalCerts", "there is no internal traffic");
        settings.sys_interval_secs = adv
            .get("sysIntervalSeconds")
            .and_then(|v| v.int(0, i128::from(u32::MAX)));
        if let Some(list) = adv.get("adminListen").and_then(|v| v.seq()) {
            settings.admin_listen = list.iter().filter_map(admin_address).collect();
        }
        if let Some(c) = adv.get("clients").and_then(|c| c.obj(CLIENTS)) {
            read_clients(&c, settings);
        }
    }
    if let Some(diag) = spec.get("diagnostics").and_then(|d| d.obj(DIAGNOSTICS)) {
        if let Some(m) = diag.get("metrics").and_then(|m| m.obj(METRICS)) {
            let port = m.get("prometheusPort").map(|p| p.int::<u16>(0, 65_535));
            settings.prometheus_port = match port {
                None => Some(9600),
                Some(port) => port,
            };
        }
        diag.no_effect("traces", "traces are not exported yet");
        settings.log_level = diag
            .get("logs")
            .and_then(|l| l.obj(LOGS))
            .and_then(|l| l.get("level"))
            .and_then(|l| l.string());
        if let Some(sc) = diag.get("selfCheck").and_then(|s| s.obj(SELF_CHECK)) {
            read_self_check(
                &sc,
                sc.get("mode")
                    .and_then(|m| m.one_of(&[("Enabled", true), ("Disabled", false)])),
                ("intervalSeconds", "timeoutSeconds"),
                &mut settings.self_check,
            );
        }
    }
}

fn read_clients(c: &Obj<'_>, s: &mut BrokerSettings) {
    let u32_max = i128::from(u32::MAX);
    s.max_session_expiry_secs = c
        .get("maxSessionExpirySeconds")
        .and_then(|v| v.int(1, u32_max));
    s.max_message_expiry_secs = c
        .get("maxMessageExpirySeconds")
        .and_then(|v| v.int(1, u32_max));
    s.max_packet_size = c
        .get("maxPacketSizeBytes")
        .and_then(|v| v.int(1, 268_435_456));
    s.max_receive_maximum = c.get("maxReceiveMaximum").and_then(|v| v.int(1, 65535));
    s.max_keep_alive_secs = c.get("maxKeepAliveSeconds").and_then(|v| v.int(0, 65535));
    // A topic is at most 65,535 bytes: 65,536 empty levels.
    s.max_topic_levels = c.get("maxTopicLevels").and_then(|v| v.int(1, 65_536));
    s.max_filters_per_packet = c
        .get("maxFiltersPerPacket")
        .and_then(|v| v.int(1, 1_000_000));
    s.max_inflight_messages = c.get("maxInflightMessages").and_then(|v| v.int(1, 65535));
    s.max_inflight_bytes = c
        .get("maxInflightBytes")
        .and_then(|v| v.int(1, 1099511627776));
    s.max_queued_bytes = c
        .get("maxQueuedBytes")
        .and_then(|v| v.int(1, 1099511627776));
    s.max_subscriptions_per_session = c
        .get("maxSubscriptionsPerSession")
        .and_then(|v| v.int(1, 4294967296));
    s.max_sessions = c.get("maxSessions").and_then(|v| v.int(1, 4294967296));
    s.max_retained_messages = c
        .get("maxRetainedMessages")
        .and_then(|v| v.int(1, 1099511627776));
    s.max_retained_bytes = c
        .get("maxRetainedBytes")
        .and_then(|v| v.int(1, 1099511627776));
    s.max_connections = c.get("maxConnections").and_then(|v| v.int(1, 4294967296));
    s.max_connections_per_address = c
        .get("maxConnectionsPerAddress")
        .and_then(|v| v.int(1, 4294967296));
    s.max_connect_rate_per_address = c
        .get("maxConnectRatePerAddress")
        .and_then(|v| v.int(1, 2147483648));
    s.memory_budget = c.get("memoryBudgetBytes").and_then(|v| v.int(0, 1 << 50));
    s.max_subscriptions = c.get("maxSubscriptions").and_then(|v| v.int(1, 1 << 40));
    s.server_topic_aliases = c.get("serverTopicAliases").and_then(|v| v.int(0, 65535));
    s.max_sessions_per_address = c
        .get("maxSessionsPerAddress")
        .and_then(|v| v.int(1, 4294967296));
    // At least the 23 bytes every server must allow [MQTT-3.1.3-5]; at most what an MQTT
    // string can hold.
    s.max_client_id_length = c.get("maxClientIdLength").and_then(|v| v.int(23, 65535));
    s.v3_session_expiry = c
        .get("v3SessionExpirySeconds")
        .and_then(|v| v.int(1, 4294967295));

    s.subscriber_queue = c
        .get("subscriberQueueLimit")
        .and_then(|q| q.obj(QUEUE_LIMIT))
        .and_then(|q| {
            let length = q.req("length").and_then(|l| l.int(1, i128::from(i64::MAX)));
            let strategy = q
                .get("strategy")
                .and_then(|s| {
                    s.one_of(&[
                        ("None", QueueStrategy::None),
                        ("DropOldest", QueueStrategy::DropOldest),
                    ])
                })
                .unwrap_or(QueueStrategy::None);
            Some(QueueLimit {
                length: length?,
                strategy,
            })
        });
}

fn read_self_check(
    o: &Obj<'_>,
    enabled: Option<bool>,
    (interval_key, timeout_key): (&str, &str),
    sc: &mut SelfCheck,
) {
    if let Some(e) = enabled {
        sc.enabled = e;
    }
    if let Some(i) = o.get(interval_key).and_then(|v| v.int::<u64>(30, 300)) {
        sc.interval = Duration::from_secs(i);
    }
    if let Some(t) = o.get(timeout_key).and_then(|v| v.int::<u64>(5, 120)) {
        sc.timeout = Duration::from_secs(t);
    }
}

fn read_legacy(spec: &Val<'_>, settings: &mut BrokerSettings) {
    let Some(spec) = spec.obj(LEGACY_SPEC) else {
        return;
    };
    for key in [
        "mode",
        "cardinality",
        "memoryProfile",
        "diskBackedMessageBufferSettings",
    ] {
        spec.no_effect(key, CLUSTER);
    }
    for key in ["encryptInternalTraffic", "internalCerts"] {
        spec.no_effect(key, "there is no internal traffic");
    }
    for key in ["authImage", "brokerImage", "healthManagerImage"] {
        spec.no_effect(key, "edgemq is a single binary");
    }
    let Some(diag) = spec
        .get("diagnostics")
        .and_then(|d| d.obj(LEGACY_DIAGNOSTICS))
    else {
        return;
    };
    for key in LEGACY_DIAGNOSTICS {
        if !matches!(
            *key,
            "logLevel"
                | "enableSelfCheck"
                | "selfCheckFrequencySeconds"
                | "selfCheckTimeoutSeconds"
        ) {
            diag.no_effect(key, "only logLevel and the self-check settings are used");
        }
    }
    settings.log_level = diag.get("logLevel").and_then(|l| l.string());
    read_self_check(
        &diag,
        diag.get("enableSelfCheck").and_then(|e| e.bool()),
        ("selfCheckFrequencySeconds", "selfCheckTimeoutSeconds"),
        &mut settings.self_check,
    );
}

/// One `advanced.adminListen` address. Only loopback: the token that an admin port off
/// loopback needs is a command-line option (`--admin-token-file`), so a configuration that
/// opened the admin port to the network would be one `serve` refuses: an error here too.
fn admin_address(v: &Val<'_>) -> Option<std::net::SocketAddr> {
    let text = v.string()?;
    let Ok(addr) = text.parse::<std::net::SocketAddr>() else {
        v.error(format!(
            "{text:?} is not an address with a port (e.g. 127.0.0.1:9090)"
        ));
        return None;
    };
    if !addr.ip().is_loopback() {
        v.error(format!(
            "{addr} is not a loopback address: an admin port open to the network needs a token; \
             use `serve --admin-listen {addr} --admin-token-file FILE` instead"
        ));
        return None;
    }
    Some(addr)
}
