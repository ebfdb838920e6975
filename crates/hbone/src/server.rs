//! The HBONE server: accepts TCP, completes mutual TLS presenting the local identity's
//! current certificate, serves HTTP/2, and hands each valid `CONNECT` (with the verified
//! peer identity) to a [`ConnectHandler`].
//!
//! Refused cleanly, with the reason logged, and without disturbing other streams on the
//! same connection: non-`CONNECT` methods (405), authorities that are not `ip:port`
//! (400). Refused at the connection level: garbage, plain HTTP/1, TLS 1.2, missing or
//! untrusted client certificates, handshakes slower than `handshake_timeout`. HTTP/2
//! limits (concurrent streams, header list size, rapid-reset budgets) come from
//! [`ServerSettings`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use identity::{CertificateManager, SpiffeId};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::headers::HboneHeaders;
use crate::settings::{CONNECTION_WINDOW, MAX_FRAME, SEND_BUFFER, STREAM_WINDOW, ServerSettings};
use crate::stream::H2Stream;

/// Decides what a verified `CONNECT` may reach and serves it.
pub trait ConnectHandler: Send + Sync + 'static {
    /// Handles one stream: call [`IncomingConnect::accept`] and pump bytes, or
    /// [`IncomingConnect::refuse`]. Dropping it unanswered refuses with 503.
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send;
}

/// A verified `CONNECT` waiting for an answer.
pub struct IncomingConnect {
    /// The client's identity, from its verified certificate.
    pub peer: SpiffeId,
    /// The client's TCP address.
    pub peer_addr: SocketAddr,
    /// The requested destination (`:authority`).
    pub target: SocketAddr,
    /// The optional metadata headers. Never use them for authorization.
    pub headers: HboneHeaders,
    /// What the connection's TLS handshake negotiated.
    pub tls: Arc<TlsSummary>,
    respond: Option<SendResponse<Bytes>>,
    recv: Option<RecvStream>,
}

impl std::fmt::Debug for IncomingConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingConnect")
            .field("peer", &self.peer)
            .field("peer_addr", &self.peer_addr)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl IncomingConnect {
    /// Answers 200 and returns the stream carrying the tunnelled bytes.
    pub fn accept(mut self) -> Result<H2Stream, h2::Error> {
        let (Some(mut respond), Some(recv)) = (self.respond.take(), self.recv.take()) else {
            // Both are set at construction and only taken here or in Drop.
            return Err(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        };
        let send = respond.send_response(status_only(StatusCode::OK), false)?;
        Ok(H2Stream::new(send, recv, None))
    }

    /// Answers `status` (401 denied by policy, 403, 503 unreachable…), logging `reason`.
    pub fn refuse(mut self, status: StatusCode, reason: &str) {
        tracing::info!(peer = %self.peer, target = %self.target, %status, reason, "HBONE CONNECT refused");
        if let Some(mut respond) = self.respond.take() {
            let _ = respond.send_response(status_only(status), true);
        }
    }
}

impl Drop for IncomingConnect {
    fn drop(&mut self) {
        if let Some(mut respond) = self.respond.take() {
            let _ = respond.send_response(status_only(StatusCode::SERVICE_UNAVAILABLE), true);
        }
    }
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

/// The negotiated TLS parameters of a connection, for logs and the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSummary {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// e.g. `X25519MLKEM768`.
    pub key_exchange: String,
    /// Serial of the client certificate the handshake verified.
    pub peer_serial: String,
}

impl TlsSummary {
    fn of(session: &rustls::ServerConnection) -> Self {
        let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        Self {
            version: show(session.protocol_version().map(|v| format!("{v:?}"))),
            cipher_suite: show(
                session
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite())),
            ),
            key_exchange: show(
                session
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
            ),
            peer_serial: show(
                session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|leaf| identity::LeafInfo::parse(leaf).ok())
                    .map(|info| info.serial),
            ),
        }
    }
}

type H2Connection = h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>;

