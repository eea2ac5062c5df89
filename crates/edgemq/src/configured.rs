//! `serve --config DIR` and `check --config DIR`: the AIO-style resources in DIR become the
//! broker's listeners, TLS and limits; DIR is watched (and SIGHUP reloads) so a valid change
//! applies without dropping clients on unchanged listeners, and an invalid one is rejected
//! with the same messages `check` prints while the running configuration stays.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use edgemq_broker::selfcheck::{self, SelfCheckConfig, SelfCheckStats};
use edgemq_broker::{Limits, ListenerConfig, OverflowPolicy, Protocol, Server, Transport};
use edgemq_config::{Config, Diagnostic, Loaded, Severity};

use crate::durable::{self, StoreOptions};
use crate::tls::TlsManager;

/// `edgemq check --config DIR`.
pub fn check(dir: &Path) -> ExitCode {
    match edgemq_config::load_dir(dir).and_then(crate::tls::checked) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("{w}");
            }
            let ports: usize = loaded.config.listeners.iter().map(|l| l.ports.len()).sum();
            println!(
                "{}: ok ({} listeners, {} ports)",
                dir.display(),
                loaded.config.listeners.len(),
                ports
            );
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                println!("{d}");
            }
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!("{}: {errors} error(s)", dir.display());
            ExitCode::from(1)
        }
    }
}

/// Load and report: warnings are logged (and returned as text for the admin API's
/// configuration report), errors are returned for the caller to log.
fn load_with_warnings(dir: &Path) -> Result<(Config, Vec<String>), Vec<Diagnostic>> {
    let Loaded { config, warnings } = edgemq_config::load_dir(dir).and_then(crate::tls::checked)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok((config, warnings.iter().map(ToString::to_string).collect()))
}

