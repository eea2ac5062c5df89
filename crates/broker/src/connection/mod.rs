//! One task per client connection: read → decode → handle → encode → write.
//!
//! The task owns its session's state while connected, so no lock is taken to change it.
//! Reads, writes, mailbox wake-ups, the keep-alive deadline, control messages (takeover) and
//! shutdown are multiplexed in one `select!`. Outgoing packets are encoded into one buffer and
//! written with as few syscalls as possible; reading pauses while that buffer is above its
//! high-water mark, so a client that sends faster than it reads cannot grow broker memory.
//!
//! Durability: an answer that promises something is on disk (a PUBACK or PUBREC for a
//! message a persistent session stored, a PUBREL, the first send of a stored QoS 2 message)
//! is encoded after its store operations are submitted, and the output from there on is
//! held until the store's group commit covers them (`io::Hold`).
//!
//! The rules are `edgemq_core`'s; the files here carry them out: `handshake` (CONNECT to
//! CONNACK), `inbound` (packets from the client), `outbound` (deliveries to it), `authority`
//! (policy, re-authentication, credential expiry), `io` (buffers, reads, writes), `waits`
//! (what the loop waits on besides the socket), `finish` (the end: session and will).

mod authority;
mod finish;
mod handshake;
mod inbound;
mod io;
mod outbound;
mod waits;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::Instrument;

use edgemq_codec::{Auth, Decoder, Disconnect, Packet, ProtocolVersion, ReasonCode};
use edgemq_core::auth::{Authorizer, Prepared, Principal};
use edgemq_core::lifetime::{KeepAlive, KeepAliveCheck};
use edgemq_core::message::Message;
use edgemq_core::outbound::{Outbound, OutboundTerms};
use edgemq_core::protocol::{Inbound, Rules, Violation};
use edgemq_core::session::Delivery;

use crate::bus::Bus;
use crate::inspect::ClientSnapshot;
use crate::listener::ListenerContext;
use crate::mailbox::Mailbox;
use crate::sessions::{Control, ControlSlot, SessionData};
use crate::stats::{Category, ConnectedClient, Tally};
use edgemq_core::backlog::RetainedBacklog;
use edgemq_core::logtext::LogLimiter;
use edgemq_core::logtext::Short;
use io::Io;
use io::{read_some, write_or_flush};
use waits::{deadline, signal, store_event, Due, Signal, StoreEvent};

/// Stop reading while this much output is waiting for the socket.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// How long a publisher stops reading for one congested subscriber before that subscriber
/// is marked stalled and no longer holds publishers back (so a stuck client, or a cycle of
/// clients that publish to each other, cannot stop publishers for long).
const BACKPRESSURE_PATIENCE: Duration = Duration::from_secs(2);
/// A read carrying at most this many routed messages is "light load": see `run`.
const LATENCY_BATCH: u32 = 4;

/// Queued deliveries read back per store load.
const LOAD_BATCH: usize = 64;

/// Stored deliveries being read back, and the queue entries they were (put back if the
/// connection ends first).
pub(crate) struct Loading {
    entries: Vec<crate::mailbox::Entry>,
    reply: tokio::sync::oneshot::Receiver<Vec<Delivery>>,
}

/// Who is on the other end of a connection, as the transport saw it.
pub struct Peer {
    pub addr: SocketAddr,
    /// The TLS client certificate chain (DER, leaf first), not yet verified; empty if none.
    pub client_certificates: Vec<bytes::Bytes>,
}

/// Serve one accepted connection until it ends. Never panics on client input.
///
/// A connection lives for hours, mostly idle, so what its task holds for that long is kept
/// to pointers: the handshake's future (large, over at CONNACK), the loop's and the end's
/// each live in a box of their own only while they run. (Held by value, they made every
/// connection's task 2.9 KB.)
pub fn serve<S>(
    stream: S,
    peer: Peer,
    listener: Arc<ListenerContext>,
    bus: Arc<Bus>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let open = Box::pin(open(stream, peer, listener, bus, shutdown));
    async move {
        if let Some((conn, counted, span)) = open.await {
            run_to_end(conn).instrument(span).await;
            drop(counted);
        }
    }
}

