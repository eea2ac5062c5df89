//! A tiny raw MQTT client for the conformance suites: hand-built byte sequences in, exact
//! bytes (or a closed socket) out.
//!
//! Deliberately independent of `edgemq-codec`: every packet here is assembled byte by byte
//! from the OASIS specifications so that the suite checks the codec instead of mirroring it.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Upper bound for any single wait. Generous on purpose: the suite runs on a loaded 2-core
/// machine, and a correct broker answers in milliseconds, so only a broken one gets near it.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Encoding primitives (MQTT 3.1.1 §1.5, MQTT 5.0 §1.5)
// ---------------------------------------------------------------------------------------

/// Variable Byte Integer [MQTT-1.5.5]; also the 3.1.1 Remaining Length encoding.
pub fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// Two-byte length prefix followed by the raw bytes (UTF-8 string or binary data). Takes
/// bytes, not `&str`, so tests can build ill-formed strings.
pub fn lp(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A whole control packet: first byte, Remaining Length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len() as u32));
    out.extend_from_slice(body);
    out
}

/// Concatenate byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------
// Properties (MQTT 5.0 §2.2.2)
// ---------------------------------------------------------------------------------------

pub mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Properties a server may put in CONNACK (MQTT 5.0 §3.2.2.3).
    pub const CONNACK_ALLOWED: &[u8] = &[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ];
}

/// One encoded property: identifier then a one-byte value.
pub fn p_u8(id: u8, v: u8) -> Vec<u8> {
    vec![id, v]
}
pub fn p_u16(id: u8, v: u16) -> Vec<u8> {
    cat(&[&[id], &v.to_be_bytes()])
}
pub fn p_u32(id: u8, v: u32) -> Vec<u8> {
    cat(&[&[id], &v.to_be_bytes()])
}
pub fn p_var(id: u8, v: u32) -> Vec<u8> {
    cat(&[&[id], &varint(v)])
}
pub fn p_str(id: u8, s: &[u8]) -> Vec<u8> {
    cat(&[&[id], &lp(s)])
}
pub fn p_pair(id: u8, k: &str, v: &str) -> Vec<u8> {
    cat(&[&[id], &lp(k.as_bytes()), &lp(v.as_bytes())])
}

/// A property block: Property Length followed by the encoded properties.
pub fn props(items: &[Vec<u8>]) -> Vec<u8> {
    let body = items.concat();
    cat(&[&varint(body.len() as u32), &body])
}

/// The empty property block (a single zero length byte).
pub fn no_props() -> Vec<u8> {
    vec![0]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    Byte(u8),
    U16(u16),
    U32(u32),
    Var(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Decoded properties in wire order (duplicates kept, so tests can reject them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub Vec<(u8, PropValue)>);

impl Props {
    pub fn get(&self, id: u8) -> Option<&PropValue> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }
    pub fn count(&self, id: u8) -> usize {
        self.0.iter().filter(|(i, _)| *i == id).count()
    }
    pub fn ids(&self) -> Vec<u8> {
        self.0.iter().map(|(i, _)| *i).collect()
    }
    /// Numeric value of a byte/two-byte/four-byte/varint property.
    pub fn num(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            PropValue::Byte(v) => Some(u32::from(*v)),
            PropValue::U16(v) => Some(u32::from(*v)),
            PropValue::U32(v) | PropValue::Var(v) => Some(*v),
            _ => None,
        }
    }
    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            PropValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// All values of a repeatable numeric property (e.g. Subscription Identifier).
    pub fn all_num(&self, id: u8) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(i, _)| *i == id)
            .filter_map(|(_, v)| match v {
                PropValue::Var(n) | PropValue::U32(n) => Some(*n),
                PropValue::U16(n) => Some(u32::from(*n)),
                PropValue::Byte(n) => Some(u32::from(*n)),
                _ => None,
            })
            .collect()
    }
}

