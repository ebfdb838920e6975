//! One request through the waypoint, in phases: **authorize** (the L7 policies attached
//! to this waypoint, its Gateway class, or the destination Service; DENY → `403 RBAC:
//! access denied`) → **route** (an endpoint of the destination) → **forward** (hop-by-hop
//! headers dropped, `x-request-id` added when missing, bodies streamed both ways without
//! buffering, `Upgrade` passed through) → **respond and log** (Istio's request metrics and
//! one access-log line when the response body ends, or when the client goes away).
//!
//! Routing: a service with a route table (HTTPRoute/GRPCRoute) goes by its first matching
//! entry — redirect answered here, or a weighted backend with header changes, rewrite,
//! mirrors (a copy of the request, body included, that never slows the original),
//! timeouts (request and per attempt) and retries (bodyless requests, another endpoint
//! each time); a service without one goes to its own endpoints. An endpoint is chosen by
//! least request.
//!
//! Every local answer comes from one mapping ([`Refusal`]): no route 404 `NR`, no healthy
//! endpoint 503 `UH`, connect failure 503 `UF`, upstream reset before a response 503 `UC`,
//! timeout 504 `UT`, denied 403; `URX` is added when retries ran out. Opaque TCP tunnels
//! ([`tcp`]) are authorized on what L4 can see and pumped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version as HttpVersion};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use policy::{Decision, HttpRequest, L4Request};
use ztunnel::metrics::TcpLabels;
use ztunnel::state::{AppProtocol, Snapshot};

use crate::app::Shared;
use crate::inbound::Tunnel;
use crate::metrics::RequestLabels;
use crate::policies::PolicyStore;
use crate::routes::{self, Action, Attempt, Backend, PathRewrite, RequestView};
use crate::upstream::{self, Endpoint, Io, RouteError, SendError, Version};
use mirror::mirror;
use route::{forward, redirected, route, shape};
use upstream::random;

/// Body of responses sent downstream.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// A slow client has this long to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most concurrent HTTP/2 streams per downstream connection.
pub const MAX_STREAMS: u32 = 1000;

/// Serves HTTP (1.1 or h2, detected) on one tunnel until it closes.
pub async fn serve<S: Io>(shared: Arc<Shared>, tunnel: Arc<Tunnel>, stream: S) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_pending_accept_reset_streams(50)
        .max_local_error_reset_streams(256);
    let service = hyper::service::service_fn(move |req| {
        let (shared, tunnel) = (shared.clone(), tunnel.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &tunnel, req).await) }
    });
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "downstream HTTP connection ended with an error");
    }
}

/// Why the waypoint answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An L7 policy denied it.
    Denied {
        /// The deciding policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// The destination has no route.
    NoRoute(String),
    /// The destination service has no healthy endpoint.
    NoHealthyUpstream(String),
    /// The endpoint could not be reached.
    ConnectFailed(String),
    /// The endpoint reset the connection before answering.
    UpstreamReset(String),
    /// No response within the route's timeout.
    Timeout(String),
    /// The matched rule has no backend with weight.
    NoBackend(String),
    /// The destination's limit of requests in flight is reached (circuit breaking).
    Overflow(String),
}

impl Refusal {
    /// The status, Istio's response flag and the body the client gets.
    pub fn answer(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Denied { .. } => (StatusCode::FORBIDDEN, "-", "RBAC: access denied"),
            Self::NoRoute(_) => (StatusCode::NOT_FOUND, "NR", "no route to the destination"),
            Self::NoHealthyUpstream(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UH", "no healthy upstream")
            }
            Self::ConnectFailed(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                "upstream connect error",
            ),
            Self::UpstreamReset(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UC",
                "upstream reset before response",
            ),
            Self::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                "upstream request timeout",
            ),
            Self::NoBackend(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "NR",
                "the route has no backend",
            ),
            Self::Overflow(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UO",
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Denied { policy, reason } => format!("{reason} ({policy})"),
            Self::NoRoute(d)
            | Self::NoHealthyUpstream(d)
            | Self::ConnectFailed(d)
            | Self::UpstreamReset(d)
            | Self::Timeout(d)
            | Self::NoBackend(d)
            | Self::Overflow(d) => d.clone(),
        }
    }
}

