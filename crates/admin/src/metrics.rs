//! `/metrics`: the broker's counters in the Prometheus/OpenMetrics text format, read from the
//! broker when scraped (nothing is counted twice, and the message path pays only its relaxed
//! atomic increments).
//!
//! Names: AIO's where AIO has the metric (`aio_broker_*`), so AIO's dashboards and alerts
//! work unchanged. AIO exposes them without the `_total` suffix OpenMetrics gives counters,
//! so they are typed `unknown` here, which keeps the names exact (Prometheus ingests them
//! alike; `rate()` works on them). edgemq's own are `edgemq_*`, typed, counters ending in
//! `_total`. Labels have bounded values: never a topic or a client.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use edgemq_broker::selfcheck::SelfCheckStats;
use edgemq_broker::stats::{DropReason, Limit, TlsFailure};
use edgemq_broker::Bus;
use edgemq_core::subscriptions::Router;

/// A TLS port's server certificate, read when scraped (a renewal swaps it in place).
pub struct CertificateWatch {
    pub listener: String,
    pub port: u16,
    /// The current certificate's notAfter.
    pub not_after: Box<dyn Fn() -> Option<std::time::SystemTime> + Send + Sync>,
}

impl std::fmt::Debug for CertificateWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificateWatch({}:{})", self.listener, self.port)
    }
}

/// The TLS ports' certificates, replaced by the binary at start and on every reload.
pub type Certificates = Arc<std::sync::Mutex<Vec<CertificateWatch>>>;

/// What `/metrics` reads.
#[derive(Debug)]
pub struct BrokerCollector {
    pub bus: Arc<Bus>,
    pub self_check: Option<Arc<SelfCheckStats>>,
    /// The `hostname` label AIO puts on every metric.
    pub hostname: String,
    /// (listener, port, open connections), refreshed by the `/metrics` handler before each
    /// scrape (the server's listener table is behind an async lock).
    pub listeners: Arc<std::sync::Mutex<Vec<(String, u16, usize)>>>,
    pub certificates: Certificates,
}

/// One sample family: name, help, type, then (labels, value) samples.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: MetricType,
}

