//! Transports: how an accepted TCP connection becomes the byte stream MQTT runs on — plain,
//! TLS (rustls), WebSocket, or WebSocket over TLS. The connection task only sees
//! `AsyncRead + AsyncWrite`.

mod ws;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use ws::WsStream;

use crate::stats::{Stats, TlsFailure};

/// What a port speaks above TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT directly on the (TLS) stream.
    Mqtt,
    /// MQTT in binary WebSocket frames (subprotocol `mqtt`), as browsers and Node-RED use it.
    WebSockets,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Mqtt => "mqtt",
            Protocol::WebSockets => "websockets",
        })
    }
}

/// A listener port's transport stack.
#[derive(Clone)]
pub struct Transport {
    pub protocol: Protocol,
    /// TLS server settings; certificates inside may be swapped while connections stay up.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Transport {
    pub fn plain() -> Self {
        Transport {
            protocol: Protocol::Mqtt,
            tls: None,
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Any stream a connection can run on, for the non-plain transports (one dynamic call per
/// read/write is negligible next to TLS or WebSocket framing; plain TCP stays monomorphic).
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// The stream after the transport handshakes.
pub enum Stream {
    Plain(TcpStream),
    Wrapped(Box<dyn IoStream>),
}

/// A connection after its transport handshakes.
pub struct Accepted {
    pub stream: Stream,
    /// The certificate chain a TLS client presented (DER, leaf first), accepted by the TLS
    /// layer without judging it: authentication verifies it at CONNECT.
    pub client_certificates: Vec<bytes::Bytes>,
}

impl Accepted {
    fn plain(stream: Stream) -> Self {
        Accepted {
            stream,
            client_certificates: Vec::new(),
        }
    }
}

/// Why a transport handshake failed; logged by the listener with the peer address so an
/// operator can tell a certificate problem from a port scan.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(tokio_tungstenite::tungstenite::Error),
    #[error("handshake not completed within {0:?}")]
    Timeout(Duration),
}

impl HandshakeError {
    /// The rustls error inside a failed TLS handshake, if there is one.
    pub fn rustls(&self) -> Option<&tokio_rustls::rustls::Error> {
        match self {
            HandshakeError::Tls(io) => io.get_ref()?.downcast_ref(),
            _ => None,
        }
    }
}

/// The metric reason of a failed TLS handshake.
fn tls_failure(error: &HandshakeError) -> TlsFailure {
    use tokio_rustls::rustls::{AlertDescription as A, CertificateError as C, Error as R};
    if let HandshakeError::Timeout(_) = error {
        return TlsFailure::Timeout;
    }
    match error.rustls() {
        Some(R::AlertReceived(A::UnknownCA) | R::InvalidCertificate(C::UnknownIssuer)) => {
            TlsFailure::UnknownCa
        }
        Some(
            R::AlertReceived(
                A::BadCertificate
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::CertificateRequired,
            )
            | R::InvalidCertificate(_)
            | R::NoCertificatesPresented,
        ) => TlsFailure::BadCertificate,
        Some(
            R::AlertReceived(A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity)
            | R::InvalidMessage(_)
            | R::PeerIncompatible(_)
            | R::InappropriateMessage { .. }
            | R::InappropriateHandshakeMessage { .. },
        ) => TlsFailure::Protocol,
        _ => TlsFailure::Other,
    }
}

/// Run the TLS and/or WebSocket handshakes, bounded by `timeout` so a silent client cannot
/// hold a task and a socket forever. `max_ws_message` bounds a WebSocket frame and message
/// (the broker passes its maximum MQTT packet size). TLS handshakes are counted in `stats`,
/// failures by reason (a WebSocket failure after TLS completed is not a TLS failure).
pub async fn accept(
    tcp: TcpStream,
    transport: &Transport,
    timeout: Duration,
    max_ws_message: usize,
    stats: &Stats,
) -> Result<Accepted, HandshakeError> {
    if transport.tls.is_none() && transport.protocol == Protocol::Mqtt {
        return Ok(Accepted::plain(Stream::Plain(tcp)));
    }
    let mut tls_done = false;
    // Boxed: a rustls handshake's state is ~11 KB, and an unboxed future would make every
    // connection's task that large for its whole life, plain TCP included.
    let result = Box::pin(tokio::time::timeout(
        timeout,
        handshakes(tcp, transport, max_ws_message, &mut tls_done),
    ))
    .await
    .map_err(|_| HandshakeError::Timeout(timeout))
    .and_then(|r| r);
    if transport.tls.is_some() {
        if tls_done {
            stats.tls_handshakes.fetch_add(1, Relaxed);
        } else if let Err(e) = &result {
            stats.tls_failed(tls_failure(e));
        }
    }
    result
}

/// `tls_done` turns true once the TLS handshake completed.
async fn handshakes(
    tcp: TcpStream,
    transport: &Transport,
    max_ws_message: usize,
    tls_done: &mut bool,
) -> Result<Accepted, HandshakeError> {
    match (&transport.tls, transport.protocol) {
        (None, Protocol::Mqtt) => Ok(Accepted::plain(Stream::Plain(tcp))),
        (None, Protocol::WebSockets) => Ok(Accepted::plain(Stream::Wrapped(Box::new(
            ws::accept(tcp, max_ws_message).await?,
        )))),
        (Some(tls), protocol) => {
            let stream = tokio_rustls::TlsAcceptor::from(tls.clone())
                .accept(tcp)
                .await
                .map_err(HandshakeError::Tls)?;
            *tls_done = true;
            let client_certificates = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| {
                    chain
                        .iter()
                        .map(|c| bytes::Bytes::copy_from_slice(c.as_ref()))
                        .collect()
                })
                .unwrap_or_default();
            let stream = match protocol {
                Protocol::Mqtt => Stream::Wrapped(Box::new(stream)),
                Protocol::WebSockets => {
                    Stream::Wrapped(Box::new(ws::accept(stream, max_ws_message).await?))
                }
            };
            Ok(Accepted {
                stream,
                client_certificates,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::{AlertDescription as A, CertificateError as C, Error as R};

    fn tls(e: R) -> HandshakeError {
        HandshakeError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn tls_failures_have_a_bounded_reason() {
        let cases = [
            (tls(R::AlertReceived(A::UnknownCA)), TlsFailure::UnknownCa),
            (
                tls(R::InvalidCertificate(C::UnknownIssuer)),
                TlsFailure::UnknownCa,
            ),
            (
                tls(R::AlertReceived(A::BadCertificate)),
                TlsFailure::BadCertificate,
            ),
            (
                tls(R::InvalidCertificate(C::Expired)),
                TlsFailure::BadCertificate,
            ),
            (
                tls(R::AlertReceived(A::ProtocolVersion)),
                TlsFailure::Protocol,
            ),
            (
                tls(R::InvalidMessage(
                    tokio_rustls::rustls::InvalidMessage::InvalidContentType,
                )),
                TlsFailure::Protocol,
            ),
            (
                HandshakeError::Timeout(Duration::from_secs(1)),
                TlsFailure::Timeout,
            ),
            (
                HandshakeError::Tls(std::io::ErrorKind::UnexpectedEof.into()),
                TlsFailure::Other,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(tls_failure(&error), reason, "{error}");
        }
    }
}