/// The handshake: the connection, its memory account and its span, once CONNACK is sent.
async fn open<S>(
    stream: S,
    peer: Peer,
    listener: Arc<ListenerContext>,
    bus: Arc<Bus>,
    shutdown: watch::Receiver<bool>,
) -> Option<(Box<Connection<S>>, ConnectionCount, tracing::Span)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Counted against the memory budget while it lasts (handshake included).
    let counted = ConnectionCount::new(&bus.held);
    let (reader, writer) = tokio::io::split(stream);
    let mut io = Io {
        reader,
        writer,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        hold: None,
        stats: bus.stats.clone(),
    };
    let decoder = Decoder::for_server(bus.limits.max_packet_size);
    let Some(accepted) = handshake::accept(&mut io, decoder, &peer, &listener, &bus).await else {
        let _ = io.flush_all().await;
        return None;
    };
    let client_id = accepted.client_id.clone();
    let span = tracing::info_span!("conn", listener = %listener.name, client_id = %Short(&client_id), peer = %peer.addr);
    let conn = Box::new(Connection::new(io, peer, accepted, listener, bus, shutdown));
    Some((conn, counted, span))
}

async fn run_to_end<S: AsyncRead + AsyncWrite + Unpin + Send>(mut conn: Box<Connection<S>>) {
    let exit = Box::pin(conn.run()).await;
    Box::pin(conn.finish(exit)).await;
}

/// One open connection on the broker's memory account, for as long as it lives.
struct ConnectionCount(Arc<crate::memory::Held>);

impl ConnectionCount {
    fn new(held: &Arc<crate::memory::Held>) -> Self {
        crate::memory::Held::add(&held.connections, 1);
        ConnectionCount(held.clone())
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        crate::memory::Held::sub(&self.0.connections, 1);
    }
}

/// What the handshake established.
pub(crate) struct Accepted {
    pub client_id: ByteString,
    pub version: ProtocolVersion,
    pub decoder: Decoder,
    pub session: SessionData,
    pub principal: Principal,
    pub conn_id: u64,
    pub control: Arc<ControlSlot>,
    /// Effective keep-alive in seconds (0 = none).
    pub keep_alive: u16,
    pub will: Option<Will>,
    /// What the client accepts: Receive Maximum, Maximum Packet Size, topic aliases.
    pub outbound: OutboundTerms,
    /// v5 Session Expiry Interval from CONNECT was 0 (DISCONNECT may then not set one).
    pub connect_expiry_zero: bool,
    /// When the client's credentials stop being valid (re-authenticate or be disconnected).
    pub credentials_expire: Option<SystemTime>,
    /// The MQTT 5 enhanced authentication method of the CONNECT, if any.
    pub authentication_method: Option<String>,
    /// The CONNECT user property `metriccategory` (AIO), if any.
    pub metric_category: Option<ByteString>,
}

/// The client's will message and its delay.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub message: Arc<Message>,
    pub delay: u32,
}

/// Why the connection loop ended.
#[derive(Debug)]
enum Exit {
    /// DISCONNECT from the client; `with_will` for reason 0x04.
    ClientDisconnect {
        with_will: bool,
    },
    /// The peer closed or the socket failed.
    Closed,
    /// An operator disconnected the client (admin API).
    Administrative,
    /// We refused something and (v5) sent a DISCONNECT with its reason.
    Violation(Violation),
    /// Another connection took the session.
    TakenOver {
        new_clean_start: bool,
        reply: tokio::sync::oneshot::Sender<SessionData>,
    },
    Shutdown,
}

