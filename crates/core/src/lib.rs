//! # edgemq-core: MQTT broker semantics without sockets
//!
//! Layer: above the codec, below the runtime. Depends on `edgemq-codec` and small data crates;
//! never on tokio, YAML or sockets. Time comes in as `Instant` arguments.
//!
//! # Layout
//! - [`topic`]: topic name / filter validation and matching, `$share/` parsing, `$`-topic rules.
//! - [`subscriptions`]: the subscription index (a sharded trie) with shared groups,
//!   no-local, subscription identifiers and per-subscriber de-duplication of overlapping
//!   filters.
//! - [`retained`]: retained messages and their matching against a new subscription's filter.
//! - [`message`]: [`message::Message`], the immutable application message shared as `Arc`.
//! - [`backlog`]: retained messages owed to SUBSCRIBEs, each waiting once.
//! - [`connect`]: what a CONNECT settles (client id, will, expiry, keep-alive, CONNACK).
//! - [`lifetime`]: keep-alive, session resumption and expiry, and when a will goes.
//! - [`protocol`]: the rules of a connection after CONNECT, as inputs → effects (no I/O).
//! - [`outbound`]: the rules of what a connection sends (Receive Maximum, re-sends,
//!   Maximum Packet Size, server topic aliases).
//! - [`subscribe`]: the rules of SUBSCRIBE and UNSUBSCRIBE (refusals, grants, retained).
//! - [`session`]: per-session protocol state (packet ids, in-flight windows, QoS 2 state,
//!   topic aliases) driven by the runtime.
//! - [`auth`]: the authentication and authorization seams ([`auth::Principal`], traits, [`auth::AllowAll`]).
//! - [`limits`]: broker limits and the per-session queue overflow policy.
//! - [`logtext`]: client-chosen text shortened for log lines.

pub mod auth;
pub mod backlog;
pub mod connect;
pub mod lifetime;
pub mod limits;
pub mod logtext;
pub mod message;
pub mod outbound;
pub mod protocol;
pub mod retained;
pub mod session;
pub mod subscribe;
pub mod subscriptions;
pub mod topic;
