//! The traffic every benchmark pushes, and the targets that answer it: a sink that counts
//! what it received, an echo, bulk writes against the sink and 64-byte ping-pong against
//! the echo — the same over plain TCP, HBONE streams and the mesh, so their figures
//! compare.
//!
//! Owns: the load and its targets. Must not: choose paths or summarise results.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Write size of bulk transfers, and the sink's read size.
pub(crate) const BULK_WRITE: usize = 256 * 1024;
/// Payload of a ping-pong round trip.
const PING: usize = 64;

/// Reads and discards; when the writer half-closes, answers with the byte count.
pub(crate) async fn serve_sink(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; BULK_WRITE];
            let mut total = 0u64;
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = tcp.write_all(&total.to_be_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// Serves a TCP echo on `listener`: every byte back, half-close answered with half-close.
pub(crate) async fn serve_echo(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// Writes to a [`serve_sink`] for `phase`, half-closes, and returns the byte count the
/// sink answered with.
pub(crate) async fn fill_sink<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    phase: Duration,
) -> io::Result<u64> {
    let buf = vec![0x5au8; BULK_WRITE];
    let deadline = Instant::now() + phase;
    while Instant::now() < deadline {
        io.write_all(&buf).await?;
    }
    io.shutdown().await?;
    let mut count = [0u8; 8];
    io.read_exact(&mut count).await?;
    Ok(u64::from_be_bytes(count))
}

/// 64-byte ping-pong with a [`serve_echo`] for `phase`; the round trip times in
/// microseconds.
pub(crate) async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    phase: Duration,
) -> io::Result<Vec<f64>> {
    let ping = [0x42u8; PING];
    let mut pong = [0u8; PING];
    let mut rtts = Vec::with_capacity(100_000);
    let deadline = Instant::now() + phase;
    while Instant::now() < deadline {
        let start = Instant::now();
        io.write_all(&ping).await?;
        io.read_exact(&mut pong).await?;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    io.shutdown().await?;
    Ok(rtts)
}

/// Gigabits per second of `bytes` in `elapsed`.
pub(crate) fn gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9) / 1e9
}
