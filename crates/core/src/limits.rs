//! Broker limits. Plain data owned here and filled by the binary or, later, by the
//! configuration crate from the `Broker` resource.

/// What to do when a session's queue is full and another message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room (AIO `DropOldest`).
    #[default]
    DropOldest,
    /// Drop the new message (AIO `None`: the queue is simply bounded).
    DropNew,
    /// Disconnect the subscriber (the queue is kept for a persistent session).
    Disconnect,
}

/// Limits applied to every client, advertised in v5 CONNACK where MQTT has a property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet accepted from a client (and advertised as Maximum Packet Size).
    pub max_packet_size: u32,
    /// Receive Maximum advertised to clients: QoS 1/2 PUBLISHes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Cap on a client's requested Session Expiry Interval (seconds); `u32::MAX` = never.
    pub max_session_expiry: u32,
    /// Cap on a message's Message Expiry Interval (seconds); `None` = no cap.
    pub max_message_expiry: Option<u32>,
    /// Cap on keep-alive (seconds); a larger or zero request is answered with Server Keep Alive.
    pub max_keep_alive: Option<u16>,
    /// Highest QoS accepted from publishers (Maximum QoS).
    pub maximum_qos: edgemq_codec::QoS,
    /// Topic Alias Maximum advertised to clients (aliases a client may use towards us).
    pub topic_alias_maximum: u16,
    /// Messages kept per session (queued plus in flight to the client).
    pub max_queued_messages: usize,
    pub overflow_policy: OverflowPolicy,
    /// Largest client identifier accepted (bytes; CONNACK 0x85 / return code 2 beyond).
    /// MQTT requires a server to accept 1 to 23 bytes [MQTT-3.1.3-5] and allows more; 1,024
    /// fits every naming scheme in use (UUIDs, device paths, certificate names) while a
    /// client cannot make each of its sessions hold (and log, and store) 64 KiB of name.
    pub max_client_id_len: usize,
    /// Whether retained messages are supported (Retain Available).
    pub retain_available: bool,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Most levels in a topic name or filter (`a/b` has 2): deeper ones are refused.
    /// Mosquitto's fixed limit is 200 (CVE-2019-11779).
    pub max_topic_levels: usize,
    /// Most topic filters one SUBSCRIBE or UNSUBSCRIBE may carry; the rest are refused.
    pub max_filters_per_packet: usize,
    /// QoS 1/2 messages in flight to one client at once: the client's Receive Maximum is
    /// honoured up to this.
    pub max_inflight_messages: u16,
    /// Message bytes (payload and topic) in flight to one client at once; one message is
    /// always allowed when nothing is in flight.
    pub max_inflight_bytes: usize,
    /// Message bytes queued for one session before its overflow policy applies.
    pub max_queued_bytes: usize,
    /// Subscriptions one session may hold (SUBACK 0x97 beyond).
    pub max_subscriptions_per_session: usize,
    /// Subscriptions in the broker (SUBACK 0x97 beyond).
    pub max_subscriptions: usize,
    /// Sessions (online and offline) in the broker (CONNACK 0x97 for a new one beyond).
    pub max_sessions: usize,
    /// Sessions (online and offline) created from one source address (CONNACK 0x97 for a
    /// new one beyond). Sessions restored from the store count against no address.
    pub max_sessions_per_address: usize,
    /// Retained messages, and their bytes, in the broker (PUBACK 0x97 for a new one beyond).
    pub max_retained_messages: usize,
    pub max_retained_bytes: usize,
    /// Open connections in total and from one source address (refused beyond), and
    /// CONNECTs accepted per second from one source address.
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_connect_rate_per_address: u32,
    /// Open connections on one listener (port), closed at accept beyond; 0 = no limit but
    /// `max_connections`. A `BrokerListener` port's `maxConnections` overrides it.
    pub max_connections_per_listener: usize,
    /// Session expiry given to MQTT 3.1/3.1.1 persistent sessions (clean session 0), which
    /// have no expiry of their own (Mosquitto's `persistent_client_expiration`); seconds,
    /// `u32::MAX` = never.
    pub v3_session_expiry: u32,
    /// Resident memory the broker defends, in bytes (0 = none): it sheds load before
    /// reaching it (refuse connections, hold publishers back, apply overflow policies).
    pub memory_budget: u64,
    /// Topic aliases the broker assigns on what it sends to a v5 client that allows them
    /// (up to the client's Topic Alias Maximum); 0 = none.
    pub server_topic_aliases: u16,
    /// Seconds between publications of the `$SYS` topics (Mosquitto's `sys_interval`);
    /// 0 = none.
    pub sys_interval_secs: u32,
    /// Threads serving connections, each with a single-threaded runtime of its own and the
    /// connections pinned to it; 0: connections run on the caller's runtime (embedding,
    /// tests with virtual time).
    pub connection_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            max_session_expiry: u32::MAX,
            max_message_expiry: None,
            max_keep_alive: None,
            maximum_qos: edgemq_codec::QoS::ExactlyOnce,
            topic_alias_maximum: 64,
            max_queued_messages: 1000,
            overflow_policy: OverflowPolicy::DropOldest,
            max_client_id_len: 1024,
            retain_available: true,
            connect_timeout_secs: 10,
            max_topic_levels: 200,
            max_filters_per_packet: 1000,
            max_inflight_messages: 100,
            max_inflight_bytes: 16 * 1024 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            max_subscriptions_per_session: 10_000,
            max_subscriptions: 1_000_000,
            max_sessions: 100_000,
            max_sessions_per_address: 1_000,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_connect_rate_per_address: 100,
            max_connections_per_listener: 0,
            v3_session_expiry: 7 * 24 * 3600,
            memory_budget: 0,
            server_topic_aliases: 0,
            sys_interval_secs: 10,
            connection_threads: 0,
        }
    }
}

