//! The byte layout of stored records. Hand-written and versioned (a leading format byte), so
//! a record written by one edgemq is read by the next, and a damaged record is an error, never
//! a panic.
//!
//! Times are stored as Unix milliseconds: an `Instant` means nothing after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use smallvec::SmallVec;

use edgemq_codec::properties::PropertyContext;
use edgemq_codec::{Properties, QoS, RetainHandling, SubscriptionOptions};
use edgemq_core::message::Message;
use edgemq_core::session::Delivery;
use edgemq_core::subscriptions::StoredOptions;

const FORMAT: u8 = 1;

/// A record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("damaged record: {0}")]
pub struct RecordError(pub &'static str);

/// The clock pair that converts between `Instant` (in memory) and wall time (on disk).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn to_unix_ms(self, at: Instant) -> u64 {
        let wall = if at >= self.now {
            self.wall + (at - self.now)
        } else {
            self.wall - (self.now - at)
        };
        unix_ms(wall).max(1)
    }

    /// An absolute Unix time in milliseconds as an `Instant` (in the past if it has passed).
    pub fn from_unix_ms(self, ms: u64) -> Instant {
        let at = UNIX_EPOCH + Duration::from_millis(ms);
        match at.duration_since(self.wall) {
            Ok(ahead) => self.now + ahead,
            Err(e) => self
                .now
                .checked_sub(e.duration())
                .unwrap_or(self.now - Duration::from_secs(0)),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A persistent session as stored: what it needs to come back after a restart.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub expiry_interval: u32,
    /// When its connection ended (Unix ms); `None` while connected. A session that was
    /// connected when the broker stopped is taken as disconnected at the next start.
    pub disconnected_at: Option<u64>,
    /// Keyed by the filter as the client wrote it.
    pub subscriptions: Vec<(ByteString, StoredOptions)>,
    /// The will and its delay: kept while connected (an unclean stop sends it) and while
    /// offline until it is due.
    pub will: Option<(Arc<Message>, u32)>,
}

struct Writer(BytesMut);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.extend_from_slice(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError("record is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<ByteString, RecordError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map(ByteString::from)
            .map_err(|_| RecordError("string is not UTF-8"))
    }
    fn format(&mut self) -> Result<(), RecordError> {
        if self.u8()? != FORMAT {
            return Err(RecordError("unknown record format"));
        }
        Ok(())
    }
}

fn qos(v: u8) -> Result<QoS, RecordError> {
    match v {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(RecordError("QoS out of range")),
    }
}

fn put_message(w: &mut Writer, m: &Message, clock: Clock) {
    w.u8(m.qos as u8);
    w.u8(u8::from(m.retain));
    w.u64(m.expires_at.map_or(0, |at| clock.to_unix_ms(at)));
    w.bytes(m.topic.as_bytes());
    w.bytes(m.forwarded_properties());
    w.bytes(&m.payload);
}

fn get_message(r: &mut Reader<'_>, clock: Clock) -> Result<Message, RecordError> {
    let qos = qos(r.u8()?)?;
    let retain = r.u8()? != 0;
    let expires = r.u64()?;
    let topic = r.string()?;
    let body = r.bytes()?;
    let payload = Bytes::copy_from_slice(r.bytes()?);
    // Checked to decode (a damaged record is an error, not a broken PUBLISH later), kept
    // encoded as the message keeps them.
    let properties = if body.is_empty() {
        Bytes::new()
    } else {
        let mut block = BytesMut::new();
        edgemq_codec::primitives::write_varint(&mut block, body.len())
            .map_err(|_| RecordError("properties too long"))?;
        block.extend_from_slice(body);
        Properties::decode(&mut block.freeze(), PropertyContext::Publish)
            .map_err(|_| RecordError("properties do not decode"))?;
        Bytes::copy_from_slice(body)
    };
    Ok(Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        expires_at: (expires != 0).then(|| clock.from_unix_ms(expires)),
        // The publishing session's key is per process: No Local cannot apply after a restart.
        publisher: None,
    })
}

/// A retained message.
pub fn encode_retained(m: &Message, clock: Clock) -> Bytes {
    let mut w = Writer(BytesMut::with_capacity(
        m.payload.len() + m.topic.len() + 32,
    ));
    w.u8(FORMAT);
    put_message(&mut w, m, clock);
    w.0.freeze()
}

pub fn decode_retained(raw: &[u8], clock: Clock) -> Result<Message, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    get_message(&mut r, clock)
}

/// A queued or in-flight delivery to one session.
pub fn encode_delivery(d: &Delivery, clock: Clock, out: &mut BytesMut) {
    out.clear();
    let mut w = Writer(std::mem::take(out));
    w.u8(FORMAT);
    w.u8(d.qos as u8);
    w.u8(u8::from(d.retain));
    w.u8(u8::try_from(d.subscription_ids.len()).unwrap_or(u8::MAX));
    for id in d.subscription_ids.iter().take(usize::from(u8::MAX)) {
        w.u32(*id);
    }
    w.bytes(d.share_group.as_deref().unwrap_or("").as_bytes());
    put_message(&mut w, &d.message, clock);
    *out = w.0;
}

