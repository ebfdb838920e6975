//! HTTPRoute / GRPCRoute → `bowline.l7.v1.RouteTable`, one per destination service, for
//! the waypoint that serves it (GAMMA).
//!
//! A route attaches to a Service (`parentRefs: [{group: "", kind: Service}]`: the traffic
//! to it) or to a waypoint's Gateway (every service bound to that waypoint). Only services
//! bound to a waypoint can be routed — ztunnel does no L7 — so a route on any other
//! service is reported and has no effect. A consumer route (in another namespace than its
//! Service) is not supported yet and reported. Every match of every rule of every route of
//! a service becomes one entry, in the Gateway API's precedence: exact path, then the
//! longest prefix (then regular expressions), then a method, then the most header
//! matches, then the most query matches; ties go to the oldest route, then
//! `namespace/name`, then rule and match order. A rule without matches matches every
//! request (prefix `/`). GRPCRoute methods become paths (`/<service>/<method>`).
//! Backends are Services (`hostname` resolved here); one that does not exist stays (the
//! waypoint answers 500 for its share, as the spec asks) and is reported. Each route gets
//! the Gateway API's conditions: `Accepted` (False, `NoMatchingParent`, when no parent
//! took it; `NotAllowedByListeners` / `NoMatchingListenerHostname` when an ingress
//! Gateway's listeners refused it) and `ResolvedRefs` (False, `BackendNotFound`, when a
//! backend is missing). A route attached to an ingress Gateway (class `istio`) goes into
//! that Gateway's per-port tables instead ([`super::ingress`]).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use config::resources::{self as k8s, RouteFilter, RouteParent};
use config::validate::gateway_duration;
use xds::l7 as wire;

use super::ingress::{self, HostRank};
use super::{Compiled, Condition, Index};

/// Where a route's entries go.
enum Attachment {
    /// The table of Service (namespace, name), at its waypoint.
    Service(String, String),
    /// The table of one port of an ingress Gateway (namespace, name), serving these host
    /// names (none: any).
    Ingress {
        gateway: (String, String),
        port: u16,
        hostnames: Vec<String>,
    },
}

/// A table: (namespace, service or Gateway, the Gateway's port for an ingress table).
type TableKey = (String, String, Option<u16>);

/// One route, either kind, as the compiler reads it.
struct AnyRoute<'a> {
    kind: &'static str,
    meta: &'a k8s::ObjectMeta,
    parents: &'a [k8s::ParentRef],
    hostnames: &'a [String],
    /// (rule index, matches, action) per rule.
    rules: Vec<(u32, Vec<wire::RouteMatch>, wire::RouteAction)>,
}

