//! MQTT over WebSocket ([MQTT-6.0.0-1]..[MQTT-6.0.0-4]): binary frames carry the MQTT byte
//! stream (a packet may span frames and a frame may hold several packets); the server
//! selects the `mqtt` subprotocol (`mqttv3.1` for old clients).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::HandshakeError;

/// Subprotocols we speak, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Upgrade any path; reject a client that offers subprotocols but none of ours.
///
/// A frame, or a fragmented message, larger than `max_message` bytes (the broker's maximum
/// MQTT packet size) ends the connection: a frame is refused from its header, before its
/// payload is buffered. One frame may still carry several MQTT packets, or part of one, as
/// long as it is not larger than the largest packet.
pub(super) async fn accept<S>(stream: S, max_message: usize) -> Result<WsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut config = WebSocketConfig::default();
    // Write each message through at once: the connection task decides batching.
    config.write_buffer_size = 0;
    // tungstenite's defaults are 16 MiB frames and 64 MiB messages, far above what the MQTT
    // layer accepts; the buffer it reserves for a frame is sized from the frame header.
    config.max_frame_size = Some(max_message);
    config.max_message_size = Some(max_message);
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select_subprotocol, Some(config))
            .await
            .map_err(HandshakeError::WebSocket)?;
    Ok(WsStream {
        inner: ws,
        pending: Bytes::new(),
    })
}

// The signature is tungstenite's handshake callback; its error type is not ours to box.
#[allow(clippy::result_large_err)]
fn select_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.is_empty() {
        // Some clients send none; MQTT is the only thing we speak, so accept.
        return Ok(response);
    }
    match SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
    {
        Some(chosen) => {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
            Ok(response)
        }
        None => {
            let mut refusal = ErrorResponse::new(Some("subprotocol must be mqtt".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

/// A WebSocket connection seen as a byte stream.
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    pending: Bytes,
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // [MQTT-6.0.0-1] text frames are not MQTT: close the connection.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket frame [MQTT-6.0.0-1]",
                    )))
                }
                // Pings are answered by tungstenite; nothing for MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => {
                    if let tokio_tungstenite::tungstenite::Error::Capacity(c) = &e {
                        // One line per connection: the connection ends here.
                        tracing::warn!("WebSocket input refused, connection closed: {c} (the maximum packet size bounds WebSocket frames and messages)");
                    }
                    return Poll::Ready(Err(to_io(e)));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(to_io)
    }
}
