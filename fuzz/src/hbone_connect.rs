//! The HBONE server's handling of what arrives inside mutual TLS: the input is the raw
//! HTTP/2 byte stream after the client preface (frames: SETTINGS, HEADERS with the
//! `CONNECT`, DATA, RST_STREAM, …).
//!
//! One real [`hbone::Server`] (default [`ServerSettings`], so the production HTTP/2 limits)
//! listens on loopback for the whole process. Each input is one genuine mTLS connection
//! from `shop/frontend`: the preface, the input, then close_notify. Everything the server
//! does with it runs — frame parsing, method and `:authority` checks and their 405/400
//! refusals, the metadata headers, and a handler that refuses, drops or accepts by target
//! port (accepted streams echo their bytes back through [`hbone::H2Stream`]). See [`run`]
//! for how the conversation is paced.
//!
//! A server that neither answers a PING nor closes within [`CLOSE_LIMIT`] is a finding too
//! (a wedged connection any peer could repeat), so the harness panics then.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hbone::{ConnectHandler, IncomingConnect, Server, ServerSettings};
use http::StatusCode;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

/// The HTTP/2 client connection preface, sent before the input.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long one conversation may take: the server answering the PINGs, then closing once
/// the client has.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(10);

struct Harness {
    runtime: tokio::runtime::Runtime,
    server: SocketAddr,
    client: Arc<ClientConfig>,
}

/// Refuses (port ≡ 0 mod 3), drops unanswered (≡ 1: the server answers 503) or accepts
/// and echoes (≡ 2).
struct Handler;

impl ConnectHandler for Handler {
    async fn handle(&self, connect: IncomingConnect) {
        match connect.target.port() % 3 {
            0 => connect.refuse(StatusCode::FORBIDDEN, "fuzz: refused"),
            1 => drop(connect),
            _ => {
                if let Ok(stream) = connect.accept() {
                    let (mut from, mut to) = tokio::io::split(stream);
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                }
            }
        }
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = crate::runtime();
        let manager = crate::manager();
        let server_id = crate::id("shop", "backend");
        let (server, client) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("local address");
            let server = Server::new(
                server_id.clone(),
                manager.clone(),
                Handler,
                ServerSettings::default(),
            );
            tokio::spawn(server.serve(listener));
            let issued = manager
                .fetch(&crate::id("shop", "frontend"))
                .await
                .expect("a client certificate");
            let client =
                identity::client_config(&issued.cert, vec![server_id]).expect("client config");
            (addr, client)
        });
        Harness {
            runtime,
            server,
            client,
        }
    })
}

/// One input: one mTLS connection carrying `PREFACE` + the input's complete frames, then
/// two PING round trips, then close_notify.
///
/// The PINGs matter: h2 drops streams still waiting to be accepted when the peer's end of
/// the connection arrives, so a client that closed right after its HEADERS would never
/// reach the `CONNECT` handling. A PING is answered only after every frame before it was
/// processed; between the two the runtime runs the stream tasks the server spawned. A
/// trailing partial frame is dropped, since the server would wait for its rest (and swallow
/// the PING) until the client closed.
pub fn run(data: &[u8]) {
    let h = harness();
    let frames = &data[..complete_frames(data)];
    h.runtime.block_on(async {
        let tcp = TcpStream::connect(h.server)
            .await
            .expect("the HBONE server accepts on loopback");
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(h.client.clone())
            .connect(ServerName::IpAddress(h.server.ip().into()), tcp)
            .await
            .expect("the HBONE server completes mutual TLS");
        let (mut rx, mut tx) = tokio::io::split(tls);
        let conversation = async {
            let mut reader = FrameReader::default();
            if tx.write_all(PREFACE).await.is_ok() && tx.write_all(frames).await.is_ok() {
                for round in 0..2u8 {
                    let opaque = [round; 8];
                    if tx.write_all(&ping(opaque)).await.is_err()
                        || !reader.until_ping_ack(&mut rx, opaque).await
                    {
                        break;
                    }
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            let _ = tx.shutdown().await;
            reader.drain(&mut rx).await;
        };
        let answered = tokio::time::timeout(CLOSE_LIMIT, conversation).await;
        assert!(
            answered.is_ok(),
            "the HBONE server neither answered a PING nor closed the connection within {CLOSE_LIMIT:?}"
        );
    });
}

/// The length of the longest prefix of `data` made of whole HTTP/2 frames.
fn complete_frames(data: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = data.get(at..at + 9) {
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        if at + 9 + len > data.len() {
            break;
        }
        at += 9 + len;
    }
    at
}

/// A PING frame (type 6, no flags, stream 0) carrying `opaque`.
fn ping(opaque: [u8; 8]) -> [u8; 17] {
    let mut frame = [0u8; 17];
    frame[..9].copy_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
    frame[9..].copy_from_slice(&opaque);
    frame
}

/// The server's side of the conversation, read frame by frame.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads until the server acknowledges the PING `opaque` (true) or ends the
    /// connection (false).
    async fn until_ping_ack(
        &mut self,
        rx: &mut (impl AsyncReadExt + Unpin),
        opaque: [u8; 8],
    ) -> bool {
        loop {
            while let Some(end) = self
                .buf
                .get(..9)
                .map(|h| 9 + (usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2])))
            {
                if self.buf.len() < end {
                    break;
                }
                let frame: Vec<u8> = self.buf.drain(..end).collect();
                if frame[3] == 6 && frame[4] & 1 == 1 && frame[9..] == opaque {
                    return true;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match rx.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server closes.
    async fn drain(&mut self, rx: &mut (impl AsyncReadExt + Unpin)) {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = rx.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    }
}