/// Compiles every route into `out.route_tables` (only the services in `wanted`
/// namespaces).
pub(super) fn tables(index: &Index<'_>, out: &mut Compiled, wanted: &dyn Fn(&str) -> bool) {
    let mut routes: Vec<AnyRoute<'_>> = Vec::new();
    for route in &index.http_routes {
        let namespace = route.metadata.namespace();
        let rules = numbered(&route.spec.rules, |rule| {
            let matches = rule.matches.iter().map(http_match).collect();
            (matches, http_action(index, namespace, rule))
        });
        routes.push(AnyRoute {
            kind: "HTTPRoute",
            meta: &route.metadata,
            parents: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules,
        });
    }
    for route in &index.grpc_routes {
        let namespace = route.metadata.namespace();
        let rules = numbered(&route.spec.rules, |rule| {
            let matches = rule.matches.iter().map(grpc_match).collect();
            (matches, grpc_action(index, namespace, rule))
        });
        routes.push(AnyRoute {
            kind: "GRPCRoute",
            meta: &route.metadata,
            parents: &route.spec.parent_refs,
            hostnames: &route.spec.hostnames,
            rules,
        });
    }
    // Oldest first, then by name: the tie-break between routes.
    routes.sort_by(|a, b| {
        let age = |m: &k8s::ObjectMeta| m.creation_timestamp.clone().unwrap_or_default();
        (age(a.meta), a.meta.namespace(), &a.meta.name).cmp(&(
            age(b.meta),
            b.meta.namespace(),
            &b.meta.name,
        ))
    });

    // Table → entries with their precedence keys and arrival order.
    let mut by_table: BTreeMap<TableKey, Vec<Ranked>> = BTreeMap::new();
    let mut order = 0usize;
    for route in &routes {
        let namespace = route.meta.namespace();
        let object = format!("{} {namespace}/{}", route.kind, route.meta.name);
        // A route of another namespace still counts where it attaches to an ingress
        // gateway being compiled (its tables take routes from any namespace).
        let ingress_only = !wanted(namespace);
        if ingress_only && !attaches_to_ingress(index, route, wanted) {
            continue;
        }
        // Such a route's notes and conditions stay those of its own namespace's compile.
        let mut scratch = Compiled::default();
        let out: &mut Compiled = if ingress_only {
            &mut scratch
        } else {
            &mut *out
        };
        let mut resolved = true;
        for (_, _, action) in &route.rules {
            let targets = action
                .backends
                .iter()
                .filter_map(|b| b.backend.as_ref())
                .chain(action.mirrors.iter().filter_map(|m| m.backend.as_ref()));
            for b in targets {
                if !index.service_exists(&b.namespace, &b.name) {
                    resolved = false;
                    out.report(
                        object.clone(),
                        format!(
                            "backendRef Service {}/{} does not exist: its share of the traffic is answered 500 until it does",
                            b.namespace, b.name
                        ),
                    );
                }
            }
        }
        let (mut attached, refused) = parents(index, route, &object, out);
        if ingress_only {
            attached
                .retain(|a| matches!(a, Attachment::Ingress { gateway, .. } if wanted(&gateway.0)));
        }
        let mesh = attached
            .iter()
            .any(|a| matches!(a, Attachment::Service(..)));
        if mesh && !route.hostnames.is_empty() {
            out.report(
                object.clone(),
                "spec.hostnames is not used for mesh routes (GAMMA): the route applies to its parents' traffic whatever the host".into(),
            );
        }
        out.conditions.insert(
            object.clone(),
            vec![
                if attached.is_empty() {
                    Condition::new("Accepted", false, refused.unwrap_or("NoMatchingParent"))
                } else {
                    Condition::new("Accepted", true, "Accepted")
                },
                if resolved {
                    Condition::new("ResolvedRefs", true, "ResolvedRefs")
                } else {
                    Condition::new("ResolvedRefs", false, "BackendNotFound")
                },
            ],
        );
        for attachment in attached {
            let (table, hostnames) = match attachment {
                Attachment::Service(ns, name) => ((ns, name, None), Vec::new()),
                Attachment::Ingress {
                    gateway: (ns, name),
                    port,
                    hostnames,
                } => ((ns, name, Some(port)), hostnames),
            };
            let ingress = table.2.is_some();
            let hosts = ingress::host_rank(&hostnames);
            for (rule, matches, action) in &route.rules {
                let all = if matches.is_empty() {
                    vec![http_match(&k8s::HttpRouteMatch::default())]
                } else {
                    matches.clone()
                };
                let action = if ingress {
                    ingress::action(index, &object, action, out)
                } else {
                    action.clone()
                };
                for m in all {
                    let key = (hosts, sort_key(&m));
                    let entry = wire::RouteEntry {
                        route: object.clone(),
                        rule: *rule,
                        r#match: Some(m),
                        action: Some(action.clone()),
                        hostnames: hostnames.clone(),
                    };
                    by_table
                        .entry(table.clone())
                        .or_default()
                        .push((key, order, entry));
                    order += 1;
                }
            }
        }
    }
    // Every port of an ingress Gateway is served, routes or not.
    for gateway in ingress::gateways(index, wanted) {
        for l in &gateway.spec.listeners {
            let key = (
                gateway.metadata.namespace().to_owned(),
                gateway.metadata.name.clone(),
                Some(l.port),
            );
            by_table.entry(key).or_default();
        }
    }
    for ((namespace, service, port), mut entries) in by_table {
        entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let (name, ingress) = match port {
            None => (format!("{namespace}/{service}"), None),
            Some(port) => {
                let Some(gateway) = index.gateways.get(&(namespace.as_str(), service.as_str()))
                else {
                    continue;
                };
                (
                    format!("{namespace}/{service}:{port}"),
                    Some(ingress::head(index, gateway, port, out)),
                )
            }
        };
        let table = wire::RouteTable {
            namespace,
            service,
            entries: entries.into_iter().map(|(_, _, e)| e).collect(),
            ingress,
            tcp: Vec::new(),
        };
        out.route_tables.insert(name, std::sync::Arc::new(table));
    }
}

