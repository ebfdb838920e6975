//! The control plane's HTTP surfaces, two listeners:
//!
//! - **public** (`--http-addr`, 15014), read-only, for scrapers and probes:
//!   `GET /metrics` (also `/stats/prometheus`) and `GET /ready`;
//! - **management** (`--api-addr`, default 127.0.0.1:15015 — in the lab the router
//!   namespace's loopback, which no pod can reach), every request with
//!   `Authorization: Bearer <operator token>` ([`crate::operator_token`]), else 401
//!   ([`management`]):
//!   - `GET /debug/config_dump?proxy=<node>` — exactly what that node's ztunnel was sent
//!     (JSON; without `proxy`, every connected client);
//!   - `GET /debug/connections` — connected xDS clients, ACK/NACK counts;
//!   - `GET /debug/config` — the stored objects and translation messages;
//!   - `POST /api/apply[?dryRun=true]` and `POST /api/delete[?dryRun=true]` — a YAML body
//!     of documents, taken whole or refused whole, within limits, parsed off the async
//!     runtime ([`apply`]); answers JSON `{"changes": [...], "warnings": [...]}`, or an
//!     error `{"error": "..."}` naming the document and field or the limit.
//!
//! Owns: routing, authentication, the mapping of outcomes to HTTP statuses. Must not: parse
//! or translate config itself (the config crate and the store do).

mod apply;
mod management;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_surface::{Body, json as json_response, respond};
use hyper::body::Incoming;
use serde_json::json;

use crate::ads::Clients;
use crate::metrics::Metrics;
use crate::operator_token::OperatorToken;
use crate::store::{Origin, Store};

pub use apply::{MAX_BODY, MAX_CONCURRENT_PARSES};

/// What the HTTP surfaces serve.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The store.
    pub store: Arc<Store>,
    /// Connected xDS clients.
    pub clients: Arc<Clients>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where applied objects are kept across restarts.
    pub applied_file: Option<std::path::PathBuf>,
    /// What the management API asks of every request.
    pub operator_token: Arc<OperatorToken>,
    /// Applies being parsed (at most [`MAX_CONCURRENT_PARSES`]).
    pub parses: Arc<tokio::sync::Semaphore>,
    /// The spare descriptor both listeners' accept loops share.
    pub fd_reserve: Arc<http_surface::FdReserve>,
}

impl HttpState {
    /// State over these parts, with room for [`MAX_CONCURRENT_PARSES`] parses.
    pub fn new(
        store: Arc<Store>,
        clients: Arc<Clients>,
        metrics: Arc<Metrics>,
        applied_file: Option<std::path::PathBuf>,
        operator_token: Arc<OperatorToken>,
    ) -> Self {
        Self {
            store,
            clients,
            metrics,
            applied_file,
            operator_token,
            parses: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PARSES)),
            fd_reserve: Arc::default(),
        }
    }
}

/// The control plane's two HTTP listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Metrics and readiness, read-only (15014).
    Public,
    /// Debug, apply and delete, behind the operator token (127.0.0.1:15015).
    Management,
}

/// Binds `surface` on `addr` and serves it in the background; returns the bound address.
pub async fn spawn(
    surface: Surface,
    addr: SocketAddr,
    state: HttpState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let fd_reserve = state.fd_reserve.clone();
    http_surface::spawn(addr, fd_reserve, move |req| {
        let state = state.clone();
        async move {
            match surface {
                Surface::Public => public_route(&state, req),
                Surface::Management => management::route(&state, req).await,
            }
        }
    })
    .await
}

fn public_route(state: &HttpState, req: Request<Incoming>) -> http::Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics" | "/stats/prometheus") => {
            state
                .metrics
                .config_version
                .set(i64::try_from(state.store.load().version).unwrap_or(i64::MAX));
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.encode(),
            )
        }
        (&Method::GET, "/ready") => respond(StatusCode::OK, "text/plain", "ready\n"),
        (_, path) if path.starts_with("/api/") || path.starts_with("/debug/") => json_response(
            StatusCode::NOT_FOUND,
            &json!({
                "error": "this listener is read-only (metrics, readiness); the apply and debug API is on the management listener (--api-addr, default 127.0.0.1:15015) and needs the operator token",
            }),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}

/// Writes the objects that came through the apply API to `file` (JSON documents, which
/// are YAML), atomically.
pub fn save_applied(store: &Store, file: &std::path::Path) -> std::io::Result<()> {
    let snapshot = store.load();
    let mut text = String::new();
    for stored in snapshot.objects.values() {
        if stored.origin == Origin::Api {
            text.push_str("---\n");
            text.push_str(
                &serde_json::to_string(&stored.resource.to_json())
                    .map_err(std::io::Error::other)?,
            );
            text.push('\n');
        }
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, file)
}
