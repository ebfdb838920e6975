//! Where a request goes and how it gets there: the original destination (a service VIP or
//! a pod address, from the tunnel's `:authority`) resolved to one endpoint — least request
//! over the service's healthy endpoints (the fewer in flight of two drawn at random, as
//! Envoy's default) or what the destination's DestinationRule asks (round robin, random,
//! a consistent hash), never an endpoint outlier detection has ejected, and within the
//! destination's limit of requests in flight (circuit breaking); the target port from
//! the endpoint's own mapping
//! — then reached over HBONE from the pool under the waypoint's identity (or plain TCP for
//! an endpoint outside the mesh). HTTP connections to an endpoint are kept and reused:
//! HTTP/1.1 one request at a time per connection, HTTP/2 multiplexed, per original
//! client (the tunnel carries it); a kept connection unused for [`IDLE_FOR`] is closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use hbone::{ConnectRequest, HboneHeaders, Pool, PoolKey};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use ztunnel::state::{PortMapping, Service, Snapshot, TunnelProtocol, Workload};

use crate::routes::{Attempt, Balance, Policy};

/// Body of requests sent upstream: the client's (counted, maybe copied to mirrors), a
/// mirror's copy, or none.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// Why a request body stopped: the client's connection failed, or a mirror's copy fell
/// behind.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why no endpoint was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Neither a service VIP nor a pod address this waypoint knows.
    #[error("{0} is neither a service nor a workload in the mesh")]
    UnknownDestination(SocketAddr),
    /// The service has no such port.
    #[error("service {service} has no port {port}")]
    ServicePort {
        /// `namespace/hostname`.
        service: String,
        /// The port asked for.
        port: u16,
    },
    /// A route's backend is no service the waypoint knows.
    #[error("backend service {0} is not in the mesh")]
    UnknownBackend(String),
    /// The service has no healthy endpoint with an address.
    #[error("service {0} has no healthy endpoint")]
    NoHealthyUpstream(String),
}

/// The chosen endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The destination service, when the request was for one.
    pub service: Option<Arc<Service>>,
    /// The workload.
    pub workload: Arc<Workload>,
    /// `ip:port` on the workload — or, through a waypoint, the service's `VIP:port`
    /// (the tunnel's authority).
    pub addr: SocketAddr,
    /// Reached through a waypoint: its HBONE address (`workload` is then the waypoint's).
    pub via: Option<SocketAddr>,
}

/// The service behind `original`, if it is a VIP.
pub fn service_of(snap: &Snapshot, original: SocketAddr) -> Option<Arc<Service>> {
    snap.service_by_vip(original.ip()).cloned()
}

/// Whether `original` is a service VIP or a workload address of the mesh (without
/// choosing an endpoint: that would move the round robin).
pub fn known(snap: &Snapshot, original: SocketAddr) -> bool {
    snap.service_by_vip(original.ip()).is_some() || snap.workload_by_ip(original.ip()).is_some()
}

/// Requests (and TCP connections) in flight to each endpoint, for least-request choice;
/// and per destination with a DestinationRule: requests in flight (circuit breaking), the
/// round-robin turn, and each endpoint's outlier state.
#[derive(Debug, Default)]
pub struct Load {
    active: DashMap<SocketAddr, Arc<AtomicU64>>,
    destinations: DashMap<String, Arc<DestinationState>>,
    outliers: DashMap<(String, SocketAddr), Arc<OutlierState>>,
}

/// What a destination with a policy keeps.
#[derive(Debug, Default)]
struct DestinationState {
    in_flight: AtomicU32,
    turn: AtomicU64,
    /// Endpoints seen at the last choice (for the ejection limit).
    endpoints: AtomicU32,
}

/// One endpoint's errors in a row and ejection.
#[derive(Debug, Default)]
struct OutlierState {
    errors_5xx: AtomicU32,
    errors_gateway: AtomicU32,
    ejections: AtomicU32,
    /// Ejected until this many milliseconds after [`epoch`].
    until_ms: AtomicU64,
}

/// The clock outlier ejections are kept in.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A request counted against its destination's limit until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<DestinationState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The destination's limit of requests in flight is reached (`UO`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{destination}: {limit} requests in flight, the DestinationRule's limit")]
pub struct Overflow {
    /// `namespace/hostname/subset`.
    pub destination: String,
    /// The limit.
    pub limit: u32,
}

