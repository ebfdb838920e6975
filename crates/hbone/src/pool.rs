//! The HBONE client: a pool of mutual-TLS HTTP/2 connections keyed by (source identity,
//! destination identity, destination address), each carrying many `CONNECT` streams.
//!
//! - A connection carries at most `max_streams_per_connection` streams; when all are full
//!   the pool opens another. Concurrent callers that find no room wait for one dial
//!   instead of each opening their own.
//! - A connection with no streams for `idle_timeout` is closed; one beyond the first
//!   for its key (opened for load) after `surplus_idle_timeout`.
//! - A connection made with a source certificate that has since been renewed takes no
//!   new streams and closes once its last stream ends, so new streams present the new
//!   certificate while live ones are undisturbed.
//! - A request that fails because its connection died (I/O error, GOAWAY, refused
//!   stream) evicts that connection and is retried once on a new one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use identity::{CertificateManager, SpiffeId};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::HboneError;
use crate::headers::HboneHeaders;
use crate::settings::{CONNECTION_WINDOW, ClientSettings, MAX_FRAME, SEND_BUFFER, STREAM_WINDOW};
use crate::stream::H2Stream;

/// Which connections a stream may share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The identity the client presents (the source workload).
    pub source: SpiffeId,
    /// The identity the server must prove (the destination workload or waypoint).
    pub destination: SpiffeId,
    /// Where the HBONE server listens (`<pod ip>:15008`).
    pub address: SocketAddr,
}

/// One `CONNECT`: the original destination and the optional metadata headers.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// `:authority`, the original destination `ip:port`.
    pub authority: SocketAddr,
    /// `baggage`, `forwarded`, `traceparent`.
    pub headers: HboneHeaders,
}

/// The connection pool. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connections", &self.total_connections())
            .finish_non_exhaustive()
    }
}

/// Opens the TCP connection under a tunnel. The seam where in-pod ztunnel dials from
/// inside the source pod's namespace, with the mark that keeps its packets from being
/// captured again.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr`.
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>>;
}

/// Dials from the caller's own namespace with no special options.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectDialer;

impl Dialer for DirectDialer {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        Box::pin(TcpStream::connect(addr))
    }
}

struct PoolInner {
    manager: CertificateManager,
    dialer: Arc<dyn Dialer>,
    settings: ClientSettings,
    entries: dashmap::DashMap<PoolKey, Arc<Entry>>,
    next_id: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct Entry {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while opening a connection for this key, so waiters share one dial.
    dialing: tokio::sync::Mutex<()>,
    /// Dials finished for this key; tells a waiter whether a dial ended while it waited.
    dials: AtomicU64,
    /// Why the latest dial failed (`None` after a success).
    last_failure: Mutex<Option<String>>,
}

impl Entry {
    fn conns(&self) -> MutexGuard<'_, Vec<Arc<Conn>>> {
        // A poisoned lock only means another thread panicked while holding it; the
        // vector itself is always in a consistent state between statements.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_failure(&self) -> MutexGuard<'_, Option<String>> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Conn {
    id: u64,
    sender: h2::client::SendRequest<Bytes>,
    /// Streams reserved on this connection (changes under the entry lock when growing).
    active: AtomicUsize,
    /// Nanoseconds since the pool epoch when the last stream ended.
    last_active: AtomicU64,
    /// The source certificate generation the handshake presented.
    generation: u64,
    /// No new streams: the certificate was renewed.
    draining: AtomicBool,
    /// Unusable: the connection failed or was closed.
    dead: AtomicBool,
    epoch: Instant,
}

impl Conn {
    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_nanos(self.last_active.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// A reserved stream on a connection; releases the reservation when dropped.
pub(crate) struct Slot {
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let now = u64::try_from(self.conn.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.conn.last_active.store(now, Ordering::Release);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// A pool presenting certificates from `manager`, dialing directly.
    pub fn new(manager: CertificateManager, settings: ClientSettings) -> Self {
        Self::with_dialer(manager, settings, Arc::new(DirectDialer))
    }

    /// A pool whose TCP connections come from `dialer`.
    pub fn with_dialer(
        manager: CertificateManager,
        settings: ClientSettings,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                manager,
                dialer,
                settings,
                entries: dashmap::DashMap::new(),
                next_id: AtomicU64::new(1),
                epoch: Instant::now(),
            }),
        }
    }

