//! The `edgemq` binary: command line, logging, runtime. `anyhow` lives here only.

mod admin;
mod authn;
mod authz;
mod cli_tools;
mod configured;
mod durable;
mod logging;
mod status;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use edgemq_broker::{Limits, ListenerConfig, OverflowPolicy, QoS, ServerConfig};
use edgemq_store::SyncPolicy;

use crate::durable::StoreOptions;

/// edgemq: an MQTT 3.1 / 3.1.1 / 5.0 broker for the edge and IoT fleets.
#[derive(Debug, Parser)]
#[command(name = "edgemq", version, about, long_about = None)]
struct Cli {
    /// Log level: trace, debug, info, warn or error (or an EnvFilter directive). Default:
    /// the Broker resource's diagnostics.logs.level with --config, else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker. Without options: one anonymous MQTT listener on 127.0.0.1:1883.
    /// With --config DIR: the listeners, TLS and settings of the AIO-style resources in DIR.
    Serve(ServeArgs),
    /// Validate a configuration folder; prints `file:line: Kind/name: field: message` per
    /// problem. Exit 0 when clean, 1 when there are errors.
    Check(CheckArgs),
    /// The built-in certificate issuer.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print `{"hash": "$pbkdf2-sha512$…"}` for a passwords.toml entry (what
    /// `az iot ops mq get-password-hash` prints).
    PasswordHash(cli_tools::PasswordHashArgs),
    /// Make CA, intermediate, server and client certificates, or inspect one.
    #[command(subcommand)]
    Certs(cli_tools::CertsCommand),
    /// Authorization policies.
    #[command(subcommand)]
    Authz(AuthzCommand),
    /// Print the running broker's overview from its admin port (serve --admin-listen).
    Status(status::StatusArgs),
}

