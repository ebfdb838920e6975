//! VirtualService (with DestinationRule subsets) → `bowline.l7.v1.RouteTable`, the same
//! table HTTPRoute compiles to, for the waypoint of each host.
//!
//! As istiod does for ambient: a VirtualService applies where its hosts' traffic meets L7
//! — the waypoint a Service is bound to — so a host with no waypoint gets a note that
//! nothing enforces the rule. Hosts are short names (the VirtualService's namespace),
//! `name.namespace[.svc[.<domain>]]`; wildcards and ServiceEntry hosts are reported and
//! not routed yet. Several VirtualServices for one host are merged, oldest first (then by
//! namespace/name), their `http` routes concatenated; within that, the first route whose
//! match holds decides (Istio's order as written — no re-sorting). A host that also has
//! an HTTPRoute keeps the HTTPRoute and the VirtualService is reported: Istio documents
//! mixing the two for one host as unsupported.
//!
//! Defaults are Istio's: a route without `retries` gets 2 attempts on connect failures,
//! refused streams, gRPC unavailable/cancelled and 503; a redirect is 301; a fault or
//! mirror without a percentage applies to every request; a destination without a port
//! uses the service's only port, else the request's own. A subset is resolved here, from
//! the DestinationRule for the destination host (the VirtualService's namespace first,
//! then the host's, then the root namespace), to the uids of the service's pods carrying
//! its labels; an undefined subset is reported and its share gets no endpoint (503).

use std::collections::BTreeMap;
use std::sync::Arc;

use config::resources::traffic::{self as vs, istio_duration};
use config::resources::{self as k8s, VirtualService};
use xds::l7 as wire;

use super::{Compiled, Index, authz, pod_uid};

/// Compiles every VirtualService into `out.route_tables` (services in `wanted`
/// namespaces), after the HTTPRoutes.
pub(super) fn tables(index: &Index<'_>, out: &mut Compiled, wanted: &dyn Fn(&str) -> bool) {
    let mut services: Vec<&VirtualService> = index.virtual_services.clone();
    services.sort_by(|a, b| {
        let age = |m: &k8s::ObjectMeta| m.creation_timestamp.clone().unwrap_or_default();
        (age(&a.metadata), a.metadata.namespace(), &a.metadata.name).cmp(&(
            age(&b.metadata),
            b.metadata.namespace(),
            &b.metadata.name,
        ))
    });
    let routed_by_http_route: Vec<String> = out.route_tables.keys().cloned().collect();
    let mut by_service: BTreeMap<(String, String), Vec<wire::RouteEntry>> = BTreeMap::new();
    let mut tcp_by_service: BTreeMap<(String, String), Vec<wire::TcpEntry>> = BTreeMap::new();
    for service in services {
        let namespace = service.metadata.namespace();
        let object = format!("VirtualService {namespace}/{}", service.metadata.name);
        if service.spec.hosts.is_empty() && wanted(namespace) {
            unused_delegate(index, service, &object, out);
            continue;
        }
        if !service.spec.export_to.is_empty() && service.spec.export_to != ["*"] {
            out.report(
                object.clone(),
                "exportTo has no effect: the waypoints of its hosts apply it for every client"
                    .into(),
            );
        }
        let mut targets = Vec::new();
        for host in &service.spec.hosts {
            match resolve(index, namespace, host) {
                Err(why) => out.report(object.clone(), format!("host {host:?}: {why}")),
                Ok((ns, name)) => {
                    let Some(svc) = index.service(&ns, &name) else {
                        out.report(
                            object.clone(),
                            format!("host {host:?}: Service {ns}/{name} does not exist"),
                        );
                        continue;
                    };
                    if super::waypoint::requested_by(index, &svc.metadata).is_none() {
                        out.report(
                            object.clone(),
                            format!(
                                "host {host:?}: Service {ns}/{name} uses no waypoint (istio.io/use-waypoint), and only a waypoint routes HTTP: nothing enforces this VirtualService for it until one is bound"
                            ),
                        );
                        continue;
                    }
                    if routed_by_http_route.contains(&format!("{ns}/{name}")) {
                        out.report(
                            object.clone(),
                            format!(
                                "host {host:?}: Service {ns}/{name} is routed by an HTTPRoute or GRPCRoute; mixing them with a VirtualService for one host is not supported (as in Istio), so the HTTPRoute decides and this VirtualService has no effect there"
                            ),
                        );
                        continue;
                    }
                    if wanted(&ns) {
                        targets.push((ns, name));
                    }
                }
            }
        }
        if targets.is_empty() {
            continue;
        }
        let entries = compile(index, service, &object, out);
        let tcp = tcp_entries(index, service, &object, out);
        for target in targets {
            tcp_by_service
                .entry(target.clone())
                .or_default()
                .extend(tcp.iter().cloned());
            by_service
                .entry(target)
                .or_default()
                .extend(entries.iter().cloned());
        }
    }
    for ((namespace, service), entries) in by_service {
        let tcp = tcp_by_service
            .remove(&(namespace.clone(), service.clone()))
            .unwrap_or_default();
        out.route_tables.insert(
            format!("{namespace}/{service}"),
            Arc::new(wire::RouteTable {
                ingress: None,
                namespace,
                service,
                entries,
                tcp,
            }),
        );
    }
    super::destination_rule::attach(index, out, wanted);
    for rule in &index.destination_rules {
        super::destination_rule::notes(index, rule, out, wanted);
    }
}

