//! One tunnelled TCP connection: an HTTP/2 `CONNECT` stream after the 200.
//!
//! DATA frames carry the raw bytes both ways; END_STREAM is a half-close. [`H2Stream`]
//! implements `AsyncRead`/`AsyncWrite` for callers that want a socket-like object; the
//! proxy path uses [`crate::copy_bidirectional`], which moves buffers without the extra
//! copies those traits imply.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pool::Slot;

/// The largest chunk one `poll_write` hands to HTTP/2.
const MAX_WRITE_CHUNK: usize = 256 * 1024;

/// An established HBONE stream.
pub struct H2Stream {
    pub(crate) send: SendStream<Bytes>,
    pub(crate) recv: RecvStream,
    /// Received bytes not yet read by the caller.
    pub(crate) pending: Bytes,
    /// Staging buffer for `poll_write`; its allocation is reused once h2 has sent the
    /// previous chunk.
    write_buf: BytesMut,
    eof_sent: bool,
    /// Keeps the pool's stream count for this stream's connection until dropped.
    pub(crate) _slot: Option<Slot>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("eof_sent", &self.eof_sent)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream, slot: Option<Slot>) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            write_buf: BytesMut::new(),
            eof_sent: false,
            _slot: slot,
        }
    }

    /// Aborts the stream with `RST_STREAM(CANCEL)`, telling the peer the connection
    /// ended abnormally.
    pub fn reset(&mut self) {
        self.send.send_reset(h2::Reason::CANCEL);
    }
}

pub(crate) fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "HTTP/2 I/O error"))
    } else if e.reason() == Some(h2::Reason::NO_ERROR) || e.reason() == Some(h2::Reason::CANCEL) {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    } else {
        io::Error::other(e)
    }
}

/// Waits until h2 grants send capacity for (part of) `want` bytes; returns how many.
pub(crate) fn poll_send_capacity(
    send: &mut SendStream<Bytes>,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    send.reserve_capacity(want);
    loop {
        let available = send.capacity();
        if available > 0 {
            return Poll::Ready(Ok(available.min(want)));
        }
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
            None => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "HBONE stream closed by peer",
                )));
            }
        }
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The bytes are ours now: let the peer send more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        let n = ready!(poll_send_capacity(
            &mut this.send,
            buf.len().min(MAX_WRITE_CHUNK),
            cx
        ))?;
        this.write_buf.reserve(n);
        this.write_buf.extend_from_slice(&buf[..n]);
        let chunk = this.write_buf.split().freeze();
        this.send.send_data(chunk, false).map_err(h2_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task flushes frames as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.eof_sent {
            self.eof_sent = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
