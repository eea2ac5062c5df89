//! Listeners: bind, accept, run the transport handshakes, and hand each connection to its
//! own task. Every listener feeds the same [`Bus`]; each has its own transport,
//! authenticator and authorizer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use edgemq_core::auth::{AllowAll, Authenticator, Authorizer};

use crate::bus::Bus;
use crate::connection::Peer;
use crate::stats::Limit;
use crate::transport::{self, Accepted, Stream, Transport};

/// How one listener port is set up.
#[derive(Clone)]
pub struct ListenerConfig {
    /// Name for logs (the BrokerListener name, or `default`).
    pub name: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    /// Identity of everything above that cannot change in place (protocol, TLS mode, the
    /// authentication and authorization resources). On reload a listener whose fingerprint
    /// changed is restarted; one whose fingerprint is equal keeps its connections
    /// (certificates are swapped inside the TLS config, not by restarting).
    pub fingerprint: String,
    /// Open connections on this listener (the `BrokerListener` port's `maxConnections`);
    /// `None` = the broker's `max_connections_per_listener`. Changed in place on reload.
    pub max_connections: Option<usize>,
}

impl ListenerConfig {
    /// A plain-TCP listener that admits anonymous clients and allows everything.
    pub fn anonymous(name: impl Into<String>, addr: SocketAddr) -> Self {
        ListenerConfig {
            name: name.into(),
            addr,
            transport: Transport::plain(),
            authenticator: Arc::new(AllowAll),
            authorizer: Arc::new(AllowAll),
            fingerprint: "mqtt anonymous".into(),
            max_connections: None,
        }
    }
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("transport", &self.transport)
            .field("fingerprint", &self.fingerprint)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// What a connection task needs to know about its listener.
pub struct ListenerContext {
    pub name: String,
    pub port: u16,
    /// `mqtt`, `mqtt+tls`, `websockets` or `websockets+tls`, for operators.
    pub transport: String,
    /// Replaced in place on reload (new passwords, CA bundles, auth servers) so connected
    /// clients stay; each CONNECT takes the current one.
    authenticator: RwLock<Arc<dyn Authenticator>>,
    /// Replaced in place on reload; connections keep a copy and compare `authz_generation`
    /// (one relaxed load per wake-up) to notice a new policy and re-check subscriptions.
    authorizer: RwLock<Arc<dyn Authorizer>>,
    authz_generation: AtomicU64,
    /// Wakes idle connections when the policy changes, so revocations apply at once.
    authz_changed: tokio::sync::watch::Sender<u64>,
    /// The port's own connection limit (0 = the broker's `max_connections_per_listener`),
    /// and its open connections (both changed under the admission lock).
    max_connections: AtomicUsize,
    open: AtomicUsize,
}

impl ListenerContext {
    pub fn new(
        name: String,
        port: u16,
        authenticator: Arc<dyn Authenticator>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        ListenerContext {
            name,
            port,
            transport: String::from("mqtt"),
            authenticator: RwLock::new(authenticator),
            authorizer: RwLock::new(authorizer),
            authz_generation: AtomicU64::new(0),
            authz_changed: tokio::sync::watch::channel(0).0,
            max_connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        }
    }

    /// The port's own connection limit (`None`: the broker's `max_connections_per_listener`).
    /// A lower one applies to new connections; open ones stay.
    /// Connections open on this listener now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn set_max_connections(&self, max: Option<usize>) {
        self.max_connections
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// The connection limit that applies to this listener (0 = none but the broker's),
    /// given the broker's `max_connections_per_listener`.
    pub fn connection_limit(&self, broker_default: usize) -> usize {
        match self.max_connections.load(Ordering::Relaxed) {
            0 => broker_default,
            own => own,
        }
    }

    /// Fires when the policy changes.
    pub fn authz_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.authz_changed.subscribe()
    }

