//! The running server: one [`Bus`] and a set of listeners that can change while it runs.
//!
//! [`Server::apply`] reconciles the running listeners with a new list: listeners whose
//! (name, address) and fingerprint are unchanged keep running with their connections; new
//! ones start, removed ones stop (their clients are disconnected), changed ones restart.
//! New addresses are bound before anything is stopped, so a port that cannot be bound
//! leaves the previous set running untouched.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};

use edgemq_core::logtext::Short;
use edgemq_core::message::Message;
use edgemq_core::topic::{level_count, parse_subscription_filter};

use crate::bus::Bus;
use crate::cores::Cores;
use crate::listener::{BoundListener, ListenerConfig, ListenerContext};
use crate::{Limits, ServerError};
use edgemq_store::{Recovered, Store};

type Key = (String, SocketAddr);

struct Running {
    fingerprint: String,
    context: Arc<ListenerContext>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What [`Server::apply`] changed, for the reload log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
}

pub struct Server {
    pub bus: Arc<Bus>,
    running: Mutex<BTreeMap<Key, Running>>,
    connections: Arc<parking_lot::Mutex<JoinSet<()>>>,
    /// The connection threads (`Limits::connection_threads`), if any.
    cores: Option<Arc<Cores>>,
    housekeeping: JoinHandle<()>,
    /// The `$SYS` publisher, unless `sys_interval_secs` is 0.
    sys: Option<JoinHandle<()>>,
    /// The memory-budget monitor, if there is a budget (it ends when the bus is dropped).
    _memory: Option<std::thread::JoinHandle<()>>,
}

/// How often expired retained messages are purged.
pub const RETAINED_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Overrides [`RETAINED_PURGE_INTERVAL`] (milliseconds): for tests, not an operator setting.
pub const RETAINED_PURGE_INTERVAL_ENV: &str = "EDGEMQ_RETAINED_PURGE_INTERVAL_MS";

fn retained_purge_interval() -> Duration {
    std::env::var(RETAINED_PURGE_INTERVAL_ENV)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(RETAINED_PURGE_INTERVAL, Duration::from_millis)
}

/// Purge expired retained messages every `every` (from memory and the store) until the bus
/// is gone or the task is aborted ([`Server::shutdown`]).
fn spawn_housekeeping(bus: &Arc<Bus>, every: Duration) -> JoinHandle<()> {
    let bus = Arc::downgrade(bus);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(bus) = bus.upgrade() else { return };
            let purged = bus.purge_expired_retained();
            if purged > 0 {
                tracing::debug!(
                    purged,
                    retained = bus.retained.len(),
                    "expired retained messages purged"
                );
            }
        }
    })
}

/// The durable store and what it held at start-up.
#[derive(Debug)]
pub struct Durable {
    pub store: Arc<Store>,
    pub recovered: Recovered,
}

fn restore(bus: &Arc<Bus>, mut recovered: Recovered) {
    quarantine_deep(bus, &mut recovered);
    let sessions = recovered.sessions.len();
    let retained = recovered.retained.len();
    // Loaded whatever the retained budgets (accepted under the limits of their time); new
    // retained messages are refused until the store is back under them.
    for message in recovered.retained {
        bus.retained.restore(Arc::new(message));
    }
    let limits = &bus.limits;
    if bus.retained.len() > limits.max_retained_messages
        || bus.retained.bytes() > limits.max_retained_bytes
    {
        tracing::warn!(
            retained = bus.retained.len(),
            retained_bytes = bus.retained.bytes(),
            max_retained_messages = limits.max_retained_messages,
            max_retained_bytes = limits.max_retained_bytes,
            "store: the recovered retained messages exceed the retained limits: all loaded; new retained messages are refused until enough are deleted or expire"
        );
    }
    bus.sessions.restore(bus, recovered.sessions);
    for will in &recovered.due_wills {
        bus.publish(will.clone());
    }
    tracing::info!(
        sessions,
        retained,
        due_wills = recovered.due_wills.len(),
        expired_sessions = recovered.expired_sessions,
        expired_messages = recovered.expired_messages,
        damaged_records = recovered.damaged_records,
        "store: state recovered"
    );
}