/// Whether `route` names an ingress Gateway of a `wanted` namespace among its parents.
fn attaches_to_ingress(
    index: &Index<'_>,
    route: &AnyRoute<'_>,
    wanted: &dyn Fn(&str) -> bool,
) -> bool {
    route.parents.iter().any(|p| {
        let ns = p.namespace_or(route.meta.namespace());
        p.parent() == Some(RouteParent::Gateway)
            && wanted(ns)
            && index
                .gateways
                .get(&(ns, p.name.as_str()))
                .is_some_and(|g| g.spec.gateway_class_name == k8s::INGRESS_CLASS)
    })
}

/// Each rule compiled, with its index.
fn numbered<R>(
    rules: &[R],
    compile: impl Fn(&R) -> (Vec<wire::RouteMatch>, wire::RouteAction),
) -> Vec<(u32, Vec<wire::RouteMatch>, wire::RouteAction)> {
    (0u32..)
        .zip(rules)
        .map(|(i, rule)| {
            let (matches, action) = compile(rule);
            (i, matches, action)
        })
        .collect()
}

/// What a route's parents make it apply to; what cannot apply is reported (with the
/// reason an ingress Gateway's listeners gave, if one refused it).
fn parents(
    index: &Index<'_>,
    route: &AnyRoute<'_>,
    object: &str,
    out: &mut Compiled,
) -> (Vec<Attachment>, Option<ingress::Reason>) {
    let namespace = route.meta.namespace();
    let mut services = Vec::new();
    let mut attached = Vec::new();
    let mut refused = None;
    for parent in route.parents {
        let parent_ns = parent.namespace_or(namespace);
        match parent.parent() {
            Some(RouteParent::Service) => {
                if parent_ns != namespace {
                    out.report(
                        object.to_owned(),
                        format!(
                            "parentRef Service {parent_ns}/{}: consumer routes (in another namespace than their Service) are not supported yet; the route has no effect there — put it in namespace {parent_ns}",
                            parent.name
                        ),
                    );
                    continue;
                }
                let Some(service) = index.service(parent_ns, &parent.name) else {
                    out.report(
                        object.to_owned(),
                        format!(
                            "parentRef Service {parent_ns}/{} does not exist",
                            parent.name
                        ),
                    );
                    continue;
                };
                if super::waypoint::requested_by(index, &service.metadata).is_none() {
                    out.report(
                        object.to_owned(),
                        format!(
                            "Service {parent_ns}/{} uses no waypoint (istio.io/use-waypoint), and only a waypoint routes HTTP: the route has no effect until one is bound",
                            parent.name
                        ),
                    );
                    continue;
                }
                if parent.port.is_some() {
                    out.report(
                        object.to_owned(),
                        format!(
                            "parentRef Service {parent_ns}/{}: port is not honoured yet; the route applies to every port of the service",
                            parent.name
                        ),
                    );
                }
                services.push((parent_ns.to_owned(), parent.name.clone()));
            }
            Some(RouteParent::Gateway) => {
                let waypoint = (parent_ns.to_owned(), parent.name.clone());
                let Some(gateway) = index
                    .gateways
                    .get(&(waypoint.0.as_str(), waypoint.1.as_str()))
                else {
                    out.report(
                        object.to_owned(),
                        format!(
                            "parentRef Gateway {parent_ns}/{} does not exist",
                            parent.name
                        ),
                    );
                    continue;
                };
                if gateway.spec.gateway_class_name == k8s::INGRESS_CLASS {
                    match ingress::attach(gateway, namespace, parent, route.hostnames) {
                        Ok(ports) => {
                            attached.extend(ports.into_iter().map(|(port, hostnames)| {
                                Attachment::Ingress {
                                    gateway: waypoint.clone(),
                                    port,
                                    hostnames,
                                }
                            }));
                        }
                        Err(reason) => {
                            out.report(
                                object.to_owned(),
                                format!(
                                    "parentRef Gateway {parent_ns}/{}: no listener takes the route ({reason}: check sectionName/port, allowedRoutes and hostnames)",
                                    parent.name
                                ),
                            );
                            refused = Some(reason);
                        }
                    }
                    continue;
                }
                let bound: Vec<(String, String)> = index
                    .services
                    .iter()
                    .filter(|s| {
                        super::waypoint::requested_by(index, &s.metadata).as_ref()
                            == Some(&waypoint)
                    })
                    .map(|s| (s.metadata.namespace().to_owned(), s.metadata.name.clone()))
                    .collect();
                services.extend(bound);
            }
            None => {}
        }
    }
    services.sort();
    services.dedup();
    attached.extend(
        services
            .into_iter()
            .map(|(ns, name)| Attachment::Service(ns, name)),
    );
    (attached, refused)
}