    /// The current authorizer and its generation.
    pub fn authorizer(&self) -> (Arc<dyn Authorizer>, u64) {
        let authorizer = self.authorizer.read().clone();
        (authorizer, self.authz_generation.load(Ordering::Acquire))
    }

    pub fn authz_generation(&self) -> u64 {
        self.authz_generation.load(Ordering::Relaxed)
    }

    /// A new policy for this listener; connected clients pick it up at their next wake-up.
    pub fn replace_authorizer(&self, authorizer: Arc<dyn Authorizer>) {
        *self.authorizer.write() = authorizer;
        let generation = self.authz_generation.fetch_add(1, Ordering::Release) + 1;
        self.authz_changed.send_replace(generation);
    }

    /// The authenticator for a CONNECT or AUTH now.
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.authenticator.read().clone()
    }

    pub fn replace_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        *self.authenticator.write() = authenticator;
    }
}

/// A bound listener, ready to accept.
pub struct BoundListener {
    pub context: Arc<ListenerContext>,
    pub local_addr: SocketAddr,
    transport: Transport,
    socket: TcpListener,
}

impl BoundListener {
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<BoundListener> {
        let socket = TcpListener::bind(config.addr).await?;
        let local_addr = socket.local_addr()?;
        let mut context = ListenerContext::new(
            config.name.clone(),
            local_addr.port(),
            config.authenticator.clone(),
            config.authorizer.clone(),
        );
        let tls = if config.transport.tls.is_some() {
            "+tls"
        } else {
            ""
        };
        context.transport = format!("{}{tls}", config.transport.protocol);
        context.set_max_connections(config.max_connections);
        Ok(BoundListener {
            context: Arc::new(context),
            local_addr,
            transport: config.transport.clone(),
            socket,
        })
    }

