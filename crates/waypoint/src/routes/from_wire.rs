//! `bowline.l7.v1.RouteTable` → [`Table`]: every field checked (expressions compile,
//! header names and values are valid, statuses and ports in range), a refusal naming the
//! entry and field; the entries of one rule share one [`Action`].

use super::*;

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
            let mut matcher = matcher(e.r#match.unwrap_or_default())
                .map_err(|(field, reason)| err(at(&format!("match.{field}")), reason))?;
            for (j, host) in e.hostnames.iter().enumerate() {
                if host.is_empty() || host.contains(['/', ':', ' ']) {
                    return Err(err(
                        at(&format!("hostnames[{j}]")),
                        format!("{host:?} is not a host name"),
                    ));
                }
            }
            matcher.hosts = e.hostnames;
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
        let mut tcp = Vec::with_capacity(w.tcp.len());
        for (i, e) in w.tcp.into_iter().enumerate() {
            let at = |field: &str| format!("tcp[{i}].{field}");
            let port = match e.port {
                0 => None,
                p => Some(
                    u16::try_from(p).map_err(|_| err(at("port"), format!("{p} is not a port")))?,
                ),
            };
            let action = action(wire::RouteAction {
                backends: e.backends,
                ..Default::default()
            })
            .map_err(|(field, reason)| err(at(&field), reason))?;
            tcp.push(TcpEntry {
                route: e.route,
                rule: e.rule,
                port,
                source_workloads: e.source_workloads.map(|s| s.uids.into_iter().collect()),
                source_namespace: Some(e.source_namespace).filter(|ns| !ns.is_empty()),
                action: Arc::new(action),
            });
        }
        let mut table = Table::new(entries);
        table.tcp = tcp;
        if let Some(ingress) = w.ingress {
            table.ingress = Some(
                ingress_of(ingress)
                    .map_err(|(field, reason)| err(format!("ingress.{field}"), reason))?,
            );
        }
        Ok(table)
    }
}

fn ingress_of(w: wire::Ingress) -> Result<Ingress, Invalid> {
    let port = u16::try_from(w.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ("port".to_owned(), format!("{} is not a port", w.port)))?;
    let mut listeners = Vec::with_capacity(w.listeners.len());
    for (i, l) in w.listeners.into_iter().enumerate() {
        let mut certificates = Vec::with_capacity(l.certificates.len());
        for (j, c) in l.certificates.into_iter().enumerate() {
            let Some((ns, name)) = c.split_once('/') else {
                return Err((
                    format!("listeners[{i}].certificates[{j}]"),
                    format!("{c:?}: write namespace/name"),
                ));
            };
            certificates.push((ns.to_owned(), name.to_owned()));
        }
        listeners.push(IngressListener {
            name: l.name,
            hostname: (!l.hostname.is_empty()).then_some(l.hostname),
            certificates,
        });
    }
    Ok(Ingress {
        port,
        tls: w.tls,
        listeners,
    })
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
        hosts: Vec::new(),
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
        via_waypoint: b.via_waypoint,
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