/// Precedence: exact paths first, then longer prefixes, then regexes; then a method; then
/// more headers; then more query parameters (smaller sorts first).
type SortKey = (u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>);

/// An entry with its precedence (at an ingress gateway, its hosts' first) and the order
/// it came in (the tie-break).
type Ranked = ((HostRank, SortKey), usize, wire::RouteEntry);

fn sort_key(m: &wire::RouteMatch) -> SortKey {
    let path = m.path.clone().unwrap_or_default();
    let kind = match wire::path_match::Kind::try_from(path.kind) {
        Ok(wire::path_match::Kind::Exact) => 0,
        Ok(wire::path_match::Kind::Prefix) => 1,
        _ => 2,
    };
    (
        kind,
        Reverse(path.value.len()),
        m.method.is_empty(),
        Reverse(m.headers.len()),
        Reverse(m.query_params.len()),
    )
}

fn value_match(h: &k8s::HeaderMatch, lower: bool) -> wire::ValueMatch {
    let kind = if h.effective_type() == "RegularExpression" {
        wire::value_match::Kind::Regex
    } else {
        wire::value_match::Kind::Exact
    };
    wire::ValueMatch {
        kind: kind as i32,
        name: if lower {
            h.name.to_ascii_lowercase()
        } else {
            h.name.clone()
        },
        value: h.value.clone(),
    }
}