    /// Accept until `stop` turns true; each connection is spawned into `connections` and
    /// watches `stop` too, so stopping a listener disconnects its clients (v5: 0x8B).
    pub async fn run(
        self,
        bus: Arc<Bus>,
        mut stop: watch::Receiver<bool>,
        connections: Arc<parking_lot::Mutex<JoinSet<()>>>,
        cores: Option<Arc<crate::cores::Cores>>,
    ) {
        let tls = if self.transport.tls.is_some() {
            "tls"
        } else {
            "plain"
        };
        tracing::info!(
            listener = %self.context.name, addr = %self.local_addr,
            protocol = %self.transport.protocol, tls, "listening"
        );
        let handshake_timeout = Duration::from_secs(bus.limits.connect_timeout_secs.max(1));
        let admission = Admission::of(&bus);
        let mut refusals = RefusalLog::default();
        loop {
            let log_due = refusals.due();
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep_until(log_due.unwrap_or_else(tokio::time::Instant::now)),
                    if log_due.is_some() => refusals.flush(&self.context, &bus),
                accepted = self.socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let admitted = match admission.admit(peer.ip(), &self.context) {
                            Ok(admitted) => admitted,
                            Err(limit) => {
                                // Closed at once, nothing read: a refused client costs one
                                // accept and one close, whatever its transport.
                                drop(stream);
                                bus.stats.refused(limit, 1);
                                refusals.note(limit, peer, &self.context, &bus);
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        bus.stats.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (transport, context) = (self.transport.clone(), self.context.clone());
                        let (bus, stop) = (bus.clone(), stop.clone());
                        let mut set = connections.lock();
                        // Reap finished tasks so the set does not grow with churn.
                        while set.try_join_next().is_some() {}
                        match &cores {
                            // Registered with the reactor of the thread it is pinned to.
                            Some(cores) => match stream.into_std() {
                                Ok(std) => set.spawn_on(serve_stream(
                                    move || TcpStream::from_std(std), peer, transport,
                                    handshake_timeout, context, bus, stop, admitted,
                                ), cores.next()),
                                Err(e) => { tracing::warn!(error = %e, "cannot hand over an accepted socket"); continue }
                            },
                            None => set.spawn(serve_stream(
                                move || Ok(stream), peer, transport,
                                handshake_timeout, context, bus, stop, admitted,
                            )),
                        };
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(listener = %self.context.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        tracing::info!(listener = %self.context.name, addr = %self.local_addr, "listener stopped");
    }
}

/// Transport handshakes, then the MQTT connection. `admitted` is held for the task's
/// whole life: however it ends (handshake failure or timeout, disconnect, listener stop,
/// abort), dropping it gives the connection's place back. The transport handshakes run in
/// a box of their own (their futures are large and over once the transport is up), so the
/// task that lives as long as the connection holds little more than pointers.
#[allow(clippy::too_many_arguments)]
fn serve_stream(
    tcp: impl FnOnce() -> std::io::Result<TcpStream> + Send + 'static,
    peer: SocketAddr,
    transport: Transport,
    handshake_timeout: Duration,
    listener: Arc<ListenerContext>,
    bus: Arc<Bus>,
    stop: watch::Receiver<bool>,
    admitted: Admitted,
) -> impl std::future::Future<Output = ()> + Send {
    let up = Box::pin(transport_up(
        tcp,
        peer,
        transport,
        handshake_timeout,
        listener.clone(),
        bus.clone(),
    ));
    async move {
        let _admitted = admitted;
        let Some((stream, peer)) = up.await else {
            return;
        };
        match stream {
            Stream::Plain(s) => crate::connection::serve(s, peer, listener, bus, stop).await,
            Stream::Wrapped(s) => crate::connection::serve(s, peer, listener, bus, stop).await,
        }
    }
}

/// The transport's handshakes (TLS, WebSocket) on the socket `tcp` gives: the stream and
/// who is on it, or `None` (logged) if they failed.
async fn transport_up(
    tcp: impl FnOnce() -> std::io::Result<TcpStream>,
    peer: SocketAddr,
    transport: Transport,
    handshake_timeout: Duration,
    listener: Arc<ListenerContext>,
    bus: Arc<Bus>,
) -> Option<(Stream, Peer)> {
    // A WebSocket frame or message may not be larger than the largest MQTT packet: the
    // WebSocket layer refuses a bigger one from its header, before buffering it.
    let max_ws_message = usize::try_from(bus.limits.max_packet_size).unwrap_or(usize::MAX);
    // The socket is registered with the reactor of the runtime this first runs on (the
    // connection's thread, see `crate::cores`).
    let tcp = match tcp() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register an accepted socket");
            return None;
        }
    };
    match transport::accept(
        tcp,
        &transport,
        handshake_timeout,
        max_ws_message,
        &bus.stats,
    )
    .await
    {
        Ok(Accepted {
            stream,
            client_certificates,
        }) => Some((
            stream,
            Peer {
                addr: peer,
                client_certificates,
            },
        )),
        // Info, not debug: "the client only saw a reset" is the operator's first question.
        // A failed TLS handshake says what the client objected to and what usually fixes it.
        Err(e) => {
            tracing::info!(
                listener = %listener.name, port = listener.port, peer = %peer,
                "connection closed before MQTT: {e}{}",
                {
                    use tokio_rustls::rustls::{AlertDescription as A, Error as R};
                    match e.rustls() {
                        Some(R::AlertReceived(A::UnknownCA)) => " (the client sent alert UnknownCA: it cannot chain the server certificate to a CA it trusts: give the client the root CA of the chain in tls.crt (--cafile), make sure tls.crt holds the intermediates and that they are CAs: edgemq certs inspect tls.crt)",
                        Some(R::AlertReceived(A::BadCertificate | A::CertificateUnknown)) => " (the client rejected the server certificate: usually the address it connects to is not among the certificate's SANs, or a chain certificate is not a CA: edgemq certs inspect tls.crt)",
                        Some(R::AlertReceived(A::CertificateExpired)) => " (the client says the server certificate or a CA in its chain has expired, or the client's clock is wrong: edgemq certs inspect tls.crt)",
                        Some(R::AlertReceived(
                            A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity,
                        )) => " (the client and the broker share no TLS version or cipher suite: the broker speaks TLS 1.2 and 1.3)",
                        Some(R::AlertReceived(A::InternalError)) => " (OpenSSL-based clients such as mosquitto_pub send InternalError when the server certificate does not name the host they connect to: compare the address with the certificate's SANs: edgemq certs inspect tls.crt)",
                        Some(R::AlertReceived(_)) => " (an alert the client sent)",
                        Some(R::InvalidMessage(_)) => " (the client does not speak TLS: a plain MQTT client on a TLS port? connect with TLS, e.g. mosquitto_pub --cafile CA, mqtts://)",
                        Some(R::NoCertificatesPresented | R::InvalidCertificate(_)) => " (the client's certificate was refused: it must chain to the port's trusted client CA)",
                        Some(R::PeerIncompatible(_)) => " (the client's TLS offer is incompatible: it shares no TLS version, cipher suite or signature scheme with the broker)",
                        _ => "",
                    }
                }
            );
            None
        }
    }
}

/// Admission at accept, shared by every listener of one broker: open connections in total
/// (`max_connections`), per listener (`max_connections_per_listener` or the port's own
/// limit) and per source address (`max_connections_per_address`), and new
/// connections per second from one address (`max_connect_rate_per_address`, a token bucket
/// of that many tokens refilled at that rate, so a burst of the whole rate is allowed once
/// a second). A connection beyond a limit is closed at accept without reading from it.
///
/// Addresses are compared as IPv4 where an IPv6 address is IPv4-mapped.
pub(crate) struct Admission {
    max_total: usize,
    max_per_listener: usize,
    max_per_address: usize,
    rate: f64,
    state: parking_lot::Mutex<AdmissionState>,
}

struct AdmissionState {
    open: usize,
    addresses: HashMap<IpAddr, AddressState>,
    last_sweep: Instant,
}

struct AddressState {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

impl Admission {
    fn new(limits: &edgemq_core::limits::Limits) -> Admission {
        Admission {
            max_total: limits.max_connections,
            max_per_listener: limits.max_connections_per_listener,
            max_per_address: limits.max_connections_per_address,
            rate: f64::from(limits.max_connect_rate_per_address),
            state: parking_lot::Mutex::new(AdmissionState {
                open: 0,
                addresses: HashMap::new(),
                last_sweep: crate::bus::now(),
            }),
        }
    }

    /// The admission of `bus`'s broker: one per bus, so the limits hold across listeners
    /// (kept beside the bus, keyed by it, and dropped with it).
    pub(crate) fn of(bus: &Arc<Bus>) -> Arc<Admission> {
        type Registry = Vec<(Weak<Bus>, Arc<Admission>)>;
        static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(Vec::new());
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|(b, _)| b.strong_count() > 0);
        if let Some((_, admission)) = registry
            .iter()
            .find(|(b, _)| std::ptr::eq(b.as_ptr(), Arc::as_ptr(bus)))
        {
            return admission.clone();
        }
        let admission = Arc::new(Admission::new(&bus.limits));
        registry.push((Arc::downgrade(bus), admission.clone()));
        admission
    }

    /// Take a place for a new connection from `ip` on `listener`, or name the limit that
    /// refuses it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        listener: &Arc<ListenerContext>,
    ) -> Result<Admitted, Limit> {
        let ip = ip.to_canonical();
        let now = crate::bus::now();
        let mut state = self.state.lock();
        if state.open >= self.max_total {
            return Err(Limit::Connections);
        }
        let per_listener = listener.connection_limit(self.max_per_listener);
        if per_listener > 0 && listener.open.load(Ordering::Relaxed) >= per_listener {
            return Err(Limit::ConnectionsPerListener);
        }
        if state.addresses.len() > 1024
            && now.duration_since(state.last_sweep) >= Duration::from_secs(1)
        {
            // Forget idle addresses whose bucket is full again (a second since their last
            // connection), so the map stays bounded by open connections plus one second
            // of new addresses.
            state.last_sweep = now;
            state
                .addresses
                .retain(|_, a| a.open > 0 || now.duration_since(a.refilled).as_secs_f64() < 1.0);
        }
        let rate = self.rate;
        let address = state.addresses.entry(ip).or_insert(AddressState {
            open: 0,
            tokens: rate,
            refilled: now,
        });
        if address.open >= self.max_per_address {
            return Err(Limit::ConnectionsPerAddress);
        }
        let elapsed = now.duration_since(address.refilled).as_secs_f64();
        address.tokens = (address.tokens + elapsed * rate).min(rate);
        address.refilled = now;
        if address.tokens < 1.0 {
            return Err(Limit::ConnectRate);
        }
        address.tokens -= 1.0;
        address.open += 1;
        state.open += 1;
        listener.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            admission: self.clone(),
            ip,
            listener: listener.clone(),
        })
    }

    fn release(&self, ip: IpAddr, listener: &ListenerContext) {
        let mut state = self.state.lock();
        state.open = state.open.saturating_sub(1);
        let _ = listener
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let Some(address) = state.addresses.get_mut(&ip) {
            address.open = address.open.saturating_sub(1);
        }
    }
}

