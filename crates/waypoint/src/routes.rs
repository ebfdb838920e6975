//! HTTP routes: the validated form of `bowline.l7.v1.RouteTable` and how a request finds
//! its entry. Entries come in precedence order from the control plane (Gateway API rules:
//! exact path, then longest prefix, then method, then most headers, then most query
//! parameters, then the oldest route; a VirtualService's in the order written); the first
//! whose match holds decides. Gateway API path prefixes match whole segments (`/api`
//! matches `/api`, `/api/` and `/api/v1`, not `/apis`), a VirtualService's `uri.prefix` is
//! a plain string prefix. Beside paths, headers, query parameters and the method, a match
//! can ask for the authority, the destination port, headers that must not match, the
//! source workload (a VirtualService's `sourceLabels`, compiled to workload uids) and the
//! source namespace. Backends are picked by weight; a backend can be a DestinationRule
//! subset (the workloads that serve it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use xds::l7 as wire;

/// The routes of one destination service, or of one port of an ingress gateway.
#[derive(Debug, Default)]
pub struct Table {
    /// In precedence order.
    pub entries: Vec<Entry>,
    /// Set for an ingress gateway's port.
    pub ingress: Option<Ingress>,
    /// VirtualService `tcp` routes for the service's opaque TCP, in order.
    pub tcp: Vec<TcpEntry>,
    /// Which entries a request can match at all, so a large table is not walked whole.
    index: Index,
}

/// One match of a VirtualService `tcp` route.
#[derive(Debug)]
pub struct TcpEntry {
    /// `VirtualService ns/name` of the route.
    pub route: String,
    /// The route's index.
    pub rule: u32,
    /// The original destination port; `None`: any.
    pub port: Option<u16>,
    /// The source workload must be one of these.
    pub source_workloads: Option<HashSet<String>>,
    /// The source identity's namespace.
    pub source_namespace: Option<String>,
    /// The weighted backends (only `backends` is set).
    pub action: Arc<Action>,
}

impl TcpEntry {
    fn matches(&self, port: u16, source_uid: Option<&str>, source_namespace: &str) -> bool {
        self.port.is_none_or(|p| p == port)
            && self
                .source_workloads
                .as_ref()
                .is_none_or(|uids| source_uid.is_some_and(|u| uids.contains(u)))
            && self
                .source_namespace
                .as_ref()
                .is_none_or(|ns| ns == source_namespace)
    }
}

/// One port of an ingress gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingress {
    /// The port.
    pub port: u16,
    /// TLS is terminated here.
    pub tls: bool,
    /// Its listeners, most specific host name first.
    pub listeners: Vec<IngressListener>,
}

/// One listener of an ingress gateway's port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressListener {
    /// Its name.
    pub name: String,
    /// Exact or `*.suffix`; `None`: any host.
    pub hostname: Option<String>,
    /// Its certificates' Secrets (namespace, name), in order of preference.
    pub certificates: Vec<(String, String)>,
}

impl Ingress {
    /// The listener serving `host` (TLS server name or `Host`, without port): the most
    /// specific whose hostname takes it.
    pub fn listener_for(&self, host: Option<&str>) -> Option<&IngressListener> {
        self.listeners.iter().find(|l| match (&l.hostname, host) {
            (None, _) => true,
            (Some(pattern), Some(host)) => host_matches(pattern, host),
            (Some(_), None) => false,
        })
    }
}

/// Whether `host` is `pattern` (ASCII case ignored) or, for `*.suffix`, a name under the
/// suffix (one label or more).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Entries by what they require exactly: an exact path, else an exact header value;
/// the rest are always candidates. A request's candidates are merged back in precedence
/// order, so the first that matches is the one a full walk would find.
#[derive(Debug, Default)]
struct Index {
    /// Entries without an exact requirement (ascending).
    always: Vec<usize>,
    /// Exact path → entries (ascending).
    by_path: HashMap<String, Vec<usize>>,
    /// Header name → exact value → entries (ascending).
    by_header: Vec<(HeaderName, HashMap<String, Vec<usize>>)>,
}

/// Indexed header names a request is looked up by before falling back to a full walk.
const MAX_INDEXED_HEADERS: usize = 6;