/// State written before `max_topic_levels` existed (or under a higher one) may name topics
/// deeper than the limit: such retained messages, subscriptions and wills are not loaded;
/// each is logged and removed from the store, which then holds only what a client could
/// send today.
fn quarantine_deep(bus: &Bus, recovered: &mut Recovered) {
    let max = bus.limits.max_topic_levels;
    let deep = |topic: &str| level_count(topic) > max;
    let warn = |what: &str, client: &str, topic: &str| {
        tracing::warn!(client_id = %Short(client), topic = %Short(topic), levels = level_count(topic), "store: {what} has more than {max} levels (max-topic-levels): not loaded, removed");
    };
    recovered.retained.retain(|m| {
        let keep = !deep(&m.topic);
        if !keep {
            warn("a retained message", "-", &m.topic);
            bus.durable.retain(&Arc::new(Message {
                payload: Default::default(),
                ..m.clone()
            }));
        }
        keep
    });
    recovered.due_wills.retain(|w| {
        let keep = !deep(&w.topic);
        if !keep {
            warn("a due will", "-", &w.topic);
        }
        keep
    });
    for session in &mut recovered.sessions {
        let client = session.client_id.clone();
        let record = &mut session.record;
        let before = (record.subscriptions.len(), record.will.is_some());
        record.subscriptions.retain(|(raw, _)| {
            let depth = match parse_subscription_filter(raw) {
                Ok(f) => level_count(&f.filter),
                Err(_) => level_count(raw),
            };
            if depth > max {
                warn("a subscription", &client, raw);
            }
            depth <= max
        });
        if let Some((w, _)) = record.will.as_ref().filter(|(w, _)| deep(&w.topic)) {
            warn("a will", &client, &w.topic);
            record.will = None;
            session.will = None;
        }
        let after = (record.subscriptions.len(), record.will.is_some());
        if before != after {
            let journal = bus.durable.journal(client.clone());
            journal.set_durable(true);
            journal.put(record.clone());
        }
    }
}

/// SIGUSR1 and SIGUSR2 log a one-line state summary. (Their default action ends the
/// process: an operator or a supervisor probing with `kill -USR1` must not stop the broker.)
fn log_state_on_signals(bus: &Arc<Bus>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let usr1 = signal(SignalKind::user_defined1());
        let usr2 = signal(SignalKind::user_defined2());
        let (Ok(mut usr1), Ok(mut usr2)) = (usr1, usr2) else {
            tracing::warn!("cannot handle SIGUSR1/SIGUSR2: they would end the process");
            return;
        };
        let bus = Arc::downgrade(bus);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = usr1.recv() => "SIGUSR1",
                    Some(()) = usr2.recv() => "SIGUSR2",
                    else => return,
                };
                let Some(bus) = bus.upgrade() else { return };
                tracing::info!(signal = name, "state: {}", bus.state_summary());
            }
        });
    }
}

fn label((name, addr): &Key) -> String {
    format!("{name}@{addr}")
}

impl Server {
    /// A server on `limits`, with the durable store if given: what it recovered is back in
    /// place (sessions offline, retained messages, due wills sent) before any listener runs.
    /// Call within the runtime (restored sessions start their expiry timers).
    pub fn new(limits: Limits, durable: Option<Durable>) -> Arc<Server> {
        let bus = match durable {
            Some(Durable { store, recovered }) => {
                let bus = Bus::new(limits, Some(store));
                restore(&bus, recovered);
                bus
            }
            None => Bus::new(limits, None),
        };
        log_state_on_signals(&bus);
        let housekeeping = spawn_housekeeping(&bus, retained_purge_interval());
        let sys = (bus.limits.sys_interval_secs > 0).then(|| {
            let every = Duration::from_secs(u64::from(bus.limits.sys_interval_secs));
            crate::sys::spawn(&bus, every)
        });
        let budget = bus.pressure.budget();
        let memory = crate::memory::spawn_monitor(Arc::downgrade(&bus), budget);
        let cores = match bus.limits.connection_threads {
            0 => None,
            n => match Cores::start(n) {
                Ok(cores) => Some(Arc::new(cores)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the connection threads: connections share the main runtime");
                    None
                }
            },
        };
        Arc::new(Server {
            bus,
            running: Mutex::new(BTreeMap::new()),
            connections: Arc::new(parking_lot::Mutex::new(JoinSet::new())),
            cores,
            housekeeping,
            sys,
            _memory: memory,
        })
    }