/// A limit that refused something a client sent. Every refusal is counted under one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A topic name or filter deeper than `max_topic_levels`.
    TopicLevels,
    /// A SUBSCRIBE or UNSUBSCRIBE filter beyond `max_filters_per_packet`.
    FiltersPerPacket,
    /// A connection closed at accept: `max_connections` were open.
    Connections,
    /// A connection closed at accept: `max_connections_per_address` were open from its
    /// source address.
    ConnectionsPerAddress,
    /// A connection closed at accept: its source address had used its
    /// `max_connect_rate_per_address` connections for this second.
    ConnectRate,
    /// A retained message not kept: `max_retained_messages` were held.
    RetainedMessages,
    /// A retained message not kept: it would take the retained bytes over
    /// `max_retained_bytes`.
    RetainedBytes,
    /// A new session refused at CONNECT: `max_sessions` existed.
    Sessions,
    /// A SUBSCRIBE filter refused: the session held `max_subscriptions_per_session`.
    SubscriptionsPerSession,
    /// A connection refused at CONNECT: the broker was near its memory budget.
    MemoryBudget,
    /// A SUBSCRIBE filter refused: the broker held `max_subscriptions`.
    Subscriptions,
    /// The store is at `max_store_bytes`: a QoS 1/2 PUBLISH for a persistent session or a
    /// retained PUBLISH refused; or at 90 % of it, a new persistent session refused.
    StoreBudget,
    /// A connection closed at accept: its listener (port) had its
    /// `max_connections_per_listener` (or the port's `maxConnections`) open.
    ConnectionsPerListener,
    /// A new session refused at CONNECT: its source address had created
    /// `max_sessions_per_address` sessions that still exist.
    SessionsPerAddress,
    /// A CONNECT refused: its client identifier was longer than `max_client_id_len` bytes.
    ClientIdLength,
}

impl Limit {
    pub const ALL: [Limit; 15] = [
        Limit::TopicLevels,
        Limit::FiltersPerPacket,
        Limit::Connections,
        Limit::ConnectionsPerAddress,
        Limit::ConnectRate,
        Limit::RetainedMessages,
        Limit::RetainedBytes,
        Limit::Sessions,
        Limit::SubscriptionsPerSession,
        Limit::MemoryBudget,
        Limit::Subscriptions,
        Limit::StoreBudget,
        Limit::ConnectionsPerListener,
        Limit::SessionsPerAddress,
        Limit::ClientIdLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TopicLevels => "max_topic_levels",
            Limit::FiltersPerPacket => "max_filters_per_packet",
            Limit::Connections => "max_connections",
            Limit::ConnectionsPerAddress => "max_connections_per_address",
            Limit::ConnectRate => "max_connect_rate_per_address",
            Limit::RetainedMessages => "max_retained_messages",
            Limit::RetainedBytes => "max_retained_bytes",
            Limit::Sessions => "max_sessions",
            Limit::SubscriptionsPerSession => "max_subscriptions_per_session",
            Limit::MemoryBudget => "memory_budget",
            Limit::Subscriptions => "max_subscriptions",
            Limit::StoreBudget => "max_store_bytes",
            Limit::ConnectionsPerListener => "max_connections_per_listener",
            Limit::SessionsPerAddress => "max_sessions_per_address",
            Limit::ClientIdLength => "max_client_id_length",
        }
    }
}