impl From<RouteError> for Refusal {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::NoHealthyUpstream(_) => Self::NoHealthyUpstream(error.to_string()),
            RouteError::UnknownBackend(_) => Self::NoBackend(error.to_string()),
            RouteError::UnknownDestination(_) | RouteError::ServicePort { .. } => {
                Self::NoRoute(error.to_string())
            }
        }
    }
}

/// What the log line and the metrics of one request need, filled as it goes.
struct Exchange {
    started: Instant,
    method: http::Method,
    path: String,
    protocol: &'static str,
    request_id: String,
    labels: RequestLabels,
    upstream: Option<SocketAddr>,
    request_bytes: Arc<AtomicU64>,
    detail: Option<String>,
    /// Counts the request in flight to its endpoint until the exchange ends.
    active: Option<upstream::Active>,
    /// Counts it against its destination's limit until the exchange ends.
    in_flight: Option<upstream::InFlight>,
}

async fn handle(
    shared: &Arc<Shared>,
    tunnel: &Tunnel,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let snap = shared.state.load();
    // At an ingress gateway the destination is what the route says, not the address.
    let service = match tunnel.ingress {
        Some(_) => None,
        None => upstream::service_of(&snap, tunnel.target),
    };
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(new_request_id, str::to_owned);
    let mut exchange = Exchange {
        started: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        protocol: if grpc { "grpc" } else { "http" },
        request_id,
        labels: labels(shared, &snap, tunnel, service.as_deref(), grpc),
        upstream: None,
        request_bytes: Arc::new(AtomicU64::new(0)),
        detail: None,
        active: None,
        in_flight: None,
    };

    // Authorize.
    if let Err(refusal) = authorize(shared, tunnel, service.as_deref(), &req) {
        return local(shared, exchange, &refusal);
    }
    // Route.
    let mut route = match route(shared, &snap, tunnel, service.as_deref(), &req) {
        Ok(route) => route,
        Err(refusal) => return local(shared, exchange, &refusal),
    };
    let matched_prefix = route
        .matched_prefix
        .as_ref()
        .map(|(p, plain)| (p.as_str(), *plain));
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(action) = &route.action {
        if let Some(cors) = &action.cors {
            exchange = match answer::preflight(shared, exchange, cors, &req) {
                Ok(exchange) => exchange,
                Err(answered) => return *answered,
            };
        }
        if let Some(fault) = &action.fault {
            exchange = match answer::inject(shared, exchange, fault).await {
                Ok(exchange) => exchange,
                Err(aborted) => return *aborted,
            };
        }
        if let Some(redirect) = &action.redirect {
            return redirected(shared, exchange, &req, redirect, matched_prefix);
        }
        if let Some((status, body)) = &action.direct_response {
            return answer::direct(shared, exchange, *status, body);
        }
    }
    let Some(endpoint) = route.endpoint.clone() else {
        return local(shared, exchange, &Refusal::NoRoute("no endpoint".into()));
    };
    exchange.upstream = Some(endpoint.addr);
    exchange.in_flight = route.in_flight.take();
    exchange.active = Some(shared.load.start(endpoint.addr));
    exchange.labels.peers =
        std::mem::take(&mut exchange.labels.peers).with_destination(&endpoint.workload);
    // Forward.
    // HTTP/2 upstream for h2 clients and for ports that say they speak it (gRPC): the
    // destination's port, or at an ingress gateway the backend's.
    let (declared, port) = match (&tunnel.ingress, &route.backend) {
        (Some(_), Some(b)) => (
            endpoint.service.as_deref(),
            b.target.port_for(tunnel.target.port()),
        ),
        _ => (service.as_deref(), tunnel.target.port()),
    };
    let declared_h2 = declared.is_some_and(|s| {
        s.ports.iter().any(|p| {
            p.service_port == port && matches!(p.protocol, AppProtocol::Http2 | AppProtocol::Grpc)
        })
    });
    let version = if req.version() == HttpVersion::HTTP_2 || declared_h2 {
        Version::H2
    } else {
        Version::H1
    };
    let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let mut request = prepare(req, &exchange, version, upgrade.is_some());
    if let Some(ingress) = &tunnel.ingress {
        add_forwarding_headers(&mut request, tunnel.client, ingress.tls);
    }
    if let Some(action) = &route.action {
        shape(&mut request, action, route.backend.as_ref(), matched_prefix);
        mirror(shared, tunnel, &snap, action, &mut request, version);
    }
    let forwarded = forward(
        shared,
        tunnel,
        &snap,
        &route,
        endpoint.clone(),
        version,
        request,
    )
    .await;
    if forwarded.retries_exhausted {
        exchange.labels.peers.response_flags = "URX".into();
    }
    let mut response = match forwarded.outcome {
        Ok(response) => response,
        Err(refusal) => return local(shared, exchange, &refusal),
    };
    if let Some(action) = &route.action {
        action.response_headers.apply(response.headers_mut());
        if let Some(backend) = &route.backend {
            backend.response_headers.apply(response.headers_mut());
        }
        if let Some(cors) = &action.cors {
            answer::cors_headers(cors, origin.as_ref(), response.headers_mut());
        }
    }
    if let Some(downstream) = upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(pump_upgraded(downstream, upstream, endpoint));
    }
    respond(shared, exchange, response)
}