    /// Make the running listeners match `wanted`.
    pub async fn apply(&self, wanted: Vec<ListenerConfig>) -> Result<ApplyReport, ServerError> {
        let mut running = self.running.lock().await;
        let mut report = ApplyReport::default();
        let wanted: BTreeMap<Key, ListenerConfig> = wanted
            .into_iter()
            .map(|l| ((l.name.clone(), l.addr), l))
            .collect();

        // 1. Bind what is new, before touching anything that runs.
        let mut fresh = Vec::new();
        for (key, config) in &wanted {
            if !running.contains_key(key) {
                fresh.push((key.clone(), bind(config).await?));
            }
        }
        // 2. Stop what is gone or changed.
        let mut restart = Vec::new();
        let keys: Vec<Key> = running.keys().cloned().collect();
        for key in keys {
            match wanted.get(&key) {
                Some(config) if running[&key].fingerprint == config.fingerprint => {
                    // Same listener: its clients stay; new CONNECTs use the new credentials.
                    let context = &running[&key].context;
                    context.replace_authenticator(config.authenticator.clone());
                    context.replace_authorizer(config.authorizer.clone());
                    context.set_max_connections(config.max_connections);
                    report.unchanged.push(label(&key));
                }
                Some(_) => {
                    stop(running.remove(&key)).await;
                    restart.push(key);
                }
                None => {
                    stop(running.remove(&key)).await;
                    report.stopped.push(label(&key));
                }
            }
        }
        // 3. Rebind the changed ones (their address was just released) and start all.
        for key in restart {
            let bound = bind(&wanted[&key]).await?;
            report.restarted.push(label(&key));
            fresh.push((key, bound));
        }
        for (key, bound) in fresh {
            if !report.restarted.contains(&label(&key)) {
                report.started.push(label(&key));
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            let local_addr = bound.local_addr;
            let context = bound.context.clone();
            let task = tokio::spawn(bound.run(
                self.bus.clone(),
                stop_rx,
                self.connections.clone(),
                self.cores.clone(),
            ));
            running.insert(
                key.clone(),
                Running {
                    fingerprint: wanted[&key].fingerprint.clone(),
                    context,
                    local_addr,
                    stop: stop_tx,
                    task,
                },
            );
        }
        Ok(report)
    }

    /// (listener name, bound address, context) of every running listener: what operators
    /// see of them, and their policy for `authz explain`.
    pub async fn listeners(&self) -> Vec<(String, SocketAddr, Arc<ListenerContext>)> {
        let running = self.running.lock().await;
        running
            .iter()
            .map(|((name, _), r)| (name.clone(), r.local_addr, r.context.clone()))
            .collect()
    }

    /// (listener name, bound address) of every running listener.
    pub async fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let running = self.running.lock().await;
        running
            .iter()
            .map(|((name, _), r)| (name.clone(), r.local_addr))
            .collect()
    }

    /// Stop every listener, disconnect every client (v5: DISCONNECT 0x8B) and wait for the
    /// connection tasks (bounded).
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            stop(Some(r)).await;
        }
        let mut set = std::mem::take(&mut *self.connections.lock());
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not close within 5s");
        }
        // Timers stop: nothing expires or is purged while the store closes.
        self.abort_tasks();
        self.bus.sessions.stop_timers();
        let drops = self.bus.stats.drop_summary();
        if !drops.is_empty() {
            tracing::info!(drops = %drops, "dropped messages since start");
        }
        let refusals = self.bus.stats.refusal_summary();
        if !refusals.is_empty() {
            tracing::info!(refusals = %refusals, "client input refused by limits since start");
        }
        // Everything the sessions handed back is submitted: commit it and sync.
        self.bus.durable.close().await;
    }
}

impl Server {
    fn abort_tasks(&self) {
        self.housekeeping.abort();
        if let Some(sys) = &self.sys {
            sys.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.abort_tasks();
        self.bus.sessions.stop_timers();
    }
}

async fn bind(config: &ListenerConfig) -> Result<BoundListener, ServerError> {
    BoundListener::bind(config)
        .await
        .map_err(|source| ServerError::Bind {
            name: config.name.clone(),
            addr: config.addr,
            source,
        })
}

/// Stop accepting and tell the listener's connections to go; they finish on their own.
async fn stop(running: Option<Running>) {
    if let Some(r) = running {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
}
