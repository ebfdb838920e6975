//! The plain-TCP byte pump (passthrough outbound, plaintext inbound): both directions at
//! once with tokio's copy, each end metered so a pump that fails still reports the bytes
//! it moved and which end failed. The HBONE pump is [`hbone::copy_bidirectional`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::{ProxyError, Side};

/// Bytes a pump moved: to the destination and back from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bytes {
    /// Downstream → upstream.
    pub sent: u64,
    /// Upstream → downstream.
    pub received: u64,
}

/// Counts what [`copy_tcp`] moves, readable after the pump was dropped early.
#[derive(Debug, Default)]
pub struct TcpMeter {
    down_read: AtomicU64,
    up_read: AtomicU64,
    down_failed: AtomicBool,
}

impl TcpMeter {
    /// Bytes moved so far.
    pub fn bytes(&self) -> Bytes {
        Bytes {
            sent: self.down_read.load(Ordering::Relaxed),
            received: self.up_read.load(Ordering::Relaxed),
        }
    }
}

/// Pumps between `downstream` (the client side) and `upstream` until both directions
/// end, counting into `meter`. A failure names the side it came from.
pub async fn copy_tcp(
    downstream: &mut TcpStream,
    upstream: &mut TcpStream,
    meter: &TcpMeter,
) -> Result<(), ProxyError> {
    let up_failed = AtomicBool::new(false);
    let mut down = Metered {
        inner: downstream,
        read: &meter.down_read,
        failed: &meter.down_failed,
    };
    let mut up = Metered {
        inner: upstream,
        read: &meter.up_read,
        failed: &up_failed,
    };
    tokio::io::copy_bidirectional(&mut down, &mut up)
        .await
        .map(drop)
        .map_err(|source| {
            // The end whose own call failed (the upstream when, impossibly, neither).
            let side = if meter.down_failed.load(Ordering::Relaxed) {
                Side::Downstream
            } else {
                Side::Upstream
            };
            ProxyError::Io { side, source }
        })
}

/// Bytes of an HBONE pump in the proxy's terms: `socket` is the side the TCP socket is
/// on (downstream outbound, upstream inbound).
pub fn hbone_bytes(t: hbone::Transferred, socket: Side) -> Bytes {
    match socket {
        // Outbound: socket → tunnel is toward the destination.
        Side::Downstream => Bytes {
            sent: t.to_tunnel,
            received: t.from_tunnel,
        },
        // Inbound: tunnel → socket (the app) is toward the destination.
        _ => Bytes {
            sent: t.from_tunnel,
            received: t.to_tunnel,
        },
    }
}

/// An HBONE pump's error in the proxy's terms (see [`hbone_bytes`] for `socket`).
pub fn hbone_error(e: hbone::CopyError, socket: Side) -> ProxyError {
    let side = match (e.side, socket) {
        (hbone::CopySide::Socket, side) => side,
        (hbone::CopySide::Tunnel, Side::Downstream) => Side::Upstream,
        (hbone::CopySide::Tunnel, _) => Side::Downstream,
    };
    ProxyError::Io {
        side,
        source: e.error,
    }
}

/// A socket that counts the bytes read from it and remembers whether one of its own
/// calls failed.
struct Metered<'a> {
    inner: &'a mut TcpStream,
    read: &'a AtomicU64,
    failed: &'a AtomicBool,
}

impl Metered<'_> {
    fn note<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &poll {
            self.failed.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncRead for Metered<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            this.read
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        this.note(poll)
    }
}

impl AsyncWrite for Metered<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_write(cx, buf);
        this.note(poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_flush(cx);
        this.note(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_shutdown(cx);
        this.note(poll)
    }
}
