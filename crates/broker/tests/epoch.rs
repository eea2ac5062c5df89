//! Session epochs (cluster stage 0): every connection that takes a session bumps its epoch,
//! through takeovers, clean starts, reconnects and restarts of the broker (the epoch is
//! stored with the session). The broker runs in process over in-memory pipes, with a store
//! in a temporary directory.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use edgemq_broker::listener::ListenerContext;
use edgemq_broker::{Durable, Limits, Server};
use edgemq_codec::{Connect, Decoder, Packet, Properties, ProtocolVersion, ReasonCode};
use edgemq_core::auth::AllowAll;
use edgemq_store::{Recovery, Store, SyncPolicy};

struct Broker {
    server: Arc<Server>,
    listener: Arc<ListenerContext>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

struct Client {
    stream: DuplexStream,
    decoder: Decoder,
    rbuf: BytesMut,
}

impl Broker {
    fn open(dir: &Path) -> Broker {
        let (store, recovered) = Store::open(dir, SyncPolicy::Never, Recovery::Strict).unwrap();
        let durable = Durable {
            store: Arc::new(store),
            recovered,
        };
        let allow = Arc::new(AllowAll);
        Broker {
            server: Server::new(Limits::default(), Some(durable)),
            listener: Arc::new(ListenerContext::new("t".into(), 1883, allow.clone(), allow)),
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    fn epoch(&self, client_id: &str) -> Option<u64> {
        self.server.bus.sessions.get(client_id).map(|v| v.epoch)
    }

    /// Connect (v5) and read the accepting CONNACK; the client and Session Present.
    async fn connect(&self, id: &str, clean_start: bool, expiry: u32) -> (Client, bool) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(edgemq_broker::serve_stream(
            server,
            SocketAddr::from(([127, 0, 0, 1], 40000)),
            self.listener.clone(),
            self.server.bus.clone(),
            self.shutdown.subscribe(),
        ));
        let mut decoder = Decoder::new(u32::MAX);
        decoder.version = Some(ProtocolVersion::V5);
        let mut c = Client {
            stream: client,
            decoder,
            rbuf: BytesMut::new(),
        };
        let connect = Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start,
            keep_alive: 0,
            properties: Properties::from(edgemq_codec::PropertyValues {
                session_expiry_interval: Some(expiry),
                ..Default::default()
            }),
            client_id: ByteString::from(id),
            last_will: None,
            username: None,
            password: None,
        };
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::Success);
                (c, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A clean stop: clients disconnected, the store committed and closed.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.server.shutdown().await;
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

    /// Until the broker closes the connection (a takeover sends DISCONNECT 0x8E first).
    async fn closed(&mut self) {
        while self.recv().await.is_some() {}
    }

    async fn disconnect(mut self) {
        self.send(Packet::Disconnect(edgemq_codec::Disconnect::default()))
            .await;
        self.closed().await;
    }
}

#[tokio::test]
async fn the_epoch_rises_with_every_connection_that_takes_the_session_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path());
    assert_eq!(broker.epoch("c"), None);
    let (mut first, present) = broker.connect("c", false, 3600).await;
    assert!(!present);
    assert_eq!(broker.epoch("c"), Some(1));

    // A takeover that resumes the session.
    let (mut second, present) = broker.connect("c", false, 3600).await;
    assert!(present);
    first.closed().await;
    assert_eq!(broker.epoch("c"), Some(2));

    // A clean start replaces the session, and still takes a higher epoch.
    let (third, present) = broker.connect("c", true, 3600).await;
    assert!(!present);
    second.closed().await;
    assert_eq!(broker.epoch("c"), Some(3));

    // Offline, then resumed.
    third.disconnect().await;
    assert_eq!(broker.epoch("c"), Some(3), "going offline keeps the epoch");
    let (fourth, present) = broker.connect("c", false, 3600).await;
    assert!(present);
    assert_eq!(broker.epoch("c"), Some(4));
    fourth.disconnect().await;
    broker.stop().await;

    // The store brings the epoch back; the next connection goes on from it.
    let broker = Broker::open(dir.path());
    assert_eq!(
        broker.epoch("c"),
        Some(4),
        "restored offline with its epoch"
    );
    let (fifth, present) = broker.connect("c", false, 3600).await;
    assert!(present);
    assert_eq!(broker.epoch("c"), Some(5));
    drop(fifth);
    broker.stop().await;

    // Stopped while connected: the epoch it connected at is the one stored.
    let broker = Broker::open(dir.path());
    assert_eq!(broker.epoch("c"), Some(5));
    let (_sixth, _) = broker.connect("c", false, 3600).await;
    assert_eq!(broker.epoch("c"), Some(6));
    broker.stop().await;
}

#[tokio::test]
async fn a_session_that_ended_starts_over_and_others_keep_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path());
    let (a, _) = broker.connect("a", false, 0).await;
    let (b, _) = broker.connect("b", false, 3600).await;
    let (b2, _) = broker.connect("b", false, 3600).await;
    assert_eq!((broker.epoch("a"), broker.epoch("b")), (Some(1), Some(2)));
    a.disconnect().await;
    // Expiry 0: the session ends with the connection (just after it closes).
    for _ in 0..500 {
        if broker.epoch("a").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(broker.epoch("a"), None, "the session ended");
    let (_a, _) = broker.connect("a", false, 0).await;
    assert_eq!(broker.epoch("a"), Some(1));
    drop((b, b2));
    broker.stop().await;
}