/// A delegate (no hosts) no root delegates to is reported: it routes nothing.
fn unused_delegate(index: &Index<'_>, delegate: &VirtualService, object: &str, out: &mut Compiled) {
    let used = index.virtual_services.iter().any(|root| {
        root.spec.http.iter().any(|r| {
            r.delegate.as_ref().is_some_and(|d| {
                d.name == delegate.metadata.name
                    && d.namespace.as_deref().unwrap_or(root.metadata.namespace())
                        == delegate.metadata.namespace()
            })
        })
    });
    if !used {
        out.report(
            object.to_owned(),
            "a delegate VirtualService (no hosts) routes only where a root VirtualService delegates to it, and none does".into(),
        );
    }
}

/// The Service (namespace, name) a host names, or why it cannot be routed.
pub(super) fn resolve(
    index: &Index<'_>,
    namespace: &str,
    host: &str,
) -> Result<(String, String), String> {
    if host.contains('*') {
        return Err("wildcard hosts are not routed yet; name the service".into());
    }
    let domain = format!(".svc.{}", index.settings.cluster_domain);
    let short = host
        .strip_suffix(domain.as_str())
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    let mut parts = short.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => Ok((namespace.to_owned(), name.to_owned())),
        (Some(name), Some(ns), None) => Ok((ns.to_owned(), name.to_owned())),
        _ => Err(
            "not a Service host of this cluster (ServiceEntry hosts are not routed by a waypoint yet)"
                .into(),
        ),
    }
}

/// The entries of one VirtualService, in order.
fn compile(
    index: &Index<'_>,
    service: &VirtualService,
    object: &str,
    out: &mut Compiled,
) -> Vec<wire::RouteEntry> {
    let namespace = service.metadata.namespace();
    let mut entries = Vec::new();
    for (i, route) in (0u32..).zip(&service.spec.http) {
        if let Some(to) = &route.delegate {
            entries.extend(super::delegate::entries(
                index, service, route, to, object, out,
            ));
            continue;
        }
        let action = action(index, namespace, route, object, out);
        let matches: Vec<wire::RouteMatch> = if route.matches.is_empty() {
            vec![any_path()]
        } else {
            route.matches.iter().map(|m| http_match(index, m)).collect()
        };
        for m in matches {
            entries.push(wire::RouteEntry {
                hostnames: Vec::new(),
                route: object.to_owned(),
                rule: i,
                r#match: Some(m),
                action: Some(action.clone()),
            });
        }
    }
    entries
}

/// The `tcp` routes of one VirtualService, one entry per match, in order.
fn tcp_entries(
    index: &Index<'_>,
    service: &VirtualService,
    object: &str,
    out: &mut Compiled,
) -> Vec<wire::TcpEntry> {
    let namespace = service.metadata.namespace();
    let mut entries = Vec::new();
    for (i, route) in (0u32..).zip(&service.spec.tcp) {
        let alone = route.route.len() == 1;
        let backends: Vec<wire::Backend> = route
            .route
            .iter()
            .map(|d| wire::Backend {
                backend: Some(backend_ref(index, namespace, &d.destination, object, out)),
                weight: d.weight.unwrap_or(if alone { 100 } else { 0 }),
                ..Default::default()
            })
            .collect();
        let any = [vs::L4MatchAttributes::default()];
        let matches = if route.matches.is_empty() {
            &any[..]
        } else {
            &route.matches[..]
        };
        for m in matches {
            entries.push(wire::TcpEntry {
                route: object.to_owned(),
                rule: i,
                port: u32::from(m.port.unwrap_or(0)),
                source_workloads: source_workloads(index, &m.source_labels),
                source_namespace: m.source_namespace.clone().unwrap_or_default(),
                backends: backends.clone(),
            });
        }
    }
    entries
}