/// One request in flight to an endpoint, until dropped.
#[derive(Debug)]
pub struct Active(Arc<AtomicU64>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    /// Counts a request to `addr` in flight until the returned guard is dropped.
    pub fn start(&self, addr: SocketAddr) -> Active {
        let count = self.active.entry(addr).or_default().clone();
        count.fetch_add(1, Ordering::Relaxed);
        Active(count)
    }

    fn in_flight(&self, addr: &SocketAddr) -> u64 {
        self.active
            .get(addr)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Forgets endpoints with nothing in flight (run with the connection sweep).
    pub fn sweep(&self) {
        self.active
            .retain(|_, count| Arc::strong_count(count) > 1 || count.load(Ordering::Relaxed) > 0);
        let now = now_ms();
        self.outliers.retain(|_, o| {
            o.until_ms.load(Ordering::Relaxed) > now
                || o.errors_5xx.load(Ordering::Relaxed) > 0
                || o.errors_gateway.load(Ordering::Relaxed) > 0
                || o.ejections.load(Ordering::Relaxed) > 0
        });
    }

    fn destination(&self, policy: &Policy) -> Arc<DestinationState> {
        self.destinations
            .entry(policy.destination.clone())
            .or_default()
            .clone()
    }

    /// Counts a request against the destination's limit, or refuses it (`UO`).
    pub fn admit(&self, policy: &Policy) -> Result<Option<InFlight>, Overflow> {
        let Some(limit) = policy.max_requests else {
            return Ok(None);
        };
        let state = self.destination(policy);
        let before = state.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(state);
        if before >= limit {
            return Err(Overflow {
                destination: policy.destination.clone(),
                limit,
            });
        }
        Ok(Some(guard))
    }

    fn ejected(&self, policy: &Policy, addr: SocketAddr, now: u64) -> bool {
        policy.outlier.is_some()
            && self
                .outliers
                .get(&(policy.destination.clone(), addr))
                .is_some_and(|o| o.until_ms.load(Ordering::Relaxed) > now)
    }

    /// Notes what an attempt to `addr` came to; ejects the endpoint when its errors in a
    /// row reach the policy's threshold (and the ejection limit allows).
    pub fn record(&self, policy: &Policy, addr: SocketAddr, attempt: Attempt) {
        let Some(outlier) = policy.outlier else {
            return;
        };
        let (five, gateway) = match attempt {
            Attempt::Response(status, _) => (status >= 500, matches!(status, 502..=504)),
            Attempt::ConnectFailed | Attempt::Reset | Attempt::Timeout => (true, true),
        };
        let key = (policy.destination.clone(), addr);
        if !five {
            if let Some(o) = self.outliers.get(&key) {
                o.errors_5xx.store(0, Ordering::Relaxed);
                o.errors_gateway.store(0, Ordering::Relaxed);
            }
            return;
        }
        let state = self.outliers.entry(key).or_default().clone();
        let in_a_row_5xx = state.errors_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let in_a_row_gateway = if gateway {
            state.errors_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            state.errors_gateway.store(0, Ordering::Relaxed);
            0
        };
        let reached = (outlier.consecutive_5xx > 0 && in_a_row_5xx >= outlier.consecutive_5xx)
            || (outlier.consecutive_gateway > 0 && in_a_row_gateway >= outlier.consecutive_gateway);
        let now = now_ms();
        if !reached || state.until_ms.load(Ordering::Relaxed) > now {
            return;
        }
        // Envoy's limit, which always allows one.
        let endpoints = self.destination(policy).endpoints.load(Ordering::Relaxed);
        let allowed = (endpoints * outlier.max_ejection_percent / 100).max(1);
        let ejected = self
            .outliers
            .iter()
            .filter(|e| e.key().0 == policy.destination && e.until_ms.load(Ordering::Relaxed) > now)
            .count();
        if ejected >= allowed as usize {
            return;
        }
        let times = state.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = outlier.base_ejection.saturating_mul(times);
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        state
            .until_ms
            .store(now.saturating_add(length_ms), Ordering::Relaxed);
        state.errors_5xx.store(0, Ordering::Relaxed);
        state.errors_gateway.store(0, Ordering::Relaxed);
        tracing::info!(destination = %policy.destination, endpoint = %addr, ejected_for = ?length, "outlier detection ejected an endpoint");
    }
}

/// Picks the endpoint for `original`.
pub fn choose(snap: &Snapshot, load: &Load, original: SocketAddr) -> Result<Endpoint, RouteError> {
    let Some(service) = snap.service_by_vip(original.ip()) else {
        return match snap.workload_by_ip(original.ip()) {
            Some(workload) => Ok(Endpoint {
                service: None,
                workload: workload.clone(),
                addr: original,
                via: None,
            }),
            None => Err(RouteError::UnknownDestination(original)),
        };
    };
    choose_in(snap, load, service, original.port(), &|_| true)
}

/// Picks an endpoint of a route's backend (its subset's workloads only, when it names
/// one) for a request to `original_port`, as its policy says (`hash`: the request's
/// consistent-hash key, when the policy hashes and the request has the attribute).
pub fn choose_backend(
    snap: &Snapshot,
    load: &Load,
    backend: &crate::routes::BackendRef,
    original_port: u16,
    hash: Option<u64>,
) -> Result<Endpoint, RouteError> {
    let port = backend.port_for(original_port);
    let Some(service) = snap.service(&backend.key) else {
        return Err(RouteError::UnknownBackend(backend.key.clone()));
    };
    if backend.via_waypoint && service.waypoint.is_some() {
        return through_waypoint(snap, service, port);
    }
    let in_subset = |w: &Workload| {
        backend
            .subset
            .as_ref()
            .is_none_or(|s| s.uids.contains(&w.uid))
    };
    let chosen = match backend.policy.as_deref() {
        None => choose_in(snap, load, service, port, &in_subset),
        Some(policy) => choose_by(snap, load, service, port, &in_subset, policy, hash),
    };
    chosen.map_err(|e| match (e, &backend.subset) {
        (RouteError::NoHealthyUpstream(s), Some(subset)) => {
            RouteError::NoHealthyUpstream(format!("{s} subset {}", subset.name))
        }
        (other, _) => other,
    })
}

/// [`choose_backend`] under a DestinationRule policy: ejected endpoints left out (unless
/// fewer than `minHealthPercent` would be left), then the policy's balance.
fn choose_by(
    snap: &Snapshot,
    load: &Load,
    service: &Arc<Service>,
    port: u16,
    admit: &dyn Fn(&Workload) -> bool,
    policy: &Policy,
    hash: Option<u64>,
) -> Result<Endpoint, RouteError> {
    let now = now_ms();
    let mapping = port_mapping(service, port)?;
    let candidates: Vec<Endpoint> = snap
        .endpoints(&service.key())
        .iter()
        .filter(|w| w.healthy && admit(w))
        .filter_map(|w| endpoint_on(service, mapping, w))
        .collect();
    let state = load.destination(policy);
    state.endpoints.store(
        u32::try_from(candidates.len()).unwrap_or(u32::MAX),
        Ordering::Relaxed,
    );
    let kept: Vec<&Endpoint> = candidates
        .iter()
        .filter(|e| !load.ejected(policy, e.addr, now))
        .collect();
    let min_health = policy.outlier.map_or(0, |o| o.min_health_percent) as usize;
    let pool: Vec<&Endpoint> =
        if !candidates.is_empty() && kept.len() * 100 < candidates.len() * min_health {
            candidates.iter().collect()
        } else {
            kept
        };
    if pool.is_empty() {
        return Err(RouteError::NoHealthyUpstream(service.key()));
    }
    let chosen = match (&policy.balance, hash) {
        (Balance::RoundRobin, _) => {
            pool[(state.turn.fetch_add(1, Ordering::Relaxed) % pool.len() as u64) as usize]
        }
        (Balance::Random, _) => pool[(random() % pool.len() as u64) as usize],
        (
            Balance::Header(_) | Balance::Cookie(_) | Balance::Query(_) | Balance::SourceIp,
            Some(key),
        ) => {
            // Rendezvous hashing: the endpoint scoring highest for the key.
            pool.iter()
                .max_by_key(|e| {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (key, e.addr).hash(&mut h);
                    h.finish()
                })
                .copied()
                .unwrap_or(pool[0])
        }
        _ => {
            let first = pool[(random() % pool.len() as u64) as usize];
            let second = pool[(random() % pool.len() as u64) as usize];
            if second_less_loaded(load, first, second) {
                second
            } else {
                first
            }
        }
    };
    Ok(chosen.clone())
}

/// Service `port`'s mapping, or the error naming it.
fn port_mapping(service: &Service, port: u16) -> Result<&PortMapping, RouteError> {
    service
        .ports
        .iter()
        .find(|p| p.service_port == port)
        .ok_or_else(|| RouteError::ServicePort {
            service: service.key(),
            port,
        })
}

/// `workload` as an endpoint of `service` on `mapping` (`None` without an address).
fn endpoint_on(
    service: &Arc<Service>,
    mapping: &PortMapping,
    workload: &Arc<Workload>,
) -> Option<Endpoint> {
    let ip = *workload.addresses.first()?;
    Some(Endpoint {
        service: Some(service.clone()),
        workload: workload.clone(),
        addr: SocketAddr::new(ip, workload.target_port(&service.key(), mapping)),
        via: None,
    })
}

/// Service `service` on `port` through its waypoint: the tunnel goes to a waypoint pod's
/// HBONE port with the service's `VIP:port` as authority, as a ztunnel would send it.
fn through_waypoint(
    snap: &Snapshot,
    service: &Arc<Service>,
    port: u16,
) -> Result<Endpoint, RouteError> {
    use ztunnel::state::WaypointAddress;
    port_mapping(service, port)?;
    let unresolved = || RouteError::NoHealthyUpstream(format!("{} (its waypoint)", service.key()));
    let vip = *service.vips.first().ok_or_else(unresolved)?;
    let (backing, hbone) = match service.waypoint.as_ref().ok_or_else(unresolved)? {
        WaypointAddress::Address(addr) => (snap.workload_by_ip(addr.ip()).cloned(), *addr),
        WaypointAddress::Service { key, port } => {
            let pod = snap
                .endpoints(key)
                .iter()
                .find(|w| w.healthy && !w.addresses.is_empty())
                .cloned()
                .ok_or_else(unresolved)?;
            let ip = *pod.addresses.first().ok_or_else(unresolved)?;
            (Some(pod), SocketAddr::new(ip, *port))
        }
    };
    Ok(Endpoint {
        service: Some(service.clone()),
        workload: backing.ok_or_else(unresolved)?,
        addr: SocketAddr::new(vip, port),
        via: Some(hbone),
    })
}

/// Whether `second` has fewer requests in flight than `first` (least request's draw).
fn second_less_loaded(load: &Load, first: &Endpoint, second: &Endpoint) -> bool {
    load.in_flight(&second.addr) < load.in_flight(&first.addr)
}

/// Least request over the healthy endpoints of `service` that `admit`, for its port
/// `port`: of two endpoints drawn at random, the one with fewer requests in flight.
fn choose_in(
    snap: &Snapshot,
    load: &Load,
    service: &Arc<Service>,
    port: u16,
    admit: &dyn Fn(&Workload) -> bool,
) -> Result<Endpoint, RouteError> {
    let key = || service.key();
    let mapping = port_mapping(service, port)?;
    let endpoints = snap.endpoints(&service.key());
    let endpoint = |workload: &Arc<Workload>| endpoint_on(service, mapping, workload);
    let healthy = |w: &&Arc<Workload>| w.healthy && !w.addresses.is_empty() && admit(w);
    let count = endpoints.iter().filter(healthy).count();
    let nth = |n: usize| endpoints.iter().filter(healthy).nth(n).and_then(endpoint);
    let chosen = match count {
        0 => None,
        1 => nth(0),
        _ => {
            let first = (random() % count as u64) as usize;
            let second = (first + 1 + (random() % (count as u64 - 1)) as usize) % count;
            match (nth(first), nth(second)) {
                (Some(a), Some(b)) if second_less_loaded(load, &a, &b) => Some(b),
                (a, b) => a.or(b),
            }
        }
    };
    chosen.ok_or_else(|| RouteError::NoHealthyUpstream(key()))
}

/// A uniform random number (endpoint draws, route weights, mirror percentages).
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Why an endpoint could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The HBONE tunnel failed (connect, TLS, or the peer refused the stream).
    #[error("HBONE to {addr}: {source}")]
    Tunnel {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: hbone::HboneError,
    },
    /// Plain TCP failed.
    #[error("TCP to {addr}: {source}")]
    Tcp {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP handshake on the new stream failed.
    #[error("HTTP to {addr}: {source}")]
    Http {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
}

/// Connects to endpoints: HBONE from the pool under the waypoint's identity.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The waypoint's identity.
    pub identity: SpiffeId,
    /// HBONE connections.
    pub pool: Pool,
    /// The HBONE port of ztunnels.
    pub hbone_port: u16,
}

impl Connector {
    /// A stream to `endpoint` carrying `client` as the original source (`forwarded`).
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        client: IpAddr,
    ) -> Result<Box<dyn Io>, ConnectError> {
        let addr = endpoint.addr;
        // A waypoint always takes HBONE; a workload as its protocol says.
        let hbone = endpoint.via.is_some() || endpoint.workload.protocol == TunnelProtocol::Hbone;
        match hbone {
            true => {
                let key = PoolKey {
                    source: self.identity.clone(),
                    destination: endpoint.workload.identity.clone(),
                    address: endpoint
                        .via
                        .unwrap_or_else(|| SocketAddr::new(addr.ip(), self.hbone_port)),
                };
                let request = ConnectRequest {
                    authority: addr,
                    headers: HboneHeaders {
                        forwarded: Some(format!("for={}", forwarded_ip(client))),
                        ..HboneHeaders::default()
                    },
                };
                let stream = self
                    .pool
                    .connect(&key, &request)
                    .await
                    .map_err(|source| ConnectError::Tunnel { addr, source })?;
                Ok(Box::new(stream))
            }
            false => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|source| ConnectError::Tcp { addr, source })?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
        }
    }
}

