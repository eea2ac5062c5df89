//! Wire primitives ([MQTT-1.5]): two- and four-byte integers, variable byte integers (at most
//! 4 bytes [MQTT-1.5.5]), UTF-8 encoded strings (valid UTF-8 — which excludes surrogates
//! [MQTT-1.5.4-1] — and no U+0000 [MQTT-1.5.4-2]; other control characters are allowed),
//! binary data and string pairs. Decoding reads from the front of a `Bytes` holding exactly
//! the packet body, so running past it is always a Malformed Packet, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::{DecodeError, EncodeError};

/// Largest value of a variable byte integer (and of a remaining length).
pub const MAX_VARINT: u32 = 268_435_455;

const SHORT: DecodeError =
    DecodeError::malformed("[MQTT-1.5]", "field runs past the end of the packet");

pub fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(SHORT);
    }
    Ok(buf.get_u8())
}

pub fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(SHORT);
    }
    Ok(buf.get_u16())
}

pub fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.len() < 4 {
        return Err(SHORT);
    }
    Ok(buf.get_u32())
}

/// Decode a variable byte integer from the front of `bytes`: `Ok(None)` if more bytes are
/// needed, else the value and how many bytes it used.
pub fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = bytes.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::malformed(
        "[MQTT-1.5.5]",
        "variable byte integer longer than 4 bytes",
    ))
}

pub fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    match parse_varint(buf)? {
        Some((v, n)) => {
            buf.advance(n);
            Ok(v)
        }
        None => Err(SHORT),
    }
}

/// Two-byte length then that many bytes, zero-copy.
pub fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(SHORT);
    }
    Ok(buf.split_to(len))
}

/// A UTF-8 encoded string, validated.
pub fn read_string(buf: &mut Bytes) -> Result<ByteString, DecodeError> {
    let raw = read_binary(buf)?;
    to_mqtt_string(raw)
}

/// Validate bytes as an MQTT UTF-8 string.
pub fn to_mqtt_string(raw: Bytes) -> Result<ByteString, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::malformed(
            "[MQTT-1.5.4-2]",
            "string contains U+0000",
        ));
    }
    ByteString::try_from(raw)
        .map_err(|_| DecodeError::malformed("[MQTT-1.5.4-1]", "string is not valid UTF-8"))
}

pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn write_varint(out: &mut BytesMut, mut value: usize) -> Result<(), EncodeError> {
    if value > MAX_VARINT as usize {
        return Err(EncodeError::TooLarge);
    }
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            return Ok(());
        }
    }
}

pub fn write_binary(out: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong)?;
    out.put_u16(len);
    out.put_slice(data);
    Ok(())
}

pub fn write_string(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    write_binary(out, s.as_bytes())
}

/// Encoded size of a string or binary field.
pub fn field_len(data: &[u8]) -> usize {
    2 + data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        for (value, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            write_varint(&mut out, value).unwrap();
            assert_eq!(&out[..], &bytes[..], "encode {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(
                parse_varint(&bytes).unwrap(),
                Some((value as u32, bytes.len()))
            );
        }
    }

    #[test]
    fn varint_over_four_bytes_is_malformed() {
        let e = parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap_err();
        assert_eq!(e.rule, "[MQTT-1.5.5]");
        assert_eq!(parse_varint(&[0x80, 0x80]).unwrap(), None);
        assert!(write_varint(&mut BytesMut::new(), 268_435_456).is_err());
    }

    #[test]
    fn strings() {
        let mut b = Bytes::from_static(b"\x00\x03a/b");
        assert_eq!(read_string(&mut b).unwrap(), "a/b");
        let mut b = Bytes::from_static(b"\x00\x03a\x00b");
        assert_eq!(read_string(&mut b).unwrap_err().rule, "[MQTT-1.5.4-2]");
        // An encoded surrogate (U+D800) is not valid UTF-8.
        let mut b = Bytes::from_static(b"\x00\x03\xED\xA0\x80");
        assert_eq!(read_string(&mut b).unwrap_err().rule, "[MQTT-1.5.4-1]");
        let mut b = Bytes::from_static(b"\x00\x05ab");
        assert!(read_string(&mut b).is_err());
    }
}