/// Decides the request against the L7 policies that apply through this waypoint.
fn authorize(
    shared: &Shared,
    tunnel: &Tunnel,
    service: Option<&ztunnel::state::Service>,
    req: &Request<Incoming>,
) -> Result<(), Refusal> {
    let host = host_of(req);
    let request = policy::Request {
        l4: l4_request(tunnel),
        http: Some(HttpRequest {
            host,
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
            remote_ip: tunnel.client,
        }),
    };
    decide(shared, service, tunnel.ingress.is_some(), &request)
}

fn l4_request(tunnel: &Tunnel) -> L4Request<'_> {
    L4Request {
        source_identity: tunnel.peer.as_ref(),
        source_ip: tunnel.peer_addr.ip(),
        destination_ip: tunnel.target.ip(),
        destination_port: tunnel.target.port(),
    }
}

fn decide(
    shared: &Shared,
    service: Option<&ztunnel::state::Service>,
    at_ingress: bool,
    request: &policy::Request<'_>,
) -> Result<(), Refusal> {
    let policies = shared.policies.load();
    let gateway = (shared.gateway.0.as_str(), shared.gateway.1.as_str());
    let service = service.map(|s| (s.namespace.as_str(), s.name.as_str()));
    let verdict = policy::evaluate_request(
        PolicyStore::applying(&policies, gateway, service, at_ingress),
        request,
    );
    for name in &verdict.dry_run_matches {
        tracing::info!(policy = %name, target = %request.l4.destination_ip, "dry-run policy matched");
    }
    match verdict.decision {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny { by, reason } => Err(Refusal::Denied { policy: by, reason }),
    }
}

/// The request's host: `:authority` (h2, absolute form) or `Host`, without the port.
fn host_of<B>(req: &Request<B>) -> &str {
    req.uri()
        .host()
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(strip_port)
        })
        .unwrap_or_default()
}

