//! The route and forward phases of a request: the destination service's route table (or
//! its own endpoints), the rule's filters — header changes, rewrite, redirect, direct
//! response, injected faults, CORS, mirrors — and sending under the rule's timeouts and
//! retries.

use super::*;

/// Where a request goes: its route's rule (if the service has routes) and the endpoint.
pub(super) struct Routed {
    pub(super) action: Option<Arc<Action>>,
    pub(super) backend: Option<Backend>,
    /// The prefix the match took, and whether it is a plain string prefix.
    pub(super) matched_prefix: Option<(String, bool)>,
    /// `None` only for an answer given here (redirect, direct response).
    pub(super) endpoint: Option<Endpoint>,
    /// The request counted against its destination's limit.
    pub(super) in_flight: Option<upstream::InFlight>,
}

/// The route phase: the destination service's route table decides when it has one (no
/// matching entry: 404); otherwise the service's own endpoints, as Istio does.
pub(super) fn route(
    shared: &Shared,
    snap: &Snapshot,
    tunnel: &Tunnel,
    service: Option<&ztunnel::state::Service>,
    req: &Request<Incoming>,
) -> Result<Routed, Refusal> {
    let table = match &tunnel.ingress {
        Some(ingress) => match shared.policies.ingress_table(&shared.gateway, ingress.port) {
            Some(table) => Some(table),
            None => {
                return Err(Refusal::NoRoute(format!(
                    "the gateway has no routes on port {}",
                    ingress.port
                )));
            }
        },
        None => service
            .and_then(|s| {
                shared
                    .policies
                    .routes()
                    .get(&(s.namespace.clone(), s.name.clone()))
                    .cloned()
            })
            .filter(|t| t.routes_http()),
    };
    let Some(table) = table else {
        let endpoint = upstream::choose(snap, &shared.load, tunnel.target)?;
        return Ok(Routed {
            action: None,
            backend: None,
            matched_prefix: None,
            endpoint: Some(endpoint),
            in_flight: None,
        });
    };
    let authority = req
        .uri()
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        });
    let source_uid = snap
        .workload_by_ip(tunnel.peer_addr.ip())
        .map(|w| w.uid.as_str());
    let view = RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
        authority,
        port: tunnel.target.port(),
        source_uid,
        source_namespace: tunnel.peer.as_ref().map_or("", |p| p.namespace()),
        host: Some(host_of(req)).filter(|h| !h.is_empty()),
    };
    let Some(entry) = table.find(&view) else {
        return Err(Refusal::NoRoute(match &tunnel.ingress {
            Some(ingress) => format!("no route on port {} matches", ingress.port),
            None => format!(
                "no route of {} matches",
                service.map_or_else(String::new, |s| s.hostname.clone())
            ),
        }));
    };
    let action = entry.action.clone();
    let matched_prefix = entry
        .matcher
        .matched_prefix()
        .map(|(p, plain)| (p.to_owned(), plain));
    if action.redirect.is_some() || action.direct_response.is_some() {
        // Answered here; no endpoint is called.
        return Ok(Routed {
            action: Some(action),
            backend: None,
            matched_prefix,
            endpoint: None,
            in_flight: None,
        });
    }
    let Some(backend) = action.backend(random()).cloned() else {
        return Err(Refusal::NoBackend(format!(
            "{} rule {}",
            entry.route, entry.rule
        )));
    };
    let policy = backend.target.policy.as_deref();
    let hash = policy.and_then(|p| {
        p.balance
            .key(req.headers(), req.uri().query(), tunnel.client)
    });
    let endpoint = upstream::choose_backend(
        snap,
        &shared.load,
        &backend.target,
        tunnel.target.port(),
        hash,
    )?;
    let in_flight = match policy.map(|p| shared.load.admit(p)) {
        Some(Err(overflow)) => return Err(Refusal::Overflow(overflow.to_string())),
        Some(Ok(guard)) => guard,
        None => None,
    };
    Ok(Routed {
        action: Some(action),
        backend: Some(backend),
        matched_prefix,
        endpoint: Some(endpoint),
        in_flight,
    })
}

/// The rule's request filters: header changes (rule, then backend), then the rewrite.
pub(super) fn shape(
    request: &mut Request<upstream::RequestBody>,
    action: &Action,
    backend: Option<&Backend>,
    matched_prefix: Option<(&str, bool)>,
) {
    action.request_headers.apply(request.headers_mut());
    if let Some(backend) = backend {
        backend.request_headers.apply(request.headers_mut());
    }
    let Some((hostname, path)) = &action.rewrite else {
        return;
    };
    if let Some(host) = hostname
        && let Ok(value) = HeaderValue::from_str(host)
    {
        request.headers_mut().insert(header::HOST, value);
    }
    if let Some(path) = path {
        let new_path = rewritten(request.uri().path(), path, matched_prefix);
        let query = request
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        if let Ok(uri) = format!("{new_path}{query}").parse() {
            *request.uri_mut() = uri;
        }
    }
}

