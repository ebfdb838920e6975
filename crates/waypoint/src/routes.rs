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

/// The routes of one destination service.
#[derive(Debug, Default)]
pub struct Table {
    /// In precedence order.
    pub entries: Vec<Entry>,
    /// Which entries a request can match at all, so a large table is not walked whole.
    index: Index,
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
    /// The source identity's namespace.
    pub source_namespace: &'a str,
}

impl Table {
    /// A table of `entries` (in precedence order).
    pub fn new(entries: Vec<Entry>) -> Self {
        let index = Index::new(&entries);
        Table { entries, index }
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

/// Why a route table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route table {table}: {field}: {reason}")]
pub struct RouteError {
    /// `namespace/service`.
    pub table: String,
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl TryFrom<wire::RouteTable> for Table {
    type Error = RouteError;

    fn try_from(w: wire::RouteTable) -> Result<Self, RouteError> {
        let table = format!("{}/{}", w.namespace, w.service);
        let err = |field: String, reason: String| RouteError {
            table: table.clone(),
            field,
            reason,
        };
        if w.namespace.is_empty() || w.service.is_empty() {
            return Err(err(
                "service".into(),
                "namespace and service are required".into(),
            ));
        }
        // Entries of one rule share its action.
        let mut actions: HashMap<(String, u32), Arc<Action>> = HashMap::new();
        let mut entries = Vec::with_capacity(w.entries.len());
        for (i, e) in w.entries.into_iter().enumerate() {
            let at = |field: &str| format!("entries[{i}].{field}");
            let matcher = matcher(e.r#match.unwrap_or_default())
                .map_err(|(field, reason)| err(at(&format!("match.{field}")), reason))?;
            let key = (e.route.clone(), e.rule);
            let action = match actions.get(&key) {
                Some(action) => action.clone(),
                None => {
                    let action =
                        Arc::new(action(e.action.unwrap_or_default()).map_err(
                            |(field, reason)| err(at(&format!("action.{field}")), reason),
                        )?);
                    actions.insert(key, action.clone());
                    action
                }
            };
            entries.push(Entry {
                route: e.route,
                rule: e.rule,
                matcher,
                action,
            });
        }
        Ok(Table::new(entries))
    }
}

type Invalid = (String, String);

fn regex(value: &str, field: &str) -> Result<Regex, Invalid> {
    // Whole-value matches, as the Gateway API's RE2 semantics for paths and headers.
    Regex::new(&format!("^(?:{value})$")).map_err(|e| (field.to_owned(), e.to_string()))
}

fn value_match(m: &wire::ValueMatch, field: &str) -> Result<ValueMatch, Invalid> {
    match wire::value_match::Kind::try_from(m.kind) {
        Ok(wire::value_match::Kind::Exact) => Ok(ValueMatch::Exact(m.value.clone())),
        Ok(wire::value_match::Kind::Regex) => Ok(ValueMatch::Regex(regex(&m.value, field)?)),
        Ok(wire::value_match::Kind::Prefix) => Ok(ValueMatch::Prefix(m.value.clone())),
        Ok(wire::value_match::Kind::Present) => Ok(ValueMatch::Present),
        Err(_) => Err((format!("{field}.kind"), format!("unknown value {}", m.kind))),
    }
}

fn header_matches(
    list: &[wire::ValueMatch],
    field: &str,
) -> Result<Vec<(HeaderName, ValueMatch)>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            let field = format!("{field}[{i}]");
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| (format!("{field}.name"), e.to_string()))?;
            Ok((name, value_match(h, &field)?))
        })
        .collect()
}

