//! The HBONE server: accepts TCP, completes mutual TLS presenting the local identity's
//! current certificate, serves HTTP/2, and hands each valid `CONNECT` (with the verified
//! peer identity) to a [`ConnectHandler`].
//!
//! Refused cleanly, with the reason logged, and without disturbing other streams on the
//! same connection: non-`CONNECT` methods (405), authorities that are not `ip:port`
//! (400). Refused at the connection level: garbage, plain HTTP/1, TLS 1.2, missing or
//! untrusted client certificates, handshakes slower than `handshake_timeout`. HTTP/2
//! limits (concurrent streams, header list size, rapid-reset budgets) come from
//! [`ServerSettings`]. Refused streams count against a per-connection budget: a client
//! that keeps asking for what it cannot have gets `GOAWAY ENHANCE_YOUR_CALM`. Refusal
//! logs pass a [`LogGate`] (one line per second per kind, with a count of the rest), and
//! accepting survives descriptor exhaustion ([`crate::accept`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use identity::{CertificateManager, SpiffeId};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::accept::{FdReserve, LogGate, accept};
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
    budget: Arc<RefusalBudget>,
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

    /// Answers `status` (401 denied by policy, 403, 503 unreachable…). The handler logs
    /// the reason (once); `reason` goes to the debug log here. Counts against the
    /// connection's refusal budget.
    pub fn refuse(mut self, status: StatusCode, reason: &str) {
        tracing::debug!(peer = %self.peer, target = %self.target, %status, reason, "HBONE CONNECT refused");
        if let Some(mut respond) = self.respond.take() {
            self.budget.spend();
            let _ = respond.send_response(status_only(status), true);
        }
    }
}

impl Drop for IncomingConnect {
    fn drop(&mut self) {
        if let Some(mut respond) = self.respond.take() {
            self.budget.spend();
            let _ = respond.send_response(status_only(StatusCode::SERVICE_UNAVAILABLE), true);
        }
    }
}

/// Streams one connection had refused within the current window.
#[derive(Debug)]
struct RefusalBudget {
    max: u32,
    window: Duration,
    spent: Mutex<(Instant, u32)>,
}

impl RefusalBudget {
    fn new(settings: &ServerSettings) -> Self {
        Self {
            max: settings.max_refused_streams,
            window: settings.refused_streams_window,
            spent: Mutex::new((Instant::now(), 0)),
        }
    }

    fn spend(&self) {
        if let Ok(mut spent) = self.spent.lock() {
            if spent.0.elapsed() >= self.window {
                *spent = (Instant::now(), 0);
            }
            spent.1 = spent.1.saturating_add(1);
        }
    }

    fn exhausted(&self) -> bool {
        self.spent
            .lock()
            .map(|spent| spent.1 > self.max && spent.0.elapsed() < self.window)
            .unwrap_or(false)
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
enum SetupError {
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
    /// Connections closed with `GOAWAY ENHANCE_YOUR_CALM` for refusing too many streams.
    pub refusal_goaways: AtomicU64,
}

/// An HBONE server presenting one identity's certificate.
pub struct Server<H> {
    identity: SpiffeId,
    manager: CertificateManager,
    handler: Arc<H>,
    settings: ServerSettings,
    stats: Arc<ServerStats>,
    fd_reserve: Arc<FdReserve>,
    logs: LogGate,
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
            fd_reserve: Arc::default(),
            logs: LogGate::default(),
        }
    }

    /// Shares the process's spare descriptor (see [`crate::accept`]) with this server.
    #[must_use]
    pub fn with_fd_reserve(mut self, reserve: Arc<FdReserve>) -> Self {
        self.fd_reserve = reserve;
        self
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
            let (tcp, peer_addr) = accept(&listener, &shared.fd_reserve).await;
            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(shared.clone().serve_connection(tcp, peer_addr));
        }
    }

    async fn serve_connection(self: Arc<Self>, tcp: TcpStream, peer_addr: SocketAddr) {
        let (mut connection, peer, tls_summary) = match self.handshake(tcp).await {
            Ok(established) => established,
            Err(refusal) => {
                if let Some(suppressed) = self.logs.allow("handshake") {
                    tracing::info!(%peer_addr, %refusal, suppressed, "HBONE connection refused");
                }
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.stats.established.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer_addr, %peer, "HBONE connection established");
        let budget = Arc::new(RefusalBudget::new(&self.settings));
        while let Some(next) = connection.accept().await {
            match next {
                Ok((_, mut respond)) if budget.exhausted() => {
                    let _ = respond.send_response(status_only(StatusCode::TOO_MANY_REQUESTS), true);
                    self.stats.refusal_goaways.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.logs.allow("calm") {
                        tracing::warn!(%peer_addr, %peer, suppressed, limit = self.settings.max_refused_streams, window = ?self.settings.refused_streams_window, "HBONE client had too many streams refused; closing its connection (GOAWAY ENHANCE_YOUR_CALM)");
                    }
                    connection.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                    break;
                }
                Ok((request, respond)) => {
                    let this = self.clone();
                    let peer = peer.clone();
                    let tls = tls_summary.clone();
                    let budget = budget.clone();
                    tokio::spawn(async move {
                        this.serve_stream(request, respond, peer, peer_addr, tls, budget)
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
    ) -> Result<(H2Connection, SpiffeId, Arc<TlsSummary>), SetupError> {
        let _ = tcp.set_nodelay(true);
        let issued = self.manager.fetch(&self.identity).await?;
        let acceptor = TlsAcceptor::from(issued.server_config.clone());
        let limit = self.settings.handshake_timeout;
        let tls = timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| SetupError::Timeout("TLS", limit))?
            .map_err(SetupError::Tls)?;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(identity::tls::ALPN_H2) {
            return Err(SetupError::NotH2);
        }
        let peer = identity::tls::peer_identity(session.peer_certificates())?;
        let summary = Arc::new(TlsSummary::of(session));
        let connection = timeout(limit, self.h2_builder().handshake(tls))
            .await
            .map_err(|_| SetupError::Timeout("HTTP/2", limit))?
            .map_err(SetupError::H2)?;
        Ok((connection, peer, summary))
    }

    async fn serve_stream(
        &self,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        peer: SpiffeId,
        peer_addr: SocketAddr,
        tls: Arc<TlsSummary>,
        budget: Arc<RefusalBudget>,
    ) {
        if request.method() != Method::CONNECT {
            if let Some(suppressed) = self.logs.allow("method") {
                tracing::info!(%peer_addr, %peer, method = %request.method(), suppressed, "HBONE request refused: only CONNECT is served");
            }
            budget.spend();
            self.stats.malformed_streams.fetch_add(1, Ordering::Relaxed);
            let _ = respond.send_response(status_only(StatusCode::METHOD_NOT_ALLOWED), true);
            return;
        }
        let authority = request.uri().authority().map(|a| a.as_str());
        let Some(target) = authority.and_then(|a| a.parse::<SocketAddr>().ok()) else {
            if let Some(suppressed) = self.logs.allow("authority") {
                tracing::info!(%peer_addr, %peer, ?authority, suppressed, "HBONE CONNECT refused: authority must be ip:port");
            }
            budget.spend();
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
            budget,
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
