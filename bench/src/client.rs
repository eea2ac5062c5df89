//! A minimal MQTT client over the project's codec: connect, subscribe, publish in batches,
//! acknowledge. Built for load, not for features.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

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

/// Where the broker is: its address, and TLS settings when the port speaks TLS.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// `ca`: PEM file of the CA(s) that issued the broker's certificate (enables TLS);
    /// `server_name`: the name checked against the certificate.
    pub fn new(
        addr: SocketAddr,
        ca: Option<&std::path::Path>,
        server_name: &str,
    ) -> anyhow::Result<Target> {
        let Some(ca) = ca else {
            return Ok(Target { addr, tls: None });
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
        {
            roots.add(cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned())?;
        Ok(Target {
            addr,
            tls: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }
}

/// A client's connection: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Read what has arrived, without waiting (`WouldBlock` if nothing has).
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read_buf(buf),
            Stream::Tls(s) => {
                let mut chunk = [0u8; 16 * 1024];
                let mut read = ReadBuf::new(&mut chunk);
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut **s).poll_read(&mut cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(read.filled());
                        Ok(read.filled().len())
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

pub struct Client {
    pub stream: Stream,
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
    /// TCP connect (and TLS handshake), CONNECT, wait for CONNACK. Without `session_expiry`
    /// a clean start; with it a persistent session (Clean Start 0, and in v5 this Session
    /// Expiry Interval; in v3.1.1 Clean Session 0), whose QoS 1/2 messages a broker with
    /// durable state stores.
    pub async fn connect(
        target: &Target,
        client_id: &str,
        version: ProtocolVersion,
        credentials: Option<&(String, String)>,
        session_expiry: Option<u32>,
    ) -> anyhow::Result<Client> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.receive_maximum = Some(u16::MAX);
            properties.session_expiry_interval = session_expiry;
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
            clean_start: session_expiry.is_none(),
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
            // TLS may hold the last record until flushed (a no-op on plain TCP).
            self.stream.flush().await?;
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