/// Strict reader over a byte slice; every error names what was being read, so a malformed
/// packet from the broker fails the test with a useful message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "truncated {what}: need {n} bytes at offset {} of {}",
                self.pos,
                hex(self.buf)
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn varint(&mut self, what: &str) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "{what}: variable byte integer longer than 4 bytes [MQTT-1.5.5]"
        ))
    }
    pub fn bin(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let n = self.u16(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    pub fn string(&mut self, what: &str) -> Result<String, String> {
        let b = self.bin(what)?;
        String::from_utf8(b).map_err(|e| format!("{what}: broker sent ill-formed UTF-8: {e}"))
    }
    /// Property Length and the properties it covers (MQTT 5.0 §2.2.2).
    pub fn props(&mut self) -> Result<Props, String> {
        let len = self.varint("property length")? as usize;
        let block = self.take(len, "property block")?;
        let mut r = Reader::new(block);
        let mut out = Vec::new();
        while !r.is_empty() {
            let id = r.varint("property identifier")?;
            let id =
                u8::try_from(id).map_err(|_| format!("unknown property identifier {id:#x}"))?;
            let v = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    PropValue::Byte(r.u8("byte property")?)
                }
                0x13 | 0x21 | 0x22 | 0x23 => PropValue::U16(r.u16("two-byte property")?),
                0x02 | 0x11 | 0x18 | 0x27 => PropValue::U32(r.u32("four-byte property")?),
                0x0B => PropValue::Var(r.varint("subscription identifier")?),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                    PropValue::Str(r.string("string property")?)
                }
                0x09 | 0x16 => PropValue::Bin(r.bin("binary property")?),
                0x26 => PropValue::Pair(
                    r.string("user property key")?,
                    r.string("user property value")?,
                ),
                other => {
                    return Err(format!(
                        "unknown property identifier {other:#04x} in {}",
                        hex(block)
                    ))
                }
            };
            out.push((id, v));
        }
        Ok(Props(out))
    }
}

// ---------------------------------------------------------------------------------------
// Packet builders
// ---------------------------------------------------------------------------------------