/// `edgemq serve --config DIR`. Exit 1 on an invalid configuration, 2 on runtime failure.
pub async fn serve(
    dir: &Path,
    data_dir: &Path,
    store: &StoreOptions,
    base: Limits,
    admin_args: &crate::admin::AdminArgs,
    shutdown: impl Future<Output = ()>,
) -> ExitCode {
    let (config, warnings) = match load_with_warnings(dir) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            // Each problem once on stderr (through the log, which writes there).
            for d in diagnostics.iter().filter(|d| d.severity == Severity::Error) {
                tracing::error!("{d}");
            }
            tracing::error!("invalid configuration in {}; not starting", dir.display());
            return ExitCode::from(1);
        }
    };
    crate::logging::apply_config_level(config.broker.log_level.as_deref());
    let limits = limits(&config, base.clone());
    let store = StoreOptions {
        max_bytes: config.broker.max_store_bytes.or(store.max_bytes),
        ..store.clone()
    };
    let durable = match durable::open(&store) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let server = Server::new(limits.clone(), durable);
    let mut tls = TlsManager::new(data_dir.to_path_buf());
    let listeners = match listeners(&config, &mut tls) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(1);
        }
    };
    let checks = Arc::new(SelfCheckStats::default());
    let self_check = config.broker.self_check.enabled.then(|| checks.clone());
    let prometheus_port = config.broker.prometheus_port;
    let source = dir.display().to_string();
    // The Broker resource's admin ports (loopback only: `check` refuses others) join the
    // command line's.
    let mut admin_args = admin_args.clone();
    for addr in &config.broker.admin_listen {
        if !admin_args.admin_listen.contains(addr) {
            admin_args.admin_listen.push(*addr);
        }
    }
    let admin_args = &admin_args;
    let opened = crate::admin::open(
        admin_args,
        prometheus_port,
        &server,
        self_check,
        (&source, &warnings),
    );
    let ports = match opened.await {
        Ok(ports) => Arc::new(ports),
        Err(code) => return code,
    };
    ports.set_certificates(tls.watches());
    tokio::pin!(shutdown);
    match crate::bind_listeners(&server, listeners, &ports, admin_args, &mut shutdown).await {
        Ok(true) => {}
        Ok(false) => {
            server.shutdown().await;
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            tracing::error!("{e}");
            server.shutdown().await;
            return ExitCode::from(2);
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if config.broker.self_check.enabled {
        tokio::spawn(selfcheck::run(
            server.bus.clone(),
            SelfCheckConfig {
                interval: config.broker.self_check.interval,
                timeout: config.broker.self_check.timeout,
            },
            checks.clone(),
            stop_rx,
        ));
    }

    let mut weak = std::collections::HashSet::new();
    warn_weak_ports(&config, &mut weak);
    let mut reloader = Reloader {
        weak,
        dir: dir.to_path_buf(),
        base,
        running_limits: limits,
        server: server.clone(),
        tls,
        ports: ports.clone(),
    };
    reloader.run_until(shutdown).await;
    let _ = stop_tx.send(true);
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

struct Reloader {
    /// Weak-port warnings already given.
    weak: std::collections::HashSet<String>,
    dir: PathBuf,
    base: Limits,
    running_limits: Limits,
    server: Arc<Server>,
    tls: TlsManager,
    /// The admin API's configuration report.
    ports: Arc<crate::admin::AdminPorts>,
}

impl Reloader {
    /// Reload on SIGHUP or a change under DIR until `shutdown` resolves.
    async fn run_until(&mut self, shutdown: impl Future<Output = ()>) {
        let (tx, mut changes) = tokio::sync::mpsc::channel::<()>(1);
        let _watcher = watch_dir(&self.dir, tx.clone());
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::pin!(shutdown);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = &mut shutdown => return,
                _ = hangup => tracing::info!("SIGHUP: reloading {}", self.dir.display()),
                Some(()) = changes.recv() => {
                    // Editors and kubelets write in several steps: wait until the folder has
                    // been quiet for 300 ms (at most 3 s, so a busy folder still reloads),
                    // then reload once.
                    let latest = tokio::time::Instant::now() + Duration::from_secs(3);
                    while tokio::time::Instant::now() < latest {
                        match tokio::time::timeout(Duration::from_millis(300), changes.recv()).await {
                            Ok(Some(())) => continue,
                            _ => break,
                        }
                    }
                    tracing::info!("configuration folder changed: reloading {}", self.dir.display());
                }
            }
            self.reload().await;
        }
    }

    async fn reload(&mut self) {
        let source = self.dir.display().to_string();
        let (config, warnings) = match load_with_warnings(&self.dir) {
            Ok(loaded) => loaded,
            Err(diagnostics) => {
                for d in diagnostics.iter().filter(|d| d.severity == Severity::Error) {
                    tracing::error!("{d}");
                }
                tracing::error!("configuration rejected; the running configuration stays");
                let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                self.ports.report_config(&source, false, &lines);
                return;
            }
        };
        self.ports.report_config(&source, true, &warnings);
        crate::logging::apply_config_level(config.broker.log_level.as_deref());
        let wanted = limits(&config, self.base.clone());
        if wanted != self.running_limits {
            tracing::warn!("Broker client limits changed: they apply after a restart");
        }
        let listeners = match listeners(&config, &mut self.tls) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e:#}; the running configuration stays");
                return;
            }
        };
        match self.server.apply(listeners).await {
            Ok(report) => {
                tracing::info!(
                    started = ?report.started, stopped = ?report.stopped,
                    restarted = ?report.restarted, unchanged = ?report.unchanged,
                    "configuration applied"
                );
                warn_weak_ports(&config, &mut self.weak);
            }
            Err(e) => tracing::error!("{e}; the running configuration stays"),
        }
        self.tls.retain_only(&config);
        self.ports.set_certificates(self.tls.watches());
    }
}

/// Watch DIR (recursively: secrets/ and configmaps/ too). A watcher that cannot start is
/// logged; SIGHUP still works.
fn watch_dir(dir: &Path, tx: tokio::sync::mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(e) = event {
                if !e.kind.is_access() {
                    tracing::debug!(kind = ?e.kind, paths = ?e.paths, "configuration folder event");
                    let _ = tx.try_send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch {}: {e}; use SIGHUP to reload", dir.display());
                return None;
            }
        };
    if let Err(e) = watcher.watch(dir, RecursiveMode::Recursive) {
        tracing::warn!("cannot watch {}: {e}; use SIGHUP to reload", dir.display());
        return None;
    }
    Some(watcher)
}

