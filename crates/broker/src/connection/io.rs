//! The connection's bytes: the read buffer, the write buffer with its hold-until-committed
//! mark, and the reads and writes the loop waits on.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use edgemq_codec::{Packet, ProtocolVersion};

use crate::stats::Stats;

/// Bytes read per wake-up when the read buffer has no room (a stack buffer, copied into a
/// read buffer sized to what arrived).
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// Output from byte `from` of the write buffer waits until the store has committed every
/// operation up to `ticket` (see `edgemq_store::Store::ticket`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hold {
    pub(super) from: usize,
    pub(super) ticket: u64,
}

/// The socket halves and their buffers.
pub(crate) struct Io<S> {
    pub(super) reader: tokio::io::ReadHalf<S>,
    pub(super) writer: tokio::io::WriteHalf<S>,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    /// Output waiting for a store commit.
    pub(super) hold: Option<Hold>,
    /// Where the bytes read and written are counted.
    pub(super) stats: Arc<Stats>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// The bytes that may be written now.
    pub(super) fn writable(&self) -> usize {
        self.hold.map_or(self.wbuf.len(), |h| h.from)
    }

    /// Hold the output from here on until the store has committed up to `ticket`.
    pub(super) fn hold_until(&mut self, ticket: u64) {
        match &mut self.hold {
            Some(h) => h.ticket = h.ticket.max(ticket),
            None => {
                self.hold = Some(Hold {
                    from: self.wbuf.len(),
                    ticket,
                })
            }
        }
    }

    /// Encode `packet` ahead of any output held for a commit: it promises nothing about
    /// stored state (a PINGRESP), and a client must not time out while the store catches up.
    pub(super) fn send_unheld(&mut self, packet: Packet, version: ProtocolVersion) {
        let Some(hold) = self.hold.as_mut() else {
            self.encode(&packet, version);
            return;
        };
        let held = self.wbuf.split_off(hold.from);
        encode_into(&mut self.wbuf, &packet, version);
        hold.from = self.wbuf.len();
        self.wbuf.unsplit(held);
    }

    /// Encode `packet` at the end of the write buffer (see [`encode_into`]).
    pub(super) fn encode(&mut self, packet: &Packet, version: ProtocolVersion) {
        encode_into(&mut self.wbuf, packet, version);
    }

    /// `n` bytes were written from the front of the buffer.
    pub(super) fn advance(&mut self, n: usize) {
        self.stats.bytes_sent.fetch_add(n as u64, Relaxed);
        let _ = self.wbuf.split_to(n);
        if let Some(h) = &mut self.hold {
            h.from -= n;
        }
    }

    /// Read more bytes into `rbuf`; Ok(0) means the peer closed.
    pub(super) async fn read_more(&mut self) -> std::io::Result<usize> {
        let n = read_some(&mut self.reader, &mut self.rbuf).await?;
        self.received(n);
        Ok(n)
    }

    /// `n` bytes were read into the read buffer.
    pub(super) fn received(&self, n: usize) {
        self.stats.bytes_received.fetch_add(n as u64, Relaxed);
    }

    /// Write everything buffered (used at the end of a connection, bounded by the caller).
    pub(super) async fn flush_all(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            let buf = self.wbuf.split();
            self.writer.write_all(&buf).await?;
            self.stats.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
        }
        self.writer.flush().await
    }

    /// Release idle buffer memory (the idle-connection footprint matters at 10k+ clients).
    pub(super) fn shrink_if_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
    }
}

/// Read what the peer sent into `rbuf`; Ok(0) means the peer closed.
///
/// An idle connection owns no read buffer: while waiting, the read targets a stack buffer
/// that exists only during a poll, and the bytes that arrive are copied into a buffer of
/// their size. (Reserving a buffer before waiting would cost every idle client kilobytes.)
/// A buffer with room (a packet arriving in parts) is read into directly.
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> std::io::Result<usize> {
    if rbuf.capacity() - rbuf.len() >= READ_CHUNK / 8 {
        return reader.read_buf(rbuf).await;
    }
    std::future::poll_fn(|cx| {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = tokio::io::ReadBuf::uninit(&mut stack);
        std::task::ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
        rbuf.extend_from_slice(buf.filled());
        std::task::Poll::Ready(Ok(buf.filled().len()))
    })
    .await
}

/// Write what is buffered, or flush when nothing is: `Some(n)` bytes written, `None` flushed.
pub(super) async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    wbuf: &[u8],
) -> std::io::Result<Option<usize>> {
    if wbuf.is_empty() {
        writer.flush().await.map(|()| None)
    } else {
        writer.write(wbuf).await.map(Some)
    }
}

/// Encode `packet` at the end of `out`. A packet the codec refuses (a field or length beyond
/// the protocol's) leaves nothing behind and is logged: the broker built it, so it is a bug,
/// never the client's input.
pub(super) fn encode_into(out: &mut BytesMut, packet: &Packet, version: ProtocolVersion) {
    let before = out.len();
    if let Err(e) = packet.encode(version, out) {
        out.truncate(before);
        tracing::error!(error = %e, packet = ?packet.packet_type(), "could not encode a packet");
    }
}
