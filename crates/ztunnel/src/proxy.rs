//! The proxy paths of one enrolled pod: outbound (15001), inbound HBONE (15008),
//! inbound plaintext (15006), and SOCKS5 (127.0.0.1:15080, shared mode). Everything a connection needs is in [`ProxyInputs`] (shared
//! by all pods) and [`Pod`] (this pod's identity, namespace worker and tunnel pool).
//!
//! The first bytes of a connection pay for lookup, policy and route; after that it is a
//! byte pump ([`hbone::copy_bidirectional`] or [`pump::copy_tcp`]).
//!
//! Every connection gets a [`record::ConnectionRecord`] when it is accepted and ends with
//! a typed result ([`error::ProxyError`]); what each party hears — HBONE status, reset
//! or FIN, SOCKS5 reply, response flags, metric reason — is decided in one module,
//! [`outcome`]. Each connection runs in a debug-level span `conn{id, trace}` and its
//! access-log line carries the trace id, which travels to the peer ztunnel in the
//! `CONNECT`'s `traceparent`.
//!
//! ztunnel never forwards to one of its own listeners: a destination that is one of its
//! ports on a pod (or loopback) address, or a captured connection whose original
//! destination is the listener that accepted it, is refused and counted
//! (`reason="own_port"`) — otherwise one connection makes ztunnel dial itself in a loop.

pub mod error;
pub mod inbound;
pub mod outbound;
pub mod outcome;
pub mod pump;
pub mod record;
pub mod route;
pub mod socks5;
pub mod trace;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use identity::{CertificateManager, SpiffeId};
use netns::NetnsWorker;
use netns::capture::PROXY_MARK;
use netns::socket::{Outgoing, outgoing_socket};
use tokio::net::TcpStream;

use crate::state::Store;

/// ztunnel's own ports (docs/protocols.md): outbound and inbound capture, HBONE, DNS, SOCKS5,
/// admin, metrics, readiness. Never a destination ztunnel forwards to on a pod address.
pub const OWN_PORTS: [u16; 8] = [15001, 15006, 15008, 15053, 15080, 15000, 15020, 15021];

/// Settings shared by every pod's proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Ports of ztunnel's own listeners (default [`OWN_PORTS`]; add any port moved by
    /// flags): refused as destinations on pod and loopback addresses.
    pub own_ports: Vec<u16>,
    /// HBONE port of destination pods.
    pub hbone_port: u16,
    /// Trust domain of pod identities.
    pub trust_domain: String,
    /// How long an endpoint whose connect failed is skipped by load balancing.
    pub failed_endpoint_backoff: Duration,
    /// Tunnel pool settings.
    pub pool: hbone::ClientSettings,
    /// The DNS proxy.
    pub dns: crate::dns::DnsSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            own_ports: OWN_PORTS.to_vec(),
            hbone_port: hbone::HBONE_PORT,
            trust_domain: "cluster.local".into(),
            failed_endpoint_backoff: Duration::from_secs(10),
            pool: hbone::ClientSettings::default(),
            dns: crate::dns::DnsSettings::default(),
        }
    }
}

/// What every connection of every pod shares.
#[derive(Debug)]
pub struct ProxyInputs {
    /// Mesh state.
    pub store: Arc<Store>,
    /// Certificates of the pods on this node.
    pub manager: CertificateManager,
    /// Settings.
    pub settings: ProxySettings,
    /// Metrics of every connection.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The process's spare descriptor: accept loops refuse fast at the descriptor limit.
    pub fd_reserve: Arc<hbone::FdReserve>,
    /// Endpoints whose connect failed recently (sharded; no global lock per lookup).
    failed: DashMap<IpAddr, Instant>,
}

impl ProxyInputs {
    /// Inputs over `store` and `manager`.
    pub fn new(store: Arc<Store>, manager: CertificateManager, settings: ProxySettings) -> Self {
        Self {
            store,
            manager,
            settings,
            metrics: Arc::default(),
            fd_reserve: Arc::default(),
            failed: DashMap::new(),
        }
    }

    /// Records that connecting to `ip` failed, so load balancing skips it for a while.
    pub(crate) fn endpoint_failed(&self, ip: IpAddr) {
        self.failed.insert(ip, Instant::now());
    }

    /// Records that `ip` answered again, so it is no longer skipped.
    pub(crate) fn endpoint_recovered(&self, ip: IpAddr) {
        if !self.failed.is_empty() {
            self.failed.remove(&ip);
        }
    }

    /// Whether `ip` failed within the backoff (expired entries are removed here).
    pub(crate) fn recently_failed(&self, ip: IpAddr) -> bool {
        let backoff = self.settings.failed_endpoint_backoff;
        let recent = match self.failed.get(&ip) {
            None => return false,
            Some(at) => at.elapsed() < backoff,
        };
        if !recent {
            self.failed.remove_if(&ip, |_, at| at.elapsed() >= backoff);
        }
        recent
    }

    /// Whether `port` is one of ztunnel's own listener ports.
    pub(crate) fn is_own_port(&self, port: u16) -> bool {
        self.settings.own_ports.contains(&port)
    }
}

/// One enrolled pod, as its listeners see it.
#[derive(Debug)]
pub struct Pod {
    /// The workload uid.
    pub uid: String,
    /// `namespace/name`, for logs.
    pub name: String,
    /// The pod's identity (from its service account).
    pub identity: SpiffeId,
    /// Creates sockets inside the pod's namespace.
    pub worker: NetnsWorker,
    /// Tunnels from this pod, dialed from inside its namespace.
    pub pool: hbone::Pool,
    /// Fires when the pod is removed; live connections close.
    pub removed: tokio::sync::watch::Receiver<bool>,
}

impl Pod {
    /// Completes when the pod is removed from this node.
    pub(crate) async fn removed(&self) {
        let mut removed = self.removed.clone();
        // An error means the sender is gone: the pod is being torn down too.
        let _ = removed.wait_for(|r| *r).await.map(drop);
    }
}

/// Dials from inside a pod's namespace, marked so capture lets it through.
#[derive(Debug, Clone)]
pub struct PodDialer {
    /// The pod's namespace worker.
    pub worker: NetnsWorker,
}

impl hbone::Dialer for PodDialer {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send + '_>>
    {
        Box::pin(connect_from(&self.worker, addr, None))
    }
}

/// Connects to `addr` from inside the namespace of `worker`, with the proxy mark and, if
/// given, a transparent (spoofed) source address.
pub(crate) async fn connect_from(
    worker: &NetnsWorker,
    addr: SocketAddr,
    transparent_source: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    let options = Outgoing {
        mark: Some(PROXY_MARK),
        transparent_source,
    };
    let socket = worker
        .run(move || outgoing_socket(addr, options))
        .await
        .map_err(std::io::Error::other)??;
    socket.connect(addr).await
}

/// Closes `tcp` as [`outcome::client_close`] decided: a reset (the client sees the
/// failure at once instead of a clean end of stream) or an orderly close.
pub(crate) fn close(tcp: TcpStream, how: outcome::Close) {
    if how == outcome::Close::Reset {
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    }
    drop(tcp);
}

#[cfg(test)]
mod tests;
