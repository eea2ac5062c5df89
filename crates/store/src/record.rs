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

/// Messages, retained messages, (format 1) sessions, and queued deliveries with their own
/// copy of the message (a message queued for one session only).
const FORMAT: u8 = 1;
/// Sessions with their number, and queued deliveries that name a message stored once for
/// several sessions.
const FORMAT_2: u8 = 2;
/// Sessions with their number and their epoch (cluster stage 0). Format 1 and 2 session
/// records are still read, with epoch 0; a session is rewritten in format 3 the next time
/// it is stored (at its next connect at the latest), so no migration pass is needed.
const FORMAT_3: u8 = 3;

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
    /// Bumped by every connection that takes the session (new, resumed or taken over):
    /// a later owner always holds a higher epoch. 0 for records written before format 3.
    pub epoch: u64,
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
        received_at: None,
    })
}

/// A message as stored once, for every session it is queued for, or as a retained message.
pub fn encode_message(m: &Message, clock: Clock) -> Bytes {
    let mut w = Writer(BytesMut::with_capacity(
        m.payload.len() + m.topic.len() + 32,
    ));
    w.u8(FORMAT);
    put_message(&mut w, m, clock);
    w.0.freeze()
}

pub fn decode_message(raw: &[u8], clock: Clock) -> Result<Message, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    get_message(&mut r, clock)
}

/// A stored message's expiry (Unix ms), read without decoding the rest.
pub fn message_expiry(raw: &[u8]) -> Result<Option<u64>, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    qos(r.u8()?)?;
    r.u8()?;
    let expires = r.u64()?;
    Ok((expires != 0).then_some(expires))
}

/// What a queued delivery holds besides its message, which is stored once under `message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub message: u64,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: SmallVec<[u32; 2]>,
    pub share_group: Option<ByteString>,
}

impl Queued {
    pub fn into_delivery(self, message: Arc<Message>, seq: u64) -> Delivery {
        Delivery {
            message,
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
            share_group: self.share_group,
            stored: Some(seq),
        }
    }
}

/// A queued delivery naming its stored message.
pub fn encode_queued(d: &Delivery, message: u64, out: &mut BytesMut) {
    out.clear();
    let mut w = Writer(std::mem::take(out));
    w.u8(FORMAT_2);
    w.u64(message);
    put_delivery_fields(&mut w, d);
    *out = w.0;
}

fn put_delivery_fields(w: &mut Writer, d: &Delivery) {
    w.u8(d.qos as u8);
    w.u8(u8::from(d.retain));
    w.u8(u8::try_from(d.subscription_ids.len()).unwrap_or(u8::MAX));
    for id in d.subscription_ids.iter().take(usize::from(u8::MAX)) {
        w.u32(*id);
    }
    w.bytes(d.share_group.as_deref().unwrap_or("").as_bytes());
}

/// The shared message a queued delivery names (`None`: it carries its own copy), read
/// without decoding the rest.
pub fn queued_message(raw: &[u8]) -> Result<Option<u64>, RecordError> {
    let mut r = Reader(raw);
    match r.u8()? {
        FORMAT => Ok(None),
        FORMAT_2 => r.u64().map(Some),
        _ => Err(RecordError("unknown record format")),
    }
}

pub fn decode_queued(raw: &[u8]) -> Result<Queued, RecordError> {
    let mut r = Reader(raw);
    if r.u8()? != FORMAT_2 {
        return Err(RecordError("unknown record format"));
    }
    let message = r.u64()?;
    let (qos, retain, subscription_ids, share_group) = get_delivery_fields(&mut r)?;
    Ok(Queued {
        message,
        qos,
        retain,
        subscription_ids,
        share_group,
    })
}

type DeliveryFields = (QoS, bool, SmallVec<[u32; 2]>, Option<ByteString>);

fn get_delivery_fields(r: &mut Reader<'_>) -> Result<DeliveryFields, RecordError> {
    let qos = qos(r.u8()?)?;
    let retain = r.u8()? != 0;
    let count = r.u8()?;
    let mut ids = SmallVec::new();
    for _ in 0..count {
        ids.push(r.u32()?);
    }
    let group = r.string()?;
    Ok((qos, retain, ids, (!group.is_empty()).then_some(group)))
}

/// A queued delivery with its own copy of the message: one queued for a single session
/// (no second record to write and delete). Format 1 wrote every delivery so.
pub fn encode_delivery_inline(d: &Delivery, clock: Clock, out: &mut BytesMut) {
    out.clear();
    let mut w = Writer(std::mem::take(out));
    w.u8(FORMAT);
    put_delivery_fields(&mut w, d);
    put_message(&mut w, &d.message, clock);
    *out = w.0;
}

/// QoS and expiry of a delivery with its own message, read without decoding the rest
/// (start-up scans every queued message but keeps none of them in memory).
pub fn inline_summary(raw: &[u8]) -> Result<(QoS, Option<u64>), RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    let (qos, ..) = get_delivery_fields(&mut r)?;
    r.u8()?;
    r.u8()?;
    let expires = r.u64()?;
    Ok((qos, (expires != 0).then_some(expires)))
}

/// A queued delivery with its own copy of the message.
pub fn decode_delivery_inline(raw: &[u8], seq: u64, clock: Clock) -> Result<Delivery, RecordError> {
    let mut r = Reader(raw);
    r.format()?;
    let (qos, retain, subscription_ids, share_group) = get_delivery_fields(&mut r)?;
    let message = get_message(&mut r, clock)?;
    Ok(Delivery {
        message: Arc::new(message),
        qos,
        retain,
        subscription_ids,
        share_group,
        stored: Some(seq),
    })
}