/// Why a connection never got to carry streams.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no certificate to present: {0}")]
    NoCertificate(#[from] identity::CertError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("{0} handshake did not finish within {1:?}")]
    Timeout(&'static str, std::time::Duration),
    #[error("the client did not negotiate ALPN h2")]
    NotH2,
    #[error("{0}")]
    PeerIdentity(#[from] identity::TlsError),
    #[error("HTTP/2 handshake failed: {0}")]
    H2(h2::Error),
}

/// Counters for operators and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Connections that completed mutual TLS and the HTTP/2 handshake.
    pub established: AtomicU64,
    /// Connections refused during TLS or HTTP/2 setup.
    pub handshake_failures: AtomicU64,
    /// `CONNECT` streams handed to the handler.
    pub streams: AtomicU64,
    /// Streams refused before the handler (bad method or authority).
    pub malformed_streams: AtomicU64,
}

/// An HBONE server presenting one identity's certificate.
pub struct Server<H> {
    identity: SpiffeId,
    manager: CertificateManager,
    handler: Arc<H>,
    settings: ServerSettings,
    stats: Arc<ServerStats>,
}

impl<H: ConnectHandler> Server<H> {
    /// A server for `identity` (its certificate comes from `manager`, renewed there).
    pub fn new(
        identity: SpiffeId,
        manager: CertificateManager,
        handler: H,
        settings: ServerSettings,
    ) -> Self {
        Self {
            identity,
            manager,
            handler: Arc::new(handler),
            settings,
            stats: Arc::default(),
        }
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Accepts connections on `listener` until the returned future is dropped. Each
    /// connection runs in its own task and outlives the accept loop.
    pub async fn serve(self, listener: TcpListener) {
        let shared = Arc::new(self);
        loop {
            match listener.accept().await {
                Ok((tcp, peer_addr)) => {
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(shared.clone().serve_connection(tcp, peer_addr));
                }
                Err(error) => {
                    // Out of descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(%error, "HBONE accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, tcp: TcpStream, peer_addr: SocketAddr) {
        let (mut connection, peer, tls_summary) = match self.handshake(tcp).await {
            Ok(established) => established,
            Err(refusal) => {
                tracing::info!(%peer_addr, %refusal, "HBONE connection refused");
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.stats.established.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer_addr, %peer, "HBONE connection established");
        while let Some(next) = connection.accept().await {
            match next {
                Ok((request, respond)) => {
                    let this = self.clone();
                    let peer = peer.clone();
                    let tls = tls_summary.clone();
                    tokio::spawn(async move {
                        this.serve_stream(request, respond, peer, peer_addr, tls)
                            .await;
                    });
                }
                Err(error) => {
                    tracing::info!(%peer_addr, %peer, %error, "HBONE connection ended with an error");
                    return;
                }
            }
        }
        // The client closed (GOAWAY): let streams in flight finish.
        let _ = std::future::poll_fn(|cx| connection.poll_closed(cx)).await;
    }

    /// Mutual TLS presenting the current certificate, then HTTP/2; both within the
    /// handshake timeout.
    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<(H2Connection, SpiffeId, Arc<TlsSummary>), Refusal> {
        let _ = tcp.set_nodelay(true);
        let issued = self.manager.fetch(&self.identity).await?;
        let acceptor = TlsAcceptor::from(issued.server_config.clone());
        let limit = self.settings.handshake_timeout;
        let tls = timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| Refusal::Timeout("TLS", limit))?
            .map_err(Refusal::Tls)?;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(identity::tls::ALPN_H2) {
            return Err(Refusal::NotH2);
        }
        let peer = identity::tls::peer_identity(session.peer_certificates())?;
        let summary = Arc::new(TlsSummary::of(session));
        let connection = timeout(limit, self.h2_builder().handshake(tls))
            .await
            .map_err(|_| Refusal::Timeout("HTTP/2", limit))?
            .map_err(Refusal::H2)?;
        Ok((connection, peer, summary))
    }

    async fn serve_stream(
        &self,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        peer: SpiffeId,
        peer_addr: SocketAddr,
        tls: Arc<TlsSummary>,
    ) {
        if request.method() != Method::CONNECT {
            tracing::info!(%peer_addr, %peer, method = %request.method(), "HBONE request refused: only CONNECT is served");
            self.stats.malformed_streams.fetch_add(1, Ordering::Relaxed);
            let _ = respond.send_response(status_only(StatusCode::METHOD_NOT_ALLOWED), true);
            return;
        }
        let authority = request.uri().authority().map(|a| a.as_str());
        let Some(target) = authority.and_then(|a| a.parse::<SocketAddr>().ok()) else {
            tracing::info!(%peer_addr, %peer, ?authority, "HBONE CONNECT refused: authority must be ip:port");
            self.stats.malformed_streams.fetch_add(1, Ordering::Relaxed);
            let _ = respond.send_response(status_only(StatusCode::BAD_REQUEST), true);
            return;
        };
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        let headers = HboneHeaders::from_map(request.headers());
        let connect = IncomingConnect {
            peer,
            peer_addr,
            target,
            headers,
            tls,
            respond: Some(respond),
            recv: Some(request.into_body()),
        };
        self.handler.handle(connect).await;
    }

    fn h2_builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(SEND_BUFFER)
            .max_concurrent_streams(self.settings.max_concurrent_streams)
            .max_header_list_size(self.settings.max_header_list_size)
            .max_pending_accept_reset_streams(self.settings.max_pending_accept_reset_streams)
            .max_local_error_reset_streams(Some(self.settings.max_local_error_reset_streams));
        builder
    }
}