/// A connection's place under the connection limits; given back on drop.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    listener: Arc<ListenerContext>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.ip, &self.listener);
    }
}

/// One WARN line a second at most per listener for connections refused at accept, with the
/// number refused (per limit) since the previous line; a pending count is written when its
/// second is up even if no further connection comes.
#[derive(Default)]
struct RefusalLog {
    last_line: Option<Instant>,
    pending: [u64; 4],
    last_peer: Option<SocketAddr>,
}

impl RefusalLog {
    const LIMITS: [Limit; 4] = [
        Limit::Connections,
        Limit::ConnectionsPerListener,
        Limit::ConnectionsPerAddress,
        Limit::ConnectRate,
    ];

    fn note(&mut self, limit: Limit, peer: SocketAddr, listener: &ListenerContext, bus: &Bus) {
        if let Some(i) = Self::LIMITS.iter().position(|l| *l == limit) {
            self.pending[i] += 1;
        }
        self.last_peer = Some(peer);
        if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.flush(listener, bus);
        }
    }

    /// When the pending count is due to be written.
    fn due(&self) -> Option<tokio::time::Instant> {
        let last = self.last_line?;
        (self.pending.iter().sum::<u64>() > 0)
            .then(|| tokio::time::Instant::from_std(last + Duration::from_secs(1)))
    }

    fn flush(&mut self, listener: &ListenerContext, bus: &Bus) {
        let refused: u64 = self.pending.iter().sum();
        if refused == 0 {
            return;
        }
        let limits = &bus.limits;
        let by = Self::LIMITS
            .iter()
            .zip(self.pending)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| {
                let value = match l {
                    Limit::Connections => limits.max_connections.to_string(),
                    Limit::ConnectionsPerListener => listener
                        .connection_limit(limits.max_connections_per_listener)
                        .to_string(),
                    Limit::ConnectionsPerAddress => limits.max_connections_per_address.to_string(),
                    _ => format!("{}/s", limits.max_connect_rate_per_address),
                };
                format!("{}({value})={n}", l.as_str())
            })
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            listener = %listener.name,
            port = listener.port,
            refused,
            last_peer = %self.last_peer.map(|p| p.to_string()).unwrap_or_default(),
            "connections refused at accept (closed without reading) since the last line: {by}"
        );
        self.pending = [0; 4];
        self.last_line = Some(crate::bus::now());
    }
}