impl BrokerCollector {
    fn family(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        family: Family<'_>,
        samples: &[(&[(&str, &str)], u64)],
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
        for (labels, value) in samples {
            let mut set: Vec<(&str, &str)> = vec![("hostname", &self.hostname)];
            set.extend_from_slice(labels);
            let sample = metric.encode_family(&set)?;
            match family.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                _ => ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(sample)?,
            }
        }
        Ok(())
    }

    /// AIO's traffic metrics, by the `category` a client named in its CONNECT (user
    /// property `metriccategory`; `uncategorized` otherwise).
    fn aio_traffic(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use edgemq_broker::stats::Category;
        let mut categories = self.bus.stats.categories.all();
        if categories.is_empty() {
            categories.push(self.bus.stats.categories.get(None));
        }
        type Reading = fn(&Category) -> u64;
        let traffic: [(&str, &str, Reading); 4] = [
            (
                "aio_broker_publishes_received",
                "PUBLISH packets received from clients.",
                |c| c.publishes_received.load(Relaxed),
            ),
            (
                "aio_broker_publishes_sent",
                "PUBLISH packets sent to clients (each delivery).",
                |c| c.publishes_sent.load(Relaxed),
            ),
            (
                "aio_broker_payload_bytes_received",
                "Payload bytes of the PUBLISH packets received.",
                |c| c.payload_bytes_received.load(Relaxed),
            ),
            (
                "aio_broker_payload_bytes_sent",
                "Payload bytes of the PUBLISH packets sent.",
                |c| c.payload_bytes_sent.load(Relaxed),
            ),
        ];
        let labels: Vec<[(&str, &str); 1]> = categories
            .iter()
            .map(|c| [("category", &*c.name)])
            .collect();
        for (name, help, value) in traffic {
            let samples: Vec<_> = labels
                .iter()
                .zip(&categories)
                .map(|(l, c)| (&l[..], value(c)))
                .collect();
            let family = Family {
                name,
                help,
                kind: MetricType::Unknown,
            };
            self.family(e, family, &samples)?;
        }
        Ok(())
    }

    /// AIO's names (typed `unknown`: see the module comment).
    fn aio(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let bus = &self.bus;
        let s = &bus.stats;
        self.aio_traffic(e)?;
        let aio = [
            (
                "aio_broker_authentication_successes",
                "Clients admitted by authentication.",
                s.authentication_successes.load(Relaxed),
            ),
            (
                "aio_broker_authentication_deny",
                "Clients refused by authentication.",
                s.authentication_deny.load(Relaxed),
            ),
            (
                "aio_broker_authentication_failures",
                "Authentications that could not be decided (the verifier did not answer).",
                s.authentication_failures.load(Relaxed),
            ),
            (
                "aio_broker_authorization_allow",
                "Actions allowed by authorization.",
                s.authorization_allow.load(Relaxed),
            ),
            (
                "aio_broker_authorization_deny",
                "Actions denied by authorization.",
                s.authorization_deny.load(Relaxed),
            ),
            (
                "aio_broker_connected_sessions",
                "Sessions with a connected client.",
                s.clients_connected(),
            ),
            (
                "aio_broker_total_sessions",
                "Sessions, connected and offline.",
                bus.sessions.len() as u64,
            ),
            (
                "aio_broker_total_subscriptions",
                "Subscriptions.",
                bus.index.len() as u64,
            ),
            (
                "aio_broker_store_retained_messages",
                "Retained messages.",
                bus.retained.len() as u64,
            ),
            (
                "aio_broker_store_retained_bytes",
                "Bytes of retained messages.",
                bus.retained.bytes() as u64,
            ),
        ];
        for (name, help, value) in aio {
            let family = Family {
                name,
                help,
                kind: MetricType::Unknown,
            };
            self.family(e, family, &[(&[], value)])?;
        }
        Ok(())
    }

    /// edgemq's own counters.
    fn counters(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.bus.stats;
        let (commits, committed_ops, commit_micros) = self.bus.durable.commit_stats();
        let plain = [
            (
                "edgemq_messages_received",
                "Messages routed: from clients, wills and the broker's own.",
                s.messages_received.load(Relaxed),
            ),
            (
                "edgemq_bytes_received",
                "Bytes read from client connections.",
                s.bytes_received.load(Relaxed),
            ),
            (
                "edgemq_bytes_sent",
                "Bytes written to client connections.",
                s.bytes_sent.load(Relaxed),
            ),
            (
                "edgemq_connections_accepted",
                "Connections accepted by the listeners.",
                s.connections.load(Relaxed),
            ),
            (
                "edgemq_sessions_expired",
                "Offline sessions ended by their expiry.",
                s.sessions_expired.load(Relaxed),
            ),
            (
                "edgemq_store_commits",
                "Durable-store commits (group commits) that succeeded.",
                commits,
            ),
            (
                "edgemq_store_committed_operations",
                "Operations those commits carried (per commit: the batch size).",
                committed_ops,
            ),
            (
                "edgemq_store_commit_microseconds",
                "Time those commits took (per commit: the commit latency).",
                commit_micros,
            ),
            (
                "edgemq_tls_handshakes",
                "TLS handshakes completed on the listeners.",
                s.tls_handshakes.load(Relaxed),
            ),
        ];
        for (name, help, value) in plain {
            let family = Family {
                name,
                help,
                kind: MetricType::Counter,
            };
            self.family(e, family, &[(&[], value)])?;
        }
        let drops: Vec<_> = DropReason::ALL
            .iter()
            .map(|r| ([("reason", r.as_str())], s.drops(*r)))
            .collect();
        let samples: Vec<_> = drops.iter().map(|(l, v)| (&l[..], *v)).collect();
        let family = Family {
            name: "edgemq_messages_dropped",
            help: "Messages that did not reach a subscriber, by reason.",
            kind: MetricType::Counter,
        };
        self.family(e, family, &samples)?;
        let tls: Vec<_> = TlsFailure::ALL
            .iter()
            .map(|r| ([("reason", r.as_str())], s.tls_failures(*r)))
            .collect();
        let samples: Vec<_> = tls.iter().map(|(l, v)| (&l[..], *v)).collect();
        let family = Family {
            name: "edgemq_tls_handshakes_failed",
            help: "TLS handshakes that failed on the listeners, by reason.",
            kind: MetricType::Counter,
        };
        self.family(e, family, &samples)?;
        let refusals: Vec<_> = Limit::ALL
            .iter()
            .map(|l| ([("limit", l.as_str())], s.refusals(*l)))
            .collect();
        let samples: Vec<_> = refusals.iter().map(|(l, v)| (&l[..], *v)).collect();
        let family = Family {
            name: "edgemq_limit_refusals",
            help: "What a limit refused (connections, packets, subscriptions, messages), by limit.",
            kind: MetricType::Counter,
        };
        self.family(e, family, &samples)
    }

    /// edgemq's gauges: clients, memory, the store, the self-check.
    fn gauges(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let bus = &self.bus;
        let (store_bytes, store_budget) = bus.durable.usage_and_budget();
        let gauges = [
            (
                "edgemq_clients_connected",
                "Clients connected now.",
                bus.stats.clients_connected(),
            ),
            (
                "edgemq_clients_maximum",
                "Most clients connected at once since start.",
                bus.stats.clients_maximum(),
            ),
            (
                "edgemq_memory_accounted_bytes",
                "Memory the broker accounts against its budget.",
                edgemq_broker::memory::accounted(bus) as u64,
            ),
            (
                "edgemq_memory_budget_bytes",
                "The memory budget (0: none).",
                bus.pressure.budget(),
            ),
            (
                "edgemq_store_bytes",
                "Bytes of records in the durable store.",
                store_bytes,
            ),
            (
                "edgemq_store_budget_bytes",
                "The store's budget, max_store_bytes (0: none).",
                store_budget,
            ),
        ];
        for (name, help, value) in gauges {
            let family = Family {
                name,
                help,
                kind: MetricType::Gauge,
            };
            self.family(e, family, &[(&[], value)])?;
        }
        let state = bus.durable.state();
        let states = ["in-memory", "ok", "degraded", "failed"];
        let labels: Vec<_> = states.iter().map(|s| [("state", *s)]).collect();
        let samples: Vec<_> = labels
            .iter()
            .zip(states)
            .map(|(l, s)| (&l[..], u64::from(s == state)))
            .collect();
        let family = Family {
            name: "edgemq_store_state",
            help: "1 for the durable store's current state.",
            kind: MetricType::Gauge,
        };
        self.family(e, family, &samples)?;
        self.self_check(e)
    }

    fn self_check(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(checks) = &self.self_check else {
            return Ok(());
        };
        let results = [
            ([("result", "passed")], checks.passed.load(Relaxed)),
            ([("result", "failed")], checks.failed.load(Relaxed)),
        ];
        let samples: Vec<_> = results.iter().map(|(l, v)| (&l[..], *v)).collect();
        let family = Family {
            name: "edgemq_self_checks",
            help: "Self-check probes (diagnostics.selfCheck), by result.",
            kind: MetricType::Counter,
        };
        self.family(e, family, &samples)?;
        let family = Family {
            name: "edgemq_self_check_last_latency_microseconds",
            help: "Round trip of the last self-check probe (0 when it failed).",
            kind: MetricType::Gauge,
        };
        self.family(e, family, &[(&[], checks.last_latency_us.load(Relaxed))])
    }
}

