//! Stateful: packet sequences through a real in-process broker (`edgemq_broker::serve_stream`
//! over `tokio::io::duplex`, one `Bus` shared by up to three client connections) on a
//! current-thread runtime with a paused clock, so keep-alive, connect and takeover timeouts
//! fire instantly once every task is idle.
//!
//! The input is a CONNECT for connection 0 and a bounded list of operations: send several
//! structured packets in one write (pipelining), send raw bytes, read and decode what the
//! broker sent (optionally acknowledging its QoS 1/2 PUBLISHes), open a connection (another
//! CONNECT, same or different client id: takeovers), close one, let time pass.
//!
//! Invariants: no panic (in the broker's tasks too: libFuzzer's panic hook aborts); every
//! byte the broker sends decodes as a server-to-client packet within the client's Maximum
//! Packet Size; after the sequence a fresh client still gets a successful CONNACK; after
//! shutdown every connection task ends (no hang).
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Result as AResult, Unstructured};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use common::{Filter, Topic};
use edgemq_broker::listener::ListenerContext;
use edgemq_broker::{Bus, Limits};
use edgemq_codec::{
    Auth, Connect, Decoder, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions,
    Unsubscribe,
};
use edgemq_core::auth::AllowAll;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const MAX_OPS: usize = 48;
const SLOTS: usize = 3;
const CLIENT_IDS: &[&str] = &["a", "b", "c", ""];
/// On: keep-alive, session expiry and will delay take the values the input gives. The
/// broker's clock (`edgemq_broker::bus::now`) is tokio's, so on this paused runtime its
/// timers fire on virtual time, instantly. (Off, they would be 0 or "never".)
const TIMERS: bool = true;