#[derive(Debug, Subcommand)]
enum AuthzCommand {
    /// Decide one action for a client as the running broker would, and name the rule.
    /// Exit 0 allowed, 1 denied, 2 on a configuration error.
    Explain(authz::ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Folder of YAML resources (plus optional secrets/NAME/KEY and configmaps/NAME/KEY).
    #[arg(long, value_name = "DIR")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print the built-in issuer's CA certificate (PEM), for clients' --cafile. Only reads:
    /// exits 1 if the data dir has no CA (`serve` creates it; give the same --data-dir).
    Export {
        /// Data directory (the same as given to `serve`).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// Where durable state and the built-in CA live unless --data-dir says otherwise.
const DEFAULT_DATA_DIR: &str = "edgemq-data";

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Folder of AIO-style YAML resources (Broker, BrokerListener, BrokerAuthentication,
    /// BrokerAuthorization, Secret, ConfigMap, Issuer). Watched: valid changes apply live,
    /// invalid ones are rejected and the running configuration stays. SIGHUP reloads too.
    #[arg(long, value_name = "DIR", conflicts_with = "listen")]
    config: Option<PathBuf>,
    /// Data directory: the built-in CA and durable state (sessions, queued, in-flight and
    /// retained messages in DIR/state.redb).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Keep no durable state: nothing survives a restart.
    #[arg(long)]
    in_memory: bool,
    /// When the store is flushed to disk: `always` (before every acknowledgement that
    /// depends on it), `interval-ms=N` (at most every N ms: a power loss may lose the last
    /// N ms), `never` (left to the OS). A killed process loses nothing under any policy.
    #[arg(long, value_name = "POLICY", default_value = "always")]
    sync: SyncPolicy,
    /// Refuse to start with a damaged store (default: move it aside and start empty).
    #[arg(long)]
    strict_recovery: bool,
    /// Bytes of records the store may hold (sessions, queued and retained messages); it
    /// sheds load from 90 % of it (docs/limits.md). Default: half of what the data dir's
    /// file system has free at start, plus what the store holds; 0 = no budget (Broker:
    /// persistence.maxSize).
    #[arg(long, value_name = "BYTES")]
    max_store_bytes: Option<u64>,
    /// Address to listen on (repeatable). Port 0 picks a free port; the log line
    /// `listening ... addr=...` shows which.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:1883")]
    listen: Vec<SocketAddr>,
    /// Largest packet accepted from a client, in bytes (advertised as Maximum Packet Size).
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(16..=268_435_460))]
    max_packet_size: u32,
    /// Receive Maximum advertised to v5 clients; also the in-flight window towards v3 clients.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    receive_maximum: u16,
    /// Messages queued per session before the overflow policy applies.
    #[arg(long, default_value_t = 1000)]
    max_queued_messages: usize,
    /// Threads serving connections (default: one per CPU core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// What to do when a session's queue is full.
    #[arg(long, value_enum, default_value_t = Overflow::DropOldest)]
    overflow_policy: Overflow,
    /// Largest keep-alive allowed (seconds); v5 clients asking more (or 0) are told this value.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    max_keep_alive: Option<u16>,
    /// Cap on Session Expiry Interval (seconds).
    #[arg(long)]
    max_session_expiry: Option<u32>,
    /// Cap on Message Expiry Interval (seconds); also applied to messages without one.
    #[arg(long)]
    max_message_expiry: Option<u32>,
    /// Topic Alias Maximum advertised to v5 clients (0 disables aliases).
    #[arg(long, default_value_t = 64)]
    topic_alias_maximum: u16,
    /// Highest QoS accepted (advertised as Maximum QoS when below 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    maximum_qos: u8,
    /// Seconds a new connection has to send CONNECT.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Most levels in a topic name or filter (`a/b` has 2); deeper ones are refused
    /// (v5: 0x90 / 0x8F; v3: closed / SUBACK 0x80). Mosquitto's fixed limit is 200.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_topic_levels: u32,
    /// Most filters in one SUBSCRIBE or UNSUBSCRIBE; the rest are refused (SUBACK 0x97).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_filters_per_packet: u32,
    /// Limit: QoS 1/2 messages in flight to one client (caps its Receive Maximum) (Broker: maxInflightMessages).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight_messages: u16,
    /// Limit: message bytes in flight to one client (Broker: maxInflightBytes).
    #[arg(long, value_name = "N", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_inflight_bytes: u64,
    /// Limit: message bytes queued per session before the overflow policy applies (Broker: maxQueuedBytes).
    #[arg(long, value_name = "N", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_queued_bytes: u64,
    /// Limit: subscriptions one session may hold (Broker: maxSubscriptionsPerSession).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions_per_session: u64,
    /// Limit: sessions (online and offline) (Broker: maxSessions).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// Limit: retained messages (Broker: maxRetainedMessages).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_retained_messages: u64,
    /// Limit: bytes of retained messages (Broker: maxRetainedBytes).
    #[arg(long, value_name = "N", default_value_t = 1024 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_retained_bytes: u64,
    /// Limit: open connections (Broker: maxConnections).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Limit: open connections from one source address (Broker: maxConnectionsPerAddress).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_address: u64,
    /// Limit: open connections on one listener port; 0 = none but --max-connections
    /// (BrokerListener: ports[].maxConnections, per port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_connections_per_listener: u64,
    /// Limit: sessions (online and offline) created from one source address (Broker: maxSessionsPerAddress).
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions_per_address: u64,
    /// Limit: longest client identifier accepted, bytes; at least the 23 every server must
    /// allow (Broker: maxClientIdLength).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(23..))]
    max_client_id_length: u16,
    /// Limit: CONNECTs per second from one source address (Broker: maxConnectRatePerAddress).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_connect_rate_per_address: u32,
    /// Limit: session expiry of MQTT 3.1.1 persistent sessions, seconds (Broker: v3SessionExpirySeconds).
    #[arg(long, value_name = "N", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u32).range(1..))]
    v3_session_expiry: u32,
    /// Limit: subscriptions in the broker (Broker: maxSubscriptions).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions: u64,
    /// Resident memory the broker defends, in bytes: it sheds load from 80 % of it
    /// (docs/limits.md). Default: 80 % of the memory this process may use (cgroup or
    /// machine); 0 = no budget (Broker: memoryBudgetBytes).
    #[arg(long, value_name = "BYTES")]
    memory_budget: Option<u64>,
    /// Topic aliases the broker assigns on what it sends to MQTT 5 clients that allow them
    /// (up to each client's Topic Alias Maximum); 0 = none (Broker: serverTopicAliases).
    #[arg(long, value_name = "N", default_value_t = 0)]
    server_topic_aliases: u16,
    /// Seconds between publications of the Mosquitto-compatible `$SYS` topics
    /// (docs/observability.md); 0 = none (Broker: advanced.sysIntervalSeconds).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    sys_interval: u32,
    #[command(flatten)]
    admin: admin::AdminArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Overflow {
    DropOldest,
    DropNew,
    Disconnect,
}

fn main() -> ExitCode {
    // Usage errors exit 1 (clap's default is 2, which the CLI reserves for runtime failures).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    // Exactly one rustls provider for the process (two linked providers make rustls panic
    // when asked for "the" default).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let json = matches!(cli.log_format, LogFormat::Json);
    if let Err(e) = logging::init(cli.log_level.as_deref(), json) {
        eprintln!("edgemq: --log-level: {e}");
        return ExitCode::from(1);
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => configured::check(&args.config),
        Command::Ca(CaCommand::Export { data_dir }) => tls::export_ca(&data_dir),
        Command::PasswordHash(args) => cli_tools::password_hash(&args),
        Command::Certs(command) => cli_tools::certs(&command),
        Command::Authz(AuthzCommand::Explain(args)) => authz::explain(&args),
        Command::Status(args) => status::status(&args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut limits = limits_from_args(&args);
    // With --config the Broker resource may raise maxConnections later: take all we may.
    if let Some(cap) = fit_descriptor_limit(limits.max_connections, args.config.is_some()) {
        if limits.max_connections > cap {
            tracing::warn!(
                max_connections = limits.max_connections,
                effective = cap,
                "the open-file limit (RLIMIT_NOFILE, hard limit included) is too low for \
                 --max-connections: connections are limited to {cap} (raise `ulimit -Hn` or \
                 LimitNOFILE= in the service unit)"
            );
            limits.max_connections = cap;
        }
    }
    // Connections run on threads of their own (`edgemq_broker::cores`); this runtime keeps
    // the accept loops, the admin port and housekeeping, which one thread carries.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgemq: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let store = StoreOptions {
        data_dir: args.data_dir.clone(),
        in_memory: args.in_memory,
        sync: args.sync,
        strict_recovery: args.strict_recovery,
        max_bytes: args.max_store_bytes,
    };
    if let Some(dir) = &args.config {
        return runtime.block_on(configured::serve(
            dir,
            &args.data_dir,
            &store,
            limits,
            &args.admin,
            shutdown_signal(),
        ));
    }
    let durable = match durable::open(&store) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let listeners = args
        .listen
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let name = if i == 0 {
                "default".to_string()
            } else {
                format!("default-{i}")
            };
            ListenerConfig::anonymous(name, *addr)
        })
        .collect::<Vec<_>>();
    for l in &listeners {
        tracing::warn!(listener = %l.name, addr = %l.addr, "listener admits anonymous clients (no authentication configured)");
    }
    let config = ServerConfig { listeners, limits };
    runtime.block_on(serve_plain(config, durable, &args.admin))
}

/// `serve` without --config: the listeners of the command line, and the admin ports.
async fn serve_plain(
    config: ServerConfig,
    durable: Option<edgemq_broker::Durable>,
    admin_args: &admin::AdminArgs,
) -> ExitCode {
    let server = edgemq_broker::Server::new(config.limits.clone(), durable);
    let ports = match admin::open(admin_args, None, &server, None, ("command line", &[])).await {
        Ok(ports) => ports,
        Err(code) => return code,
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let code =
        match bind_listeners(&server, config.listeners, &ports, admin_args, &mut shutdown).await {
            Ok(true) => {
                shutdown.await;
                tracing::info!("shutting down");
                ExitCode::SUCCESS
            }
            Ok(false) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(2)
            }
        };
    server.shutdown().await;
    code
}

/// Bind every listener. Without an admin port a listener that cannot bind ends `serve`;
/// with one, the broker stays up, `/readyz` says not ready, and binding is tried again
/// every second (a port held by a process that is going away). `Ok(false)`: shut down
/// while waiting.
pub(crate) async fn bind_listeners(
    server: &std::sync::Arc<edgemq_broker::Server>,
    listeners: Vec<ListenerConfig>,
    ports: &admin::AdminPorts,
    admin_args: &admin::AdminArgs,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<bool, edgemq_broker::ServerError> {
    let mut warned = false;
    loop {
        match server.apply(listeners.clone()).await {
            Ok(report) => {
                ports.set_listeners_bound(true);
                tracing::info!(
                    listeners = report.started.len(),
                    "ready: every listener is bound"
                );
                return Ok(true);
            }
            Err(e) if !admin_args.admin_listen.is_empty() => {
                if !warned {
                    tracing::error!("{e}; not ready (/readyz): trying again every second");
                    warned = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = &mut *shutdown => return Ok(false),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Descriptors kept for everything but client sockets: listeners, the store, the
/// configuration watcher, logs, outgoing connections to authentication servers, and the
/// socket of a connection being refused.
const DESCRIPTOR_RESERVE: u64 = 64;

/// So that the broker never runs out of file descriptors before `max_connections`: when the
/// soft RLIMIT_NOFILE is below `max_connections` + [`DESCRIPTOR_RESERVE`], raise it towards
/// the hard limit (up to what is needed, or to the hard limit when `to_hard`). Returns the
/// most connections the limit then allows (`None`: no bound known).
#[cfg(unix)]
fn fit_descriptor_limit(max_connections: usize, to_hard: bool) -> Option<usize> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(DESCRIPTOR_RESERVE);
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current?;
    let cap = |soft: u64| usize::try_from(soft.saturating_sub(DESCRIPTOR_RESERVE)).ok();
    if soft >= wanted && !to_hard {
        return cap(soft);
    }
    let target = match limit.maximum {
        Some(hard) if to_hard => hard,
        Some(hard) => hard.min(wanted),
        None if to_hard => wanted.max(1 << 20),
        None => wanted,
    };
    if target <= soft {
        return cap(soft);
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(
                from = soft,
                to = target,
                "raised the open-file limit (RLIMIT_NOFILE)"
            );
            cap(target)
        }
        Err(e) => {
            tracing::warn!(soft, target, error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)");
            cap(soft)
        }
    }
}

#[cfg(not(unix))]
fn fit_descriptor_limit(_max_connections: usize, _to_hard: bool) -> Option<usize> {
    None
}

/// Connections the open-file limit allows now (after `fit_descriptor_limit`): a Broker
/// resource's maxConnections is held to it.
#[cfg(unix)]
pub(crate) fn descriptor_cap() -> Option<usize> {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    usize::try_from(soft.saturating_sub(DESCRIPTOR_RESERVE)).ok()
}

#[cfg(not(unix))]
pub(crate) fn descriptor_cap() -> Option<usize> {
    None
}

/// Limits from the command line; with --config, the Broker resource overrides them.
fn limits_from_args(args: &ServeArgs) -> Limits {
    Limits {
        max_packet_size: args.max_packet_size,
        receive_maximum: args.receive_maximum,
        max_session_expiry: args.max_session_expiry.unwrap_or(u32::MAX),
        max_message_expiry: args.max_message_expiry,
        max_keep_alive: args.max_keep_alive,
        maximum_qos: match args.maximum_qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        },
        topic_alias_maximum: args.topic_alias_maximum,
        max_queued_messages: args.max_queued_messages.max(1),
        overflow_policy: match args.overflow_policy {
            Overflow::DropOldest => OverflowPolicy::DropOldest,
            Overflow::DropNew => OverflowPolicy::DropNew,
            Overflow::Disconnect => OverflowPolicy::Disconnect,
        },
        connect_timeout_secs: args.connect_timeout,
        max_topic_levels: args.max_topic_levels as usize,
        max_filters_per_packet: args.max_filters_per_packet as usize,
        max_inflight_messages: args.max_inflight_messages,
        max_inflight_bytes: usize::try_from(args.max_inflight_bytes).unwrap_or(usize::MAX),
        max_queued_bytes: usize::try_from(args.max_queued_bytes).unwrap_or(usize::MAX),
        max_subscriptions_per_session: usize::try_from(args.max_subscriptions_per_session)
            .unwrap_or(usize::MAX),
        max_sessions: usize::try_from(args.max_sessions).unwrap_or(usize::MAX),
        max_retained_messages: usize::try_from(args.max_retained_messages).unwrap_or(usize::MAX),
        max_retained_bytes: usize::try_from(args.max_retained_bytes).unwrap_or(usize::MAX),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_connections_per_address: usize::try_from(args.max_connections_per_address)
            .unwrap_or(usize::MAX),
        max_connect_rate_per_address: args.max_connect_rate_per_address,
        max_connections_per_listener: usize::try_from(args.max_connections_per_listener)
            .unwrap_or(usize::MAX),
        max_sessions_per_address: usize::try_from(args.max_sessions_per_address)
            .unwrap_or(usize::MAX),
        max_client_id_len: usize::from(args.max_client_id_length),
        v3_session_expiry: args.v3_session_expiry,
        max_subscriptions: usize::try_from(args.max_subscriptions).unwrap_or(usize::MAX),
        memory_budget: args
            .memory_budget
            .unwrap_or_else(edgemq_broker::memory::default_budget),
        server_topic_aliases: args.server_topic_aliases,
        sys_interval_secs: args.sys_interval,
        connection_threads: args.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        ),
        ..Limits::default()
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