/// `for=` takes IPv6 addresses in brackets and quotes (RFC 7239).
fn forwarded_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// An HTTP connection to an endpoint.
#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            Self::H1(s) => s.is_ready(),
            Self::H2(s) => s.is_ready(),
        }
    }
}

/// Which HTTP version to speak to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.1.
    H1,
    /// HTTP/2 (prior knowledge).
    H2,
}

/// Connections are shared by requests to the same endpoint, in the same HTTP version, for
/// the same original client (the tunnel under them carries it in `forwarded`).
type Key = (SocketAddr, Version, IpAddr);

/// How long a kept upstream connection may stay unused.
pub const IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Most idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_H1: usize = 64;

/// Upstream HTTP connections, kept for reuse.
#[derive(Debug, Default)]
pub struct HttpClients {
    /// Kept connections and when each was last handed back.
    idle: DashMap<Key, Vec<(Sender, std::time::Instant)>>,
}

impl HttpClients {
    /// Sends `request` to `endpoint`, on a kept connection when one is free, else on a new
    /// one through `connector`.
    pub async fn send(
        &self,
        connector: &Connector,
        endpoint: &Endpoint,
        client: IpAddr,
        version: Version,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let key = (endpoint.addr, version, client);
        let mut sender = match self.checkout(&key) {
            Some(sender) => sender,
            None => {
                let io = connector
                    .connect(endpoint, client)
                    .await
                    .map_err(SendError::Connect)?;
                handshake(io, version, endpoint.addr)
                    .await
                    .map_err(SendError::Connect)?
            }
        };
        let response = match &mut sender {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        };
        // HTTP/1.1: ready again once the response body is read; a later checkout skips it
        // until then. HTTP/2: shared at once.
        self.checkin(key, sender);
        response.map_err(SendError::Request)
    }

    fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.get_mut(key)?;
        idle.retain(|(s, _)| !s.is_closed());
        let i = idle.iter().position(|(s, _)| s.is_ready())?;
        Some(match &idle[i].0 {
            Sender::H2(s) => Sender::H2(s.clone()),
            Sender::H1(_) => idle.swap_remove(i).0,
        })
    }

    fn checkin(&self, key: Key, sender: Sender) {
        let mut idle = self.idle.entry(key).or_default();
        let now = std::time::Instant::now();
        match sender {
            // One shared handle per HTTP/2 connection is enough; it is fresh again.
            Sender::H2(_) if !idle.is_empty() => {
                for (_, used) in idle.iter_mut() {
                    *used = now;
                }
            }
            Sender::H1(_) if idle.len() >= MAX_IDLE_H1 => {}
            sender => idle.push((sender, now)),
        }
    }

    /// Closes the connections not used for `idle_for` (and forgets closed ones), so kept
    /// connections — and the tunnels under them — do not pile up per client and endpoint.
    pub fn sweep(&self, idle_for: std::time::Duration) {
        self.idle.retain(|_, senders| {
            senders.retain(|(s, used)| !s.is_closed() && used.elapsed() < idle_for);
            !senders.is_empty()
        });
    }

    /// Connections kept now.
    pub fn kept(&self) -> usize {
        self.idle.iter().map(|e| e.value().len()).sum()
    }
}