fn matcher(m: wire::RouteMatch) -> Result<Matcher, Invalid> {
    let path = m.path.unwrap_or_default();
    let no_case = path.ignore_case;
    let path = match wire::path_match::Kind::try_from(path.kind) {
        Ok(wire::path_match::Kind::Prefix) => {
            PathMatch::Prefix(path.value.trim_end_matches('/').to_owned())
        }
        Ok(wire::path_match::Kind::Exact) if no_case => PathMatch::ExactNoCase(path.value),
        Ok(wire::path_match::Kind::Exact) => PathMatch::Exact(path.value),
        Ok(wire::path_match::Kind::StringPrefix) if no_case => {
            PathMatch::StringPrefixNoCase(path.value)
        }
        Ok(wire::path_match::Kind::StringPrefix) => PathMatch::StringPrefix(path.value),
        Ok(wire::path_match::Kind::Regex) => PathMatch::Regex(regex(
            &if no_case {
                format!("(?i){}", path.value)
            } else {
                path.value
            },
            "path.value",
        )?),
        Err(_) => return Err(("path.kind".into(), format!("unknown value {}", path.kind))),
    };
    let headers = header_matches(&m.headers, "headers")?;
    let without_headers = header_matches(&m.without_headers, "without_headers")?;
    let query = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok((
                q.name.clone(),
                value_match(q, &format!("query_params[{i}]"))?,
            ))
        })
        .collect::<Result<_, Invalid>>()?;
    let method = if m.method.is_empty() {
        None
    } else {
        Some(
            http::Method::from_bytes(m.method.as_bytes())
                .map_err(|e| ("method".to_owned(), e.to_string()))?,
        )
    };
    let method_pattern = m
        .method_pattern
        .as_ref()
        .map(|p| value_match(p, "method_pattern"))
        .transpose()?;
    let authority = m
        .authority
        .as_ref()
        .map(|a| value_match(a, "authority"))
        .transpose()?;
    let port = match m.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| ("port".to_owned(), format!("{p} is not a port")))?),
    };
    Ok(Matcher {
        path,
        headers,
        query,
        method,
        method_pattern,
        authority,
        port,
        without_headers,
        source_workloads: m.source_workloads.map(|s| s.uids.into_iter().collect()),
        source_namespace: Some(m.source_namespace).filter(|ns| !ns.is_empty()),
    })
}

fn modifier(m: Option<wire::HeaderModifier>, field: &str) -> Result<HeaderModifier, Invalid> {
    let Some(m) = m else {
        return Ok(HeaderModifier::default());
    };
    let header = |h: &wire::Header, at: String| {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| (format!("{at}.name"), e.to_string()))?;
        let value =
            HeaderValue::from_str(&h.value).map_err(|e| (format!("{at}.value"), e.to_string()))?;
        Ok::<_, Invalid>((name, value))
    };
    let pairs = |list: &[wire::Header], part: &str| {
        list.iter()
            .enumerate()
            .map(|(i, h)| header(h, format!("{field}.{part}[{i}]")))
            .collect::<Result<Vec<_>, Invalid>>()
    };
    let remove = m
        .remove
        .iter()
        .enumerate()
        .map(|(i, n)| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| (format!("{field}.remove[{i}]"), e.to_string()))
        })
        .collect::<Result<_, Invalid>>()?;
    Ok(HeaderModifier {
        set: pairs(&m.set, "set")?,
        add: pairs(&m.add, "add")?,
        remove,
    })
}

fn path_rewrite(p: Option<wire::PathRewrite>, field: &str) -> Result<Option<PathRewrite>, Invalid> {
    let Some(kind) = p.and_then(|p| p.kind) else {
        return Ok(None);
    };
    Ok(Some(match kind {
        wire::path_rewrite::Kind::FullPath(path) => PathRewrite::Full(path),
        wire::path_rewrite::Kind::Prefix(prefix) => PathRewrite::Prefix(prefix),
        wire::path_rewrite::Kind::Regex(r) => PathRewrite::Regex(
            Regex::new(&r.pattern)
                .map_err(|e| (format!("{field}.regex.pattern"), e.to_string()))?,
            r.substitution,
        ),
    }))
}