pub fn decode_delivery(raw: &[u8], seq: u64, clock: Clock) -> Result<Delivery, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    let qos = qos(r.u8()?)?;
    let retain = r.u8()? != 0;
    let count = r.u8()?;
    let mut subscription_ids = SmallVec::new();
    for _ in 0..count {
        subscription_ids.push(r.u32()?);
    }
    let group = r.string()?;
    let message = get_message(&mut r, clock)?;
    Ok(Delivery {
        message: Arc::new(message),
        qos,
        retain,
        subscription_ids,
        share_group: (!group.is_empty()).then_some(group),
        stored: Some(seq),
    })
}

/// QoS and expiry of a stored delivery, read without decoding the rest (start-up scans every
/// queued message but keeps none of them in memory).
pub fn delivery_summary(raw: &[u8]) -> Result<(QoS, Option<u64>), RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    let qos = qos(r.u8()?)?;
    r.u8()?;
    let count = r.u8()?;
    for _ in 0..count {
        r.u32()?;
    }
    r.bytes()?;
    r.u8()?;
    r.u8()?;
    let expires = r.u64()?;
    Ok((qos, (expires != 0).then_some(expires)))
}

pub fn encode_session(s: &SessionRecord, clock: Clock) -> Bytes {
    let mut w = Writer(BytesMut::with_capacity(64));
    w.u8(FORMAT);
    w.u32(s.expiry_interval);
    w.u64(s.disconnected_at.unwrap_or(0));
    w.u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for (raw, stored) in &s.subscriptions {
        let o = stored.options;
        w.bytes(raw.as_bytes());
        w.u8(o.qos as u8);
        w.u8(u8::from(o.no_local)
            | u8::from(o.retain_as_published) << 1
            | (o.retain_handling as u8) << 2);
        w.u32(stored.subscription_id.unwrap_or(0));
    }
    match &s.will {
        Some((message, delay)) => {
            w.u8(1);
            w.u32(*delay);
            put_message(&mut w, message, clock);
        }
        None => w.u8(0),
    }
    w.0.freeze()
}

pub fn decode_session(raw: &[u8], clock: Clock) -> Result<SessionRecord, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    let expiry_interval = r.u32()?;
    let disconnected_at = Some(r.u64()?).filter(|&t| t != 0);
    let count = r.u32()?;
    let mut subscriptions = Vec::new();
    for _ in 0..count {
        let raw = r.string()?;
        let qos = qos(r.u8()?)?;
        let flags = r.u8()?;
        let retain_handling = match flags >> 2 & 3 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(RecordError("retain handling out of range")),
        };
        let id = r.u32()?;
        subscriptions.push((
            raw,
            StoredOptions {
                options: SubscriptionOptions {
                    qos,
                    no_local: flags & 1 != 0,
                    retain_as_published: flags & 2 != 0,
                    retain_handling,
                },
                subscription_id: (id != 0).then_some(id),
            },
        ));
    }
    let will = match r.u8()? {
        0 => None,
        _ => {
            let delay = r.u32()?;
            Some((Arc::new(get_message(&mut r, clock)?), delay))
        }
    };
    Ok(SessionRecord {
        expiry_interval,
        disconnected_at,
        subscriptions,
        will,
    })
}

/// An in-flight entry: the packet identifier the client saw and where the exchange stands.
pub fn encode_inflight(packet_id: u16, state: u8) -> [u8; 3] {
    let id = packet_id.to_be_bytes();
    [id[0], id[1], state]
}

pub fn decode_inflight(raw: &[u8]) -> Result<(u16, u8), RecordError> {
    match raw {
        [a, b, state] if *state <= 2 => Ok((u16::from_be_bytes([*a, *b]), *state)),
        _ => Err(RecordError("in-flight entry is malformed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_survives_the_round_trip() {
        let clock = Clock::now();
        let mut message = Message::broker_generated(
            ByteString::from_static("a/b"),
            Bytes::from_static(b"payload"),
            QoS::ExactlyOnce,
            true,
        );
        message.properties = edgemq_core::message::encode_body(&Properties {
            content_type: Some(ByteString::from_static("text/plain")),
            user_properties: vec![(ByteString::from_static("k"), ByteString::from_static("v"))],
            ..Properties::default()
        });
        message.expires_at = Some(clock.now + Duration::from_secs(60));
        let d = Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: true,
            subscription_ids: SmallVec::from_slice(&[7, 9]),
            share_group: Some(ByteString::from_static("g")),
            stored: None,
        };
        let mut raw = BytesMut::new();
        encode_delivery(&d, clock, &mut raw);
        let back = decode_delivery(&raw, 42, clock).unwrap();
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(back.retain);
        assert_eq!(back.subscription_ids.as_slice(), &[7, 9]);
        assert_eq!(back.share_group.as_deref(), Some("g"));
        assert_eq!(back.stored, Some(42));
        assert_eq!(back.message.properties, d.message.properties);
        assert_eq!(back.message.payload, d.message.payload);
        assert_eq!(back.message.remaining_expiry(clock.now), Some(60));
        let (q, expires) = delivery_summary(&raw).unwrap();
        assert_eq!(q, QoS::AtLeastOnce);
        assert!(expires.is_some());
    }

    #[test]
    fn damaged_records_are_errors() {
        let clock = Clock::now();
        assert!(decode_delivery(&[], 1, clock).is_err());
        assert!(decode_delivery(&[FORMAT, 1, 0, 3], 1, clock).is_err());
        assert!(decode_session(&[9, 9, 9], clock).is_err());
        assert!(decode_retained(&[FORMAT, 7], clock).is_err());
        assert!(decode_inflight(&[0, 1, 9]).is_err());
    }
}