fn http_match(m: &k8s::HttpRouteMatch) -> wire::RouteMatch {
    let path = m.path.clone().unwrap_or_default();
    let kind = match path.effective_type() {
        "Exact" => wire::path_match::Kind::Exact,
        "RegularExpression" => wire::path_match::Kind::Regex,
        _ => wire::path_match::Kind::Prefix,
    };
    wire::RouteMatch {
        path: Some(wire::PathMatch {
            kind: kind as i32,
            value: path.effective_value().to_owned(),
            ..Default::default()
        }),
        headers: m.headers.iter().map(|h| value_match(h, true)).collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| value_match(q, false))
            .collect(),
        method: m.method.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn grpc_match(m: &k8s::GrpcRouteMatch) -> wire::RouteMatch {
    let method = m.method.clone().unwrap_or_default();
    let regex = method.effective_type() == "RegularExpression";
    let (kind, value) = match (method.service.as_deref(), method.method.as_deref(), regex) {
        (Some(s), Some(m), false) => (wire::path_match::Kind::Exact, format!("/{s}/{m}")),
        (Some(s), None, false) => (wire::path_match::Kind::Prefix, format!("/{s}")),
        (None, Some(m), false) => (
            wire::path_match::Kind::Regex,
            format!("/[^/]+/{}", regex_escape(m)),
        ),
        (s, m, true) => (
            wire::path_match::Kind::Regex,
            format!("/{}/{}", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        ),
        (None, None, false) => (wire::path_match::Kind::Prefix, "/".to_owned()),
    };
    wire::RouteMatch {
        path: Some(wire::PathMatch {
            kind: kind as i32,
            value,
            ..Default::default()
        }),
        headers: m.headers.iter().map(|h| value_match(h, true)).collect(),
        ..Default::default()
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn modifier(m: &k8s::HeaderModifier) -> wire::HeaderModifier {
    let headers = |list: &[k8s::HttpHeader]| {
        list.iter()
            .map(|h| wire::Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            })
            .collect()
    };
    wire::HeaderModifier {
        set: headers(&m.set),
        add: headers(&m.add),
        remove: m.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    }
}

fn path_rewrite(p: &k8s::PathModifier) -> wire::PathRewrite {
    let kind = match p.type_.as_str() {
        "ReplaceFullPath" => p
            .replace_full_path
            .clone()
            .map(wire::path_rewrite::Kind::FullPath),
        _ => p
            .replace_prefix_match
            .clone()
            .map(wire::path_rewrite::Kind::Prefix),
    };
    wire::PathRewrite { kind }
}

fn backend_ref(
    index: &Index<'_>,
    route_ns: &str,
    name: &str,
    namespace: Option<&str>,
    port: Option<u16>,
) -> wire::BackendRef {
    let namespace = namespace.unwrap_or(route_ns);
    wire::BackendRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: u32::from(port.unwrap_or(0)),
        hostname: index.hostname(name, namespace),
        subset: None,
        policy: None,
        via_waypoint: false,
    }
}

/// The filters both route kinds share, applied to `action`.
fn filter(
    index: &Index<'_>,
    route_ns: &str,
    type_: &str,
    request: Option<&k8s::HeaderModifier>,
    response: Option<&k8s::HeaderModifier>,
    mirror: Option<&k8s::RequestMirror>,
    action: &mut wire::RouteAction,
) {
    match type_ {
        "RequestHeaderModifier" => action.request_headers = request.map(modifier),
        "ResponseHeaderModifier" => action.response_headers = response.map(modifier),
        "RequestMirror" => {
            if let Some(m) = mirror {
                let b = &m.backend_ref;
                action.mirrors.push(wire::Mirror {
                    backend: Some(backend_ref(
                        index,
                        route_ns,
                        &b.name,
                        b.namespace.as_deref(),
                        b.port,
                    )),
                    percent: m.percent.unwrap_or(100),
                    per_million: 0,
                });
            }
        }
        _ => {}
    }
}

fn millis(text: Option<&str>) -> u64 {
    text.and_then(gateway_duration)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn http_action(index: &Index<'_>, route_ns: &str, rule: &k8s::HttpRouteRule) -> wire::RouteAction {
    let mut action = wire::RouteAction::default();
    for f in &rule.filters {
        filter(
            index,
            route_ns,
            &f.type_,
            f.request_header_modifier.as_ref(),
            f.response_header_modifier.as_ref(),
            f.request_mirror.as_ref(),
            &mut action,
        );
        match f.type_.as_str() {
            "RequestRedirect" => {
                if let Some(r) = &f.request_redirect {
                    action.redirect = Some(wire::Redirect {
                        scheme: r.scheme.clone().unwrap_or_default(),
                        hostname: r.hostname.clone().unwrap_or_default(),
                        port: u32::from(r.port.unwrap_or(0)),
                        path: r.path.as_ref().map(path_rewrite),
                        status_code: u32::from(r.status_code.unwrap_or(302)),
                    });
                }
            }
            "URLRewrite" => {
                if let Some(r) = &f.url_rewrite {
                    action.rewrite = Some(wire::Rewrite {
                        hostname: r.hostname.clone().unwrap_or_default(),
                        path: r.path.as_ref().map(path_rewrite),
                    });
                }
            }
            _ => {}
        }
    }
    action.backends = backends(index, route_ns, &rule.backend_refs);
    if let Some(t) = &rule.timeouts {
        action.request_timeout_ms = millis(t.request.as_deref());
        action.backend_timeout_ms = millis(t.backend_request.as_deref());
    }
    if let Some(r) = &rule.retry {
        action.retry = Some(wire::Retry {
            attempts: r.attempts.unwrap_or(0),
            codes: r.codes.iter().map(|c| u32::from(*c)).collect(),
            backoff_ms: millis(r.backoff.as_deref()),
            on: Vec::new(),
        });
    }
    action
}

fn grpc_action(index: &Index<'_>, route_ns: &str, rule: &k8s::GrpcRouteRule) -> wire::RouteAction {
    let mut action = wire::RouteAction::default();
    for f in &rule.filters {
        filter(
            index,
            route_ns,
            &f.type_,
            f.request_header_modifier.as_ref(),
            f.response_header_modifier.as_ref(),
            f.request_mirror.as_ref(),
            &mut action,
        );
    }
    action.backends = backends(index, route_ns, &rule.backend_refs);
    action
}

/// A rule's weighted backends, each with its own header filters.
fn backends<F: RouteFilter>(
    index: &Index<'_>,
    route_ns: &str,
    refs: &[k8s::BackendRef<F>],
) -> Vec<wire::Backend> {
    refs.iter()
        .map(|b| {
            let mut own = wire::RouteAction::default();
            for f in &b.filters {
                filter(
                    index,
                    route_ns,
                    f.type_(),
                    f.request_header_modifier(),
                    f.response_header_modifier(),
                    None,
                    &mut own,
                );
            }
            wire::Backend {
                backend: Some(backend_ref(
                    index,
                    route_ns,
                    &b.name,
                    b.namespace.as_deref(),
                    b.port,
                )),
                weight: b.effective_weight(),
                request_headers: own.request_headers,
                response_headers: own.response_headers,
            }
        })
        .collect()
}
