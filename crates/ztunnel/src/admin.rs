//! Operator surfaces: the admin server (127.0.0.1:15000: `/config_dump`, `/logging`),
//! Prometheus metrics (15020: `/metrics`, `/stats/prometheus`) and readiness (15021:
//! `/healthz/ready`, ready once the configuration is in place, the node agent has sent its
//! pods (in-pod mode) and every served pod holds a certificate). A configuration served
//! from the snapshot file before the control plane answered is ready but says `stale`
//! (readiness body, `/config_dump`, `ztunnel_config_stale`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_surface::{Body, respond};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::inpod::Pods;
use crate::proxy::ProxyInputs;

/// Changes the log filter at run time (`/logging?level=…`); supplied by the binary that
/// owns the subscriber.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the operator endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Proxy inputs (state, certificates, metrics).
    pub inputs: Arc<ProxyInputs>,
    /// The pods served.
    pub pods: Arc<Pods>,
    /// Log level control, if available.
    pub log_level: Option<LogLevelSetter>,
}

#[derive(Serialize)]
struct CertificateDump {
    identity: String,
    serial: String,
    not_before_unix: u64,
    not_after_unix: u64,
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    /// Served from the snapshot file; the control plane has not answered yet.
    stale: bool,
    workloads: Vec<&'a crate::state::Workload>,
    services: Vec<&'a crate::state::Service>,
    policies: Vec<&'a policy::Policy>,
    certificates: Vec<CertificateDump>,
    pods: Vec<String>,
}

impl AdminState {
    /// Ready: configuration loaded, the node agent's pods received (in-pod mode) and
    /// every served pod holds a certificate.
    pub fn ready(&self) -> Result<(), String> {
        if !self.inputs.store.loaded() {
            return Err("no configuration yet".into());
        }
        if self.pods.awaiting_node_agent() {
            return Err("the node agent has not sent this node's pods yet".into());
        }
        let missing: Vec<_> = self
            .pods
            .identities()
            .into_iter()
            .filter(|id| self.inputs.manager.current(id).is_none())
            .map(|id| id.to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no certificate yet for {}", missing.join(", ")))
        }
    }

    /// The JSON of `/config_dump`.
    pub fn config_dump(&self) -> String {
        let snap = self.inputs.store.load();
        let mut certificates: Vec<_> = self
            .inputs
            .manager
            .certificates()
            .iter()
            .map(|issued| {
                let info = issued.cert.info();
                CertificateDump {
                    identity: info.identity.to_string(),
                    serial: info.serial.clone(),
                    not_before_unix: unix_seconds(info.not_before),
                    not_after_unix: unix_seconds(info.not_after),
                }
            })
            .collect();
        certificates.sort_by(|a, b| a.identity.cmp(&b.identity));
        let dump = ConfigDump {
            stale: self.inputs.store.is_stale(),
            workloads: snap.workloads().into_iter().map(AsRef::as_ref).collect(),
            services: snap.services().into_iter().map(AsRef::as_ref).collect(),
            policies: snap.policies().into_iter().map(AsRef::as_ref).collect(),
            certificates,
            pods: self.pods.uids(),
        };
        serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Surface {
    /// `/config_dump`, `/logging`.
    Admin,
    /// `/metrics`, `/stats/prometheus`.
    Metrics,
    /// `/healthz/ready`.
    Readiness,
}

/// Serves `surface` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, surface: Surface, state: AdminState) {
    let fd_reserve = state.inputs.fd_reserve.clone();
    http_surface::serve(listener, fd_reserve, move |req| {
        let state = state.clone();
        async move { route(surface, &state, &req) }
    })
    .await;
}

fn route(surface: Surface, state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    match (surface, req.method(), req.uri().path()) {
        (Surface::Admin, &Method::GET, "/config_dump") => {
            respond(StatusCode::OK, "application/json", state.config_dump())
        }
        (Surface::Admin, _, "/logging") => {
            let level = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")));
            match (level, &state.log_level) {
                (Some(level), Some(set)) => match set(level) {
                    Ok(()) => respond(
                        StatusCode::OK,
                        "text/plain",
                        format!("log level set to {level}\n"),
                    ),
                    Err(e) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
                },
                (None, _) => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "use /logging?level=info (or debug, warn, hbone=debug…)\n",
                ),
                (Some(_), None) => respond(
                    StatusCode::NOT_IMPLEMENTED,
                    "text/plain",
                    "log level cannot be changed in this process\n",
                ),
            }
        }
        (Surface::Metrics, &Method::GET, "/metrics" | "/stats/prometheus") => {
            let metrics = &state.inputs.metrics;
            metrics.set_config_stale(state.inputs.store.is_stale());
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        }
        (Surface::Readiness, &Method::GET, "/healthz/ready") => match state.ready() {
            Ok(()) if state.inputs.store.is_stale() => respond(
                StatusCode::OK,
                "text/plain",
                "ready (stale: serving the snapshot file until the control plane answers)\n",
            ),
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
    state: AdminState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(serve(listener, surface, state))))
}
