//! Incremental framing over a read buffer.

use bytes::BytesMut;

use crate::{DecodeError, Packet, ProtocolVersion};

/// Splits packets off the front of a read buffer.
///
/// The fixed header is parsed first: a remaining length over 4 bytes is Malformed
/// [MQTT-1.5.5], and a packet whose total size exceeds `max_packet_size` is rejected with
/// `PacketTooLarge` (0x95) before its body is buffered, so a client cannot make the broker
/// hold more than one maximum-size packet.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// `None` until CONNECT has been decoded; then the connection's version.
    pub version: Option<ProtocolVersion>,
    /// Largest whole packet (fixed header included) accepted.
    pub max_packet_size: u32,
}

impl Decoder {
    pub fn new(max_packet_size: u32) -> Self {
        Self { version: None, max_packet_size }
    }

    /// Decode the next whole packet from `buf`, advancing it. `Ok(None)` means more bytes are
    /// needed (and `buf` is unchanged). After a CONNECT is decoded, `self.version` is set from
    /// it. Before that, any packet other than CONNECT is a Protocol Error [MQTT-3.1.0-1]; a
    /// second CONNECT afterwards is a Protocol Error [MQTT-3.1.0-2].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let _ = buf;
        todo!("codec helper")
    }

    /// How many more bytes the packet at the front of `buf` needs (for read sizing); 0 if
    /// unknown or complete.
    pub fn bytes_needed(&self, buf: &[u8]) -> usize {
        let _ = buf;
        todo!("codec helper")
    }
}