/// The Broker resource's client limits over the command-line ones.
fn limits(config: &Config, mut limits: Limits) -> Limits {
    let b = &config.broker;
    if let Some(v) = b.max_session_expiry_secs {
        limits.max_session_expiry = v;
    }
    if let Some(v) = b.max_message_expiry_secs {
        limits.max_message_expiry = Some(v);
    }
    if let Some(v) = b.max_packet_size {
        limits.max_packet_size = v;
    }
    if let Some(v) = b.max_receive_maximum {
        limits.receive_maximum = v;
    }
    if let Some(v) = b.max_keep_alive_secs {
        limits.max_keep_alive = Some(v);
    }
    if let Some(v) = b.max_topic_levels {
        limits.max_topic_levels = v;
    }
    if let Some(v) = b.max_filters_per_packet {
        limits.max_filters_per_packet = v;
    }
    if let Some(v) = b.max_inflight_messages {
        limits.max_inflight_messages = v;
    }
    if let Some(v) = b.max_inflight_bytes {
        limits.max_inflight_bytes = v;
    }
    if let Some(v) = b.max_queued_bytes {
        limits.max_queued_bytes = v;
    }
    if let Some(v) = b.max_subscriptions_per_session {
        limits.max_subscriptions_per_session = v;
    }
    if let Some(v) = b.max_sessions {
        limits.max_sessions = v;
    }
    if let Some(v) = b.max_retained_messages {
        limits.max_retained_messages = v;
    }
    if let Some(v) = b.max_retained_bytes {
        limits.max_retained_bytes = v;
    }
    if let Some(v) = b.max_connections {
        limits.max_connections = v;
    }
    if let Some(v) = b.max_connections_per_address {
        limits.max_connections_per_address = v;
    }
    if let Some(v) = b.max_connect_rate_per_address {
        limits.max_connect_rate_per_address = v;
    }
    if let Some(v) = b.max_subscriptions {
        limits.max_subscriptions = v;
    }
    if let Some(v) = b.max_sessions_per_address {
        limits.max_sessions_per_address = v;
    }
    if let Some(v) = b.max_client_id_length {
        limits.max_client_id_len = v;
    }
    if let Some(v) = b.memory_budget {
        limits.memory_budget = v;
    }
    if let Some(v) = b.server_topic_aliases {
        limits.server_topic_aliases = v;
    }
    if let Some(v) = b.sys_interval_secs {
        limits.sys_interval_secs = v;
    }
    if let Some(v) = b.v3_session_expiry {
        limits.v3_session_expiry = v;
    }
    if let Some(q) = &b.subscriber_queue {
        limits.max_queued_messages = q.length.max(1);
        limits.overflow_policy = match q.strategy {
            // AIO's `None`: no message is dropped to make room; new ones are refused.
            edgemq_config::QueueStrategy::None => OverflowPolicy::DropNew,
            edgemq_config::QueueStrategy::DropOldest => OverflowPolicy::DropOldest,
        };
    }
    if let Some(cap) = crate::descriptor_cap().filter(|cap| limits.max_connections > *cap) {
        tracing::warn!(
            max_connections = limits.max_connections,
            effective = cap,
            "Broker maxConnections is above what the open-file limit allows: connections are \
             limited to {cap} (raise `ulimit -Hn` or LimitNOFILE= in the service unit)"
        );
        limits.max_connections = cap;
    }
    limits
}