/// `host:port` → `host` (a bracketed IPv6 keeps its brackets off).
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Istio's labels for this request, before the destination endpoint is known.
fn labels(
    shared: &Shared,
    snap: &Snapshot,
    tunnel: &Tunnel,
    service: Option<&ztunnel::state::Service>,
    grpc: bool,
) -> RequestLabels {
    // An ingress gateway reports as the source of the request, as Istio's gateways do.
    let ingress = tunnel.ingress.is_some();
    let mut peers = TcpLabels {
        reporter: if ingress { "source" } else { "waypoint" }.into(),
        source_principal: tunnel
            .peer
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string),
        request_protocol: if grpc { "grpc" } else { "http" }.into(),
        response_flags: "-".into(),
        connection_security_policy: if ingress { "none" } else { "mutual_tls" }.into(),
        ..TcpLabels::default()
    };
    if let Some(source) = snap.workload_by_ip(tunnel.peer_addr.ip()) {
        peers = peers.with_source(source);
    }
    if let Some(service) = service {
        peers.destination_service = service.hostname.clone();
        peers.destination_service_name = service.name.clone();
        peers.destination_service_namespace = service.namespace.clone();
    }
    let _ = shared;
    RequestLabels {
        peers,
        response_code: String::new(),
        grpc_response_status: if grpc { String::new() } else { "-".into() },
    }
}

/// Hop-by-hop headers: they describe one connection and are not forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
];

/// The headers of `headers` that describe one connection: the fixed hop-by-hop ones and
/// those `Connection` names (but `Upgrade`, which an upgrade carries through).
fn hop_by_hop(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| *name != header::UPGRADE);
    named.chain(HOP_BY_HOP.iter().cloned()).collect()
}

fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as it goes upstream.
fn prepare(
    req: Request<Incoming>,
    exchange: &Exchange,
    version: Version,
    upgrade: bool,
) -> Request<upstream::RequestBody> {
    let (mut parts, body) = req.into_parts();
    for name in hop_by_hop(&parts.headers) {
        parts.headers.remove(name);
    }
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        parts.headers.remove(header::UPGRADE);
    }
    if !parts.headers.contains_key("x-request-id")
        && let Ok(id) = HeaderValue::from_str(&exchange.request_id)
    {
        parts.headers.insert("x-request-id", id);
    }
    match version {
        Version::H2 => parts.version = HttpVersion::HTTP_2,
        Version::H1 => {
            parts.version = HttpVersion::HTTP_11;
            // HTTP/1.1 needs Host; an h2 request carries it in :authority.
            if !parts.headers.contains_key(header::HOST)
                && let Some(authority) = parts.uri.authority()
                && let Ok(host) = HeaderValue::from_str(authority.as_str())
            {
                parts.headers.insert(header::HOST, host);
            }
            // Origin form upstream.
            if let Some(path) = parts.uri.path_and_query().cloned() {
                parts.uri = http::Uri::from(path);
            }
        }
    }
    let counted = Counted {
        inner: body,
        count: exchange.request_bytes.clone(),
        on_end: None,
        grpc_status: None,
    };
    Request::from_parts(parts, counted.map_err(upstream::BoxError::from).boxed())
}

/// What an ingress gateway adds for the backend: the client's address appended to
/// `x-forwarded-for`, and `x-forwarded-proto` (the scheme the client used).
fn add_forwarding_headers<B>(request: &mut Request<B>, client: std::net::IpAddr, tls: bool) {
    let headers = request.headers_mut();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
}

/// The upstream response, counted and logged when its body ends.
fn respond(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    response: Response<Incoming>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    for name in hop_by_hop(&parts.headers) {
        if !(switching && name == header::CONNECTION) {
            parts.headers.remove(name);
        }
    }
    exchange.labels.response_code = parts.status.as_u16().to_string();
    if let Some(status) = parts
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        exchange.labels.grpc_response_status = status.to_owned();
    }
    let body = finishing(shared, exchange, body);
    Response::from_parts(parts, body)
}