/// The uids of the pods carrying `labels` (a `sourceLabels` match), when any are asked.
fn source_workloads(
    index: &Index<'_>,
    labels: &BTreeMap<String, String>,
) -> Option<wire::SourceWorkloads> {
    (!labels.is_empty()).then(|| wire::SourceWorkloads {
        uids: index
            .pods
            .iter()
            .filter(|p| {
                labels
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .map(|p| {
                pod_uid(
                    &index.settings.cluster_id,
                    p.metadata.namespace(),
                    &p.metadata.name,
                )
            })
            .collect(),
    })
}

/// Istio's match for a route without one: the plain prefix `/`.
pub(super) fn any_path() -> wire::RouteMatch {
    wire::RouteMatch {
        path: Some(wire::PathMatch {
            kind: wire::path_match::Kind::StringPrefix as i32,
            value: "/".into(),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

fn value_match(name: &str, m: &vs::StringMatch) -> wire::ValueMatch {
    use wire::value_match::Kind;
    let (kind, value) = match (&m.exact, &m.prefix, &m.regex) {
        (Some(v), _, _) => (Kind::Exact, v.clone()),
        (_, Some(v), _) => (Kind::Prefix, v.clone()),
        (_, _, Some(v)) => (Kind::Regex, v.clone()),
        _ => (Kind::Present, String::new()),
    };
    wire::ValueMatch {
        kind: kind as i32,
        name: name.to_owned(),
        value,
    }
}

pub(super) fn http_match(index: &Index<'_>, m: &vs::HttpMatchRequest) -> wire::RouteMatch {
    use wire::path_match::Kind;
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let path = match &m.uri {
        Some(vs::StringMatch { exact: Some(v), .. }) => (Kind::Exact, v.clone()),
        Some(vs::StringMatch {
            prefix: Some(v), ..
        }) => (Kind::StringPrefix, v.clone()),
        Some(vs::StringMatch { regex: Some(v), .. }) => (Kind::Regex, v.clone()),
        _ => (Kind::StringPrefix, "/".into()),
    };
    let headers = |map: &BTreeMap<String, vs::StringMatch>| {
        map.iter()
            .map(|(name, v)| value_match(&name.to_ascii_lowercase(), v))
            .collect()
    };
    let (method, method_pattern) = match &m.method {
        Some(vs::StringMatch { exact: Some(v), .. }) => (v.clone(), None),
        Some(other) => (String::new(), Some(value_match("", other))),
        None => (String::new(), None),
    };
    let source_workloads = source_workloads(index, &m.source_labels);
    wire::RouteMatch {
        path: Some(wire::PathMatch {
            kind: path.0 as i32,
            value: path.1,
            ignore_case,
        }),
        headers: headers(&m.headers),
        query_params: m
            .query_params
            .iter()
            .map(|(name, v)| value_match(name, v))
            .collect(),
        method,
        method_pattern,
        authority: m.authority.as_ref().map(|a| value_match("", a)),
        port: m.port.unwrap_or(0),
        without_headers: headers(&m.without_headers),
        source_workloads,
        source_namespace: m.source_namespace.clone().unwrap_or_default(),
    }
}

fn millis(text: Option<&str>) -> u64 {
    text.and_then(istio_duration)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A share in millionths: `percentage`, else the integer `percent`, else all.
fn share(percentage: Option<&vs::Percent>, percent: Option<u32>) -> u32 {
    match (percentage, percent) {
        (Some(p), _) => p.per_million(),
        (None, Some(p)) => p.min(100) * 10_000,
        (None, None) => 1_000_000,
    }
}

fn modifier(ops: Option<&vs::HeaderOperations>) -> Option<wire::HeaderModifier> {
    let ops = ops?;
    let pairs = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, value)| wire::Header {
                name: name.to_ascii_lowercase(),
                value: value.clone(),
            })
            .collect()
    };
    Some(wire::HeaderModifier {
        set: pairs(&ops.set),
        add: pairs(&ops.add),
        remove: ops.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    })
}

pub(super) fn action(
    index: &Index<'_>,
    namespace: &str,
    route: &vs::HttpRoute,
    object: &str,
    out: &mut Compiled,
) -> wire::RouteAction {
    let mut action = wire::RouteAction {
        request_headers: modifier(route.headers.as_ref().and_then(|h| h.request.as_ref())),
        response_headers: modifier(route.headers.as_ref().and_then(|h| h.response.as_ref())),
        request_timeout_ms: millis(route.timeout.as_deref()),
        ..Default::default()
    };
    let alone = route.route.len() == 1;
    for d in &route.route {
        action.backends.push(wire::Backend {
            backend: Some(backend_ref(index, namespace, &d.destination, object, out)),
            weight: d.weight.unwrap_or(if alone { 100 } else { 0 }),
            request_headers: modifier(d.headers.as_ref().and_then(|h| h.request.as_ref())),
            response_headers: modifier(d.headers.as_ref().and_then(|h| h.response.as_ref())),
        });
    }
    if let Some(r) = &route.redirect {
        action.redirect = Some(wire::Redirect {
            scheme: r.scheme.clone().unwrap_or_default(),
            hostname: r.authority.clone().unwrap_or_default(),
            port: r.port.unwrap_or(0),
            path: r.uri.clone().map(|uri| wire::PathRewrite {
                kind: Some(wire::path_rewrite::Kind::FullPath(uri)),
            }),
            status_code: r.redirect_code.unwrap_or(301),
        });
    }
    if let Some(d) = &route.direct_response {
        action.direct_response = Some(wire::DirectResponse {
            status: d.status,
            body: d
                .body
                .as_ref()
                .and_then(|b| b.decoded().ok())
                .unwrap_or_default()
                .into(),
        });
    }
    if let Some(r) = &route.rewrite {
        let path = match (&r.uri, &r.uri_regex_rewrite) {
            (Some(uri), _) => Some(wire::path_rewrite::Kind::Prefix(uri.clone())),
            (None, Some(re)) => Some(wire::path_rewrite::Kind::Regex(wire::RegexRewrite {
                pattern: re.pattern.clone(),
                substitution: substitution(&re.rewrite),
            })),
            (None, None) => None,
        };
        action.rewrite = Some(wire::Rewrite {
            hostname: r.authority.clone().unwrap_or_default(),
            path: path.map(|kind| wire::PathRewrite { kind: Some(kind) }),
        });
    }
    action.retry = retry(route.retries.as_ref());
    if let Some(r) = &route.retries {
        action.backend_timeout_ms = millis(r.per_try_timeout.as_deref());
    }
    if let Some(f) = &route.fault {
        let mut fault = wire::Fault::default();
        if let Some(d) = &f.delay {
            fault.delay_ms = millis(d.fixed_delay.as_deref());
            fault.delay_per_million = share(d.percentage.as_ref(), d.percent);
        }
        if let Some(a) = &f.abort {
            fault.abort_per_million = share(a.percentage.as_ref(), None);
            match a.grpc_code() {
                Some(Ok(code)) => {
                    fault.abort_grpc = true;
                    fault.abort_grpc_status = code;
                }
                _ => fault.abort_status = a.http_status.unwrap_or(0),
            }
        }
        action.fault = Some(fault);
    }
    if let Some(m) = &route.mirror {
        action.mirrors.push(wire::Mirror {
            backend: Some(backend_ref(index, namespace, m, object, out)),
            percent: 0,
            per_million: share(route.mirror_percentage.as_ref(), route.mirror_percent).max(1),
        });
    }
    for m in &route.mirrors {
        action.mirrors.push(wire::Mirror {
            backend: Some(backend_ref(index, namespace, &m.destination, object, out)),
            percent: 0,
            per_million: share(m.percentage.as_ref(), None).max(1),
        });
    }
    if let Some(c) = &route.cors_policy {
        let mut origins: Vec<wire::ValueMatch> =
            c.allow_origins.iter().map(|o| value_match("", o)).collect();
        origins.extend(c.allow_origin.iter().map(|o| {
            value_match(
                "",
                &vs::StringMatch {
                    exact: Some(o.clone()),
                    ..Default::default()
                },
            )
        }));
        action.cors = Some(wire::Cors {
            allow_origins: origins,
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_s: c
                .max_age
                .as_deref()
                .and_then(istio_duration)
                .map_or(0, |d| d.as_secs()),
            allow_credentials: c.allow_credentials.unwrap_or(false),
        });
    }
    action
}

/// RE2's `\1` groups in Rust's regex syntax (`${1}`).
fn substitution(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

/// The retry policy: the route's, or Istio's default when it has none.
fn retry(retries: Option<&vs::HttpRetry>) -> Option<wire::Retry> {
    let (attempts, on) = match retries {
        None => (vs::DEFAULT_RETRY_ATTEMPTS, vs::DEFAULT_RETRY_ON),
        Some(r) => (
            r.attempts,
            r.retry_on.as_deref().unwrap_or(vs::DEFAULT_RETRY_ON),
        ),
    };
    if attempts == 0 {
        return None;
    }
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for condition in on.split(',').map(str::trim) {
        use wire::RetryOn as R;
        let c = match condition {
            "5xx" => R::ServerError,
            "gateway-error" => R::GatewayError,
            "reset" => R::Reset,
            "connect-failure" => R::ConnectFailure,
            "refused-stream" => R::RefusedStream,
            "retriable-4xx" => R::Retriable4xx,
            "retriable-status-codes" => R::RetriableStatusCodes,
            "unavailable" => R::GrpcUnavailable,
            "cancelled" => R::GrpcCancelled,
            "deadline-exceeded" => R::GrpcDeadlineExceeded,
            "resource-exhausted" => R::GrpcResourceExhausted,
            other => match other.parse::<u32>() {
                Ok(code) => {
                    codes.push(code);
                    R::RetriableStatusCodes
                }
                Err(_) => continue,
            },
        };
        if !conditions.contains(&(c as i32)) {
            conditions.push(c as i32);
        }
    }
    if codes.is_empty() {
        codes.push(503);
    }
    Some(wire::Retry {
        attempts,
        codes,
        // Envoy's base interval, as Istio leaves it.
        backoff_ms: retries
            .and_then(|r| r.backoff.as_deref())
            .map_or(25, |b| millis(Some(b))),
        on: conditions,
    })
}

/// A destination as a backend: the service, its port, and the subset's workloads.
fn backend_ref(
    index: &Index<'_>,
    namespace: &str,
    d: &vs::Destination,
    object: &str,
    out: &mut Compiled,
) -> wire::BackendRef {
    let (ns, name) = match resolve(index, namespace, &d.host) {
        Ok(found) => found,
        Err(why) => {
            out.report(
                object.to_owned(),
                format!(
                    "destination {:?}: {why}; its share of the traffic is answered 500",
                    d.host
                ),
            );
            (namespace.to_owned(), d.host.clone())
        }
    };
    let service = index.service(&ns, &name);
    if service.is_none() {
        out.report(
            object.to_owned(),
            format!(
                "destination Service {ns}/{name} does not exist: its share of the traffic is answered 500 until it does"
            ),
        );
    }
    let port = match (&d.port, service) {
        (Some(p), _) => p.number,
        (None, Some(s)) if s.spec.ports.len() == 1 => u32::from(s.spec.ports[0].port),
        _ => 0,
    };
    let subset = d.subset.as_ref().map(|subset| wire::Subset {
        name: subset.clone(),
        uids: subset_pods(index, namespace, &ns, &name, subset, service, object, out),
    });
    wire::BackendRef {
        via_waypoint: false,
        hostname: index.hostname(&name, &ns),
        namespace: ns,
        name,
        port,
        subset,
        policy: None,
    }
}

/// The uids of the pods in subset `subset` of Service `ns/name`.
#[allow(clippy::too_many_arguments)]
fn subset_pods(
    index: &Index<'_>,
    from: &str,
    ns: &str,
    name: &str,
    subset: &str,
    service: Option<&k8s::Service>,
    object: &str,
    out: &mut Compiled,
) -> Vec<String> {
    let root = index.settings.root_namespace.as_str();
    let rule = super::destination_rule::rule_for(index, &[from, ns, root], ns, name);
    let Some(labels) = rule.and_then(|r| r.spec.subsets.iter().find(|s| s.name == subset)) else {
        out.report(
            object.to_owned(),
            format!(
                "subset {subset:?} of {ns}/{name} is not defined by a DestinationRule: its share of the traffic gets no endpoint (503) until it is"
            ),
        );
        return Vec::new();
    };
    let Some(service) = service else {
        return Vec::new();
    };
    index
        .pods
        .iter()
        .filter(|p| authz::selects(service, p))
        .filter(|p| {
            labels
                .labels
                .iter()
                .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })
        .map(|p| pod_uid(&index.settings.cluster_id, ns, &p.metadata.name))
        .collect()
}