impl Index {
    fn new(entries: &[Entry]) -> Self {
        let mut index = Index::default();
        for (i, e) in entries.iter().enumerate() {
            if let PathMatch::Exact(path) = &e.matcher.path {
                index.by_path.entry(path.clone()).or_default().push(i);
                continue;
            }
            let exact = e.matcher.headers.iter().find_map(|(name, m)| match m {
                ValueMatch::Exact(v) => Some((name, v)),
                _ => None,
            });
            let Some((name, value)) = exact else {
                index.always.push(i);
                continue;
            };
            let slot = match index.by_header.iter().position(|(n, _)| n == name) {
                Some(slot) => slot,
                None => {
                    index.by_header.push((name.clone(), HashMap::new()));
                    index.by_header.len() - 1
                }
            };
            index.by_header[slot]
                .1
                .entry(value.clone())
                .or_default()
                .push(i);
        }
        if index.by_header.len() > MAX_INDEXED_HEADERS {
            // Too many kinds of key to merge cheaply: walk everything.
            return Index {
                always: (0..entries.len()).collect(),
                ..Index::default()
            };
        }
        index
    }
}

/// One match and what its rule does.
#[derive(Debug)]
pub struct Entry {
    /// `Kind ns/name` of the route.
    pub route: String,
    /// The rule's index in the route.
    pub rule: u32,
    /// When it applies.
    pub matcher: Matcher,
    /// What it does (shared by the rule's matches).
    pub action: Arc<Action>,
}

/// A request match; every set part must hold.
#[derive(Debug)]
pub struct Matcher {
    path: PathMatch,
    headers: Vec<(HeaderName, ValueMatch)>,
    query: Vec<(String, ValueMatch)>,
    method: Option<http::Method>,
    method_pattern: Option<ValueMatch>,
    authority: Option<ValueMatch>,
    port: Option<u16>,
    without_headers: Vec<(HeaderName, ValueMatch)>,
    source_workloads: Option<HashSet<String>>,
    source_namespace: Option<String>,
    /// At an ingress gateway: the hosts the entry serves (none: any).
    hosts: Vec<String>,
}

#[derive(Debug)]
enum PathMatch {
    /// Whole-segment prefix, without a trailing `/` (`""` matches everything).
    Prefix(String),
    Exact(String),
    Regex(Regex),
    /// Plain string prefix.
    StringPrefix(String),
    /// Exact, ignoring ASCII case.
    ExactNoCase(String),
    /// Plain string prefix, ignoring ASCII case.
    StringPrefixNoCase(String),
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
    Prefix(String),
    Present,
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Present => true,
        }
    }
}

/// Header changes.
#[derive(Debug, Default, Clone)]
pub struct HeaderModifier {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies set, add, then remove, as the Gateway API orders them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A path change.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix the rule matched.
    Prefix(String),
    /// Substitute every match of the pattern.
    Regex(Regex, String),
}

/// An answer the waypoint gives itself.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// New scheme (empty: keep).
    pub scheme: String,
    /// New host (empty: keep).
    pub hostname: String,
    /// New port (0: keep, or the scheme's default when the scheme changes).
    pub port: u16,
    /// New path.
    pub path: Option<PathRewrite>,
    /// 301 or 302.
    pub status: http::StatusCode,
}

/// A backend service and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port (0: the request's own destination port).
    pub port: u16,
    /// `namespace/hostname`, the service's key in the mesh state.
    pub key: String,
    /// Only these workloads serve it (a DestinationRule subset).
    pub subset: Option<Arc<Subset>>,
    /// The DestinationRule's traffic policy for it.
    pub policy: Option<Arc<Policy>>,
    /// At an ingress gateway: reached through the service's waypoint.
    pub via_waypoint: bool,
}

/// A destination's traffic policy (DestinationRule), compiled.
#[derive(Debug, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/hostname[/subset]`: what its limits and counters are per.
    pub destination: String,
    /// How an endpoint is chosen.
    pub balance: Balance,
    /// Requests in flight to the destination before overflow (503 `UO`).
    pub max_requests: Option<u32>,
    /// Ejection of failing endpoints.
    pub outlier: Option<Outlier>,
}

