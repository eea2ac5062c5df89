//! What an operator can see of the running broker and do to it (the admin API): who is
//! connected, each session, and a connection's live state on request. Reading costs the
//! message path nothing: a connected client's details are fixed at CONNECT, and its live
//! numbers are asked of its task (`Control::Inspect`), which answers between packets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytestring::ByteString;

use edgemq_codec::{ProtocolVersion, QoS};

pub use crate::mailbox::SessionDrops;

/// A connected client as its CONNECT settled it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub listener: Arc<str>,
    pub port: u16,
    pub peer: SocketAddr,
    pub protocol: ProtocolVersion,
    pub username: Option<ByteString>,
    /// Attributes from authentication, for authorization.
    pub attributes: Vec<(String, String)>,
    /// Effective keep-alive, seconds (0: none).
    pub keep_alive: u16,
    pub clean_start: bool,
    pub connected_at: SystemTime,
}

/// A connection's live state, answered by its task.
#[derive(Debug, Clone)]
pub struct ClientSnapshot {
    /// QoS 1/2 messages sent and not yet acknowledged, and their bytes.
    pub inflight: usize,
    pub inflight_bytes: usize,
    /// Messages waiting in the session's queue.
    pub queued: usize,
    /// Incoming QoS 2 messages awaiting PUBREL.
    pub incoming_qos2: usize,
    /// Session Expiry Interval, seconds.
    pub session_expiry: u32,
    pub subscriptions: Vec<SubscriptionView>,
    /// Seconds since the client last sent anything.
    pub idle_secs: u64,
    pub drops: SessionDrops,
}

/// One subscription as the client made it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    /// As the client wrote it (`$share/g/f` included).
    pub filter: ByteString,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// A session, online or offline.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub client_id: ByteString,
    /// `Some` while a client is connected.
    pub client: Option<Arc<ClientInfo>>,
    /// Offline sessions: what the registry holds (online ones: ask the client).
    pub offline: Option<OfflineView>,
    /// The session's epoch: bumped by every connection that takes it.
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub struct OfflineView {
    pub queued: usize,
    pub inflight: usize,
    pub subscriptions: Vec<SubscriptionView>,
    pub session_expiry: u32,
    /// Seconds until the session ends (`None`: never).
    pub expires_in_secs: Option<u64>,
    /// A delayed will is waiting.
    pub will_pending: bool,
    pub drops: SessionDrops,
}

/// What an operator asked of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (a connected client is told with DISCONNECT 0x98 Administrative action).
    Done,
    NotFound,
}