    /// Opens a `CONNECT` stream to `request.authority` through the HBONE server at
    /// `key.address`, reusing a pooled connection when one has room.
    pub async fn connect(
        &self,
        key: &PoolKey,
        request: &ConnectRequest,
    ) -> Result<H2Stream, HboneError> {
        let slot = self.checkout(key).await?;
        let conn = slot.conn.clone();
        match self.open(slot, request).await {
            Err(error) if error.is_connection_level() => {
                conn.dead.store(true, Ordering::Release);
                tracing::debug!(peer = %key.address, %error, "HBONE connection died; retrying on a new one");
                let slot = self.checkout(key).await?;
                self.open(slot, request).await
            }
            other => other,
        }
    }

    /// Live connections for `key`.
    pub fn connections(&self, key: &PoolKey) -> usize {
        self.inner
            .entries
            .get(key)
            .map(|e| live(&e.conns()))
            .unwrap_or(0)
    }

    /// Live connections across all keys.
    pub fn total_connections(&self) -> usize {
        self.inner.entries.iter().map(|e| live(&e.conns())).sum()
    }

    async fn checkout(&self, key: &PoolKey) -> Result<Slot, HboneError> {
        let entry = self.inner.entries.entry(key.clone()).or_default().clone();
        if let Some(slot) = self.reserve(&entry, key) {
            return Ok(slot);
        }
        let dials_before = entry.dials.load(Ordering::Acquire);
        let _one_dial = entry.dialing.lock().await;
        if let Some(slot) = self.reserve(&entry, key) {
            return Ok(slot);
        }
        // A dial that failed while we waited speaks for us too: callers queued behind an
        // unreachable peer fail together instead of each waiting out its own timeout.
        if entry.dials.load(Ordering::Acquire) != dials_before
            && let Some(reason) = entry.last_failure().clone()
        {
            return Err(HboneError::PeerUnavailable {
                addr: key.address,
                reason,
            });
        }
        let dialed = self.dial(key).await;
        *entry.last_failure() = dialed.as_ref().err().map(ToString::to_string);
        entry.dials.fetch_add(1, Ordering::AcqRel);
        let conn = dialed?;
        conn.active.fetch_add(1, Ordering::AcqRel);
        entry.conns().push(conn.clone());
        Ok(Slot { conn })
    }

    /// Reserves a stream on an existing connection with room, if there is one.
    fn reserve(&self, entry: &Entry, key: &PoolKey) -> Option<Slot> {
        let generation = self
            .inner
            .manager
            .current(&key.source)
            .map(|i| i.generation);
        let max = self.inner.settings.max_streams_per_connection;
        let mut conns = entry.conns();
        conns.retain(|c| !c.dead.load(Ordering::Acquire));
        let mut chosen = None;
        for conn in conns.iter() {
            if Some(conn.generation) != generation {
                conn.draining.store(true, Ordering::Release);
                continue;
            }
            if chosen.is_none() && conn.active.load(Ordering::Acquire) < max {
                chosen = Some(conn.clone());
            }
        }
        let conn = chosen?;
        conn.active.fetch_add(1, Ordering::AcqRel);
        Some(Slot { conn })
    }

    async fn dial(&self, key: &PoolKey) -> Result<Arc<Conn>, HboneError> {
        let settings = &self.inner.settings;
        let addr = key.address;
        let issued = self.inner.manager.fetch(&key.source).await?;
        let config = identity::client_config(&issued.cert, vec![key.destination.clone()])?;
        let limit = settings.connect_timeout;
        let tcp = within(limit, addr, "TCP connect", self.inner.dialer.dial(addr))
            .await?
            .map_err(|source| HboneError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::IpAddress(addr.ip().into());
        let tls = within(
            limit,
            addr,
            "TLS handshake",
            TlsConnector::from(config).connect(server_name, tcp),
        )
        .await?
        .map_err(|source| HboneError::Handshake { addr, source })?;
        if tls.get_ref().1.alpn_protocol() != Some(identity::tls::ALPN_H2) {
            return Err(HboneError::NotH2 { addr });
        }
        let handshake = client_builder(settings).handshake(tls);
        let (sender, connection) = within(limit, addr, "HTTP/2 handshake", handshake).await??;
        let conn = Arc::new(Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            active: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            generation: issued.generation,
            draining: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            epoch: self.inner.epoch,
        });
        tracing::debug!(peer = %addr, source = %key.source, destination = %key.destination, id = conn.id, "HBONE connection established");
        tokio::spawn(drive(
            connection,
            conn.clone(),
            key.clone(),
            Arc::downgrade(&self.inner),
        ));
        Ok(conn)
    }

