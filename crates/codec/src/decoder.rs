//! Incremental framing over a read buffer.

use bytes::{Buf, Bytes, BytesMut};

/// A body at least this large is copied out of a read buffer much larger than itself.
const LARGE_BODY: usize = 64 * 1024;

use crate::packet::{decode_body, FixedHeader};
use crate::primitives::parse_varint;
use crate::{DecodeError, Packet, ProtocolVersion, ReasonCode};

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
    /// Decoding what a client sends: a packet only a server sends is refused from its
    /// fixed header.
    server: bool,
}

impl Decoder {
    pub fn new(max_packet_size: u32) -> Self {
        Self {
            version: None,
            max_packet_size,
            server: false,
        }
    }

    /// A decoder for the server side of a connection: CONNACK, SUBACK, UNSUBACK and PINGRESP
    /// from the client are a Protocol Error (0x82, MQTT 5 §4.13.1), whatever their body.
    pub fn for_server(max_packet_size: u32) -> Self {
        Self {
            server: true,
            ..Self::new(max_packet_size)
        }
    }

    /// Decode the next whole packet from `buf`, advancing it. `Ok(None)` means more bytes are
    /// needed (and `buf` is unchanged). After a CONNECT is decoded, `self.version` is set from
    /// it. Before that, any packet other than CONNECT is a Protocol Error [MQTT-3.1.0-1]; a
    /// second CONNECT afterwards is a Protocol Error [MQTT-3.1.0-2].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some((header, header_len)) = self.parse_header(buf)? else {
            return Ok(None);
        };
        if self.server && matches!(header.packet_type, 2 | 9 | 11 | 13) {
            return Err(DecodeError::with_reason(
                ReasonCode::ProtocolError,
                "[MQTT-4.13.1]",
                "a packet only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP), from a client",
            ));
        }
        let total = header_len + header.remaining_length as usize;
        if buf.len() < total {
            // Make room for more of it, but never reserve what a peer merely claims: a
            // header announcing 256 MB must not cost 256 MB before the bytes arrive.
            buf.reserve((total - buf.len()).min(64 * 1024));
            return Ok(None);
        }
        buf.advance(header_len);
        let len = header.remaining_length as usize;
        // A large body in a much larger buffer (a read buffer that grew while the packet
        // arrived) is copied into an allocation of its own: what the broker keeps of it
        // (a queued or retained message) must not pin twice its size.
        let body = if len >= LARGE_BODY && buf.capacity() >= len + len / 4 {
            let body = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            body
        } else {
            buf.split_to(len).freeze()
        };
        let packet = decode_body(header, body, self.version)?;
        if let Packet::Connect(connect) = &packet {
            self.version = Some(connect.protocol_version);
        }
        Ok(Some(packet))
    }

    /// How many more bytes the packet at the front of `buf` needs (for read sizing); 0 if
    /// unknown or complete.
    pub fn bytes_needed(&self, buf: &[u8]) -> usize {
        match self.parse_header(buf) {
            Ok(Some((h, n))) => (n + h.remaining_length as usize).saturating_sub(buf.len()),
            _ => 0,
        }
    }

    /// The fixed header at the front of `buf`, checked against the size limit; `None` if
    /// incomplete.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<(FixedHeader, usize)>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let Some((remaining_length, n)) = parse_varint(&buf[1..])? else {
            return Ok(None);
        };
        let total = 1 + n as u64 + u64::from(remaining_length);
        if total > u64::from(self.max_packet_size) {
            return Err(DecodeError::with_reason(
                ReasonCode::PacketTooLarge,
                "[MQTT-3.2.2-15]",
                "packet exceeds the maximum packet size",
            ));
        }
        Ok(Some((
            FixedHeader {
                packet_type: first >> 4,
                flags: first & 0x0F,
                remaining_length,
            },
            1 + n,
        )))
    }
}
