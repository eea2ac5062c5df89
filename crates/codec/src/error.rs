//! Decode and encode errors. A decode error always names the normative statement it enforces
//! and the reason code the broker must answer with, so the connection layer never has to guess.

use crate::ReasonCode;

/// A packet violated the specification. `rule` is the normative statement (e.g.
/// `"[MQTT-3.3.2-2]"`, or a section such as `"[MQTT-2.2.2]"` where the spec gives no number);
/// `reason` is what a v5 CONNACK/DISCONNECT carries (v3 connections are simply closed, except
/// for the CONNACK return codes of [`ReasonCode::to_v3_connack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{rule} {message}")]
pub struct DecodeError {
    pub reason: ReasonCode,
    pub rule: &'static str,
    pub message: &'static str,
}

impl DecodeError {
    /// A malformed packet (reason 0x81).
    pub const fn malformed(rule: &'static str, message: &'static str) -> Self {
        Self {
            reason: ReasonCode::MalformedPacket,
            rule,
            message,
        }
    }
    /// A protocol error (reason 0x82).
    pub const fn protocol(rule: &'static str, message: &'static str) -> Self {
        Self {
            reason: ReasonCode::ProtocolError,
            rule,
            message,
        }
    }
    /// Any other reason code (packet too large, unsupported protocol version, ...).
    pub const fn with_reason(
        reason: ReasonCode,
        rule: &'static str,
        message: &'static str,
    ) -> Self {
        Self {
            reason,
            rule,
            message,
        }
    }
}

/// A packet could not be encoded (a value does not fit its wire field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet exceeds the maximum remaining length of 268,435,455 bytes")]
    TooLarge,
    #[error("string or binary field exceeds 65,535 bytes")]
    FieldTooLong,
}
