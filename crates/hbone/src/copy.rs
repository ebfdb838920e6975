//! The byte pump between a TCP socket and an HBONE stream, both directions at once.
//!
//! TCP → stream reads straight into a growable buffer whose filled part is handed to
//! HTTP/2 without copying, sending only what flow control allows (so memory stays
//! bounded by the window). Stream → TCP writes each received frame and only then returns
//! its window to the peer, so a slow reader slows the sender instead of filling memory.
//! EOF on either side becomes a half-close on the other (END_STREAM / `shutdown(Write)`).
//! Buffers start small and grow while a flow keeps filling them.

use std::future::poll_fn;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stream::{H2Stream, h2_to_io, poll_send_capacity};

/// First read buffer of a flow.
const INITIAL_CHUNK: usize = 16 * 1024;
/// Largest read buffer of a flow.
const MAX_CHUNK: usize = 256 * 1024;

/// Bytes moved by [`copy_bidirectional`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// From the socket into the tunnel.
    pub to_tunnel: u64,
    /// From the tunnel into the socket.
    pub from_tunnel: u64,
}

/// Pumps bytes between a socket (given as its read and write halves) and `stream` until
/// both directions have finished. Either direction failing resets the stream.
pub async fn copy_bidirectional<R, W>(
    mut read: R,
    mut write: W,
    stream: H2Stream,
) -> io::Result<Transferred>
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

    let to_tunnel = async {
        let mut buf = BytesMut::with_capacity(INITIAL_CHUNK);
        let mut chunk = INITIAL_CHUNK;
        let mut total = 0u64;
        loop {
            buf.reserve(chunk);
            let n = read.read_buf(&mut buf).await?;
            if n == 0 {
                send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
                return Ok::<u64, io::Error>(total);
            }
            total += n as u64;
            if n >= chunk && chunk < MAX_CHUNK {
                chunk *= 2;
            }
            let mut data = buf.split().freeze();
            while !data.is_empty() {
                let allowed = poll_fn(|cx| poll_send_capacity(&mut send, data.len(), cx)).await?;
                send.send_data(data.split_to(allowed), false)
                    .map_err(h2_to_io)?;
            }
        }
    };

    let from_tunnel = async {
        let mut total = pending.len() as u64;
        if !pending.is_empty() {
            write.write_all(&pending).await?;
        }
        while let Some(data) = poll_fn(|cx| recv.poll_data(cx)).await {
            let data = data.map_err(h2_to_io)?;
            write.write_all(&data).await?;
            total += data.len() as u64;
            let _ = recv.flow_control().release_capacity(data.len());
        }
        write.shutdown().await?;
        Ok::<u64, io::Error>(total)
    };

    // The first failure ends both directions; clean EOFs wait for each other.
    let result = tokio::try_join!(to_tunnel, from_tunnel);
    match result {
        Ok((to_tunnel, from_tunnel)) => Ok(Transferred {
            to_tunnel,
            from_tunnel,
        }),
        Err(e) => {
            send.send_reset(h2::Reason::CANCEL);
            Err(e)
        }
    }
}