/// CONNECT flag bits (MQTT 3.1.1 §3.1.2.3, MQTT 5.0 §3.1.2.3).
pub mod flags {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS1: u8 = 0x08;
    pub const WILL_QOS2: u8 = 0x10;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

/// Fully general CONNECT: protocol name and level, flags byte, keep alive, optional v5
/// property block, and the already-encoded payload (client id, will, username, password).
pub fn connect_raw(
    name: &[u8],
    level: u8,
    flags: u8,
    keepalive: u16,
    props: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = lp(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keepalive.to_be_bytes());
    if let Some(p) = props {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// MQTT 3.1.1 CONNECT whose payload is just the client id (flags given raw).
pub fn connect_v311(client_id: &str, flags: u8, keepalive: u16) -> Vec<u8> {
    connect_raw(
        b"MQTT",
        4,
        flags,
        keepalive,
        None,
        &lp(client_id.as_bytes()),
    )
}

/// MQTT 5.0 CONNECT whose payload is just the client id, with the given property block.
pub fn connect_v5(client_id: &str, flags: u8, keepalive: u16, props: &[u8]) -> Vec<u8> {
    connect_raw(
        b"MQTT",
        5,
        flags,
        keepalive,
        Some(props),
        &lp(client_id.as_bytes()),
    )
}

/// PUBLISH with a raw first byte (type, DUP, QoS, RETAIN), topic bytes, optional packet id
/// and optional v5 property block.
pub fn publish_raw(
    first: u8,
    topic: &[u8],
    pid: Option<u16>,
    props: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = lp(topic);
    if let Some(id) = pid {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = props {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// First byte of a PUBLISH.
pub fn pub_flags(qos: u8, dup: bool, retain: bool) -> u8 {
    0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain)
}

/// v3.1.1 PUBLISH (packet id present iff qos > 0).
pub fn publish_v311(topic: &str, qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    publish_raw(
        pub_flags(qos, false, false),
        topic.as_bytes(),
        (qos > 0).then_some(pid),
        None,
        payload,
    )
}

/// v5 PUBLISH (packet id present iff qos > 0).
pub fn publish_v5(topic: &str, qos: u8, pid: u16, props: &[u8], payload: &[u8]) -> Vec<u8> {
    publish_raw(
        pub_flags(qos, false, false),
        topic.as_bytes(),
        (qos > 0).then_some(pid),
        Some(props),
        payload,
    )
}

/// SUBSCRIBE with the given options byte per filter (v3: requested QoS; v5: full options).
pub fn subscribe(pid: u16, props: Option<&[u8]>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    if let Some(p) = props {
        body.extend_from_slice(p);
    }
    for (f, o) in filters {
        body.extend(lp(f.as_bytes()));
        body.push(*o);
    }
    packet(0x82, &body)
}

/// UNSUBSCRIBE.
pub fn unsubscribe(pid: u16, props: Option<&[u8]>, filters: &[&str]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    if let Some(p) = props {
        body.extend_from_slice(p);
    }
    for f in filters {
        body.extend(lp(f.as_bytes()));
    }
    packet(0xA2, &body)
}

pub fn puback(pid: u16) -> Vec<u8> {
    packet(0x40, &pid.to_be_bytes())
}
pub fn pubrec(pid: u16) -> Vec<u8> {
    packet(0x50, &pid.to_be_bytes())
}
pub fn pubrel(pid: u16) -> Vec<u8> {
    packet(0x62, &pid.to_be_bytes())
}
pub fn pubcomp(pid: u16) -> Vec<u8> {
    packet(0x70, &pid.to_be_bytes())
}
/// CONNECT with a Will (v3.1.1 layout): client id, will topic, will message.
pub fn connect_v311_will(
    client_id: &str,
    extra_flags: u8,
    will_topic: &str,
    will_msg: &[u8],
) -> Vec<u8> {
    let payload = cat(&[
        &lp(client_id.as_bytes()),
        &lp(will_topic.as_bytes()),
        &lp(will_msg),
    ]);
    connect_raw(b"MQTT", 4, flags::WILL | extra_flags, 0, None, &payload)
}

/// CONNECT with a Will (v5 layout): client id, will properties, will topic, will message.
pub fn connect_v5_will(
    client_id: &str,
    extra_flags: u8,
    connect_props: &[u8],
    will_topic: &str,
    will_msg: &[u8],
) -> Vec<u8> {
    let payload = cat(&[
        &lp(client_id.as_bytes()),
        &no_props(),
        &lp(will_topic.as_bytes()),
        &lp(will_msg),
    ]);
    connect_raw(
        b"MQTT",
        5,
        flags::WILL | extra_flags,
        0,
        Some(connect_props),
        &payload,
    )
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
pub const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

// ---------------------------------------------------------------------------------------
// Inspecting received packets
// ---------------------------------------------------------------------------------------

/// Lower-case hex with spaces, for failure messages.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Body of a packet (everything after the fixed header).
pub fn body(pkt: &[u8]) -> &[u8] {
    let mut i = 1;
    while i < pkt.len() && pkt[i] & 0x80 != 0 {
        i += 1;
    }
    &pkt[(i + 1).min(pkt.len())..]
}

/// A decoded PUBLISH as received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pid: Option<u16>,
    pub props: Props,
    pub payload: Vec<u8>,
}

/// Decode a PUBLISH sent by the broker (`v5` selects whether a property block follows).
pub fn parse_publish(pkt: &[u8], v5: bool) -> Publish {
    assert_eq!(pkt[0] & 0xF0, 0x30, "expected PUBLISH, got {}", hex(pkt));
    let qos = (pkt[0] >> 1) & 3;
    let mut r = Reader::new(body(pkt));
    let res = (|| -> Result<Publish, String> {
        let topic = r.string("topic name")?;
        let pid = if qos > 0 {
            Some(r.u16("packet identifier")?)
        } else {
            None
        };
        let props = if v5 { r.props()? } else { Props::default() };
        Ok(Publish {
            dup: pkt[0] & 0x08 != 0,
            qos,
            retain: pkt[0] & 0x01 != 0,
            topic,
            pid,
            props,
            payload: r.remaining().to_vec(),
        })
    })();
    res.unwrap_or_else(|e| panic!("broker sent a malformed PUBLISH ({e}): {}", hex(pkt)))
}

/// A decoded CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connack {
    pub session_present: bool,
    pub code: u8,
    pub props: Props,
}

pub fn parse_connack(pkt: &[u8], v5: bool) -> Connack {
    assert_eq!(pkt[0], 0x20, "expected CONNACK, got {}", hex(pkt));
    let mut r = Reader::new(body(pkt));
    let res = (|| -> Result<Connack, String> {
        let ack_flags = r.u8("connect acknowledge flags")?;
        // [MQTT-3.2.2-1] bits 7-1 are reserved and set to 0.
        if ack_flags & 0xFE != 0 {
            return Err(format!("reserved CONNACK flag bits set: {ack_flags:#04x}"));
        }
        let code = r.u8("connect reason code")?;
        let props = if v5 { r.props()? } else { Props::default() };
        if !r.is_empty() {
            return Err("trailing bytes after CONNACK".into());
        }
        Ok(Connack {
            session_present: ack_flags & 1 != 0,
            code,
            props,
        })
    })();
    res.unwrap_or_else(|e| panic!("broker sent a malformed CONNACK ({e}): {}", hex(pkt)))
}

/// Reason code of a v5 DISCONNECT (the short form without one means 0x00).
pub fn disconnect_reason(pkt: &[u8]) -> u8 {
    assert_eq!(pkt[0], 0xE0, "expected DISCONNECT, got {}", hex(pkt));
    body(pkt).first().copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// What the socket produced next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Packet(Vec<u8>),
    /// EOF or connection reset: the broker closed the connection.
    Closed,
    TimedOut,
}

pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read but not yet returned as a packet.
    buf: Vec<u8>,
}

impl RawClient {
    /// Open a TCP connection to the broker (nothing sent yet).
    pub fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("tcp connect to broker");
        RawClient::from_stream(stream)
    }

    /// A TCP connection opened elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .expect("write timeout");
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connect as MQTT 3.1.1 with a clean session and expect exactly `20 02 00 00`.
    pub fn v311(addr: SocketAddr, client_id: &str) -> RawClient {
        let mut c = RawClient::open(addr);
        c.send(&connect_v311(client_id, flags::CLEAN, 0));
        c.expect_packet(&CONNACK_OK);
        c
    }

    /// Connect as MQTT 5.0 (clean start, no properties) and expect a successful CONNACK;
    /// returns the CONNACK properties.
    pub fn v5(addr: SocketAddr, client_id: &str) -> (RawClient, Props) {
        Self::v5_with(addr, client_id, &no_props())
    }

    /// Like [`RawClient::v5`] with a CONNECT property block.
    pub fn v5_with(addr: SocketAddr, client_id: &str, connect_props: &[u8]) -> (RawClient, Props) {
        let mut c = RawClient::open(addr);
        c.send(&connect_v5(client_id, flags::CLEAN, 0, connect_props));
        let ack = c.expect_connack(true);
        assert_eq!(ack.code, 0, "CONNACK refused: {ack:?}");
        (c, ack.props)
    }

    /// Write all bytes; panics on failure (the broker should still be reading).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} failed: {e}", hex(bytes)));
    }

    /// Write, ignoring errors: for misbehaving clients whose connection the broker may
    /// already have dropped.
    pub fn send_lenient(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn fill(&mut self, deadline: Instant) -> Result<bool, Event> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Event::TimedOut);
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("read timeout");
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(Event::TimedOut)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(_) => Ok(false), // ECONNRESET / ECONNABORTED: the broker is gone
        }
    }

    /// If `buf` starts with a complete packet, its length.
    fn complete(&self) -> Option<usize> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..4 {
            let byte = *b.get(1 + i)?;
            len |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                let total = 2 + i + len;
                return (b.len() >= total).then_some(total);
            }
        }
        panic!(
            "broker sent a Remaining Length longer than 4 bytes [MQTT-1.5.5]: {}",
            hex(&b[..5])
        );
    }

    /// Next packet, a close, or a timeout, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Event {
        self.next_event_from(timeout, false)
    }

    /// Like [`RawClient::next_event`], for a peer that may be killed: a close in the middle
    /// of a packet (a SIGKILL can cut a write short) is a close, the partial packet dropped.
    pub fn next_event_or_crash(&mut self, timeout: Duration) -> Event {
        self.next_event_from(timeout, true)
    }

    fn next_event_from(&mut self, timeout: Duration, torn_ok: bool) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.complete() {
                return Event::Packet(self.buf.drain(..n).collect());
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => {
                    assert!(
                        torn_ok || self.buf.is_empty(),
                        "connection closed in the middle of a packet: {}",
                        hex(&self.buf)
                    );
                    self.buf.clear();
                    return Event::Closed;
                }
                Err(ev) => return ev,
            }
        }
    }

    /// Read exactly one packet (panics on close or timeout).
    pub fn read_packet(&mut self) -> Vec<u8> {
        match self.next_event(WAIT) {
            Event::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet must be exactly `expected`.
    pub fn expect_packet(&mut self, expected: &[u8]) {
        match self.next_event(WAIT) {
            Event::Packet(p) => {
                assert!(
                    p == expected,
                    "packet mismatch\n expected: {}\n received: {}",
                    hex(expected),
                    hex(&p)
                )
            }
            other => panic!("expected packet {}, got {other:?}", hex(expected)),
        }
    }

    /// Read a CONNACK and decode it.
    pub fn expect_connack(&mut self, v5: bool) -> Connack {
        let p = self.read_packet();
        parse_connack(&p, v5)
    }

    /// Read a PUBLISH and decode it.
    pub fn expect_publish(&mut self, v5: bool) -> Publish {
        let p = self.read_packet();
        parse_publish(&p, v5)
    }

    /// Read until the broker closes the connection (EOF or reset), within [`WAIT`]; returns
    /// every packet received on the way so the caller can assert on them (e.g. a DISCONNECT).
    pub fn expect_closed(&mut self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            match self.next_event(deadline.saturating_duration_since(Instant::now())) {
                Event::Packet(p) => got.push(p),
                Event::Closed => return got,
                Event::TimedOut => panic!(
                    "broker did not close the connection within {WAIT:?}; received meanwhile: [{}]",
                    got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [")
                ),
            }
        }
    }

    /// The broker must close the connection without sending anything (v3.x violations).
    pub fn expect_closed_silently(&mut self) {
        let got = self.expect_closed();
        assert!(
            got.is_empty(),
            "expected a plain close, broker sent: [{}]",
            got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [")
        );
    }

    /// The broker must send exactly one DISCONNECT with `reason` and close (v5 violations).
    pub fn expect_disconnect(&mut self, reason: u8) {
        let got = self.expect_closed();
        let all = got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [");
        assert_eq!(
            got.len(),
            1,
            "expected one DISCONNECT {reason:#04x} then close, got [{all}]"
        );
        assert_eq!(
            got[0][0], 0xE0,
            "expected DISCONNECT {reason:#04x} then close, got [{all}]"
        );
        let r = disconnect_reason(&got[0]);
        assert_eq!(
            r, reason,
            "DISCONNECT reason code: expected {reason:#04x}, got {r:#04x} in [{all}]"
        );
    }

    /// Like [`RawClient::expect_disconnect`] but any of `reasons` is accepted (for rules
    /// where the specification leaves Malformed Packet vs Protocol Error to the receiver).
    pub fn expect_disconnect_one_of(&mut self, reasons: &[u8]) -> u8 {
        let got = self.expect_closed();
        let all = got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [");
        assert_eq!(
            got.len(),
            1,
            "expected one DISCONNECT {reasons:02x?} then close, got [{all}]"
        );
        let r = disconnect_reason(&got[0]);
        assert!(
            reasons.contains(&r),
            "DISCONNECT reason code: expected one of {reasons:02x?}, got {r:#04x}"
        );
        r
    }

    /// A v5 protocol violation: with `strict` (edgemq) exactly one DISCONNECT carrying one of
    /// `reasons`, then close. Without it (mosquitto) the DISCONNECT is optional — sending it is
    /// a MAY in [MQTT-4.13.1-1] — but if one is sent, its reason must still be in `reasons`.
    pub fn expect_v5_violation(&mut self, reasons: &[u8], strict: bool) {
        if strict {
            self.expect_disconnect_one_of(reasons);
            return;
        }
        let got = self.expect_closed();
        let all = got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [");
        assert!(
            got.len() <= 1,
            "expected at most one DISCONNECT then close, got [{all}]"
        );
        if let Some(p) = got.first() {
            let r = disconnect_reason(p);
            assert!(
                reasons.contains(&r),
                "DISCONNECT reason code: expected one of {reasons:02x?}, got {r:#04x}"
            );
        }
    }

    /// The broker must answer a refused CONNECT with a CONNACK carrying `code` and close.
    pub fn expect_connack_refused(&mut self, v5: bool, code: u8) {
        let got = self.expect_closed();
        let all = got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [");
        assert_eq!(
            got.len(),
            1,
            "expected CONNACK {code:#04x} then close, got [{all}]"
        );
        let ack = parse_connack(&got[0], v5);
        assert_eq!(
            ack.code, code,
            "CONNACK code: expected {code:#04x}, got [{all}]"
        );
        // [MQTT-3.2.2-4] (3.1.1) / [MQTT-3.2.2-6] (5.0): a refusal has Session Present 0.
        assert!(
            !ack.session_present,
            "refusing CONNACK with Session Present set: [{all}]"
        );
    }

    /// A refused v5 CONNECT: with `strict` (edgemq) exactly one CONNACK carrying one of
    /// `codes`, then close. Without it (mosquitto) the CONNACK is optional — 5.0 §4.13.1 says
    /// the server MAY send it before closing — but if one is sent its code is checked.
    pub fn expect_v5_connect_refusal(&mut self, codes: &[u8], strict: bool) {
        let got = self.expect_closed();
        let all = got.iter().map(|p| hex(p)).collect::<Vec<_>>().join("] [");
        if !strict && got.is_empty() {
            return;
        }
        assert_eq!(
            got.len(),
            1,
            "expected CONNACK {codes:02x?} then close, got [{all}]"
        );
        let ack = parse_connack(&got[0], true);
        assert!(
            codes.contains(&ack.code),
            "CONNACK code: expected one of {codes:02x?}, got [{all}]"
        );
        // [MQTT-3.2.2-6] a refusal has Session Present 0.
        assert!(
            !ack.session_present,
            "refusing CONNACK with Session Present set: [{all}]"
        );
    }

    /// Nothing must arrive for `quiet` (used only where absence is the assertion; a broker
    /// that is merely slow would make the test pass, never fail spuriously).
    pub fn expect_nothing(&mut self, quiet: Duration) {
        match self.next_event(quiet) {
            Event::TimedOut => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// PINGREQ/PINGRESP round trip: proves the broker processed everything sent before.
    pub fn ping(&mut self) {
        self.send(&PINGREQ);
        self.expect_packet(&PINGRESP);
    }
}

/// Read whole packets from `stream` until it fails; call `on` for each.
pub fn read_packets(mut stream: TcpStream, mut on: impl FnMut(&[u8])) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Every whole packet in the buffer.
        loop {
            if buf.len() < 2 {
                break;
            }
            let (mut len, mut i, mut done) = (0usize, 0, false);
            while i < 4 && 1 + i < buf.len() {
                let b = buf[1 + i];
                len |= usize::from(b & 0x7F) << (7 * i);
                i += 1;
                if b & 0x80 == 0 {
                    done = true;
                    break;
                }
            }
            if !done || buf.len() < 1 + i + len {
                break;
            }
            let packet: Vec<u8> = buf.drain(..1 + i + len).collect();
            on(&packet);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A v5 client with a persistent session (expiry 1 h), clean start or not; returns the
/// CONNACK, which must accept it.
pub fn persistent_v5_session(
    addr: SocketAddr,
    client_id: &str,
    clean: bool,
) -> (RawClient, Connack) {
    let mut c = RawClient::open(addr);
    let flags = if clean { flags::CLEAN } else { 0 };
    c.send(&connect_v5(
        client_id,
        flags,
        0,
        &props(&[p_u32(prop::SESSION_EXPIRY_INTERVAL, 3600)]),
    ));
    let ack = c.expect_connack(true);
    assert_eq!(ack.code, 0, "CONNACK refused: {ack:?}");
    (c, ack)
}

/// A TCP connection to `to` from another loopback address `src` (Linux routes all of
/// 127/8 to lo).
pub fn tcp_from(src: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
        socket
            .connect(to)
            .await
            .expect("connect from a second address")
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}
