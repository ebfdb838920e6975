//! The byte pump between a TCP socket and an HBONE stream, both directions at once.
//!
//! TCP → stream reads straight into a growable buffer whose filled part is handed to
//! HTTP/2 without copying, sending only what flow control allows (so memory stays
//! bounded by the window). Stream → TCP writes each received frame and only then returns
//! its window to the peer, so a slow reader slows the sender instead of filling memory.
//! EOF on either side becomes a half-close on the other (END_STREAM / `shutdown(Write)`).
//! Buffers start small and grow while a flow keeps filling them.
//!
//! Bytes are counted as they move, so a pump that fails still reports what it carried,
//! and the error says which side failed: the socket or the tunnel.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stream::{H2Stream, h2_to_io, poll_send_capacity};

/// First read buffer of a flow.
const INITIAL_CHUNK: usize = 16 * 1024;
/// Largest read buffer of a flow.
const MAX_CHUNK: usize = 256 * 1024;

/// The read buffer of one flow. A chunk handed to HTTP/2 stays referenced until the
/// connection task has encrypted it, usually after the next read, so most reads get a
/// fresh allocation (measured: 98 % of reads over 1 GiB). Alternating two buffers avoids
/// that (1.3 %) but measured no faster in `bench l4` and cost ~4 MB of peak RSS, so one
/// buffer it is; `fresh` is traced at EOF so the measurement can be repeated
/// (docs/benchmarks.md).
#[derive(Debug)]
struct ReadBuffer {
    buf: BytesMut,
    /// Reads so far.
    reads: u64,
    /// Reads that needed a new allocation.
    fresh: u64,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(INITIAL_CHUNK),
            reads: 0,
            fresh: 0,
        }
    }
}

impl ReadBuffer {
    /// The buffer for the next read, with room for `chunk` bytes.
    fn next(&mut self, chunk: usize) -> &mut BytesMut {
        self.reads += 1;
        if !self.buf.try_reclaim(chunk) {
            self.fresh += 1;
            self.buf.reserve(chunk);
        }
        &mut self.buf
    }
}

/// Bytes moved by [`copy_bidirectional`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// From the socket into the tunnel.
    pub to_tunnel: u64,
    /// From the tunnel into the socket.
    pub from_tunnel: u64,
}

/// Which end of the pump failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopySide {
    /// The TCP socket.
    Socket,
    /// The HBONE stream (or its connection).
    Tunnel,
}

/// A pump that failed: where, why, and what it had moved until then.
#[derive(Debug, thiserror::Error)]
#[error("{side:?} failed after {} bytes in, {} bytes out: {error}", transferred.to_tunnel, transferred.from_tunnel)]
pub struct CopyError {
    /// The end that failed.
    pub side: CopySide,
    /// The error.
    pub error: io::Error,
    /// Bytes moved before the failure.
    pub transferred: Transferred,
}

/// Counts what a pump moves, readable by the caller even if it drops the pump early
/// (a connection closed by policy or pod removal still reports its bytes).
#[derive(Debug, Default)]
pub struct Meter {
    to_tunnel: AtomicU64,
    from_tunnel: AtomicU64,
}

impl Meter {
    /// Bytes moved so far.
    pub fn transferred(&self) -> Transferred {
        Transferred {
            to_tunnel: self.to_tunnel.load(Ordering::Relaxed),
            from_tunnel: self.from_tunnel.load(Ordering::Relaxed),
        }
    }
}

/// Pumps bytes between a socket (given as its read and write halves) and `stream` until
/// both directions have finished. Either direction failing resets the stream.
pub async fn copy_bidirectional<R, W>(
    read: R,
    write: W,
    stream: H2Stream,
) -> Result<Transferred, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    copy_bidirectional_metered(read, write, stream, &Meter::default()).await
}

/// [`copy_bidirectional`], counting into `meter` as bytes move.
pub async fn copy_bidirectional_metered<R, W>(
    mut read: R,
    mut write: W,
    stream: H2Stream,
    meter: &Meter,
) -> Result<Transferred, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let H2Stream {
        mut send,
        mut recv,
        pending,
        _slot,
        ..
    } = stream;

    let (sent, received) = (&meter.to_tunnel, &meter.from_tunnel);
    let socket = |e: io::Error| (CopySide::Socket, e);
    let tunnel = |e: io::Error| (CopySide::Tunnel, e);

    let to_tunnel = async {
        let mut buffers = ReadBuffer::default();
        let mut chunk = INITIAL_CHUNK;
        loop {
            let buf = buffers.next(chunk);
            let n = read.read_buf(buf).await.map_err(socket)?;
            if n == 0 {
                send.send_data(Bytes::new(), true)
                    .map_err(|e| tunnel(h2_to_io(e)))?;
                tracing::trace!(
                    reads = buffers.reads,
                    fresh_allocations = buffers.fresh,
                    "socket reached EOF"
                );
                return Ok(());
            }
            if n >= chunk && chunk < MAX_CHUNK {
                chunk *= 2;
            }
            let mut data = buf.split().freeze();
            while !data.is_empty() {
                let allowed = poll_fn(|cx| poll_send_capacity(&mut send, data.len(), cx))
                    .await
                    .map_err(tunnel)?;
                send.send_data(data.split_to(allowed), false)
                    .map_err(|e| tunnel(h2_to_io(e)))?;
                sent.fetch_add(allowed as u64, Ordering::Relaxed);
            }
        }
    };

    let from_tunnel = async {
        if !pending.is_empty() {
            write.write_all(&pending).await.map_err(socket)?;
            received.fetch_add(pending.len() as u64, Ordering::Relaxed);
        }
        while let Some(data) = poll_fn(|cx| recv.poll_data(cx)).await {
            let data = data.map_err(|e| tunnel(h2_to_io(e)))?;
            write.write_all(&data).await.map_err(socket)?;
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
            let _ = recv.flow_control().release_capacity(data.len());
        }
        write.shutdown().await.map_err(socket)?;
        Ok(())
    };

    // The first failure ends both directions; clean EOFs wait for each other.
    let result = tokio::try_join!(to_tunnel, from_tunnel);
    let transferred = meter.transferred();
    match result {
        Ok(((), ())) => Ok(transferred),
        Err((side, error)) => {
            send.send_reset(h2::Reason::CANCEL);
            Err(CopyError {
                side,
                error,
                transferred,
            })
        }
    }
}