/// How an endpoint is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// The fewer in flight of two drawn at random.
    LeastRequest,
    /// In turn.
    RoundRobin,
    /// At random.
    Random,
    /// By a consistent hash of a header's value (falling back to least request when the
    /// request has none).
    Header(HeaderName),
    /// … of a cookie's value.
    Cookie(String),
    /// … of a query parameter's value.
    Query(String),
    /// … of the client's address.
    SourceIp,
}

/// `outlierDetection`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// 5xx (and gateway errors) in a row that eject; 0: not counted.
    pub consecutive_5xx: u32,
    /// Gateway errors (502, 503, 504, connect failures) in a row that eject; 0: not counted.
    pub consecutive_gateway: u32,
    /// The first ejection's length.
    pub base_ejection: Duration,
    /// Most of the endpoints ejected at once, percent.
    pub max_ejection_percent: u32,
    /// Below this share healthy, ejections are ignored, percent.
    pub min_health_percent: u32,
}

/// A DestinationRule subset, as the control plane resolved it.
#[derive(Debug, PartialEq, Eq)]
pub struct Subset {
    /// Its name.
    pub name: String,
    /// The uids of the workloads in it.
    pub uids: HashSet<String>,
}

impl BackendRef {
    /// The service port to use for a request to `original_port`.
    pub fn port_for(&self, original_port: u16) -> u16 {
        if self.port == 0 {
            original_port
        } else {
            self.port
        }
    }
}

/// A weighted backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where.
    pub target: BackendRef,
    /// Its share.
    pub weight: u32,
    /// Its own request header changes (after the rule's).
    pub request_headers: HeaderModifier,
    /// Its own response header changes (after the rule's).
    pub response_headers: HeaderModifier,
}

/// Retries.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Response statuses retried (with [`RetryOn::StatusCodes`]).
    pub codes: Vec<u16>,
    /// Wait between attempts.
    pub backoff: Duration,
    /// What is retried.
    pub on: Vec<RetryOn>,
}

/// A retry condition (Envoy's `retry_on`, as a VirtualService writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Any 5xx, reset, connect failure or refused stream.
    ServerError,
    /// 502, 503, 504.
    GatewayError,
    /// Reset before a response.
    Reset,
    /// The endpoint could not be reached.
    ConnectFailure,
    /// An HTTP/2 stream the endpoint refused.
    RefusedStream,
    /// 409.
    Retriable4xx,
    /// The listed statuses.
    StatusCodes,
    /// gRPC status 14.
    GrpcUnavailable,
    /// gRPC status 1.
    GrpcCancelled,
    /// gRPC status 4.
    GrpcDeadlineExceeded,
    /// gRPC status 8.
    GrpcResourceExhausted,
}

/// What an attempt came to, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A response with this status and `grpc-status` header, if any.
    Response(u16, Option<u32>),
    /// No connection.
    ConnectFailed,
    /// Reset (or refused) before a response.
    Reset,
    /// The attempt's timeout.
    Timeout,
}

impl Retry {
    /// Whether `attempt` calls for another.
    pub fn retries(&self, attempt: Attempt) -> bool {
        let on = |c: RetryOn| self.on.contains(&c);
        match attempt {
            Attempt::Response(status, grpc) => {
                let by_grpc = grpc.is_some_and(|g| {
                    (g == 14 && on(RetryOn::GrpcUnavailable))
                        || (g == 1 && on(RetryOn::GrpcCancelled))
                        || (g == 4 && on(RetryOn::GrpcDeadlineExceeded))
                        || (g == 8 && on(RetryOn::GrpcResourceExhausted))
                });
                by_grpc
                    || (self.on.is_empty() || on(RetryOn::StatusCodes))
                        && self.codes.contains(&status)
                    || (status >= 500 && on(RetryOn::ServerError))
                    || (matches!(status, 502..=504) && on(RetryOn::GatewayError))
                    || (status == 409 && on(RetryOn::Retriable4xx))
            }
            Attempt::ConnectFailed => {
                self.on.is_empty()
                    || on(RetryOn::ConnectFailure)
                    || on(RetryOn::ServerError)
                    || on(RetryOn::GatewayError)
            }
            Attempt::Reset => {
                on(RetryOn::Reset)
                    || on(RetryOn::RefusedStream)
                    || on(RetryOn::ServerError)
                    || on(RetryOn::GatewayError)
            }
            // A per-try timeout is retried, as Envoy does.
            Attempt::Timeout => true,
        }
    }
}

