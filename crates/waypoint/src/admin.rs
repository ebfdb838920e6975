//! Operator surfaces: admin (`/config_dump`: the gateway, its identity and certificate,
//! the L7 policies, workloads and services), metrics (`/stats/prometheus`, `/metrics`) and
//! readiness (`/healthz/ready`: mesh state and L7 policies received, certificate issued).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_surface::{Body, respond};
use hyper::body::Incoming;
use serde::Serialize;

use crate::app::Shared;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Surface {
    /// `/config_dump`.
    Admin,
    /// `/stats/prometheus`, `/metrics`.
    Metrics,
    /// `/healthz/ready`.
    Readiness,
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    gateway: String,
    identity: String,
    certificate: Option<String>,
    /// Upstream HTTP connections kept for reuse now.
    upstream_connections: usize,
    policies: Vec<&'a policy::Policy>,
    /// Route tables: `namespace/service` → its entries' routes (`Kind ns/name`), in
    /// precedence order.
    routes: std::collections::BTreeMap<String, Vec<&'a str>>,
    workloads: Vec<&'a ztunnel::state::Workload>,
    services: Vec<&'a ztunnel::state::Service>,
}

/// Ready: configuration and L7 policies received, certificate issued.
pub fn ready(shared: &Shared) -> Result<(), String> {
    if !shared.state.loaded() {
        return Err("no mesh configuration yet".into());
    }
    if !shared.policies.loaded() {
        return Err("no L7 policies yet".into());
    }
    if shared.manager.current(&shared.identity).is_none() {
        return Err(format!("no certificate yet for {}", shared.identity));
    }
    Ok(())
}

fn config_dump(shared: &Shared) -> String {
    let snap = shared.state.load();
    let policies = shared.policies.load();
    let tables = shared.policies.routes();
    let dump = ConfigDump {
        gateway: format!("{}/{}", shared.gateway.0, shared.gateway.1),
        identity: shared.identity.to_string(),
        certificate: shared
            .manager
            .current(&shared.identity)
            .map(|issued| issued.cert.info().serial.clone()),
        upstream_connections: shared.clients.kept(),
        policies: policies.iter().map(AsRef::as_ref).collect(),
        routes: tables
            .iter()
            .map(|((namespace, service), table)| {
                let routes = table.entries.iter().map(|e| e.route.as_str()).collect();
                (format!("{namespace}/{service}"), routes)
            })
            .collect(),
        workloads: snap.workloads().into_iter().map(AsRef::as_ref).collect(),
        services: snap.services().into_iter().map(AsRef::as_ref).collect(),
    };
    serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn route(surface: Surface, shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    match (surface, req.method(), req.uri().path()) {
        (Surface::Admin, &Method::GET, "/config_dump") => {
            respond(StatusCode::OK, "application/json", config_dump(shared))
        }
        (Surface::Metrics, &Method::GET, "/metrics" | "/stats/prometheus") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        (Surface::Readiness, &Method::GET, "/healthz/ready") => match ready(shared) {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Binds `addr` and serves `surface` there in the background.
pub async fn spawn(
    addr: SocketAddr,
    surface: Surface,
    shared: Arc<Shared>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    http_surface::spawn(addr, Arc::default(), move |req| {
        let shared = shared.clone();
        async move { route(surface, &shared, &req) }
    })
    .await
}