pub(crate) struct Connection<S> {
    io: Io<S>,
    bus: Arc<Bus>,
    listener: Arc<ListenerContext>,
    shutdown: watch::Receiver<bool>,
    client_id: ByteString,
    version: ProtocolVersion,
    decoder: Decoder,
    session: SessionData,
    principal: Principal,
    conn_id: u64,
    control: Arc<ControlSlot>,
    keep_alive: KeepAlive,
    will: Option<Will>,
    /// The rules of what this connection sends (`edgemq_core::outbound`).
    outbound: Outbound,
    /// The protocol rules after CONNECT (`edgemq_core::protocol`).
    protocol: Inbound,
    last_read: Instant,
    peer: Peer,
    credentials_expire: Option<SystemTime>,
    /// A re-authentication AUTH waiting for the (asynchronous) authenticator; input after it
    /// is not processed until it is decided. (Boxed: rare, and its properties are large.)
    pending_reauth: Option<Box<Auth>>,
    /// The listener's policy as of `authz_generation`; a newer one is picked up (and the
    /// subscriptions re-checked) at the next wake-up.
    authorizer: Arc<dyn Authorizer>,
    /// What the policy precomputed for this principal (the rules that apply to it).
    authz_prepared: Prepared,
    authz_generation: u64,
    authz_changes: watch::Receiver<u64>,
    /// Warnings about this client's input and denials, rate-limited together.
    warnings: LogLimiter,
    /// Counted as connected while the connection lives.
    _connected: ConnectedClient,
    /// Traffic counted since the last wake-up, added to the shared counters in `prepare`.
    tally: Tally,
    /// The AIO metric category this client's traffic counts under.
    category: Arc<Category>,
    /// Set while a subscriber queue this client's publishes filled is draining: reading
    /// pauses until it resolves (back-pressure). Boxed: rare, and a timer is large.
    held_back: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Messages from the current read routed to at least one subscriber.
    routed_in_batch: u32,
    /// The store's commit progress (with a store).
    committed: Option<watch::Receiver<u64>>,
    /// Queued deliveries being read back from the store; the queue waits behind them.
    loading: Option<Loading>,
    /// Retained messages still to send for SUBSCRIBEs: streamed under the in-flight window
    /// and the write buffer's high-water mark, not pushed into the queue all at once.
    retained_backlog: RetainedBacklog,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    fn new(
        io: Io<S>,
        peer: Peer,
        a: Accepted,
        listener: Arc<ListenerContext>,
        bus: Arc<Bus>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (authorizer, authz_generation) = listener.authorizer();
        let authz_changes = listener.authz_changes();
        let authz_prepared = authorizer.prepare(&a.principal);
        let committed = a.session.mailbox.journal().commits();
        let protocol = Inbound::new(
            a.version,
            Rules::from(&bus.limits),
            a.connect_expiry_zero,
            a.authentication_method,
            a.session.mailbox.journal().is_durable(),
        );
        let connected = bus.stats.client_connected();
        let category = bus.stats.categories.get(a.metric_category.as_deref());
        Connection {
            io,
            last_read: bus.now(),
            bus,
            listener,
            shutdown,
            client_id: a.client_id,
            version: a.version,
            decoder: a.decoder,
            session: a.session,
            principal: a.principal,
            conn_id: a.conn_id,
            control: a.control,
            keep_alive: KeepAlive(a.keep_alive),
            will: a.will,
            outbound: Outbound::new(a.outbound),
            protocol,
            peer,
            credentials_expire: a.credentials_expire,
            pending_reauth: None,
            authz_prepared,
            authorizer,
            authz_generation,
            authz_changes,
            warnings: LogLimiter::default(),
            _connected: connected,
            tally: Tally::default(),
            category,
            held_back: None,
            routed_in_batch: 0,
            committed,
            loading: None,
            retained_backlog: RetainedBacklog::default(),
        }
    }

