//! The management listener's routes: every request must carry the operator token (checked
//! before anything else, the body included, is read); then the debug views and the apply
//! API.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use super::{HttpState, json_response, query, respond};

pub(super) async fn route(state: &HttpState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes);
    if !state.operator_token.accepts(authorization) {
        let message = format!(
            "the management API needs `Authorization: Bearer <operator token>`{}; the token is in {} on the control plane's host (`bowline apply --token-file FILE` or BOWLINE_OPERATOR_TOKEN; in a lab `--name LAB` finds it)",
            if authorization.is_some() {
                " and this one is not it"
            } else {
                ""
            },
            state.operator_token.path().display()
        );
        let mut response = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": message }));
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/debug/config_dump") => config_dump(state, &req),
        (Method::GET, "/debug/connections") => connections(state),
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
                    "conditions": snapshot.compiled.conditions,
                }),
            )
        }
        (Method::POST, "/api/apply") => super::apply::handle(state, req, false).await,
        (Method::POST, "/api/delete") => super::apply::handle(state, req, true).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn config_dump(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let proxy = query(req, "proxy");
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

fn connections(state: &HttpState) -> Response<Full<Bytes>> {
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
                    "syncedVersion": c.synced_version(),
                    "resources": c.sent.iter().map(|(t, s)| s.resources(t).map_or(0, |r| r.len())).sum::<usize>(),
                })
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "connections": list }))
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