/// A histogram read from the broker's buckets at scrape time.
#[derive(Debug)]
struct HistogramSnapshot {
    /// (upper bound in seconds, count in that bucket); the last is +Inf.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

impl HistogramSnapshot {
    fn of(histogram: &edgemq_broker::stats::Histogram) -> HistogramSnapshot {
        let (counts, sum_us) = histogram.snapshot();
        let seconds = |us: u64| match us {
            u64::MAX => f64::INFINITY,
            us => us as f64 / 1e6,
        };
        HistogramSnapshot {
            count: counts.iter().map(|(_, n)| n).sum(),
            buckets: counts
                .iter()
                .map(|(bound, n)| (seconds(*bound), *n))
                .collect(),
            sum: sum_us as f64 / 1e6,
        }
    }
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl BrokerCollector {
    fn listener_connections(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let listeners = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        let ports: Vec<String> = listeners
            .iter()
            .map(|(_, port, _)| port.to_string())
            .collect();
        let labels: Vec<[(&str, &str); 2]> = listeners
            .iter()
            .zip(&ports)
            .map(|((name, _, _), port)| [("listener", name.as_str()), ("port", port.as_str())])
            .collect();
        let samples: Vec<_> = labels
            .iter()
            .zip(&listeners)
            .map(|(l, (_, _, open))| (&l[..], *open as u64))
            .collect();
        let family = Family {
            name: "edgemq_listener_connections",
            help: "Connections open on each listener port.",
            kind: MetricType::Gauge,
        };
        self.family(e, family, &samples)
    }

    /// How many sessions have at most `le` messages queued, and in flight (cumulative, like
    /// a histogram's buckets, over the sessions that exist now).
    fn queue_depths(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let depths = self.bus.sessions.depths();
        let queued: Vec<usize> = depths.iter().map(|(q, _)| *q).collect();
        let inflight: Vec<usize> = depths.iter().map(|(_, f)| *f).collect();
        let family = Family {
            name: "edgemq_sessions_by_queue_depth",
            help: "Sessions with at most `le` messages queued (connected or offline).",
            kind: MetricType::Gauge,
        };
        self.distribution(e, family, &queued)?;
        let family = Family {
            name: "edgemq_sessions_by_inflight",
            help: "Sessions with at most `le` QoS 1/2 messages in flight (as of each connection's last wake-up).",
            kind: MetricType::Gauge,
        };
        self.distribution(e, family, &inflight)
    }

    /// `values` as cumulative `le` buckets 0, 1, 10, 100, 1,000, 10,000, +Inf.
    fn distribution(
        &self,
        e: &mut DescriptorEncoder<'_>,
        family: Family<'_>,
        values: &[usize],
    ) -> Result<(), std::fmt::Error> {
        const BOUNDS: [usize; 6] = [0, 1, 10, 100, 1_000, 10_000];
        let les: Vec<String> = BOUNDS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".into()])
            .collect();
        let labels: Vec<[(&str, &str); 1]> = les.iter().map(|le| [("le", le.as_str())]).collect();
        let counts = BOUNDS
            .iter()
            .map(|b| values.iter().filter(|v| **v <= *b).count())
            .chain([values.len()]);
        let samples: Vec<_> = labels
            .iter()
            .zip(counts)
            .map(|(l, n)| (&l[..], n as u64))
            .collect();
        self.family(e, family, &samples)
    }

    fn certificate_expiry(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = std::time::SystemTime::now();
        let rows: Vec<(String, String, i64)> = match self.certificates.lock() {
            Ok(watches) => watches
                .iter()
                .filter_map(|w| {
                    let at = (w.not_after)()?;
                    let left = match at.duration_since(now) {
                        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
                    };
                    Some((w.listener.clone(), w.port.to_string(), left))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut metric = e.encode_descriptor(
            "edgemq_tls_certificate_expiry_seconds",
            "Seconds until each TLS port's server certificate expires (negative: expired).",
            None,
            MetricType::Gauge,
        )?;
        for (listener, port, left) in &rows {
            let labels = [
                ("hostname", self.hostname.as_str()),
                ("listener", listener.as_str()),
                ("port", port.as_str()),
            ];
            ConstGauge::new(*left).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn latency(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = HistogramSnapshot::of(&self.bus.stats.delivery_latency);
        let mut metric = e.encode_descriptor(
            "edgemq_delivery_latency_seconds",
            "From a client's PUBLISH arriving to each delivery of it written for a subscriber (includes time queued for an offline session).",
            None,
            MetricType::Histogram,
        )?;
        let hostname = [("hostname", self.hostname.as_str())];
        snapshot.encode(metric.encode_family(&hostname)?)
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.aio(&mut encoder)?;
        self.counters(&mut encoder)?;
        self.gauges(&mut encoder)?;
        self.listener_connections(&mut encoder)?;
        self.queue_depths(&mut encoder)?;
        self.certificate_expiry(&mut encoder)?;
        self.latency(&mut encoder)?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let family = Family {
            name: "edgemq_build_info",
            help: "1, labelled with the version.",
            kind: MetricType::Gauge,
        };
        self.family(&mut encoder, family, &[(&version[..], 1)])
    }
}

/// The registry `/metrics` encodes.
pub fn registry(collector: BrokerCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry
}

/// The exposition of `registry`, or an error if a value cannot be encoded.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}
