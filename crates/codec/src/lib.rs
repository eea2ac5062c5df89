//! # edgemq-codec: MQTT bytes ⇄ packets
//!
//! Layer: the innermost. Depends on `bytes`, `bytestring` and `thiserror` only: no I/O, no
//! tokio, no clocks. One packet model serves MQTT 3.1 (protocol level 3), 3.1.1 (4) and
//! 5.0 (5); the protocol version is a parameter of decode and encode, never a second tree.
//!
//! # Layout
//! - [`packet`]: one file per packet type (struct + decode + encode + tests).
//! - [`properties`]: MQTT 5 properties, the per-packet allow-list, duplicate checks.
//! - [`reason`]: MQTT 5 reason codes and the v3 CONNACK return-code mapping.
//! - [`decoder`]: [`Decoder`], incremental framing; rejects oversized packets from the
//!   fixed header, before the body is buffered.
//! - [`error`]: [`DecodeError`] (carries the normative rule and the reason code to answer with).
//! - [`primitives`]: variable byte integer, UTF-8 string and binary data per [MQTT-1.5].
//!
//! Payloads are `bytes::Bytes` split from the read buffer: shared, never copied.

pub mod decoder;
pub mod error;
pub mod packet;
pub mod primitives;
pub mod properties;
pub mod reason;

pub use decoder::Decoder;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, PropertyValues};
pub use reason::ReasonCode;
