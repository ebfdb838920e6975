//! The mesh's demo and test app, run as `bowline echo` inside pods.
//!
//! It answers every HTTP request (HTTP/1.1 and HTTP/2 cleartext with prior knowledge, on
//! one port) with a JSON description of what it saw — who it is, the TCP peer, the
//! request — and, when configured, the answers of upstream URLs it calls on the way.
//! `/status/<code>` answers with that status, `/delay/<ms>` after that long. Upstream
//! calls carry the request's trace headers and `end-user` on (as Istio's samples
//! propagate them), so routing by header holds along a call graph. Other ports echo raw
//! TCP bytes; it serves any number of each (the lab's stand-ins serve every port a
//! container declares). Tests and demos use it to see what the mesh did to
//! their traffic.
//!
//! Owns: the echo servers and a minimal HTTP/1.1 client ([`get`], [`call`]). Must not: contain
//! mesh logic of any kind (no HBONE, no identity, no policy, no redirection) — it is the
//! plain application the mesh carries, and must behave the same with or without the mesh.

#![forbid(unsafe_code)]

mod client;
mod error;
mod http;
mod tcp;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::info;

/// The process's spare descriptor, shared by both accept loops: at the descriptor limit
/// new connections are refused at once instead of the loops spinning
/// ([`hbone::accept`]).
static FD_RESERVE: std::sync::LazyLock<hbone::FdReserve> =
    std::sync::LazyLock::new(hbone::FdReserve::default);

pub use client::{call, get};
pub use error::EchoError;

/// Settings of the echo app.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// HTTP ports (HTTP/1.1 and HTTP/2 cleartext with prior knowledge, both on each).
    pub http_ports: Vec<u16>,
    /// Raw TCP echo ports.
    pub tcp_ports: Vec<u16>,
    /// Upstream URLs (http://host:port/path) called on every HTTP request; their answers are included.
    pub upstreams: Vec<String>,
    /// Address to bind (default 0.0.0.0).
    pub bind: IpAddr,
    /// Largest request body counted (default 16 MiB); larger ones are answered 413.
    pub max_body: usize,
}

impl Default for EchoConfig {
    /// No ports, no upstreams, bound to 0.0.0.0.
    fn default() -> Self {
        Self {
            http_ports: Vec::new(),
            tcp_ports: Vec::new(),
            upstreams: Vec::new(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            max_body: http::MAX_REQUEST_BODY,
        }
    }
}

/// Runs until `shutdown` completes. Errors if a port cannot be bound (message names the port).
///
/// Also errors, before binding anything, if an upstream URL is malformed or if neither
/// port is set.
pub async fn run(config: EchoConfig, shutdown: impl Future<Output = ()>) -> Result<(), EchoError> {
    check_settings(
        !config.http_ports.is_empty(),
        !config.tcp_ports.is_empty(),
        &config.upstreams,
    )?;
    let mut http = Vec::new();
    for port in &config.http_ports {
        http.push(bind(SocketAddr::new(config.bind, *port)).await?);
    }
    let mut tcp = Vec::new();
    for port in &config.tcp_ports {
        tcp.push(bind(SocketAddr::new(config.bind, *port)).await?);
    }
    serve_as(
        http::Identity::from_env(),
        http,
        tcp,
        (config.upstreams, config.max_body),
        shutdown,
    )
    .await
}

/// Like [`run`], on listeners the caller has already bound (tests bind port 0).
///
/// `http` serves HTTP/1.1 and h2c, `tcp` echoes bytes; at least one must be given. Runs
/// until `shutdown` completes, then stops accepting and closes open connections.
pub async fn serve(
    http: Option<TcpListener>,
    tcp: Option<TcpListener>,
    upstreams: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EchoError> {
    serve_as(
        http::Identity::from_env(),
        http.into_iter().collect(),
        tcp.into_iter().collect(),
        (upstreams, http::MAX_REQUEST_BODY),
        shutdown,
    )
    .await
}

/// [`serve`] with the identity given rather than read from the environment, so tests can
/// check what is reported without touching the process env.
pub(crate) async fn serve_as(
    identity: http::Identity,
    http: Vec<TcpListener>,
    tcp: Vec<TcpListener>,
    (upstreams, max_body): (Vec<String>, usize),
    shutdown: impl Future<Output = ()>,
) -> Result<(), EchoError> {
    check_settings(!http.is_empty(), !tcp.is_empty(), &upstreams)?;
    let addrs = |listeners: &[TcpListener]| -> Vec<SocketAddr> {
        listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    };
    let (http_addr, tcp_addr) = (addrs(&http), addrs(&tcp));
    info!(
        http = ?http_addr,
        tcp = ?tcp_addr,
        upstreams = ?upstreams,
        "echo app listening"
    );

    // Dropping (or shutting down) this set aborts the accept loops, and with them every
    // connection task they own.
    let mut loops = JoinSet::new();
    let context = http::Context::new(identity, upstreams, max_body);
    for listener in http {
        loops.spawn(http::accept_loop(listener, std::sync::Arc::clone(&context)));
    }
    for listener in tcp {
        loops.spawn(tcp::accept_loop(listener));
    }
    shutdown.await;
    loops.shutdown().await;
    info!("echo app stopped");
    Ok(())
}

/// Rejects settings that could only fail later, per request.
fn check_settings(has_http: bool, has_tcp: bool, upstreams: &[String]) -> Result<(), EchoError> {
    if !has_http && !has_tcp {
        return Err(EchoError::NothingToServe);
    }
    if !upstreams.is_empty() && !has_http {
        return Err(EchoError::UpstreamsWithoutHttp);
    }
    for url in upstreams {
        client::Target::parse(url)?;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EchoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| EchoError::Bind { addr, source })
}