/// Why a request got no response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The endpoint could not be reached.
    #[error(transparent)]
    Connect(ConnectError),
    /// The endpoint closed or broke the connection before answering.
    #[error("upstream: {0}")]
    Request(hyper::Error),
}

async fn handshake(
    io: Box<dyn Io>,
    version: Version,
    addr: SocketAddr,
) -> Result<Sender, ConnectError> {
    let io = TokioIo::new(io);
    let error = |source| ConnectError::Http { addr, source };
    match version {
        Version::H1 => {
            let (sender, conn) = http1::handshake(io).await.map_err(error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            Ok(Sender::H1(sender))
        }
        Version::H2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
                }
            });
            Ok(Sender::H2(sender))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ztunnel::state::{AppProtocol, PortMapping};

    use super::*;

    /// Service `shop/reviews` (port 80 → 8080) with pods `reviews-0` and `reviews-1`.
    fn reviews() -> Snapshot {
        let mapping = PortMapping {
            service_port: 80,
            target_port: 8080,
            protocol: AppProtocol::Http,
        };
        let key = "shop/reviews.shop.svc.cluster.local".to_owned();
        let pod = |i: u8| Workload {
            uid: format!("reviews-{i}"),
            name: format!("reviews-{i}"),
            namespace: "shop".into(),
            addresses: vec![IpAddr::from([10, 0, 0, 10 + i])],
            hostname: None,
            node: "node-1".into(),
            protocol: TunnelProtocol::Hbone,
            identity: SpiffeId::new("cluster.local", "shop", "reviews").unwrap(),
            waypoint: None,
            services: HashMap::from([(key.clone(), vec![mapping])]),
            authorization_policies: Vec::new(),
            healthy: true,
            canonical_name: "reviews".into(),
            canonical_revision: "v1".into(),
            workload_name: "reviews".into(),
            cluster_id: "Kubernetes".into(),
        };
        let service = Service {
            name: "reviews".into(),
            namespace: "shop".into(),
            hostname: "reviews.shop.svc.cluster.local".into(),
            vips: vec![IpAddr::from([10, 96, 0, 1])],
            ports: vec![mapping],
            waypoint: None,
        };
        Snapshot::build(vec![pod(0), pod(1)], vec![service], Vec::new()).unwrap()
    }

    #[test]
    fn the_endpoint_with_fewer_requests_in_flight_is_chosen() {
        let snap = reviews();
        let load = Load::default();
        let vip = SocketAddr::from(([10, 96, 0, 1], 80));
        let busy: SocketAddr = "10.0.0.10:8080".parse().unwrap();
        let held: Vec<Active> = (0..5).map(|_| load.start(busy)).collect();
        for _ in 0..50 {
            let chosen = choose(&snap, &load, vip).unwrap();
            assert_eq!(chosen.addr, "10.0.0.11:8080".parse().unwrap());
        }
        // Once the busy one is done, both are chosen again.
        drop(held);
        let picks: std::collections::HashSet<SocketAddr> = (0..50)
            .map(|_| {
                let chosen = choose(&snap, &load, vip).unwrap();
                let _in_flight = load.start(chosen.addr);
                chosen.addr
            })
            .collect();
        assert_eq!(picks.len(), 2, "{picks:?}");
        load.sweep();
        assert!(load.active.is_empty(), "idle endpoints are forgotten");
    }
}