    async fn open(&self, slot: Slot, request: &ConnectRequest) -> Result<H2Stream, HboneError> {
        let sender = slot.conn.sender.clone().ready().await?;
        let mut sender = sender;
        let req = request
            .headers
            .apply(
                Request::builder()
                    .method(Method::CONNECT)
                    .uri(request.authority.to_string()),
            )
            .body(())?;
        let (response, send) = sender.send_request(req, false)?;
        let response = timeout(self.inner.settings.response_timeout, response)
            .await
            .map_err(|_| HboneError::ResponseTimeout {
                authority: request.authority,
            })??;
        if response.status() != StatusCode::OK {
            return Err(HboneError::Refused {
                authority: request.authority,
                status: response.status(),
            });
        }
        Ok(H2Stream::new(send, response.into_body(), Some(slot)))
    }
}

/// `future`, or a timeout error naming the stage.
async fn within<T>(
    limit: Duration,
    addr: SocketAddr,
    stage: &'static str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, HboneError> {
    timeout(limit, future)
        .await
        .map_err(|_| HboneError::Timeout { addr, stage })
}

fn live(conns: &[Arc<Conn>]) -> usize {
    conns
        .iter()
        .filter(|c| !c.dead.load(Ordering::Acquire))
        .count()
}

fn client_builder(settings: &ClientSettings) -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(settings.max_header_list_size)
        .max_send_buffer_size(SEND_BUFFER)
        .enable_push(false);
    builder
}

/// Drives one connection until it fails, or is idle (or draining and empty) long enough
/// to close; then removes it from the pool.
async fn drive(
    mut connection: h2::client::Connection<TlsStream<TcpStream>, Bytes>,
    conn: Arc<Conn>,
    key: PoolKey,
    pool: Weak<PoolInner>,
) {
    let (idle_timeout, surplus_idle_timeout) = match pool.upgrade() {
        Some(p) => (p.settings.idle_timeout, p.settings.surplus_idle_timeout),
        None => return,
    };
    let mut ticks = tokio::time::interval(
        (idle_timeout.min(surplus_idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(5)),
    );
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(peer = %key.address, %error, "HBONE connection closed");
                }
                break;
            }
            _ = ticks.tick() => {
                let draining = conn.draining.load(Ordering::Acquire);
                let idle = conn.idle_for();
                let limit = if is_surplus(&pool, &key, &conn) {
                    surplus_idle_timeout
                } else {
                    idle_timeout
                };
                let expired = idle >= limit || (draining && conn.active.load(Ordering::Acquire) == 0);
                if expired && close_if_unused(&pool, &key, &conn) {
                    tracing::debug!(peer = %key.address, id = conn.id, ?idle, draining, "closing unused HBONE connection");
                    break;
                }
            }
        }
    }
    conn.dead.store(true, Ordering::Release);
    remove(&pool, &key, &conn);
}

/// Whether an older live connection serves the same key (so `conn` was opened for load).
fn is_surplus(pool: &Weak<PoolInner>, key: &PoolKey, conn: &Conn) -> bool {
    let Some(pool) = pool.upgrade() else {
        return false;
    };
    let Some(entry) = pool.entries.get(key).map(|e| e.clone()) else {
        return false;
    };
    entry
        .conns()
        .iter()
        .any(|c| c.id < conn.id && !c.dead.load(Ordering::Acquire))
}

/// Marks `conn` dead if no stream holds it; reservations happen under the same lock, so
/// a stream is never handed a connection that is being closed.
fn close_if_unused(pool: &Weak<PoolInner>, key: &PoolKey, conn: &Conn) -> bool {
    let Some(pool) = pool.upgrade() else {
        return true;
    };
    let Some(entry) = pool.entries.get(key).map(|e| e.clone()) else {
        return conn.active.load(Ordering::Acquire) == 0;
    };
    let conns = entry.conns();
    if conn.active.load(Ordering::Acquire) == 0 {
        conn.dead.store(true, Ordering::Release);
        drop(conns);
        true
    } else {
        false
    }
}

fn remove(pool: &Weak<PoolInner>, key: &PoolKey, conn: &Conn) {
    let Some(pool) = pool.upgrade() else { return };
    let Some(entry) = pool.entries.get(key).map(|e| e.clone()) else {
        return;
    };
    entry.conns().retain(|c| c.id != conn.id);
    pool.entries
        .remove_if(key, |_, e| e.conns().is_empty() && Arc::ptr_eq(e, &entry));
}