/// Injected faults.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Delay, and the share delayed (millionths).
    pub delay: Option<(Duration, u32)>,
    /// Abort, and the share aborted (millionths).
    pub abort: Option<(Abort, u32)>,
}

/// How an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// With this HTTP status.
    Http(http::StatusCode),
    /// With this gRPC status (HTTP 200, `grpc-status` in the head).
    Grpc(u32),
}

/// CORS.
#[derive(Debug)]
pub struct Cors {
    allow_origins: Vec<ValueMatch>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
}

impl Cors {
    /// Whether requests from `origin` are allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

/// What a rule does.
#[derive(Debug, Default)]
pub struct Action {
    /// Request header changes.
    pub request_headers: HeaderModifier,
    /// Response header changes.
    pub response_headers: HeaderModifier,
    /// Answer with a redirect instead of calling a backend.
    pub redirect: Option<Redirect>,
    /// Host and path changes before forwarding.
    pub rewrite: Option<(Option<String>, Option<PathRewrite>)>,
    /// Copies sent, responses ignored: (where, share in millionths).
    pub mirrors: Vec<(BackendRef, u32)>,
    /// Weighted backends.
    pub backends: Vec<Backend>,
    /// The whole request, retries included.
    pub request_timeout: Option<Duration>,
    /// Each attempt.
    pub backend_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
    /// Answer with this status and body instead of calling a backend.
    pub direct_response: Option<(http::StatusCode, bytes::Bytes)>,
    /// Injected delay and abort.
    pub fault: Option<Fault>,
    /// CORS.
    pub cors: Option<Cors>,
}

impl Action {
    /// The backend for a draw `roll` (any number; reduced modulo the total weight), `None`
    /// when no backend has weight.
    pub fn backend(&self, roll: u64) -> Option<&Backend> {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = roll % total;
        for backend in &self.backends {
            let weight = u64::from(backend.weight);
            if point < weight {
                return Some(backend);
            }
            point -= weight;
        }
        None
    }
}

impl Balance {
    /// The consistent-hash key of a request, when this balance hashes and the request has
    /// the attribute.
    pub fn key(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: std::net::IpAddr,
    ) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            Self::Header(name) => headers.get(name)?.as_bytes().hash(&mut h),
            Self::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then_some(v)
                })?
                .hash(&mut h),
            Self::Query(name) => query_value(query, name)?.hash(&mut h),
            Self::SourceIp => client.hash(&mut h),
            Self::LeastRequest | Self::RoundRobin | Self::Random => return None,
        }
        Some(h.finish())
    }
}

/// What a request looks like to the matcher.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// `:authority` or `Host`, as sent.
    pub authority: Option<&'a str>,
    /// The original destination port.
    pub port: u16,
    /// The source workload's uid, when the waypoint knows it.
    pub source_uid: Option<&'a str>,
    /// The source identity's namespace (empty: an outside client).
    pub source_namespace: &'a str,
    /// The request's host without port (`:authority` or `Host`), for an ingress gateway's
    /// host names.
    pub host: Option<&'a str>,
}

impl Table {
    /// A table of `entries` (in precedence order).
    pub fn new(entries: Vec<Entry>) -> Self {
        let index = Index::new(&entries);
        Table {
            entries,
            ingress: None,
            tcp: Vec::new(),
            index,
        }
    }

    /// The first `tcp` entry a connection to `port` from `source_uid` (the source
    /// workload, when known) in `source_namespace` matches.
    pub fn find_tcp(
        &self,
        port: u16,
        source_uid: Option<&str>,
        source_namespace: &str,
    ) -> Option<&TcpEntry> {
        self.tcp
            .iter()
            .find(|e| e.matches(port, source_uid, source_namespace))
    }

    /// Whether an HTTP request finds its route here: a table holding only `tcp` routes
    /// leaves HTTP to the service's own endpoints.
    pub fn routes_http(&self) -> bool {
        !self.entries.is_empty() || self.tcp.is_empty()
    }