/// The path after `rewrite`; a prefix rewrite after an exact or regex match replaces the
/// whole path (what it matched).
fn rewritten(path: &str, rewrite: &PathRewrite, matched_prefix: Option<(&str, bool)>) -> String {
    match (rewrite, matched_prefix) {
        (PathRewrite::Full(full), _) | (PathRewrite::Prefix(full), None) => full.clone(),
        (PathRewrite::Prefix(with), Some((prefix, false))) => {
            routes::replace_prefix(path, prefix, with)
        }
        (PathRewrite::Prefix(with), Some((prefix, true))) => {
            routes::replace_string_prefix(path, prefix, with)
        }
        (PathRewrite::Regex(pattern, with), _) => {
            pattern.replace_all(path, with.as_str()).into_owned()
        }
    }
}

/// The redirect a rule answers with.
pub(super) fn redirected(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    req: &Request<Incoming>,
    redirect: &routes::Redirect,
    matched_prefix: Option<(&str, bool)>,
) -> Response<ResponseBody> {
    let host = host_of(req);
    let scheme = if redirect.scheme.is_empty() {
        "http"
    } else {
        redirect.scheme.as_str()
    };
    let hostname = if redirect.hostname.is_empty() {
        host
    } else {
        redirect.hostname.as_str()
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match redirect.port {
        0 => String::new(),
        p if p == default_port => String::new(),
        p => format!(":{p}"),
    };
    let path = redirect.path.as_ref().map_or_else(
        || req.uri().path().to_owned(),
        |p| rewritten(req.uri().path(), p, matched_prefix),
    );
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let location = format!("{scheme}://{hostname}{port}{path}{query}");
    exchange.labels.response_code = redirect.status.as_u16().to_string();
    exchange.detail = Some(format!("redirect to {location}"));
    let body = http_body_util::Empty::new().map_err(|never| match never {});
    let mut response = Response::new(finishing(shared, exchange, body));
    *response.status_mut() = redirect.status;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A bodyless copy of `request`.
pub(super) fn replay(request: &Request<upstream::RequestBody>) -> Request<upstream::RequestBody> {
    let mut copy = Request::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Sends to the routed endpoint, under the rule's timeouts and retries. Retries (another
/// endpoint each time) happen for connect failures, per-try timeouts and the configured
/// statuses, only for requests without a body (a streamed body cannot be sent twice).
pub(super) async fn forward(
    shared: &Shared,
    tunnel: &Tunnel,
    snap: &Snapshot,
    route: &Routed,
    first: Endpoint,
    version: Version,
    request: Request<upstream::RequestBody>,
) -> Forwarded {
    let action = route.action.as_deref();
    let mut exhausted = false;
    let retry = action.and_then(|a| a.retry.as_ref());
    let per_try = action.and_then(|a| a.backend_timeout);
    let total = action.and_then(|a| a.request_timeout);
    let attempts = async {
        let replayable = retry.is_some() && request.body().is_end_stream();
        let template = replayable.then(|| replay(&request));
        let mut request = Some(request);
        let mut endpoint = first;
        let mut attempt = 0u32;
        loop {
            let this = match request.take() {
                Some(first) => first,
                None => match &template {
                    Some(t) => replay(t),
                    None => return Err(Refusal::UpstreamReset("no request to retry".into())),
                },
            };
            let sent =
                shared
                    .clients
                    .send(&shared.connector, &endpoint, tunnel.client, version, this);
            let outcome = match per_try {
                Some(limit) => match tokio::time::timeout(limit, sent).await {
                    Ok(outcome) => outcome.map_err(Refusal::from),
                    Err(_) => Err(Refusal::Timeout(format!("no response within {limit:?}"))),
                },
                None => sent.await.map_err(Refusal::from),
            };
            let attempt_was = match &outcome {
                Ok(response) => Attempt::Response(
                    response.status().as_u16(),
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                ),
                Err(Refusal::ConnectFailed(_)) => Attempt::ConnectFailed,
                Err(Refusal::Timeout(_)) => Attempt::Timeout,
                Err(_) => Attempt::Reset,
            };
            if let Some(policy) = route
                .backend
                .as_ref()
                .and_then(|b| b.target.policy.as_deref())
            {
                shared.load.record(policy, endpoint.addr, attempt_was);
            }
            let retriable = retry.is_some_and(|r| r.retries(attempt_was));
            let more = retry.is_some_and(|r| attempt < r.attempts) && template.is_some();
            if !(retriable && more) {
                exhausted = retriable && attempt > 0;
                return outcome;
            }
            attempt += 1;
            if let Some(r) = retry {
                tokio::time::sleep(r.backoff).await;
            }
            if let Some(backend) = &route.backend
                && let Ok(next) = upstream::choose_backend(
                    snap,
                    &shared.load,
                    &backend.target,
                    tunnel.target.port(),
                    None,
                )
            {
                endpoint = next;
            }
            tracing::debug!(attempt, upstream = %endpoint.addr, "retrying");
        }
    };
    let outcome = match total {
        Some(limit) => tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or_else(|_| Err(Refusal::Timeout(format!("no response within {limit:?}")))),
        None => attempts.await,
    };
    Forwarded {
        outcome,
        retries_exhausted: exhausted,
    }
}

/// What forwarding came to.
pub(super) struct Forwarded {
    /// The upstream's response, or why there is none.
    pub(super) outcome: Result<Response<Incoming>, Refusal>,
    /// The last attempt still called for a retry but none was left (`URX`).
    pub(super) retries_exhausted: bool,
}

impl From<SendError> for Refusal {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Connect(e) => Self::ConnectFailed(e.to_string()),
            SendError::Request(e) => Self::UpstreamReset(e.to_string()),
        }
    }
}