/// An interval in seconds for a timer the broker arms: any value with `TIMERS`, else 0
/// (`zero`) or `u32::MAX` ("never").
fn interval(v: u32, zero: bool) -> u32 {
    match (TIMERS, zero) {
        (true, _) => v,
        (false, true) => 0,
        (false, false) => u32::MAX,
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Version {
    V3_1,
    V3_1_1,
    V5,
}

impl Version {
    fn get(self) -> ProtocolVersion {
        match self {
            Version::V3_1 => ProtocolVersion::V3_1,
            Version::V3_1_1 => ProtocolVersion::V3_1_1,
            Version::V5 => ProtocolVersion::V5,
        }
    }
}

/// A small packet identifier, so acknowledgements meet in-flight messages; 0 rarely.
#[derive(Debug, Clone, Copy)]
struct Pid(u16);

impl<'a> Arbitrary<'a> for Pid {
    fn arbitrary(u: &mut Unstructured<'a>) -> AResult<Self> {
        if u.ratio(1, 32)? {
            return Ok(Pid(u16::arbitrary(u)?));
        }
        Ok(Pid(u.int_in_range(1..=6)?))
    }
}

#[derive(Arbitrary, Debug)]
struct WillSpec {
    topic: Topic,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    delay: Option<u8>,
    expiry: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct ConnectSpec {
    version: Version,
    clean_start: bool,
    keep_alive: u8,
    client_id: u8,
    session_expiry: Option<u8>,
    receive_maximum: Option<u8>,
    maximum_packet_size: Option<u16>,
    topic_alias_maximum: Option<u8>,
    request_problem_information: Option<bool>,
    will: Option<WillSpec>,
    username: Option<String>,
    password: Option<Vec<u8>>,
    authentication_method: bool,
}

impl ConnectSpec {
    fn packet(&self) -> Connect {
        let version = self.version.get();
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.session_expiry_interval = self.session_expiry.map(|s| match s % 4 {
                0 => 0,
                1 => interval(u32::from(s), s % 8 == 1),
                2 => u32::MAX,
                _ => interval(5, false),
            });
            properties.receive_maximum = self.receive_maximum.map(|r| u16::from(r % 4).max(1));
            // Small maximum packet sizes exercise the broker's "too large: drop" path.
            properties.maximum_packet_size = self.maximum_packet_size.map(|m| u32::from(m).max(16));
            properties.topic_alias_maximum = self.topic_alias_maximum.map(|t| u16::from(t % 4));
            properties.request_problem_information =
                self.request_problem_information.map(u8::from);
            if self.authentication_method {
                properties.authentication_method = Some(ByteString::from_static("SCRAM-SHA-1"));
            }
        }
        let last_will = self.will.as_ref().map(|w| {
            let mut p = Properties::default();
            if version.is_v5() {
                p.will_delay_interval = w.delay.map(|d| interval(u32::from(d % 8), true));
                p.message_expiry_interval = w.expiry.map(|e| u32::from(e % 8));
            }
            LastWill {
                topic: ByteString::from(w.topic.0.as_str()),
                payload: Bytes::from(w.payload.clone()),
                qos: QoS::from_u8(w.qos % 3).unwrap_or_default(),
                retain: w.retain,
                properties: p,
            }
        });
        Connect {
            protocol_version: version,
            clean_start: self.clean_start,
            keep_alive: if TIMERS { u16::from(self.keep_alive % 8) } else { 0 },
            properties,
            client_id: ByteString::from(CLIENT_IDS[usize::from(self.client_id) % CLIENT_IDS.len()]),
            last_will,
            username: self.username.as_deref().map(ByteString::from),
            password: self.password.clone().map(Bytes::from),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct SubSpec {
    filter: Filter,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
}

#[derive(Arbitrary, Debug)]
enum PacketSpec {
    Publish {
        qos: u8,
        retain: bool,
        dup: bool,
        topic: Topic,
        pid: Pid,
        payload: Vec<u8>,
        topic_alias: Option<u8>,
        /// Empty topic name (with an alias: "use the alias").
        empty_topic: bool,
        message_expiry: Option<u8>,
        response_topic: Option<Topic>,
        user_property: Option<(String, String)>,
        payload_format: Option<bool>,
        subscription_identifier: Option<u8>,
    },
    Subscribe {
        pid: Pid,
        filters: Vec<SubSpec>,
        subscription_identifier: Option<u8>,
    },
    Unsubscribe {
        pid: Pid,
        filters: Vec<Filter>,
    },
    PubAck(Pid, u8),
    PubRec(Pid, u8),
    PubRel(Pid, u8),
    PubComp(Pid, u8),
    PingReq,
    Disconnect {
        reason: u8,
        session_expiry: Option<u8>,
    },
    Auth(u8),
    /// A second CONNECT: a protocol error.
    Connect(Box<ConnectSpec>),
}

fn reason(r: u8) -> ReasonCode {
    // Mostly valid codes, sometimes anything.
    const CODES: &[u8] = &[0x00, 0x04, 0x10, 0x80, 0x83, 0x87, 0x8e, 0x91, 0x92, 0x97];
    if r >= 0xf0 {
        ReasonCode(r)
    } else {
        ReasonCode(CODES[usize::from(r) % CODES.len()])
    }
}

impl PacketSpec {
    fn packet(&self) -> Packet {
        match self {
            PacketSpec::Publish {
                qos,
                retain,
                dup,
                topic,
                pid,
                payload,
                topic_alias,
                empty_topic,
                message_expiry,
                response_topic,
                user_property,
                payload_format,
                subscription_identifier,
            } => {
                let qos = QoS::from_u8(qos % 3).unwrap_or_default();
                let mut properties = Properties::from(edgemq_codec::PropertyValues {
                    topic_alias: topic_alias.map(|a| u16::from(a % 6)),
                    message_expiry_interval: message_expiry.map(|e| u32::from(e % 8)),
                    response_topic: response_topic.as_ref().map(|t| ByteString::from(t.0.as_str())),
                    payload_format_indicator: payload_format.map(u8::from),
                    ..Default::default()
                });
                if let Some((k, v)) = user_property {
                    properties
                        .user_properties
                        .push((ByteString::from(k.as_str()), ByteString::from(v.as_str())));
                }
                if let Some(s) = subscription_identifier {
                    properties.subscription_identifiers.push(u32::from(*s));
                }
                Packet::Publish(Publish {
                    dup: *dup,
                    qos,
                    retain: *retain,
                    topic: if *empty_topic {
                        ByteString::new()
                    } else {
                        ByteString::from(topic.0.as_str())
                    },
                    packet_id: (qos != QoS::AtMostOnce).then_some(pid.0),
                    properties,
                    payload: Bytes::from(payload.clone()),
                })
            }
            PacketSpec::Subscribe {
                pid,
                filters,
                subscription_identifier,
            } => Packet::Subscribe(Subscribe {
                packet_id: pid.0,
                properties: Properties::from(edgemq_codec::PropertyValues {
                    subscription_identifiers: subscription_identifier
                        .iter()
                        .map(|s| u32::from(*s % 8))
                        .collect(),
                    ..Default::default()
                }),
                filters: filters
                    .iter()
                    .take(4)
                    .map(|s| {
                        (
                            ByteString::from(s.filter.0.as_str()),
                            SubscriptionOptions {
                                qos: QoS::from_u8(s.qos % 3).unwrap_or_default(),
                                no_local: s.no_local,
                                retain_as_published: s.retain_as_published,
                                retain_handling: match s.retain_handling % 3 {
                                    0 => RetainHandling::SendOnSubscribe,
                                    1 => RetainHandling::SendIfNew,
                                    _ => RetainHandling::DoNotSend,
                                },
                            },
                        )
                    })
                    .collect(),
            }),
            PacketSpec::Unsubscribe { pid, filters } => Packet::Unsubscribe(Unsubscribe {
                packet_id: pid.0,
                properties: Properties::default(),
                filters: filters
                    .iter()
                    .take(4)
                    .map(|f| ByteString::from(f.0.as_str()))
                    .collect(),
            }),
            PacketSpec::PubAck(p, r) => Packet::PubAck(response(p, *r)),
            PacketSpec::PubRec(p, r) => Packet::PubRec(response(p, *r)),
            PacketSpec::PubRel(p, r) => Packet::PubRel(response(p, *r)),
            PacketSpec::PubComp(p, r) => Packet::PubComp(response(p, *r)),
            PacketSpec::PingReq => Packet::PingReq,
            PacketSpec::Disconnect {
                reason: r,
                session_expiry,
            } => Packet::Disconnect(Disconnect {
                reason: reason(*r),
                properties: Properties::from(edgemq_codec::PropertyValues {
                    session_expiry_interval: session_expiry
                        .map(|s| interval(u32::from(s % 4), s % 2 == 0)),
                    ..Default::default()
                }),
            }),
            PacketSpec::Auth(r) => Packet::Auth(Auth {
                reason: ReasonCode([0x00, 0x18, 0x19][usize::from(*r) % 3]),
                properties: Properties::default(),
            }),
            PacketSpec::Connect(c) => Packet::Connect(Box::new(c.packet())),
        }
    }
}

fn response(p: &Pid, r: u8) -> PubResponse {
    PubResponse {
        packet_id: p.0,
        reason: reason(r),
        properties: Properties::default(),
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Several packets in one write.
    Send { conn: u8, packets: Vec<PacketSpec> },
    Raw { conn: u8, bytes: Vec<u8> },
    /// Read and decode what the broker sent; `ack`: answer its QoS 1/2 PUBLISHes and PUBRELs.
    Read { conn: u8, ack: bool },
    /// (Re)open a connection: the old one on this slot is dropped.
    Open { conn: u8, connect: ConnectSpec },
    Close { conn: u8 },
    /// Let time pass (keep-alive, will delay, session and message expiry).
    Sleep { secs: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    connect: ConnectSpec,
    ops: Vec<Op>,
}

struct Client {
    stream: Option<DuplexStream>,
    version: ProtocolVersion,
    decoder: Decoder,
    rbuf: BytesMut,
}

struct Harness {
    bus: Arc<Bus>,
    listener: Arc<ListenerContext>,
    shutdown: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    clients: Vec<Option<Client>>,
    next_port: u16,
}

impl Harness {
    async fn open(&mut self, slot: usize, connect: Connect) {
        let (client, server) = tokio::io::duplex(16 * 1024);
        self.next_port = self.next_port.wrapping_add(1);
        let peer = SocketAddr::from(([127, 0, 0, 1], self.next_port));
        self.tasks.push(tokio::spawn(edgemq_broker::serve_stream(
            server,
            peer,
            self.listener.clone(),
            self.bus.clone(),
            self.shutdown.clone(),
        )));
        let version = connect.protocol_version;
        let mut decoder = Decoder::new(u32::MAX);
        decoder.version = Some(version);
        // Nothing the broker sends, CONNACK included, may exceed the client's Maximum Packet
        // Size [MQTT-3.1.2-24] (fuzz/regressions/session/connack-exceeds-…).
        if let Some(max) = connect.properties.maximum_packet_size.filter(|_| version.is_v5()) {
            decoder.max_packet_size = max;
        }
        self.clients[slot] = Some(Client {
            stream: Some(client),
            version,
            decoder,
            rbuf: BytesMut::new(),
        });
        let mut buf = BytesMut::new();
        if Packet::Connect(Box::new(connect)).encode(version, &mut buf).is_ok() {
            self.write(slot, &buf).await;
        }
    }

    async fn write(&mut self, slot: usize, bytes: &[u8]) {
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        // The broker may be blocked writing to us: bound the write, then drain.
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => client.stream = None,
            Err(_) => {}
        }
    }

    /// Read until the broker is idle (the paused clock advances only then), decode all.
    async fn read(&mut self, slot: usize, ack: bool) {
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        loop {
            match tokio::time::timeout(Duration::from_millis(10), stream.read_buf(&mut client.rbuf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    client.stream = None;
                    break;
                }
                Ok(Ok(_)) => {
                    if client.rbuf.len() > 1 << 20 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let mut replies = BytesMut::new();
        loop {
            let before = client.rbuf.clone();
            match client.decoder.decode(&mut client.rbuf) {
                Ok(Some(packet)) => {
                    check_server_packet(&packet, client.version);
                    if ack {
                        let reply = match &packet {
                            Packet::Publish(p) => match (p.qos, p.packet_id) {
                                (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubResponse::new(id))),
                                (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubResponse::new(id))),
                                _ => None,
                            },
                            Packet::PubRel(r) => Some(Packet::PubComp(PubResponse::new(r.packet_id))),
                            _ => None,
                        };
                        if let Some(reply) = reply {
                            let _ = reply.encode(client.version, &mut replies);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => panic!(
                    "the broker's output does not decode ({:?}, max packet size {}): {e}\nbytes: {:02x?}",
                    client.version,
                    client.decoder.max_packet_size,
                    &before[..before.len().min(256)]
                ),
            }
        }
        if !replies.is_empty() {
            self.write(slot, &replies).await;
        }
    }
}

/// Only server-to-client packets, and PUBLISH as the broker must send it.
fn check_server_packet(packet: &Packet, version: ProtocolVersion) {
    match packet {
        Packet::ConnAck(_)
        | Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp
        | Packet::Disconnect(_) => {}
        Packet::Auth(_) => assert!(version.is_v5(), "AUTH sent to a {version:?} client"),
        Packet::Publish(p) => {
            assert!(
                !p.topic.is_empty() || p.properties.topic_alias.is_some(),
                "PUBLISH without topic or alias"
            );
            assert!(
                !p.topic.contains(['+', '#']),
                "PUBLISH on a wildcard topic {:?}",
                p.topic
            );
        }
        other => panic!("the broker sent a client packet: {other:?}"),
    }
}

async fn run(input: Input) {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut h = Harness {
        bus: Bus::new(Limits::default(), None),
        listener: Arc::new(ListenerContext::new(
            "fuzz".into(),
            1883,
            Arc::new(AllowAll),
            Arc::new(AllowAll),
        )),
        shutdown,
        tasks: Vec::new(),
        clients: (0..SLOTS).map(|_| None).collect(),
        next_port: 40000,
    };
    h.open(0, input.connect.packet()).await;
    for op in input.ops.into_iter().take(MAX_OPS) {
        match op {
            Op::Send { conn, packets } => {
                let slot = usize::from(conn) % SLOTS;
                let Some(Some(client)) = h.clients.get(slot) else {
                    continue;
                };
                let version = client.version;
                let mut buf = BytesMut::new();
                for p in packets.iter().take(8) {
                    let _ = p.packet().encode(version, &mut buf);
                }
                h.write(slot, &buf).await;
            }
            Op::Raw { conn, bytes } => h.write(usize::from(conn) % SLOTS, &bytes).await,
            Op::Read { conn, ack } => h.read(usize::from(conn) % SLOTS, ack).await,
            Op::Open { conn, connect } => h.open(usize::from(conn) % SLOTS, connect.packet()).await,
            Op::Close { conn } => h.clients[usize::from(conn) % SLOTS] = None,
            Op::Sleep { secs } => tokio::time::sleep(Duration::from_secs(u64::from(secs))).await,
        }
    }
    for slot in 0..SLOTS {
        h.read(slot, true).await;
        h.clients[slot] = None;
    }

    // A fresh client still gets a successful CONNACK.
    let fresh = Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        client_id: ByteString::from_static("fresh-check"),
        last_will: None,
        username: None,
        password: None,
    };
    h.open(0, fresh).await;
    let client = h.clients[0].as_mut().expect("fresh client");
    let stream = client.stream.as_mut().expect("fresh stream");
    let connack = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(p) = client.decoder.decode(&mut client.rbuf).expect("CONNACK decodes") {
                return Some(p);
            }
            match stream.read_buf(&mut client.rbuf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    match connack {
        Ok(Some(Packet::ConnAck(c))) => {
            assert_eq!(c.reason, ReasonCode::Success, "fresh client refused: {c:?}")
        }
        Ok(other) => panic!("fresh client got {other:?} instead of CONNACK"),
        Err(_) => panic!("fresh client got no CONNACK within 30 s: the broker hangs"),
    }

    // Shutdown ends every connection task.
    h.clients.clear();
    let _ = shutdown_tx.send(true);
    for task in h.tasks.drain(..) {
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(_)) => {}
            Err(_) => panic!("a connection task did not end within 120 s of shutdown"),
        }
    }
}

fuzz_target!(|input: Input| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(run(input));
});