    /// The first entry that matches.
    pub fn find(&self, request: &RequestView<'_>) -> Option<&Entry> {
        const EMPTY: &[usize] = &[];
        let mut lists: [&[usize]; MAX_INDEXED_HEADERS + 2] = [EMPTY; MAX_INDEXED_HEADERS + 2];
        lists[0] = &self.index.always;
        if let Some(by_path) = self.index.by_path.get(request.path) {
            lists[1] = by_path;
        }
        for (slot, (name, values)) in self.index.by_header.iter().enumerate() {
            if let Some(found) = request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| values.get(v))
            {
                lists[slot + 2] = found;
            }
        }
        // Merge the candidate lists in ascending order; the first match wins.
        let mut at = [0usize; MAX_INDEXED_HEADERS + 2];
        loop {
            let mut next: Option<(usize, usize)> = None;
            for (l, list) in lists.iter().enumerate() {
                if let Some(&i) = list.get(at[l])
                    && next.is_none_or(|(_, best)| i < best)
                {
                    next = Some((l, i));
                }
            }
            let (l, i) = next?;
            at[l] += 1;
            let entry = &self.entries[i];
            if entry.matcher.matches(request) {
                return Some(entry);
            }
        }
    }
}

impl Matcher {
    fn matches(&self, r: &RequestView<'_>) -> bool {
        let starts_no_case = |p: &str| {
            r.path.len() >= p.len()
                && r.path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        };
        let path = match &self.path {
            PathMatch::Exact(p) => r.path == p,
            PathMatch::Prefix(p) => {
                r.path.starts_with(p.as_str())
                    && matches!(r.path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(r.path),
            PathMatch::StringPrefix(p) => r.path.starts_with(p.as_str()),
            PathMatch::ExactNoCase(p) => r.path.eq_ignore_ascii_case(p),
            PathMatch::StringPrefixNoCase(p) => starts_no_case(p),
        };
        let header = |name: &HeaderName, m: &ValueMatch| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| m.matches(v))
        };
        path && self.method.as_ref().is_none_or(|m| m == r.method)
            && self
                .method_pattern
                .as_ref()
                .is_none_or(|m| m.matches(r.method.as_str()))
            && self.port.is_none_or(|p| p == r.port)
            && self
                .authority
                .as_ref()
                .is_none_or(|m| r.authority.is_some_and(|a| m.matches(a)))
            && self.headers.iter().all(|(name, m)| header(name, m))
            && !self.without_headers.iter().any(|(name, m)| header(name, m))
            && self
                .query
                .iter()
                .all(|(name, m)| query_value(r.query, name).is_some_and(|v| m.matches(v)))
            && self
                .source_workloads
                .as_ref()
                .is_none_or(|uids| r.source_uid.is_some_and(|u| uids.contains(u)))
            && self
                .source_namespace
                .as_ref()
                .is_none_or(|ns| ns == r.source_namespace)
            && (self.hosts.is_empty()
                || r.host
                    .is_some_and(|h| self.hosts.iter().any(|p| host_matches(p, h))))
    }

    /// The prefix this match took off the path (for prefix rewrites), and whether it is a
    /// plain string prefix (else whole segments). An exact or regex match took the whole
    /// path.
    pub fn matched_prefix(&self) -> Option<(&str, bool)> {
        match &self.path {
            PathMatch::Prefix(p) => Some((p, false)),
            PathMatch::StringPrefix(p) | PathMatch::StringPrefixNoCase(p) => Some((p, true)),
            _ => None,
        }
    }
}

/// The first value of query parameter `name` (not percent-decoded).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `path` with its first `prefix.len()` bytes (the matched string prefix) replaced by
/// `with`, as a VirtualService rewrites.
pub fn replace_string_prefix(path: &str, prefix: &str, with: &str) -> String {
    let rest = path.get(prefix.len()..).unwrap_or("");
    format!("{with}{rest}")
}

/// `path` with `prefix` (matched) replaced by `with`, on segment boundaries.
pub fn replace_prefix(path: &str, prefix: &str, with: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let with = with.trim_end_matches('/');
    match (with.is_empty(), rest.is_empty()) {
        (true, true) => "/".to_owned(),
        (true, false) => rest.to_owned(),
        (false, _) => format!("{with}{rest}"),
    }
}

/// Shares are in millionths.
pub const MILLION: u32 = 1_000_000;

mod from_wire;
pub use from_wire::RouteError;

#[cfg(test)]
mod tests;