/// Adds Istio response flag `flag` to the exchange's (`-` when none).
fn add_flag(exchange: &mut Exchange, flag: &str) {
    let flags = &mut exchange.labels.peers.response_flags;
    *flags = match flags.as_str() {
        "-" => flag.to_owned(),
        earlier => format!("{earlier},{flag}"),
    };
}

/// A response the waypoint makes itself.
fn local(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    refusal: &Refusal,
) -> Response<ResponseBody> {
    let (status, flags, text) = refusal.answer();
    exchange.labels.response_code = status.as_u16().to_string();
    add_flag(&mut exchange, flags);
    if exchange.protocol == "grpc" {
        exchange.labels.grpc_response_status = "14".into();
    }
    exchange.detail = Some(refusal.detail());
    let body = Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {});
    let mut response = Response::new(finishing(shared, exchange, body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// `body`, recording the exchange (metrics, access log) once it ends or is dropped.
fn finishing<B>(shared: &Arc<Shared>, mut exchange: Exchange, body: B) -> ResponseBody
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static,
{
    let shared = shared.clone();
    let on_end: OnEnd = Box::new(move |bytes, complete, grpc_status| {
        if let Some(status) = grpc_status {
            exchange.labels.grpc_response_status = status;
        }
        finish(&shared, exchange, bytes, complete);
    });
    Counted {
        inner: body,
        count: Arc::new(AtomicU64::new(0)),
        on_end: Some(on_end),
        grpc_status: None,
    }
    .boxed()
}

fn finish(shared: &Shared, mut exchange: Exchange, response_bytes: u64, complete: bool) {
    if !complete && exchange.labels.peers.response_flags == "-" {
        // The client went away before the response ended.
        exchange.labels.peers.response_flags = "DC".into();
    }
    let millis = exchange.started.elapsed().as_secs_f64() * 1e3;
    let request_bytes = exchange.request_bytes.load(Ordering::Relaxed);
    shared
        .metrics
        .request(&exchange.labels, millis, request_bytes, response_bytes);
    let l = &exchange.labels;
    tracing::info!(
        target: "access",
        method = %exchange.method,
        path = %exchange.path,
        protocol = exchange.protocol,
        status = %l.response_code,
        flags = %l.peers.response_flags,
        duration_ms = format_args!("{millis:.2}"),
        upstream = %exchange.upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        src = %l.peers.source_principal,
        dst = %l.peers.destination_service,
        dst_principal = %l.peers.destination_principal,
        request_id = %exchange.request_id,
        bytes_in = request_bytes,
        bytes_out = response_bytes,
        detail = exchange.detail.as_deref().unwrap_or("-"),
        "request"
    );
}

/// Called once when a body ends: (data bytes, whether it completed, `grpc-status` from
/// its trailers).
type OnEnd = Box<dyn FnOnce(u64, bool, Option<String>) + Send + Sync>;

/// A body that counts its data bytes, notes a `grpc-status` trailer, and calls `on_end`
/// once: when it ends, or when it is dropped before.
struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
    grpc_status: Option<String>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let Some(status) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                {
                    self.grpc_status = Some(status.to_owned());
                }
                // A body of known length is not polled past its last byte.
                if self.inner.is_end_stream() {
                    self.end(true);
                }
            }
            Poll::Ready(None) => self.end(true),
            Poll::Ready(Some(Err(_))) => self.end(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Counted<B> {
    /// Calls `on_end` once.
    fn end(&mut self, complete: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end(
                self.count.load(Ordering::Relaxed),
                complete,
                self.grpc_status.take(),
            );
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// After `101 Switching Protocols`: bytes both ways between the client and the endpoint.
async fn pump_upgraded(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    endpoint: Endpoint,
) {
    match tokio::try_join!(downstream, upstream) {
        Ok((down, up)) => {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            if let Err(error) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(upstream = %endpoint.addr, %error, "upgraded connection ended");
            }
        }
        Err(error) => tracing::debug!(upstream = %endpoint.addr, %error, "upgrade failed"),
    }
}

/// A fresh `x-request-id` (UUID-shaped, random).
fn new_request_id() -> String {
    let (a, b) = (random(), random());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// An opaque TCP tunnel: authorized on its L4 attributes, then pumped to an endpoint.
pub async fn tcp<S: Io>(shared: Arc<Shared>, tunnel: Arc<Tunnel>, mut stream: S) {
    let snap = shared.state.load();
    let service = upstream::service_of(&snap, tunnel.target);
    let mut labels = labels(&shared, &snap, &tunnel, service.as_deref(), false).peers;
    labels.request_protocol = "tcp".into();
    let request = policy::Request {
        l4: l4_request(&tunnel),
        http: None,
    };
    if let Err(refusal) = decide(&shared, service.as_deref(), false, &request) {
        tracing::info!(target: "access", peer = %tunnel.peer_name(), target = %tunnel.target, detail = %refusal.detail(), "tcp connection denied");
        return;
    }
    // A VirtualService `tcp` route picks a weighted backend; else the service's own
    // endpoints.
    let tables = shared.policies.routes();
    let source_uid = snap
        .workload_by_ip(tunnel.peer_addr.ip())
        .map(|w| w.uid.as_str());
    let routed = service
        .as_deref()
        .and_then(|s| tables.get(&(s.namespace.clone(), s.name.clone())))
        .and_then(|t| {
            t.find_tcp(
                tunnel.target.port(),
                source_uid,
                tunnel.peer.as_ref().map_or("", |p| p.namespace()),
            )
        });
    let chosen = match routed {
        Some(entry) => match entry.action.backend(random()) {
            Some(backend) => upstream::choose_backend(
                &snap,
                &shared.load,
                &backend.target,
                tunnel.target.port(),
                None,
            ),
            None => {
                tracing::info!(target: "access", peer = %tunnel.peer_name(), target = %tunnel.target, route = %entry.route, rule = entry.rule, "tcp connection refused: the route has no backend with weight");
                return;
            }
        },
        None => upstream::choose(&snap, &shared.load, tunnel.target),
    };
    let endpoint = match chosen {
        Ok(endpoint) => endpoint,
        Err(error) => {
            tracing::info!(target: "access", peer = %tunnel.peer_name(), target = %tunnel.target, %error, "tcp connection without a route");
            return;
        }
    };
    labels = labels.with_destination(&endpoint.workload);
    let _active = shared.load.start(endpoint.addr);
    let mut upstream = match shared.connector.connect(&endpoint, tunnel.client).await {
        Ok(upstream) => upstream,
        Err(error) => {
            labels.response_flags = "UF".into();
            shared.metrics.tcp_opened.get_or_create(&labels).inc();
            shared.metrics.tcp_closed.get_or_create(&labels).inc();
            tracing::info!(target: "access", peer = %tunnel.peer_name(), target = %tunnel.target, %error, "tcp connection failed");
            return;
        }
    };
    shared.metrics.tcp_opened.get_or_create(&labels).inc();
    let started = Instant::now();
    let moved = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    let (sent, received) = moved.as_ref().map_or((0, 0), |(a, b)| (*a, *b));
    shared.metrics.tcp_sent.get_or_create(&labels).inc_by(sent);
    shared
        .metrics
        .tcp_received
        .get_or_create(&labels)
        .inc_by(received);
    shared.metrics.tcp_closed.get_or_create(&labels).inc();
    tracing::info!(
        target: "access",
        protocol = "tcp",
        src = %labels.source_principal,
        upstream = %endpoint.addr,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_sent = sent,
        bytes_received = received,
        error = %moved.err().map_or_else(|| "-".to_owned(), |e| e.to_string()),
        "connection"
    );
}

mod answer;
mod mirror;
mod route;
#[cfg(test)]
mod tests;
