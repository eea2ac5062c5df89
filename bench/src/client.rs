//! A minimal MQTT client over the project's codec: connect, subscribe, publish in batches,
//! acknowledge. Built for load, not for features.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use edgemq_codec::{
    Connect, Decoder, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

/// Payload header: publisher index (u32), sequence (u64), send time in ns since `epoch` (u64).
pub const HEADER_LEN: usize = 20;

/// What each payload's header records.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Keep-alive in every CONNECT (seconds).
const KEEP_ALIVE_SECS: u16 = 600;

pub struct Client {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    pub decoder: Decoder,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
}

pub fn version_of(protocol: u8) -> ProtocolVersion {
    if protocol == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    }
}

pub fn qos_of(qos: u8) -> QoS {
    QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce)
}

impl Client {
    /// TCP connect, CONNECT (clean start), wait for CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        version: ProtocolVersion,
        credentials: Option<&(String, String)>,
    ) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.receive_maximum = Some(u16::MAX);
        }
        let mut client = Client {
            stream,
            version,
            decoder: Decoder::new(u32::MAX),
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
        };
        client.decoder.version = Some(version);
        client.send(&Packet::Connect(Box::new(Connect {
            protocol_version: version,
            clean_start: true,
            // Not 0: rumqttd refuses it. Runs are far shorter, so no PINGREQ is needed.
            keep_alive: KEEP_ALIVE_SECS,
            properties,
            client_id: ByteString::from(client_id),
            last_will: None,
            username: credentials.map(|(u, _)| ByteString::from(u.as_str())),
            password: credentials.map(|(_, p)| bytes::Bytes::copy_from_slice(p.as_bytes())),
        })))?;
        client.flush().await?;
        match client.next_packet().await? {
            Packet::ConnAck(ack) if !ack.reason.is_error() => Ok(client),
            other => anyhow::bail!("{client_id}: expected CONNACK success, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let options = SubscriptionOptions {
            qos,
            ..Default::default()
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(ByteString::from(filter), options)],
        }))?;
        self.flush().await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(ack) if ack.reasons.iter().all(|r| !r.is_error()) => return Ok(()),
                Packet::SubAck(ack) => anyhow::bail!("subscription refused: {:?}", ack.reasons),
                _ => continue,
            }
        }
    }

    pub fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        packet.encode(self.version, &mut self.wbuf)?;
        Ok(())
    }

    /// Queue a PUBLISH whose payload carries the benchmark header.
    pub fn publish(
        &mut self,
        topic: &ByteString,
        qos: QoS,
        packet_id: Option<u16>,
        stamp: Stamp,
        payload_len: usize,
        scratch: &mut BytesMut,
    ) -> anyhow::Result<()> {
        scratch.clear();
        scratch.put_u32(stamp.publisher);
        scratch.put_u64(stamp.seq);
        scratch.put_u64(stamp.sent_ns);
        scratch.resize(payload_len, 0);
        let payload = scratch.split().freeze();
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            packet_id,
            properties: Properties::default(),
            payload,
        }))
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Decode one buffered packet, if any.
    pub fn try_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(self.decoder.decode(&mut self.rbuf)?)
    }

    /// Read more bytes; errors on EOF.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        anyhow::ensure!(n > 0, "connection closed by the broker");
        Ok(())
    }

    pub async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.try_packet()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Acknowledge a received PUBLISH per its QoS (QoS 2: PUBREC; PUBCOMP follows PUBREL).
    pub fn ack(&mut self, publish: &Publish) -> anyhow::Result<()> {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(PubResponse::new(id))),
            (QoS::ExactlyOnce, Some(id)) => self.send(&Packet::PubRec(PubResponse::new(id))),
            _ => Ok(()),
        }
    }
}

/// The benchmark header of a payload.
pub fn parse_header(mut payload: Bytes) -> Option<(u32, u64, u64)> {
    if payload.len() < HEADER_LEN {
        return None;
    }
    Some((payload.get_u32(), payload.get_u64(), payload.get_u64()))
}

/// Nanoseconds since `epoch`.
pub fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
