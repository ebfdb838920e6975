//! The HTTP echo: HTTP/1.1 and h2c (prior knowledge) on one port, every request answered
//! with a JSON description of what the server saw, plus the answers of the upstreams.
//!
//! Must not: vary its answer on anything but the request, the connection and the
//! upstreams' answers — tests compare it to what they sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;

/// Largest request body read (and counted) unless configured; larger ones are answered 413.
pub(crate) const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Request headers an upstream call carries on: trace context (W3C, B3, Envoy's request
/// id) and `end-user`, as Istio's samples propagate them.
const PROPAGATED: [&str; 10] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "end-user",
];

/// Time allowed for each upstream call.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this instance is, as reported in every answer.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// `$POD_NAME`, set by the Kubernetes downward API.
    pub(crate) pod: Option<String>,
    /// `$POD_NAMESPACE`, set by the Kubernetes downward API.
    pub(crate) namespace: Option<String>,
    /// `$POD_VERSION`: the pod's `version` label (the lab sets it for stand-ins).
    pub(crate) version: Option<String>,
    pub(crate) hostname: String,
}

impl Identity {
    /// Reads the pod's name and namespace from the environment and the host name from
    /// the kernel.
    pub(crate) fn from_env() -> Self {
        Self {
            pod: std::env::var("POD_NAME").ok(),
            namespace: std::env::var("POD_NAMESPACE").ok(),
            version: std::env::var("POD_VERSION").ok(),
            hostname: hostname(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What every connection of one HTTP listener shares.
#[derive(Debug)]
pub(crate) struct Context {
    identity: Identity,
    upstreams: Vec<String>,
    max_body: usize,
}

impl Context {
    pub(crate) fn new(identity: Identity, upstreams: Vec<String>, max_body: usize) -> Arc<Self> {
        Arc::new(Self {
            identity,
            upstreams,
            max_body,
        })
    }
}

/// Accepts connections forever; each is served by a task owned by this loop, so aborting
/// the loop closes them all.
pub(crate) async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = hbone::accept::accept(&listener, &crate::FD_RESERVE) => {
                connections.spawn(serve_connection(
                    Arc::clone(&builder),
                    Arc::clone(&context),
                    stream,
                    peer,
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    context: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            debug!(%peer, %error, "HTTP connection gone before it was served");
            return;
        }
    };
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |request| {
        answer(Arc::clone(&context), peer, local, request)
    });
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// The JSON body of a normal answer.
#[derive(Serialize)]
struct Answer<'a> {
    pod: Option<&'a str>,
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    hostname: &'a str,
    peer: String,
    local: String,
    method: &'a str,
    path: &'a str,
    protocol: String,
    headers: Map<String, Value>,
    body_bytes: usize,
    upstreams: Vec<UpstreamAnswer>,
}

/// What one upstream call gave.
#[derive(Serialize)]
#[serde(untagged)]
enum UpstreamAnswer {
    Answered {
        url: String,
        status: u16,
        /// Parsed JSON when the body is JSON, otherwise the text.
        body: Value,
    },
    Failed {
        url: String,
        error: String,
    },
}

async fn answer(
    context: Arc<Context>,
    peer: SocketAddr,
    local: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    debug!(%peer, method = %parts.method, path, version = ?parts.version, "HTTP request");

    let body_bytes = match count_body(body, context.max_body).await {
        Ok(count) => count,
        Err((status, error)) => return Ok(error_response(status, &error)),
    };
    let status = match status_from_path(parts.uri.path()) {
        Ok(status) => status,
        Err(error) => return Ok(error_response(StatusCode::BAD_REQUEST, &error)),
    };
    match delay_from_path(parts.uri.path()) {
        Ok(Some(delay)) => tokio::time::sleep(delay).await,
        Ok(None) => {}
        Err(error) => return Ok(error_response(StatusCode::BAD_REQUEST, &error)),
    }

    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            // Repeated headers are joined the way HTTP allows them to be folded.
            Some(Value::String(previous)) => {
                previous.push_str(", ");
                previous.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }

    let carried: Vec<(String, String)> = PROPAGATED
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    let mut upstreams = Vec::with_capacity(context.upstreams.len());
    for url in &context.upstreams {
        upstreams.push(
            match crate::call("GET", url, &carried, UPSTREAM_TIMEOUT).await {
                Ok((status, body)) => UpstreamAnswer::Answered {
                    url: url.clone(),
                    status,
                    body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                },
                Err(error) => UpstreamAnswer::Failed {
                    url: url.clone(),
                    error: error.to_string(),
                },
            },
        );
    }

    let identity = &context.identity;
    let answer = Answer {
        pod: identity.pod.as_deref(),
        namespace: identity.namespace.as_deref(),
        version: identity.version.as_deref(),
        hostname: &identity.hostname,
        peer: peer.to_string(),
        local: local.to_string(),
        method: parts.method.as_str(),
        path,
        protocol: format!("{:?}", parts.version),
        headers,
        body_bytes,
        upstreams,
    };
    // 204 and 304 must not carry content, nor may an answer to HEAD; hyper drops it over
    // HTTP/1.1 but would send it over HTTP/2.
    if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || parts.method == Method::HEAD
    {
        return Ok(json_response(status, Vec::new()));
    }
    Ok(match serde_json::to_vec(&answer) {
        Ok(json) => json_response(status, json),
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {error}"),
        ),
    })
}

/// Reads the body to its end, counting data bytes, without keeping them.
async fn count_body(mut body: Incoming, max: usize) -> Result<usize, (StatusCode, String)> {
    let mut count = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            count = count.saturating_add(data.len());
            if count > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {max} bytes"),
                ));
            }
        }
    }
    Ok(count)
}

/// `/status/<code>` asks for that status code; every other path gets 200.
fn status_from_path(path: &str) -> Result<StatusCode, String> {
    let Some(code) = path.strip_prefix("/status/") else {
        return Ok(StatusCode::OK);
    };
    code.parse::<u16>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("use /status/<code> with a code from 200 to 599, not {code:?}"))
}

/// `/delay/<ms>` answers after that many milliseconds (at most a minute).
fn delay_from_path(path: &str) -> Result<Option<std::time::Duration>, String> {
    let Some(ms) = path.strip_prefix("/delay/") else {
        return Ok(None);
    };
    ms.parse::<u64>()
        .ok()
        .filter(|ms| *ms <= 60_000)
        .map(|ms| Some(std::time::Duration::from_millis(ms)))
        .ok_or_else(|| format!("use /delay/<ms> with at most 60000 ms, not {ms:?}"))
}

fn error_response(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    let json = serde_json::json!({ "error": error })
        .to_string()
        .into_bytes();
    json_response(status, json)
}

fn json_response(status: StatusCode, json: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