/// A session, its number, which keys its queued and in-flight records (so the client id
/// is stored once, here), and its epoch.
pub fn encode_session(s: &SessionRecord, number: u64, clock: Clock) -> Bytes {
    let mut w = Writer(BytesMut::with_capacity(72));
    w.u8(FORMAT_3);
    w.u64(number);
    w.u64(s.epoch);
    put_session_fields(&mut w, s, clock);
    w.0.freeze()
}

/// A session as format 2 wrote it (no epoch): for tests of reading old stores.
#[cfg(test)]
pub(crate) fn encode_session_v2(s: &SessionRecord, number: u64, clock: Clock) -> Bytes {
    let mut w = Writer(BytesMut::with_capacity(64));
    w.u8(FORMAT_2);
    w.u64(number);
    put_session_fields(&mut w, s, clock);
    w.0.freeze()
}

fn put_session_fields(w: &mut Writer, s: &SessionRecord, clock: Clock) {
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
            put_message(w, message, clock);
        }
        None => w.u8(0),
    }
}

/// A session and its number (`None` for a format 1 record, which has none). Records
/// before format 3 have epoch 0.
pub fn decode_session(
    raw: &[u8],
    clock: Clock,
) -> Result<(SessionRecord, Option<u64>), RecordError> {
    let mut r = Reader(raw);
    let (number, epoch) = match r.u8()? {
        FORMAT => (None, 0),
        FORMAT_2 => (Some(r.u64()?), 0),
        FORMAT_3 => (Some(r.u64()?), r.u64()?),
        _ => return Err(RecordError("unknown record format")),
    };
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
    let record = SessionRecord {
        expiry_interval,
        disconnected_at,
        subscriptions,
        will,
        epoch,
    };
    Ok((record, number))
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
        message.properties =
            edgemq_core::message::encode_body(&Properties::from(edgemq_codec::PropertyValues {
                content_type: Some(ByteString::from_static("text/plain")),
                user_properties: vec![(ByteString::from_static("k"), ByteString::from_static("v"))],
                ..Default::default()
            }));
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
        encode_delivery_inline(&d, clock, &mut raw);
        let back = decode_delivery_inline(&raw, 42, clock).unwrap();
        assert_eq!(queued_message(&raw).unwrap(), None);
        let (q, expires) = inline_summary(&raw).unwrap();
        assert_eq!(q, QoS::AtLeastOnce);
        assert!(expires.is_some());
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(back.retain);
        assert_eq!(back.subscription_ids.as_slice(), &[7, 9]);
        assert_eq!(back.share_group.as_deref(), Some("g"));
        assert_eq!(back.stored, Some(42));
        assert_eq!(back.message.properties, d.message.properties);
        assert_eq!(back.message.payload, d.message.payload);
        assert_eq!(back.message.remaining_expiry(clock.now), Some(60));

        let mut raw = BytesMut::new();
        encode_queued(&d, 9, &mut raw);
        assert_eq!(queued_message(&raw).unwrap(), Some(9));
        let queued = decode_queued(&raw).unwrap();
        assert_eq!(queued.message, 9);
        let back = queued.into_delivery(d.message.clone(), 42);
        assert_eq!(
            (back.qos, back.retain, back.stored),
            (QoS::AtLeastOnce, true, Some(42))
        );
        assert_eq!(back.subscription_ids.as_slice(), &[7, 9]);
        assert_eq!(back.share_group.as_deref(), Some("g"));
        let stored = encode_message(&d.message, clock);
        assert!(message_expiry(&stored).unwrap().is_some());
        let message = decode_message(&stored, clock).unwrap();
        assert_eq!(message.payload, d.message.payload);
        assert_eq!(message.properties, d.message.properties);
    }

    #[test]
    fn a_session_keeps_its_number_and_epoch_and_older_formats_read_as_epoch_0() {
        let clock = Clock::now();
        let s = SessionRecord {
            expiry_interval: 60,
            disconnected_at: Some(5),
            subscriptions: Vec::new(),
            will: None,
            epoch: 12,
        };
        let raw = encode_session(&s, 77, clock);
        assert_eq!(raw[0], FORMAT_3);
        let (back, number) = decode_session(&raw, clock).unwrap();
        assert_eq!(
            (back.expiry_interval, number, back.epoch),
            (60, Some(77), 12)
        );
        let v2 = encode_session_v2(&s, 77, clock);
        let (back, number) = decode_session(&v2, clock).unwrap();
        assert_eq!(
            (back.expiry_interval, number, back.epoch),
            (60, Some(77), 0)
        );
        let mut v1 = vec![FORMAT];
        v1.extend_from_slice(&v2[9..]);
        let (back, number) = decode_session(&v1, clock).unwrap();
        assert_eq!(
            (back.disconnected_at, number, back.epoch),
            (Some(5), None, 0)
        );
        // Truncated in the epoch.
        assert!(decode_session(&raw[..12], clock).is_err());
    }

    #[test]
    fn damaged_records_are_errors() {
        let clock = Clock::now();
        assert!(decode_delivery_inline(&[], 1, clock).is_err());
        assert!(decode_delivery_inline(&[FORMAT, 1, 0, 3], 1, clock).is_err());
        assert!(decode_queued(&[FORMAT_2, 0, 0]).is_err());
        assert!(decode_queued(&[FORMAT, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]).is_err());
        assert!(decode_session(&[9, 9, 9], clock).is_err());
        assert!(decode_message(&[FORMAT, 7], clock).is_err());
        assert!(message_expiry(&[FORMAT, 7]).is_err());
        assert!(decode_inflight(&[0, 1, 9]).is_err());
    }
}
