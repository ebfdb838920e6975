//! Accepting a tunnel: a verified `CONNECT` from a mesh peer, whose `:authority` is the
//! original destination (a service VIP:port or a pod IP:port) and whose `forwarded`
//! header names the original client. The peer must be of this mesh's trust domain and the
//! destination one this waypoint knows; then the protocol is what the service port
//! declares (`appProtocol` or its name's prefix: `http`, `http2`, `grpc` → HTTP; `tcp`,
//! `tls` → TCP), else the first bytes decide: an HTTP/1.x request line or the HTTP/2
//! preface is served as HTTP ([`crate::request`]); anything else — or nothing within
//! [`DETECT_WITHIN`], for protocols where the server speaks first — is proxied as TCP, with the L7 policies evaluated on what L4 can see
//! (an ALLOW rule that needs HTTP matches nothing, a DENY rule denies on its L4 part).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hbone::{ConnectHandler, IncomingConnect};
use http::StatusCode;
use identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::app::Shared;
use crate::upstream::{self, RouteError};

/// How long the client has to send its first bytes before the tunnel is taken as TCP.
pub const DETECT_WITHIN: Duration = Duration::from_millis(300);

/// What one tunnel (or, at an ingress gateway, one client connection) is: who, from
/// where, to where.
#[derive(Debug)]
pub struct Tunnel {
    /// The peer's verified identity (the source workload, via its ztunnel); `None` for an
    /// outside client of an ingress gateway.
    pub peer: Option<SpiffeId>,
    /// The peer's address (the source pod: its ztunnel dials from the pod).
    pub peer_addr: SocketAddr,
    /// The original destination.
    pub target: SocketAddr,
    /// The original client, from `forwarded` (else the peer's address).
    pub client: IpAddr,
    /// At an ingress gateway: the listener port the client came in on.
    pub ingress: Option<IngressPort>,
}

/// The ingress gateway port a client connection came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPort {
    /// The port (its route table).
    pub port: u16,
    /// Whether TLS was terminated (the request's scheme is https).
    pub tls: bool,
}

impl Tunnel {
    /// The peer's identity for logs and metrics (`-` for an outside client).
    pub fn peer_name(&self) -> String {
        self.peer
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }
}

/// The HBONE handler.
#[derive(Clone)]
pub struct Handler {
    /// Shared state.
    pub shared: Arc<Shared>,
}

impl ConnectHandler for Handler {
    async fn handle(&self, connect: IncomingConnect) {
        let shared = self.shared.clone();
        let _live = shared.metrics.live();
        if connect.peer.trust_domain() != shared.identity.trust_domain() {
            let reason = format!(
                "peer {} is not of trust domain {}",
                connect.peer,
                shared.identity.trust_domain()
            );
            tracing::warn!(peer = %connect.peer, target = %connect.target, "{reason}");
            connect.refuse(StatusCode::UNAUTHORIZED, &reason);
            return;
        }
        let snap = shared.state.load();
        if !upstream::known(&snap, connect.target) {
            let error = RouteError::UnknownDestination(connect.target);
            tracing::info!(peer = %connect.peer, target = %connect.target, %error, "tunnel refused");
            connect.refuse(StatusCode::BAD_REQUEST, &error.to_string());
            return;
        }
        let client = connect
            .headers
            .forwarded
            .as_deref()
            .and_then(forwarded_for)
            .unwrap_or(connect.peer_addr.ip());
        let tunnel = Arc::new(Tunnel {
            peer: Some(connect.peer.clone()),
            peer_addr: connect.peer_addr,
            target: connect.target,
            client,
            ingress: None,
        });
        let stream = match connect.accept() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "tunnel closed before it was answered");
                return;
            }
        };
        match declared(&snap, tunnel.target) {
            Declared::Http => crate::request::serve(shared.clone(), tunnel, stream).await,
            Declared::Tcp => crate::request::tcp(shared.clone(), tunnel, stream).await,
            Declared::Unknown => {
                let (http, stream) = detect(stream).await;
                match stream {
                    Ok(stream) if http => {
                        crate::request::serve(shared.clone(), tunnel, stream).await;
                    }
                    Ok(stream) => crate::request::tcp(shared.clone(), tunnel, stream).await,
                    Err(error) => {
                        tracing::debug!(%error, "tunnel closed during protocol detection")
                    }
                }
            }
        }
    }
}

