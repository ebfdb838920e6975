//! The raw TCP echo: every byte a client sends comes back, until the client half-closes.
//!
//! Must not: interpret the bytes in any way.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;

/// Accepts connections forever; each is echoed by a task owned by this loop, so aborting
/// the loop closes them all.
pub(crate) async fn accept_loop(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = hbone::accept::accept(&listener, &crate::FD_RESERVE) => {
                connections.spawn(echo(stream, peer));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies what is read back to the writer until EOF, then shuts down the write side.
async fn echo(mut stream: TcpStream, peer: SocketAddr) {
    let (mut reader, mut writer) = stream.split();
    match tokio::io::copy(&mut reader, &mut writer).await {
        Ok(bytes) => {
            if let Err(error) = writer.shutdown().await {
                debug!(%peer, %error, "TCP echo: cannot shut down the write side");
            }
            debug!(%peer, bytes, "TCP echo connection done");
        }
        Err(error) => debug!(%peer, %error, "TCP echo connection failed"),
    }
}
