//! An edgemq broker inside the test process, on a free loopback port (port 0): no binary to
//! spawn, its limits set in code, one anonymous plain-TCP listener, no store. For suites
//! that check protocol behaviour; what needs the CLI, configuration files, TLS or the store
//! runs the binary ([`crate::broker::Broker`]).

use std::net::SocketAddr;
use std::sync::Arc;

use edgemq_broker::listener::ListenerConfig;
use edgemq_broker::{Limits, Server};

/// A running in-process broker; shut down on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    server: Arc<Server>,
    /// Its own runtime, so a synchronous test (std sockets, blocking reads) can drive it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl InProcess {
    /// A broker on the default limits.
    pub fn start() -> InProcess {
        Self::start_with(Limits::default())
    }

    pub fn start_with(limits: Limits) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let (server, addr) = runtime.block_on(async {
            let server = Server::new(limits, None);
            let listener = ListenerConfig::anonymous("default", listen);
            server
                .apply(vec![listener])
                .await
                .expect("bind 127.0.0.1:0");
            let addr = server.local_addrs().await[0].1;
            (server, addr)
        });
        InProcess {
            addr,
            server,
            runtime: Some(runtime),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.block_on(self.server.shutdown());
            runtime.shutdown_background();
        }
    }
}

/// The broker a conformance table runs against: this process's, or the one
/// `EDGEMQ_TEST_AGAINST` names (so the table checks the specification, not our answers).
pub enum Target {
    InProcess(InProcess),
    Process(crate::broker::Broker),
}

impl Target {
    pub fn start() -> Target {
        if crate::broker::Broker::edgemq_only() {
            Target::InProcess(InProcess::start())
        } else {
            Target::Process(crate::broker::Broker::start())
        }
    }
}

/// Anything a test client can connect to.
pub trait Endpoint {
    fn addr(&self) -> SocketAddr;
}

impl Endpoint for InProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Endpoint for crate::broker::Broker {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Endpoint for Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::InProcess(b) => b.addr,
            Target::Process(b) => b.addr,
        }
    }
}