/// Ports weaker than they may look: anonymous access, or credentials that cross the network
/// in clear text. Each is logged once: at start, and on a reload only when new.
fn weak_ports(config: &Config) -> Vec<String> {
    use edgemq_config::AuthnMethod;
    let mut out = Vec::new();
    for listener in &config.listeners {
        for port in &listener.ports {
            let at = format!(
                "BrokerListener/{} port {} ({})",
                listener.name, port.port, port.bind
            );
            let Some(name) = port.authentication.as_deref() else {
                out.push(format!(
                    "{at}: admits anonymous clients (no authenticationRef)"
                ));
                continue;
            };
            if port.tls.is_some() {
                continue;
            }
            let methods = config.authentications.get(name).map(|a| &a.methods[..]);
            let in_clear: Vec<&str> = methods
                .unwrap_or_default()
                .iter()
                .filter_map(|m| match m {
                    AuthnMethod::UsernamePassword { .. } => Some("UsernamePassword"),
                    AuthnMethod::ServiceAccountToken { .. } => Some("ServiceAccountToken"),
                    AuthnMethod::Custom(_) => Some("Custom"),
                    AuthnMethod::X509(_) => None,
                })
                .collect();
            if !in_clear.is_empty() {
                out.push(format!(
                    "{at}: {} credentials cross the network in clear text (the port has no tls); add tls to the port",
                    in_clear.join(", ")
                ));
            }
        }
    }
    out
}

/// Log the weak-port warnings not in `given`, and remember them.
fn warn_weak_ports(config: &Config, given: &mut std::collections::HashSet<String>) {
    let now: std::collections::HashSet<String> = weak_ports(config).into_iter().collect();
    for w in now.difference(given) {
        tracing::warn!("{w}");
    }
    *given = now;
}

/// One broker listener per port of every BrokerListener.
fn listeners(config: &Config, tls: &mut TlsManager) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut out = Vec::new();
    for listener in &config.listeners {
        for port in &listener.ports {
            let protocol = match port.protocol {
                edgemq_config::Protocol::Mqtt => Protocol::Mqtt,
                edgemq_config::Protocol::WebSockets => Protocol::WebSockets,
            };
            let authenticator = crate::authn::for_port(config, port.authentication.as_deref())
                .with_context(|| format!("BrokerListener/{} port {}", listener.name, port.port))?;
            // Ports whose chain has an X.509 method ask TLS clients for a certificate.
            let client_ca_hint = authenticator
                .wants_client_certificates()
                .then(|| client_ca_bundle(config, port.authentication.as_deref()));
            let server_tls = match &port.tls {
                Some(t) => Some(tls.ensure(
                    &listener.name,
                    port.port,
                    t,
                    config,
                    client_ca_hint.clone(),
                )?),
                None => None,
            };
            let mode = match &port.tls {
                None => "plain",
                Some(edgemq_config::Tls::Manual { .. }) => "manual",
                Some(edgemq_config::Tls::Automatic(_)) => "automatic",
            };
            let mut l = ListenerConfig::anonymous(listener.name.clone(), port.bind);
            l.authenticator = authenticator;
            l.authorizer = crate::authz::for_port(config, port.authorization.as_deref())
                .with_context(|| format!("BrokerListener/{} port {}", listener.name, port.port))?;
            l.transport = Transport {
                protocol,
                tls: server_tls,
            };
            // Not in the fingerprint: a changed limit applies in place, clients stay.
            l.max_connections = port.max_connections;
            l.fingerprint = format!(
                "{protocol} tls={mode} client_certs={} authn={:?} authz={:?}",
                client_ca_hint.is_some(),
                port.authentication,
                port.authorization
            );
            out.push(l);
        }
    }
    Ok(out)
}

/// The trusted client CAs of a chain's X.509 methods (concatenated PEM), offered to TLS
/// clients as acceptable issuers.
fn client_ca_bundle(config: &Config, authentication: Option<&str>) -> Vec<u8> {
    let mut pem = Vec::new();
    let methods = authentication
        .and_then(|name| config.authentications.get(name))
        .map(|a| a.methods.as_slice())
        .unwrap_or_default();
    for m in methods {
        if let edgemq_config::AuthnMethod::X509(x) = m {
            if let Some(bundle) = config
                .config_maps
                .get(&x.trusted_client_ca_config_map)
                .and_then(|cm| cm.get("client_ca.pem"))
            {
                pem.extend_from_slice(bundle.as_bytes());
                pem.push(b'\n');
            }
        }
    }
    pem
}
