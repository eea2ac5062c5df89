//! The admin ports of `serve`: `--admin-listen` (everything, under the token rule) and the
//! Broker resource's `diagnostics.metrics.prometheusPort` (metrics and health only), both
//! from `edgemq-admin`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use edgemq_admin::{AdminState, BrokerCollector, Readiness, Role, Token};
use edgemq_broker::selfcheck::SelfCheckStats;
use edgemq_broker::Server;

/// The command line's admin options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Serve the admin port here (repeatable): /metrics, /healthz, /readyz, the admin API
    /// and the web console at /. On an address other than loopback it needs
    /// --admin-token-file.
    #[arg(long = "admin-listen", value_name = "ADDR")]
    pub admin_listen: Vec<SocketAddr>,
    /// File holding the admin bearer token (at least 16 bytes): required by everything but
    /// /healthz and /readyz, and for an admin port on an address other than loopback.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// The running admin ports; they stop when this is dropped.
pub struct AdminPorts {
    pub readiness: Arc<Readiness>,
    /// The TLS ports' certificates the metrics read (`set_certificates`).
    certificates: edgemq_admin::Certificates,
    /// What `GET /api/v1/config` shows.
    pub config: Arc<std::sync::Mutex<serde_json::Value>>,
    _stop: watch::Sender<bool>,
}

impl AdminPorts {
    pub fn set_listeners_bound(&self, bound: bool) {
        self.readiness
            .listeners_bound
            .store(bound, Ordering::Release);
    }

    pub fn set_config_loaded(&self, loaded: bool) {
        self.readiness
            .config_loaded
            .store(loaded, Ordering::Release);
    }

    /// The TLS ports' certificates now (after a start or a reload).
    pub fn set_certificates(&self, watches: Vec<edgemq_admin::CertificateWatch>) {
        if let Ok(mut slot) = self.certificates.lock() {
            *slot = watches;
        }
    }

    /// Record a (re)load: where the configuration came from, whether it was applied, and
    /// its diagnostics (`file:line: …` lines).
    pub fn report_config(&self, source: &str, applied: bool, diagnostics: &[String]) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let outcome = if applied {
            "applied"
        } else {
            "rejected: the running configuration stays"
        };
        let report = serde_json::json!({
            "source": source,
            "last_load": {
                "at_unix_ms": at.as_millis() as u64,
                "outcome": outcome,
                "diagnostics": diagnostics,
            },
        });
        if let Ok(mut slot) = self.config.lock() {
            *slot = report;
        }
    }
}

/// Start the admin ports `args` and `prometheus_port` ask for.
pub async fn start(
    args: &AdminArgs,
    prometheus_port: Option<u16>,
    server: &Arc<Server>,
    self_check: Option<Arc<SelfCheckStats>>,
) -> anyhow::Result<AdminPorts> {
    let token = match &args.admin_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--admin-token-file {}", path.display()))?;
            Some(
                Token::new(&text)
                    .with_context(|| format!("--admin-token-file {}", path.display()))?,
            )
        }
        None => None,
    };
    let bus = server.bus.clone();
    let readiness = Arc::new(Readiness::new(bus.clone(), self_check.clone()));
    let listeners = Arc::default();
    let certificates = edgemq_admin::Certificates::default();
    let collector = BrokerCollector {
        bus,
        self_check,
        hostname: hostname(),
        listeners: Arc::clone(&listeners),
        certificates: certificates.clone(),
    };
    let config = Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let state = AdminState {
        registry: Arc::new(edgemq_admin::metrics::registry(collector)),
        readiness: readiness.clone(),
        token,
        server: server.clone(),
        config: config.clone(),
        listeners,
        certificates: certificates.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    for addr in &args.admin_listen {
        edgemq_admin::serve(*addr, Role::Admin, state.clone(), stopped.clone()).await?;
    }
    if let Some(port) = prometheus_port.filter(|p| *p != 0) {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        edgemq_admin::serve(addr, Role::Metrics, state.clone(), stopped.clone()).await?;
    }
    Ok(AdminPorts {
        readiness,
        certificates,
        config,
        _stop: stop,
    })
}

/// [`start`] for `serve`: on failure the error is logged, the server shut down and the exit
/// code (1) returned; on success the configuration from `source` is reported loaded.
pub async fn open(
    args: &AdminArgs,
    prometheus_port: Option<u16>,
    server: &Arc<Server>,
    self_check: Option<Arc<SelfCheckStats>>,
    (source, warnings): (&str, &[String]),
) -> Result<AdminPorts, std::process::ExitCode> {
    match start(args, prometheus_port, server, self_check).await {
        Ok(ports) => {
            ports.set_config_loaded(true);
            ports.report_config(source, true, warnings);
            Ok(ports)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            server.shutdown().await;
            Err(std::process::ExitCode::from(1))
        }
    }
}

/// The `hostname` label: `$HOSTNAME`, else /etc/hostname, else "edgemq".
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edgemq".to_string())
}
