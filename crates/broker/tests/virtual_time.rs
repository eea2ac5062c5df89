//! Time the tests control: the broker's clock is tokio's (`edgemq_broker::bus::now`), so on
//! a paused runtime every deadline it sets — keep-alive, will delay, session expiry — fires
//! when the test lets virtual time pass, at once and at the exact virtual instant. No test
//! here sleeps in real time. The broker runs in process (`serve_stream` over in-memory
//! pipes).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use edgemq_broker::listener::ListenerContext;
use edgemq_broker::{Bus, Limits};
use edgemq_codec::{
    Connect, Decoder, LastWill, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use edgemq_core::auth::AllowAll;

struct Broker {
    bus: Arc<Bus>,
    listener: Arc<ListenerContext>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

struct Client {
    stream: DuplexStream,
    decoder: Decoder,
    rbuf: BytesMut,
}

impl Broker {
    fn new() -> Broker {
        let allow = Arc::new(AllowAll);
        Broker {
            bus: Bus::new(Limits::default(), None),
            listener: Arc::new(ListenerContext::new("t".into(), 1883, allow.clone(), allow)),
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    /// Connect and read the CONNACK, which must accept.
    async fn connect(&self, connect: Connect) -> Client {
        self.connect_ack(connect).await.0
    }

    /// Connect; the client and its (accepting) CONNACK.
    async fn connect_ack(&self, connect: Connect) -> (Client, edgemq_codec::ConnAck) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(edgemq_broker::serve_stream(
            server,
            SocketAddr::from(([127, 0, 0, 1], 40000)),
            self.listener.clone(),
            self.bus.clone(),
            self.shutdown.subscribe(),
        ));
        let mut decoder = Decoder::new(u32::MAX);
        decoder.version = Some(connect.protocol_version);
        let mut c = Client {
            stream: client,
            decoder,
            rbuf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::Success);
                (c, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

impl Client {
    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet
            .encode(self.decoder.version.unwrap(), &mut buf)
            .unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    /// The next packet from the broker; `None` once it closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.rbuf).unwrap() {
                return Some(p);
            }
            if self.stream.read_buf(&mut self.rbuf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(ByteString::from(filter), SubscriptionOptions::default())],
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }
}

fn connect_v5(id: &str, keep_alive: u16, expiry: u32, will_delay: Option<u32>) -> Connect {
    Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: false,
        keep_alive,
        properties: Properties::from(edgemq_codec::PropertyValues {
            session_expiry_interval: Some(expiry),
            ..Default::default()
        }),
        client_id: ByteString::from(id),
        last_will: will_delay.map(|delay| LastWill {
            topic: ByteString::from_static("wills/gone"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::from(edgemq_codec::PropertyValues {
                will_delay_interval: Some(delay),
                ..Default::default()
            }),
        }),
        username: None,
        password: None,
    }
}

/// Virtual seconds since `start`.
fn secs(start: Instant) -> u64 {
    start.elapsed().as_secs()
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_2_22_silence_for_one_and_a_half_keep_alives_is_disconnect_0x8d() {
    let broker = Broker::new();
    let start = Instant::now();
    let mut c = broker.connect(connect_v5("quiet", 10, 0, None)).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert_eq!(secs(start), 15, "1.5 × keep-alive, on the virtual clock");
    assert!(c.recv().await.is_none(), "closed");
}

/// A subscriber to the wills, and the virtual second at which one arrives (`None`: none
/// within `horizon` seconds).
async fn will_arrives(watcher: &mut Client, start: Instant, horizon: u64) -> Option<u64> {
    let deadline = tokio::time::sleep(Duration::from_secs(horizon));
    tokio::select! {
        p = watcher.recv() => match p {
            Some(Packet::Publish(p)) => {
                assert_eq!(&*p.topic, "wills/gone");
                Some(secs(start))
            }
            other => panic!("expected the will, got {other:?}"),
        },
        () = deadline => None,
    }
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_3_9_a_delayed_will_is_sent_when_its_delay_passes() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let client = broker.connect(connect_v5("dies", 0, 3600, Some(30))).await;
    let start = Instant::now();
    drop(client); // the connection is lost, no DISCONNECT
    assert_eq!(will_arrives(&mut watcher, start, 600).await, Some(30));
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_3_9_the_will_goes_when_the_session_ends_if_that_is_before_its_delay() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let client = broker.connect(connect_v5("dies", 0, 10, Some(100))).await;
    let start = Instant::now();
    drop(client);
    assert_eq!(will_arrives(&mut watcher, start, 600).await, Some(10));
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_3_9_with_session_expiry_0_a_delayed_will_goes_at_once() {
    // The session ends with the connection: "whichever happens first" is now.
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let client = broker.connect(connect_v5("dies", 0, 0, Some(100))).await;
    let start = Instant::now();
    drop(client);
    assert_eq!(will_arrives(&mut watcher, start, 600).await, Some(0));
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_3_9_reconnecting_within_the_will_delay_cancels_the_will() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let client = broker.connect(connect_v5("flaky", 0, 3600, Some(30))).await;
    let start = Instant::now();
    drop(client);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let _back = broker.connect(connect_v5("flaky", 0, 3600, Some(30))).await;
    assert_eq!(
        will_arrives(&mut watcher, start, 600).await,
        None,
        "no will"
    );
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_2_23_a_session_ends_when_its_expiry_passes_and_not_before() {
    let broker = Broker::new();
    drop(broker.connect(connect_v5("sleeper", 0, 120, None)).await);
    tokio::time::sleep(Duration::from_secs(119)).await;
    assert_eq!(broker.bus.sessions.len(), 1, "kept for its expiry");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(broker.bus.sessions.len(), 0, "ended once it passed");
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_2_2_2_session_present_only_for_a_session_that_still_exists() {
    let broker = Broker::new();
    drop(broker.connect(connect_v5("returning", 0, 10, None)).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c, ack) = broker
        .connect_ack(connect_v5("returning", 0, 10, None))
        .await;
    assert!(ack.session_present, "resumed within its expiry");
    drop(c);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_c, ack) = broker
        .connect_ack(connect_v5("returning", 0, 10, None))
        .await;
    assert!(
        !ack.session_present,
        "expired: a new session [MQTT-3.2.2-3]"
    );
    // A clean start never presents a session [MQTT-3.2.2-2], even one that exists.
    let mut clean = connect_v5("returning", 0, 10, None);
    clean.clean_start = true;
    let (_c, ack) = broker.connect_ack(clean).await;
    assert!(!ack.session_present);
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_4_3_a_takeover_ends_a_session_with_expiry_0_and_its_will_goes_at_once() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let _old = broker.connect(connect_v5("twin", 0, 0, Some(30))).await;
    let start = Instant::now();
    let _new = broker.connect(connect_v5("twin", 0, 0, None)).await;
    assert_eq!(will_arrives(&mut watcher, start, 600).await, Some(0));
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_3_9_a_takeover_that_resumes_a_persistent_session_sends_no_delayed_will() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let _old = broker.connect(connect_v5("twin", 0, 3600, Some(30))).await;
    let start = Instant::now();
    let _new = broker.connect(connect_v5("twin", 0, 3600, None)).await;
    assert_eq!(
        will_arrives(&mut watcher, start, 600).await,
        None,
        "the session goes on"
    );
}

#[tokio::test(start_paused = true)]
async fn mqtt_3_1_4_3_a_clean_start_takeover_ends_a_persistent_session_and_sends_its_will() {
    let broker = Broker::new();
    let mut watcher = broker.connect(connect_v5("watcher", 0, 0, None)).await;
    watcher.subscribe("wills/#").await;
    let _old = broker.connect(connect_v5("twin", 0, 3600, Some(30))).await;
    let start = Instant::now();
    let mut clean = connect_v5("twin", 0, 3600, None);
    clean.clean_start = true;
    let _new = broker.connect(clean).await;
    assert_eq!(will_arrives(&mut watcher, start, 600).await, Some(0));
}
