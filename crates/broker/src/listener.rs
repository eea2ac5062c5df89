//! Listeners: bind, accept, run the transport handshakes, and hand each connection to its
//! own task. Every listener feeds the same [`Bus`]; each has its own transport,
//! authenticator and authorizer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use edgemq_core::auth::{AllowAll, Authenticator, Authorizer};

use crate::bus::Bus;
use crate::connection::Peer;
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
            .finish()
    }
}

/// What a connection task needs to know about its listener.
pub struct ListenerContext {
    pub name: String,
    pub port: u16,
    /// Replaced in place on reload (new passwords, CA bundles, auth servers) so connected
    /// clients stay; each CONNECT takes the current one.
    authenticator: RwLock<Arc<dyn Authenticator>>,
    /// Replaced in place on reload; connections keep a copy and compare `authz_generation`
    /// (one relaxed load per wake-up) to notice a new policy and re-check subscriptions.
    authorizer: RwLock<Arc<dyn Authorizer>>,
    authz_generation: AtomicU64,
    /// Wakes idle connections when the policy changes, so revocations apply at once.
    authz_changed: tokio::sync::watch::Sender<u64>,
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
            authenticator: RwLock::new(authenticator),
            authorizer: RwLock::new(authorizer),
            authz_generation: AtomicU64::new(0),
            authz_changed: tokio::sync::watch::channel(0).0,
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
        Ok(BoundListener {
            context: Arc::new(ListenerContext::new(
                config.name.clone(),
                local_addr.port(),
                config.authenticator.clone(),
                config.authorizer.clone(),
            )),
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
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = self.socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        bus.stats.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let task = serve_stream(
                            stream, peer, self.transport.clone(), handshake_timeout,
                            self.context.clone(), bus.clone(), stop.clone(),
                        );
                        let mut set = connections.lock();
                        // Reap finished tasks so the set does not grow with churn.
                        while set.try_join_next().is_some() {}
                        set.spawn(task);
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

/// Transport handshakes, then the MQTT connection.
async fn serve_stream(
    tcp: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    handshake_timeout: Duration,
    listener: Arc<ListenerContext>,
    bus: Arc<Bus>,
    stop: watch::Receiver<bool>,
) {
    match transport::accept(tcp, &transport, handshake_timeout).await {
        Ok(Accepted {
            stream,
            client_certificates,
        }) => {
            let peer = Peer {
                addr: peer,
                client_certificates,
            };
            match stream {
                Stream::Plain(s) => crate::connection::serve(s, peer, listener, bus, stop).await,
                Stream::Wrapped(s) => crate::connection::serve(s, peer, listener, bus, stop).await,
            }
        }
        // Info, not debug: "the client only saw a reset" is the operator's first question.
        // A failed TLS handshake says what the client objected to and what usually fixes it.
        Err(e) => tracing::info!(
            listener = %listener.name, port = listener.port, peer = %peer,
            "connection closed before MQTT: {e}{}",
            {
                use tokio_rustls::rustls::{AlertDescription as A, Error as R};
                let tls = match &e {
                    transport::HandshakeError::Tls(io) => {
                        io.get_ref().and_then(|r| r.downcast_ref::<R>())
                    }
                    _ => None,
                };
                match tls {
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
        ),
    }
}
