//! The control plane's HTTP surface on 15014:
//!
//! - `GET /metrics` — Prometheus metrics;
//! - `GET /ready` — 200 once the config sources are loaded;
//! - `GET /debug/config_dump?proxy=<node>` — exactly what that node's ztunnel was sent
//!   (JSON; without `proxy`, every connected client);
//! - `GET /debug/connections` — connected xDS clients, ACK/NACK counts;
//! - `GET /debug/config` — the stored objects and translation messages;
//! - `POST /api/apply[?dryRun=true]` and `POST /api/delete[?dryRun=true]` — a YAML body
//!   of documents, taken whole or refused whole; answers JSON `{"changes": [...]}`, or 400
//!   with `{"error": "..."}` naming the document and field.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::ads::Clients;
use crate::metrics::Metrics;
use crate::store::{Origin, Store};

/// Largest apply body.
const MAX_BODY: usize = 16 << 20;

/// What the HTTP surface serves.
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
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    state: HttpState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(serve(listener, state))))
}

async fn serve(listener: TcpListener, state: HttpState) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}

async fn route(state: &HttpState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/metrics" | "/stats/prometheus") => {
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
        (Method::GET, "/ready") => respond(StatusCode::OK, "text/plain", "ready\n".into()),
        (Method::GET, "/debug/config_dump") => {
            let proxy = query(&req, "proxy");
            let clients = match &proxy {
                Some(node) => state.clients.for_node(node),
                None => state.clients.all(),
            };
            if clients.is_empty() {
                let message = match proxy {
                    Some(node) => format!("no ztunnel of node {node:?} is connected"),
                    None => "no ztunnel is connected".into(),
                };
                return json_response(StatusCode::NOT_FOUND, &json!({ "error": message }));
            }
            let dumps: Vec<serde_json::Value> = clients
                .iter()
                .filter_map(|c| c.lock().ok().map(|c| client_dump(&c)))
                .collect();
            json_response(StatusCode::OK, &json!({ "clients": dumps }))
        }
        (Method::GET, "/debug/connections") => {
            let list: Vec<serde_json::Value> = state
                .clients
                .all()
                .iter()
                .filter_map(|c| {
                    c.lock().ok().map(|c| {
                        json!({
                            "node": c.node_name,
                            "id": c.node_id,
                            "acks": c.acks,
                            "nacks": c.nacks,
                            "lastNack": c.last_nack,
                            "resources": c.sent.iter().map(|(t, s)| s.resources(t).map_or(0, |r| r.len())).sum::<usize>(),
                        })
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "connections": list }))
        }
        (Method::GET, "/debug/config") => {
            let snapshot = state.store.load();
            let objects: Vec<serde_json::Value> = snapshot
                .objects
                .values()
                .map(|r| r.resource.to_json())
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "version": snapshot.version,
                    "objects": objects,
                    "status": snapshot.compiled.status,
                }),
            )
        }
        (Method::POST, "/api/apply" | "/api/delete") => {
            let dry_run = query(&req, "dryRun").is_some_and(|v| v == "true" || v.is_empty());
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({ "error": format!("cannot read the request: {e}") }),
                    );
                }
            };
            let Ok(text) = std::str::from_utf8(&body) else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": "the body must be UTF-8 YAML" }),
                );
            };
            let source = if path == "/api/apply" {
                "apply"
            } else {
                "delete"
            };
            let resources = match config::parse_documents(text, source) {
                Ok(resources) => resources,
                Err(e) => {
                    state.metrics.config_errors.inc();
                    tracing::warn!(error = %e, "refused a {source} request; nothing changed");
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({ "error": e.to_string() }),
                    );
                }
            };
            let changes = if path == "/api/apply" {
                state.store.apply(resources, &Origin::Api, dry_run)
            } else {
                let keys = resources.iter().map(config::Resource::key).collect();
                state.store.delete(keys, dry_run)
            };
            if !dry_run {
                for change in &changes {
                    tracing::info!(object = %change.object, outcome = ?change.outcome, "{source}");
                }
                if let Some(file) = &state.applied_file
                    && let Err(e) = save_applied(&state.store, file)
                {
                    tracing::error!(file = %file.display(), error = %e, "cannot save applied objects; they are in force but will not survive a restart");
                }
            }
            let status = state.store.load().compiled.status.clone();
            json_response(
                StatusCode::OK,
                &json!({ "dryRun": dry_run, "changes": changes, "status": status }),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
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

/// A client's sent resources, decoded to JSON.
fn client_dump(client: &crate::ads::ClientState) -> serde_json::Value {
    use prost::Message;
    let mut workloads = Vec::new();
    let mut services = Vec::new();
    let mut policies = Vec::new();
    for (type_url, sent) in &client.sent {
        for published in sent
            .resources(type_url)
            .into_iter()
            .flatten()
            .map(|(_, p)| p)
        {
            let bytes = published.resource.value.as_slice();
            if type_url == xds::ADDRESS_TYPE_URL {
                match xds::workload::Address::decode(bytes)
                    .ok()
                    .and_then(|a| a.r#type)
                {
                    Some(xds::workload::address::Type::Workload(w)) => {
                        workloads.push(serde_json::to_value(w).unwrap_or_default());
                    }
                    Some(xds::workload::address::Type::Service(s)) => {
                        services.push(serde_json::to_value(s).unwrap_or_default());
                    }
                    None => {}
                }
            } else if let Ok(p) = xds::security::Authorization::decode(bytes) {
                policies.push(serde_json::to_value(p).unwrap_or_default());
            }
        }
    }
    json!({
        "node": client.node_name,
        "id": client.node_id,
        "workloads": workloads,
        "services": services,
        "policies": policies,
    })
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    respond(status, "application/json", text)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}