    async fn run(&mut self) -> Exit {
        if let Err(exit) = self.start() {
            return exit;
        }
        // One timer for the connection's life, re-armed only when it fires early: resetting
        // it on every packet would touch the timer wheel on the hot path.
        let keep_alive = tokio::time::sleep_until(self.keep_alive.deadline(self.last_read).into());
        tokio::pin!(keep_alive);
        // Only clients whose credentials expire pay for this timer.
        let mut credentials = self.credentials_timer();
        // TLS and WebSocket streams may hold written bytes until flushed (a plain socket
        // flushes as a no-op); flushing is its own branch so a stuck peer never blocks
        // takeover, shutdown or keep-alive handling.
        let mut needs_flush = false;
        loop {
            match self.prepare(&mut credentials).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(exit) => return exit,
            }
            let below_high_water = self.io.wbuf.len() < WRITE_HIGH_WATER;
            let reading = below_high_water && self.held_back.is_none();
            let writable = self.io.writable();
            let holding = self.io.hold.is_some();
            let keep_alive_on = self.keep_alive.is_on();
            let Io {
                reader,
                writer,
                rbuf,
                wbuf,
                ..
            } = &mut self.io;
            let result = tokio::select! {
                biased;
                signal = signal(&self.control, &mut self.shutdown, &mut self.authz_changes) => self.on_signal(signal),
                written = write_or_flush(writer, &wbuf[..writable]), if writable > 0 || needs_flush => match written {
                    Ok(Some(0)) | Err(_) => Err(Exit::Closed),
                    Ok(Some(n)) => { self.io.advance(n); needs_flush = true; Ok(()) }
                    Ok(None) => { needs_flush = false; Ok(()) }
                },
                event = store_event(&mut self.committed, holding, &mut self.loading) => self.on_store_event(event),
                read = read_some(reader, rbuf), if reading => match read {
                    Ok(0) | Err(_) => Err(Exit::Closed),
                    Ok(n) => { self.io.received(n); self.on_read().await }
                },
                _ = self.session.mailbox.notified(), if below_high_water => Ok(()),
                due = deadline(&mut self.held_back, &mut credentials, keep_alive.as_mut(), keep_alive_on) => {
                    self.on_due(due, reading, &mut credentials, keep_alive.as_mut())
                }
            };
            if let Err(exit) = result {
                return exit;
            }
        }
    }

    /// Before the loop: the session is this connection's.
    fn start(&mut self) -> Result<(), Exit> {
        self.session.mailbox.set_connected(true);
        // A resumed session's subscriptions face the current policy.
        self.revoke_disallowed_subscriptions();
        // Resume: re-send what was in flight, before anything new [MQTT-4.4.0-1].
        self.resend_inflight();
        // Packets that arrived with the CONNECT (a sensor that writes CONNECT, PUBLISH and
        // DISCONNECT at once and closes): handled now, not after another read.
        self.handle_input()
    }

    /// Everything due before waiting: a new policy, a pending re-authentication, output
    /// from the queue, commits already reached, an overflow. `Ok(false)`: go round again.
    async fn prepare(
        &mut self,
        credentials: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    ) -> Result<bool, Exit> {
        if self.listener.authz_generation() != self.authz_generation {
            let (authorizer, generation) = self.listener.authorizer();
            self.authz_prepared = authorizer.prepare(&self.principal);
            self.authorizer = authorizer;
            self.authz_generation = generation;
            self.revoke_disallowed_subscriptions();
        }
        if let Some(auth) = self.pending_reauth.take() {
            // Boxed: the authenticator's future is large and rarely alive.
            Box::pin(self.reauthenticate(*auth)).await?;
            *credentials = self.credentials_timer();
            // Packets that arrived behind the AUTH.
            self.handle_input()?;
            return Ok(false);
        }
        self.pump()?;
        // Before anything just encoded is written: a client that got an answer finds it
        // counted.
        self.bus.stats.add(&mut self.tally, &self.category);
        self.control.set_inflight(self.session.outgoing.len());
        // Already committed (or nothing was submitted after all, e.g. a dropped message),
        // or failed: no change of the commit watch is coming for it.
        if self.io.hold.is_some() {
            let committed = self.committed.as_ref().map_or(u64::MAX, |c| *c.borrow());
            self.on_commit(committed)?;
        }
        if self.session.mailbox.take_overflowed() {
            tracing::warn!("subscriber queue full (policy disconnect): disconnecting");
            return Err(self.violation(Violation::new(
                ReasonCode::QuotaExceeded,
                "subscriber queue full (overflow policy disconnect)",
            )));
        }
        if self.io.wbuf.is_empty() {
            self.io.shrink_if_idle();
        }
        Ok(true)
    }

    fn on_signal(&mut self, signal: Signal) -> Result<(), Exit> {
        match signal {
            Signal::Control(Control::TakeOver {
                new_clean_start,
                reply,
            }) => Err(Exit::TakenOver {
                new_clean_start,
                reply,
            }),
            Signal::Control(Control::Disconnect { end_session }) => {
                if end_session {
                    self.session.expiry_interval = 0;
                }
                tracing::info!(end_session, "disconnected by an operator");
                Err(Exit::Administrative)
            }
            Signal::Control(Control::Inspect(reply)) => {
                let _ = reply.send(self.snapshot());
                Ok(())
            }
            Signal::Shutdown => Err(Exit::Shutdown),
            // A new policy: `prepare` re-checks the subscriptions.
            Signal::PolicyChanged => Ok(()),
        }
    }

    /// What this connection holds now, for an operator.
    fn snapshot(&self) -> ClientSnapshot {
        let outgoing = &self.session.outgoing;
        ClientSnapshot {
            inflight: outgoing.len(),
            inflight_bytes: outgoing.bytes(),
            queued: self.session.mailbox.len(),
            incoming_qos2: self.session.incoming_qos2.len(),
            session_expiry: self.session.expiry_interval,
            subscriptions: self.session.subscription_views(),
            idle_secs: self
                .bus
                .now()
                .saturating_duration_since(self.last_read)
                .as_secs(),
            drops: self.session.mailbox.drops(),
        }
    }

    fn on_store_event(&mut self, event: StoreEvent) -> Result<(), Exit> {
        match event {
            StoreEvent::Committed(committed) => self.on_commit(committed),
            StoreEvent::Loaded(loaded) => {
                self.loading = None;
                self.session.mailbox.requeue_front(loaded.into_iter());
                Ok(())
            }
        }
    }

    async fn on_read(&mut self) -> Result<(), Exit> {
        self.last_read = self.bus.now();
        self.routed_in_batch = 0;
        self.handle_input()?;
        // Lightly loaded (a few messages in this read): let the subscribers' tasks, woken on
        // this thread, write the messages before this task writes the acknowledgements — a
        // loopback write costs about as much as the delivery it would delay. Under load,
        // batches are larger and nothing is deferred.
        if (1..=LATENCY_BATCH).contains(&self.routed_in_batch) {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    fn on_due(
        &mut self,
        due: Due,
        reading: bool,
        credentials: &mut Option<Pin<Box<tokio::time::Sleep>>>,
        keep_alive: Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), Exit> {
        let now = self.bus.now();
        match due {
            Due::Relieved => {
                self.held_back = None;
                // Packets read before the pause.
                self.handle_input()
            }
            // Woken early (the timer is monotonic, the expiry wall time): wait again.
            Due::Credentials
                if self
                    .credentials_expire
                    .is_some_and(|at| at > SystemTime::now()) =>
            {
                *credentials = self.credentials_timer();
                Ok(())
            }
            Due::Credentials => {
                tracing::warn!(method = ?self.protocol.authentication_method(), "credentials expired without re-authentication; disconnecting");
                Err(self.violation(Violation::new(
                    ReasonCode::NotAuthorized,
                    "credentials expired without re-authentication",
                )))
            }
            Due::KeepAlive => match self.keep_alive.check(now, self.last_read, reading) {
                KeepAliveCheck::WaitUntil(at) => {
                    keep_alive.reset(at.into());
                    Ok(())
                }
                KeepAliveCheck::Expired(violation) => {
                    tracing::info!(keep_alive = self.keep_alive.0, "{}", violation.rule);
                    Err(self.violation(violation))
                }
            },
        }
    }

    /// Submitted store operations must be committed before the output that follows.
    pub(super) fn after_store_ops(&mut self) {
        if let Some(ticket) = self.session.mailbox.journal().ticket() {
            self.io.hold_until(ticket);
        }
    }

    /// The store committed up to `committed`: release held output it covers. A store that failed
    /// can no longer back an acknowledgement: the held answers are discarded and the client
    /// disconnected (it re-sends what was not acknowledged, to a broker that works).
    fn on_commit(&mut self, committed: u64) -> Result<(), Exit> {
        if self.session.mailbox.journal().failed() {
            if let Some(h) = self.io.hold.take() {
                self.io.wbuf.truncate(h.from);
            }
            tracing::error!("store failed: disconnecting instead of acknowledging");
            return Err(self.violation(Violation::new(
                ReasonCode::UnspecifiedError,
                "the store failed: nothing more can be acknowledged",
            )));
        }
        if self.io.hold.is_some_and(|h| committed >= h.ticket) {
            self.io.hold = None;
        }
        Ok(())
    }

    /// Stop reading until `mailbox` drains, for at most [`BACKPRESSURE_PATIENCE`]; a queue
    /// still full then is marked stalled and holds nobody back until it recovers.
    pub(super) fn hold_back_for(&mut self, mailbox: Arc<Mailbox>) {
        if self.held_back.is_some() {
            return;
        }
        let deadline = self.bus.now() + BACKPRESSURE_PATIENCE;
        self.held_back = Some(Box::pin(async move {
            let relieved = tokio::time::timeout_at(deadline.into(), mailbox.relieved()).await;
            if relieved.is_err() {
                mailbox.mark_stalled();
            }
        }));
    }

    /// Near the memory budget: stop reading this publisher until the pressure eases, for
    /// at most [`BACKPRESSURE_PATIENCE`] (slowed, never stopped).
    pub(super) fn hold_back_for_memory(&mut self) {
        if self.held_back.is_some() {
            return;
        }
        let bus = self.bus.clone();
        let deadline = self.bus.now() + BACKPRESSURE_PATIENCE;
        self.held_back = Some(Box::pin(async move {
            let _ = tokio::time::timeout_at(deadline.into(), bus.pressure.relieved()).await;
        }));
    }

    /// A warning about what this client sent, rate-limited per connection
    /// ([`LogLimiter`]); the text names the limit or rule.
    pub(super) fn warn_input(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(events) = self.warnings.admit(self.bus.now()) {
            tracing::warn!(suppressed = events - 1, "{what}");
        }
    }

    /// Decode and handle every whole packet in the read buffer.
    fn handle_input(&mut self) -> Result<(), Exit> {
        loop {
            match self.decoder.decode(&mut self.io.rbuf) {
                Ok(Some(packet)) => {
                    self.handle_packet(packet)?;
                    // Held back: the rest waits in the buffer (a read can hold a hundred
                    // PUBLISHes, more than a small subscriber queue).
                    if self.pending_reauth.is_some() || self.held_back.is_some() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(rule = e.rule, reason = e.reason.0, "{}; closing", e.message);
                    return Err(self.violation(e.into()));
                }
            }
        }
    }

    /// Queue a v5 DISCONNECT with the violation's reason (v3 has none) and end the loop.
    fn violation(&mut self, v: Violation) -> Exit {
        if self.version.is_v5() {
            self.send(Packet::Disconnect(Disconnect {
                reason: v.reason,
                properties: Default::default(),
            }));
        }
        Exit::Violation(v)
    }
}
