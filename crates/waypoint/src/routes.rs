//! HTTP routes: the validated form of `bowline.l7.v1.RouteTable` and how a request finds
//! its entry. Entries come in precedence order from the control plane (Gateway API rules:
//! exact path, then longest prefix, then method, then most headers, then most query
//! parameters, then the oldest route); the first whose match holds decides. Path prefixes
//! match whole segments (`/api` matches `/api`, `/api/` and `/api/v1`, not `/apis`).
//! Backends are picked by weight.

use std::collections::HashMap;
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
}

#[derive(Debug)]
enum PathMatch {
    /// Whole-segment prefix, without a trailing `/` (`""` matches everything).
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix the rule matched.
    Prefix(String),
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
    /// Service port.
    pub port: u16,
    /// `namespace/hostname`, the service's key in the mesh state.
    pub key: String,
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
    /// Response statuses retried (connect failures always are).
    pub codes: Vec<u16>,
    /// Wait between attempts.
    pub backoff: Duration,
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
    /// Copies sent, responses ignored: (where, percent).
    pub mirrors: Vec<(BackendRef, u32)>,
    /// Weighted backends.
    pub backends: Vec<Backend>,
    /// The whole request, retries included.
    pub request_timeout: Option<Duration>,
    /// Each attempt.
    pub backend_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
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
}

impl Table {
    /// The first entry that matches.
    pub fn find(&self, request: &RequestView<'_>) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matcher.matches(request))
    }
}

impl Matcher {
    fn matches(&self, r: &RequestView<'_>) -> bool {
        let path = match &self.path {
            PathMatch::Exact(p) => r.path == p,
            PathMatch::Prefix(p) => {
                r.path.starts_with(p.as_str())
                    && matches!(r.path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(r.path),
        };
        path && self.method.as_ref().is_none_or(|m| m == r.method)
            && self.headers.iter().all(|(name, m)| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| m.matches(v))
            })
            && self
                .query
                .iter()
                .all(|(name, m)| query_value(r.query, name).is_some_and(|v| m.matches(v)))
    }

    /// The prefix this match took off the path (for prefix rewrites).
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
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
        Ok(Table { entries })
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
        Err(_) => Err((format!("{field}.kind"), format!("unknown value {}", m.kind))),
    }
}

fn matcher(m: wire::RouteMatch) -> Result<Matcher, Invalid> {
    let path = m.path.unwrap_or_default();
    let path = match wire::path_match::Kind::try_from(path.kind) {
        Ok(wire::path_match::Kind::Prefix) => {
            PathMatch::Prefix(path.value.trim_end_matches('/').to_owned())
        }
        Ok(wire::path_match::Kind::Exact) => PathMatch::Exact(path.value),
        Ok(wire::path_match::Kind::Regex) => PathMatch::Regex(regex(&path.value, "path.value")?),
        Err(_) => return Err(("path.kind".into(), format!("unknown value {}", path.kind))),
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let field = format!("headers[{i}]");
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| (format!("{field}.name"), e.to_string()))?;
            Ok((name, value_match(h, &field)?))
        })
        .collect::<Result<_, Invalid>>()?;
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
    Ok(Matcher {
        path,
        headers,
        query,
        method,
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

fn path_rewrite(p: Option<wire::PathRewrite>) -> Option<PathRewrite> {
    match p?.kind? {
        wire::path_rewrite::Kind::FullPath(path) => Some(PathRewrite::Full(path)),
        wire::path_rewrite::Kind::Prefix(prefix) => Some(PathRewrite::Prefix(prefix)),
    }
}

fn backend_ref(b: Option<wire::BackendRef>, field: &str) -> Result<BackendRef, Invalid> {
    let b = b.unwrap_or_default();
    let port = u16::try_from(b.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| (format!("{field}.port"), format!("{} is not a port", b.port)))?;
    if b.namespace.is_empty() || b.name.is_empty() || b.hostname.is_empty() {
        return Err((
            field.to_owned(),
            "namespace, name and hostname are required".into(),
        ));
    }
    Ok(BackendRef {
        key: format!("{}/{}", b.namespace, b.hostname),
        namespace: b.namespace,
        name: b.name,
        port,
    })
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
            path: path_rewrite(r.path),
        }),
    };
    let rewrite = a.rewrite.map(|r| {
        (
            Some(r.hostname).filter(|h| !h.is_empty()),
            path_rewrite(r.path),
        )
    });
    let mirrors = a
        .mirrors
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok((
                backend_ref(m.backend, &format!("mirrors[{i}].backend"))?,
                m.percent.min(100),
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
    });
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
    };
    Ok(action)
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
    fn prefix_rewrites_keep_the_rest_of_the_path() {
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