fn backend_ref(b: Option<wire::BackendRef>, field: &str) -> Result<BackendRef, Invalid> {
    let b = b.unwrap_or_default();
    let port = u16::try_from(b.port)
        .map_err(|_| (format!("{field}.port"), format!("{} is not a port", b.port)))?;
    if b.namespace.is_empty() || b.name.is_empty() || b.hostname.is_empty() {
        return Err((
            field.to_owned(),
            "namespace, name and hostname are required".into(),
        ));
    }
    let subset = b.subset.as_ref().map_or("", |s| s.name.as_str());
    let destination = format!("{}/{}/{subset}", b.namespace, b.hostname);
    let policy = b.policy.map(|p| Arc::new(policy(p, destination)));
    Ok(BackendRef {
        policy,
        key: format!("{}/{}", b.namespace, b.hostname),
        namespace: b.namespace,
        name: b.name,
        port,
        subset: b.subset.map(|s| {
            Arc::new(Subset {
                name: s.name,
                uids: s.uids.into_iter().collect(),
            })
        }),
    })
}

fn policy(p: wire::TrafficPolicy, destination: String) -> Policy {
    use wire::load_balancer::{Hash, Simple};
    let balance = match p.load_balancer {
        None => Balance::LeastRequest,
        Some(lb) => match lb.hash {
            Some(Hash::Header(name)) => HeaderName::from_bytes(name.as_bytes())
                .map_or(Balance::LeastRequest, Balance::Header),
            Some(Hash::Cookie(name)) => Balance::Cookie(name),
            Some(Hash::QueryParameter(name)) => Balance::Query(name),
            Some(Hash::SourceIp(true)) => Balance::SourceIp,
            Some(Hash::SourceIp(false)) | None => match Simple::try_from(lb.simple) {
                Ok(Simple::RoundRobin) => Balance::RoundRobin,
                Ok(Simple::Random) => Balance::Random,
                _ => Balance::LeastRequest,
            },
        },
    };
    Policy {
        destination,
        balance,
        max_requests: p.connection_pool.map(|c| c.max_requests).filter(|m| *m > 0),
        outlier: p.outlier_detection.map(|o| Outlier {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway,
            base_ejection: Duration::from_millis(o.base_ejection_ms.max(1)),
            max_ejection_percent: o.max_ejection_percent.min(100),
            min_health_percent: o.min_health_percent.min(100),
        }),
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn action(a: wire::RouteAction) -> Result<Action, Invalid> {
    let redirect = match a.redirect {
        None => None,
        Some(r) => Some(Redirect {
            status: http::StatusCode::from_u16(if r.status_code == 0 {
                302
            } else {
                r.status_code as u16
            })
            .ok()
            .filter(|s| s.is_redirection())
            .ok_or_else(|| {
                (
                    "redirect.status_code".to_owned(),
                    format!("{} is not a redirect", r.status_code),
                )
            })?,
            port: u16::try_from(r.port).map_err(|_| {
                (
                    "redirect.port".to_owned(),
                    format!("{} is not a port", r.port),
                )
            })?,
            scheme: r.scheme,
            hostname: r.hostname,
            path: path_rewrite(r.path, "redirect.path")?,
        }),
    };
    let rewrite = match a.rewrite {
        None => None,
        Some(r) => Some((
            Some(r.hostname).filter(|h| !h.is_empty()),
            path_rewrite(r.path, "rewrite.path")?,
        )),
    };
    let mirrors = a
        .mirrors
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let share = if m.per_million > 0 {
                m.per_million.min(MILLION)
            } else {
                m.percent.min(100) * 10_000
            };
            Ok((
                backend_ref(m.backend, &format!("mirrors[{i}].backend"))?,
                share,
            ))
        })
        .collect::<Result<_, Invalid>>()?;
    let backends = a
        .backends
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("backends[{i}]");
            Ok(Backend {
                target: backend_ref(b.backend, &format!("{at}.backend"))?,
                weight: b.weight,
                request_headers: modifier(b.request_headers, &format!("{at}.request_headers"))?,
                response_headers: modifier(b.response_headers, &format!("{at}.response_headers"))?,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let retry = a.retry.filter(|r| r.attempts > 0).map(|r| Retry {
        attempts: r.attempts.min(10),
        codes: r
            .codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        backoff: Duration::from_millis(r.backoff_ms),
        on: r
            .on
            .iter()
            .filter_map(|c| wire::RetryOn::try_from(*c).ok())
            .map(|c| match c {
                wire::RetryOn::ServerError => RetryOn::ServerError,
                wire::RetryOn::GatewayError => RetryOn::GatewayError,
                wire::RetryOn::Reset => RetryOn::Reset,
                wire::RetryOn::ConnectFailure => RetryOn::ConnectFailure,
                wire::RetryOn::RefusedStream => RetryOn::RefusedStream,
                wire::RetryOn::Retriable4xx => RetryOn::Retriable4xx,
                wire::RetryOn::RetriableStatusCodes => RetryOn::StatusCodes,
                wire::RetryOn::GrpcUnavailable => RetryOn::GrpcUnavailable,
                wire::RetryOn::GrpcCancelled => RetryOn::GrpcCancelled,
                wire::RetryOn::GrpcDeadlineExceeded => RetryOn::GrpcDeadlineExceeded,
                wire::RetryOn::GrpcResourceExhausted => RetryOn::GrpcResourceExhausted,
            })
            .collect(),
    });
    let direct_response = match a.direct_response {
        None => None,
        Some(d) => Some((
            u16::try_from(d.status)
                .ok()
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .ok_or_else(|| {
                    (
                        "direct_response.status".to_owned(),
                        format!("{} is not an HTTP status", d.status),
                    )
                })?,
            d.body,
        )),
    };
    let fault = a.fault.map(fault).transpose()?;
    let cors = a.cors.map(cors).transpose()?;
    let action = Action {
        request_headers: modifier(a.request_headers, "request_headers")?,
        response_headers: modifier(a.response_headers, "response_headers")?,
        redirect,
        rewrite,
        mirrors,
        backends,
        request_timeout: millis(a.request_timeout_ms),
        backend_timeout: millis(a.backend_timeout_ms),
        retry,
        direct_response,
        fault,
        cors,
    };
    Ok(action)
}

/// Shares are in millionths.
pub const MILLION: u32 = 1_000_000;

fn fault(f: wire::Fault) -> Result<Fault, Invalid> {
    let delay = (f.delay_ms > 0 && f.delay_per_million > 0).then(|| {
        (
            Duration::from_millis(f.delay_ms),
            f.delay_per_million.min(MILLION),
        )
    });
    let abort = if f.abort_per_million == 0 {
        None
    } else if f.abort_grpc {
        Some((
            Abort::Grpc(f.abort_grpc_status),
            f.abort_per_million.min(MILLION),
        ))
    } else {
        let status = u16::try_from(f.abort_status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                (
                    "fault.abort_status".to_owned(),
                    format!("{} is not an HTTP status", f.abort_status),
                )
            })?;
        Some((Abort::Http(status), f.abort_per_million.min(MILLION)))
    };
    Ok(Fault { delay, abort })
}

fn cors(c: wire::Cors) -> Result<Cors, Invalid> {
    let joined = |list: &[String], field: &str| -> Result<Option<HeaderValue>, Invalid> {
        if list.is_empty() {
            return Ok(None);
        }
        HeaderValue::from_str(&list.join(","))
            .map(Some)
            .map_err(|e| (format!("cors.{field}"), e.to_string()))
    };
    Ok(Cors {
        allow_origins: c
            .allow_origins
            .iter()
            .enumerate()
            .map(|(i, o)| value_match(o, &format!("cors.allow_origins[{i}]")))
            .collect::<Result<_, _>>()?,
        allow_methods: joined(&c.allow_methods, "allow_methods")?,
        allow_headers: joined(&c.allow_headers, "allow_headers")?,
        expose_headers: joined(&c.expose_headers, "expose_headers")?,
        max_age: (c.max_age_s > 0).then(|| HeaderValue::from(c.max_age_s)),
        allow_credentials: c.allow_credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        path: (wire::path_match::Kind, &str),
        method: &str,
        backend: &str,
    ) -> wire::RouteEntry {
        wire::RouteEntry {
            route: "HTTPRoute shop/r".into(),
            rule: 0,
            r#match: Some(wire::RouteMatch {
                path: Some(wire::PathMatch {
                    kind: path.0 as i32,
                    value: path.1.into(),
                    ..Default::default()
                }),
                method: method.into(),
                ..Default::default()
            }),
            action: Some(wire::RouteAction {
                backends: vec![wire::Backend {
                    backend: Some(wire::BackendRef {
                        namespace: "shop".into(),
                        name: backend.into(),
                        port: 80,
                        hostname: format!("{backend}.shop.svc.cluster.local"),
                        ..Default::default()
                    }),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    /// A table of `entries`, each its own rule.
    fn table(mut entries: Vec<wire::RouteEntry>) -> Table {
        for (i, e) in entries.iter_mut().enumerate() {
            e.rule = i as u32;
        }
        Table::try_from(wire::RouteTable {
            namespace: "shop".into(),
            service: "reviews".into(),
            entries,
        })
        .unwrap()
    }

    fn backend_for(
        t: &Table,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<String> {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let view = RequestView {
            method: &method,
            path,
            query,
            headers,
            authority: Some("reviews:9080"),
            port: 9080,
            source_uid: Some("Kubernetes//Pod/shop/productpage-1"),
            source_namespace: "shop",
        };
        t.find(&view)
            .and_then(|e| e.action.backend(0))
            .map(|b| b.target.name.clone())
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_first_entry_wins() {
        use wire::path_match::Kind;
        let t = table(vec![
            entry((Kind::Exact, "/api/login"), "", "login"),
            entry((Kind::Prefix, "/api/"), "POST", "writes"),
            entry((Kind::Prefix, "/api"), "", "api"),
            entry((Kind::Regex, "/static/.*\\.css"), "", "css"),
        ]);
        let none = HeaderMap::new();
        assert_eq!(
            backend_for(&t, "GET", "/api/login", None, &none).as_deref(),
            Some("login")
        );
        assert_eq!(
            backend_for(&t, "POST", "/api/v1", None, &none).as_deref(),
            Some("writes")
        );
        assert_eq!(
            backend_for(&t, "GET", "/api/v1", None, &none).as_deref(),
            Some("api")
        );
        assert_eq!(
            backend_for(&t, "GET", "/api", None, &none).as_deref(),
            Some("api")
        );
        assert_eq!(backend_for(&t, "GET", "/apis", None, &none), None);
        assert_eq!(
            backend_for(&t, "GET", "/static/a.css", None, &none).as_deref(),
            Some("css")
        );
        assert_eq!(
            backend_for(&t, "GET", "/static/a.css.map", None, &none),
            None,
            "regexes match the whole path"
        );
    }

    #[test]
    fn header_and_query_matches_must_all_hold() {
        let mut e = entry((wire::path_match::Kind::Prefix, "/"), "", "canary");
        let m = e.r#match.as_mut().unwrap();
        m.headers.push(wire::ValueMatch {
            kind: wire::value_match::Kind::Exact as i32,
            name: "x-canary".into(),
            value: "yes".into(),
        });
        m.query_params.push(wire::ValueMatch {
            kind: wire::value_match::Kind::Regex as i32,
            name: "v".into(),
            value: "2|3".into(),
        });
        let t = table(vec![
            e,
            entry((wire::path_match::Kind::Prefix, "/"), "", "stable"),
        ]);
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("yes"));
        assert_eq!(
            backend_for(&t, "GET", "/", Some("a=1&v=3"), &canary).as_deref(),
            Some("canary")
        );
        assert_eq!(
            backend_for(&t, "GET", "/", Some("v=4"), &canary).as_deref(),
            Some("stable")
        );
        assert_eq!(
            backend_for(&t, "GET", "/", Some("v=2"), &HeaderMap::new()).as_deref(),
            Some("stable")
        );
    }

    #[test]
    fn weights_split_draws_in_proportion() {
        let mut e = entry((wire::path_match::Kind::Prefix, "/"), "", "v1");
        let action = e.action.as_mut().unwrap();
        action.backends[0].weight = 90;
        let mut v2 = action.backends[0].clone();
        v2.backend.as_mut().unwrap().name = "v2".into();
        v2.weight = 10;
        action.backends.push(v2);
        let t = table(vec![e]);
        let action = &t.entries[0].action;
        let v2 = (0..1000u64)
            .filter(|roll| action.backend(*roll).unwrap().target.name == "v2")
            .count();
        assert_eq!(v2, 100);
    }

    #[test]
    fn virtual_service_matches_string_prefixes_case_and_what_must_not_hold() {
        use wire::path_match::Kind;
        let mut plain = entry((Kind::StringPrefix, "/API"), "", "plain");
        plain
            .r#match
            .as_mut()
            .unwrap()
            .path
            .as_mut()
            .unwrap()
            .ignore_case = true;
        let mut without = entry((Kind::Prefix, "/"), "", "without");
        let m = without.r#match.as_mut().unwrap();
        m.without_headers.push(wire::ValueMatch {
            kind: wire::value_match::Kind::Present as i32,
            name: "x-debug".into(),
            value: String::new(),
        });
        m.port = 9080;
        m.source_namespace = "shop".into();
        let mut elsewhere = entry((Kind::Prefix, "/"), "", "other-port");
        elsewhere.r#match.as_mut().unwrap().port = 8080;
        let t = table(vec![plain, elsewhere, without]);
        let none = HeaderMap::new();
        assert_eq!(
            backend_for(&t, "GET", "/apis/x", None, &none).as_deref(),
            Some("plain"),
            "a VirtualService prefix is a string prefix, here ignoring case"
        );
        assert_eq!(
            backend_for(&t, "GET", "/other", None, &none).as_deref(),
            Some("without")
        );
        let mut debug = HeaderMap::new();
        debug.insert("x-debug", HeaderValue::from_static("1"));
        assert_eq!(backend_for(&t, "GET", "/other", None, &debug), None);
    }

    #[test]
    fn the_index_finds_what_walking_the_whole_table_finds() {
        use wire::path_match::Kind;
        let mut entries = Vec::new();
        for i in 0..40 {
            let mut e = match i % 4 {
                0 => entry((Kind::Exact, &format!("/p{}", i % 7)), "", &format!("b{i}")),
                1 => entry(
                    (Kind::Prefix, &format!("/p{}", i % 5)),
                    "",
                    &format!("b{i}"),
                ),
                _ => entry((Kind::Prefix, "/"), "", &format!("b{i}")),
            };
            let m = e.r#match.as_mut().unwrap();
            if i % 3 == 0 {
                m.headers.push(wire::ValueMatch {
                    kind: wire::value_match::Kind::Exact as i32,
                    name: format!("x-h{}", i % 2),
                    value: format!("{}", i % 4),
                });
            }
            if i % 5 == 0 {
                m.method = "POST".into();
            }
            entries.push(e);
        }
        let t = table(entries);
        for path in ["/", "/p0", "/p1", "/p3/x", "/p6", "/q"] {
            for method in ["GET", "POST"] {
                for (h0, h1) in [
                    (None, None),
                    (Some("0"), None),
                    (Some("2"), Some("1")),
                    (None, Some("3")),
                ] {
                    let mut headers = HeaderMap::new();
                    if let Some(v) = h0 {
                        headers.insert("x-h0", HeaderValue::from_static(v));
                    }
                    if let Some(v) = h1 {
                        headers.insert("x-h1", HeaderValue::from_static(v));
                    }
                    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
                    let view = RequestView {
                        method: &method,
                        path,
                        query: None,
                        headers: &headers,
                        authority: None,
                        port: 80,
                        source_uid: None,
                        source_namespace: "shop",
                    };
                    let walked = t.entries.iter().position(|e| e.matcher.matches(&view));
                    let found = t.find(&view).map(|e| e.rule as usize);
                    assert_eq!(found, walked, "{method} {path} {h0:?} {h1:?}");
                }
            }
        }
    }

    #[test]
    fn retry_conditions_follow_retry_on() {
        let retry = |on: Vec<RetryOn>, codes: Vec<u16>| Retry {
            attempts: 2,
            codes,
            backoff: Duration::ZERO,
            on,
        };
        let gateway = retry(vec![RetryOn::GatewayError], vec![]);
        assert!(gateway.retries(Attempt::Response(503, None)));
        assert!(!gateway.retries(Attempt::Response(500, None)));
        assert!(gateway.retries(Attempt::ConnectFailed));
        let five = retry(vec![RetryOn::ServerError], vec![]);
        assert!(five.retries(Attempt::Response(500, None)));
        assert!(five.retries(Attempt::Reset));
        assert!(!five.retries(Attempt::Response(404, None)));
        let connect = retry(vec![RetryOn::ConnectFailure], vec![]);
        assert!(!connect.retries(Attempt::Response(503, None)));
        assert!(!connect.retries(Attempt::Reset));
        let codes = retry(vec![RetryOn::StatusCodes], vec![418]);
        assert!(codes.retries(Attempt::Response(418, None)));
        let grpc = retry(vec![RetryOn::GrpcUnavailable], vec![]);
        assert!(grpc.retries(Attempt::Response(200, Some(14))));
        assert!(!grpc.retries(Attempt::Response(200, Some(2))));
        let gateway_api = retry(vec![], vec![503]);
        assert!(gateway_api.retries(Attempt::ConnectFailed));
        assert!(gateway_api.retries(Attempt::Response(503, None)));
        assert!(!gateway_api.retries(Attempt::Reset));
    }

    #[test]
    fn prefix_rewrites_keep_the_rest_of_the_path() {
        assert_eq!(
            replace_string_prefix("/productpage/x", "/productpage", "/v2"),
            "/v2/x"
        );
        assert_eq!(
            replace_prefix("/api/v1/users", "/api", "/v2"),
            "/v2/v1/users"
        );
        assert_eq!(replace_prefix("/api", "/api", "/"), "/");
        assert_eq!(replace_prefix("/api/x", "/api", "/"), "/x");
        assert_eq!(replace_prefix("/api/x", "/api", "/new/"), "/new/x");
    }

    #[test]
    fn a_bad_regex_or_header_is_refused_with_its_field() {
        let mut e = entry((wire::path_match::Kind::Regex, "(unclosed"), "", "x");
        let error = Table::try_from(wire::RouteTable {
            namespace: "shop".into(),
            service: "reviews".into(),
            entries: vec![e.clone()],
        })
        .unwrap_err();
        assert_eq!(error.field, "entries[0].match.path.value");
        e.r#match = Some(wire::RouteMatch::default());
        e.action.as_mut().unwrap().request_headers = Some(wire::HeaderModifier {
            set: vec![wire::Header {
                name: "bad header".into(),
                value: "x".into(),
            }],
            ..Default::default()
        });
        let error = Table::try_from(wire::RouteTable {
            namespace: "shop".into(),
            service: "reviews".into(),
            entries: vec![e],
        })
        .unwrap_err();
        assert_eq!(error.field, "entries[0].action.request_headers.set[0].name");
    }
}