/// What the destination port says it speaks.
enum Declared {
    Http,
    Tcp,
    Unknown,
}

fn declared(snap: &ztunnel::state::Snapshot, target: SocketAddr) -> Declared {
    use ztunnel::state::AppProtocol;
    let port = snap
        .service_by_vip(target.ip())
        .and_then(|s| s.ports.iter().find(|p| p.service_port == target.port()));
    match port.map(|p| p.protocol) {
        Some(AppProtocol::Http | AppProtocol::Http2 | AppProtocol::Grpc) => Declared::Http,
        Some(AppProtocol::Tcp | AppProtocol::Tls) => Declared::Tcp,
        Some(AppProtocol::Unknown) | None => Declared::Unknown,
    }
}

/// The address in `for=…` of a `forwarded` header (first element).
fn forwarded_for(header: &str) -> Option<IpAddr> {
    let first = header.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        if !key.eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim_matches('"');
        let value = value
            .strip_prefix('[')
            .and_then(|v| v.split_once(']').map(|(ip, _)| ip))
            .unwrap_or(value);
        value.parse().ok()
    })
}

/// Request-line starts and the HTTP/2 preface.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2.0",
];

/// Reads the first bytes of `stream`: whether they are HTTP, and the stream with them
/// put back in front.
async fn detect<S: AsyncRead + Unpin>(mut stream: S) -> (bool, io::Result<Prefixed<S>>) {
    let mut buf = BytesMut::with_capacity(16);
    let deadline = tokio::time::Instant::now() + DETECT_WITHIN;
    let http = loop {
        let candidates = HTTP_STARTS
            .iter()
            .filter(|start| start.starts_with(&buf) || buf.starts_with(start));
        let mut any = false;
        let mut complete = false;
        for start in candidates {
            any = true;
            complete |= buf.starts_with(start);
        }
        if complete {
            break true;
        }
        if !any {
            break false;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break false,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return (false, Err(error)),
        }
    };
    (
        http,
        Ok(Prefixed {
            prefix: buf.freeze(),
            inner: stream,
        }),
    )
}

/// A stream whose first bytes were already read: they are served again first.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detected(bytes: &'static [u8]) -> (bool, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, bytes)
            .await
            .unwrap();
        drop(client);
        let (http, stream) = detect(server).await;
        let mut all = Vec::new();
        stream.unwrap().read_to_end(&mut all).await.unwrap();
        (http, all)
    }

    #[tokio::test]
    async fn http_request_lines_and_the_h2_preface_are_http_and_nothing_is_lost() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"POST /upload HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (http, all) = detected(bytes).await;
            assert!(http, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(all, bytes);
        }
    }

    #[tokio::test]
    async fn other_bytes_and_silence_are_tcp() {
        let (http, all) = detected(b"\x16\x03\x01\x02\x00hello").await;
        assert!(!http);
        assert_eq!(all, b"\x16\x03\x01\x02\x00hello");
        let (http, all) = detected(b"GE").await;
        assert!(!http, "a stream that ends mid-method is not HTTP");
        assert_eq!(all, b"GE");
        let (_client, server) = tokio::io::duplex(64);
        let started = std::time::Instant::now();
        let (http, _) = detect(server).await;
        assert!(!http && started.elapsed() >= DETECT_WITHIN);
    }

    #[test]
    fn forwarded_for_reads_v4_and_bracketed_v6() {
        assert_eq!(forwarded_for("for=10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(
            forwarded_for("for=\"[fd00::1]:4711\";proto=http, for=1.2.3.4"),
            "fd00::1".parse().ok()
        );
        assert_eq!(forwarded_for("by=1.2.3.4"), None);
    }
}
