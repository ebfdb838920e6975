//! DestinationRule traffic policies → the `policy` of every backend that names its host,
//! in every route table (VirtualService and HTTPRoute alike: Istio applies a
//! DestinationRule to the destination, whatever routed there). The policy of a backend is
//! the host's, with the port's `portLevelSettings` over it (when the port is known), with
//! the subset's over that, part by part (load balancer, connection pool, outlier
//! detection), as Istio merges them. A service bound to a waypoint that has a policy but
//! no route gets a table of one catch-all entry to itself, so the policy is enforced
//! there too.
//!
//! The compiled form: `connectionPool` becomes one limit of requests in flight (the
//! smallest of `http2MaxRequests` and `maxConnections + http1MaxPendingRequests`, the
//! point where Envoy overflows); `outlierDetection` keeps Istio's
//! defaults (5 consecutive 5xx, 30 s base ejection, at most 10% ejected); a consistent
//! hash on a header, cookie, query parameter or the source IP (ring hash and maglev are
//! both served by one consistent hash: a key stays on its endpoint while the endpoints
//! stay, and few keys move when they change).

use std::sync::Arc;

use config::resources::DestinationRule;
use config::resources::traffic::{self as vs, istio_duration};
use xds::l7 as wire;

use super::{Compiled, Index};

/// The DestinationRule for Service `ns/name`: the first of `namespaces` that has one.
pub(super) fn rule_for<'a>(
    index: &Index<'a>,
    namespaces: &[&str],
    ns: &str,
    name: &str,
) -> Option<&'a DestinationRule> {
    namespaces.iter().find_map(|at| {
        index.destination_rules.iter().copied().find(|r| {
            r.metadata.namespace() == *at
                && super::virtual_service::resolve(index, r.metadata.namespace(), &r.spec.host).ok()
                    == Some((ns.to_owned(), name.to_owned()))
        })
    })
}

/// Attaches policies to every backend of every table, and gives policy-only services a
/// table.
pub(super) fn attach(index: &Index<'_>, out: &mut Compiled, wanted: &dyn Fn(&str) -> bool) {
    let root = index.settings.root_namespace.as_str();
    for service in &index.services {
        let (ns, name) = (service.metadata.namespace(), service.metadata.name.as_str());
        let key = format!("{ns}/{name}");
        if !wanted(ns) || out.route_tables.contains_key(&key) {
            continue;
        }
        let has_policy =
            rule_for(index, &[ns, root], ns, name).is_some_and(|r| r.spec.traffic_policy.is_some());
        if !has_policy || super::waypoint::requested_by(index, &service.metadata).is_none() {
            continue;
        }
        let entry = wire::RouteEntry {
            hostnames: Vec::new(),
            route: format!("Service {key}"),
            rule: 0,
            r#match: Some(wire::RouteMatch {
                path: Some(wire::PathMatch {
                    kind: wire::path_match::Kind::StringPrefix as i32,
                    value: String::new(),
                    ignore_case: false,
                }),
                ..Default::default()
            }),
            action: Some(wire::RouteAction {
                backends: vec![wire::Backend {
                    backend: Some(wire::BackendRef {
                        via_waypoint: false,
                        namespace: ns.to_owned(),
                        name: name.to_owned(),
                        port: 0,
                        hostname: index.hostname(name, ns),
                        subset: None,
                        policy: None,
                    }),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        out.route_tables.insert(
            key,
            Arc::new(wire::RouteTable {
                ingress: None,
                tcp: Vec::new(),
                namespace: ns.to_owned(),
                service: name.to_owned(),
                entries: vec![entry],
            }),
        );
    }
    for table in out.route_tables.values_mut() {
        if !wanted(&table.namespace) {
            continue;
        }
        let table = Arc::make_mut(table);
        for entry in &mut table.entries {
            let Some(action) = entry.action.as_mut() else {
                continue;
            };
            let refs = action
                .backends
                .iter_mut()
                .filter_map(|b| b.backend.as_mut())
                .chain(action.mirrors.iter_mut().filter_map(|m| m.backend.as_mut()));
            for backend in refs {
                let rule = rule_for(
                    index,
                    &[&backend.namespace, root],
                    &backend.namespace,
                    &backend.name,
                );
                backend.policy = rule.and_then(|r| policy(r, backend));
            }
        }
    }
}

/// The compiled policy of `backend` under `rule`.
fn policy(rule: &DestinationRule, backend: &wire::BackendRef) -> Option<wire::TrafficPolicy> {
    let host = rule.spec.traffic_policy.as_ref();
    let port = host.and_then(|p| {
        p.port_level_settings.iter().find(|s| {
            backend.port != 0 && s.port.as_ref().is_some_and(|p| p.number == backend.port)
        })
    });
    let subset = backend.subset.as_ref().and_then(|s| {
        rule.spec
            .subsets
            .iter()
            .find(|d| d.name == s.name)
            .and_then(|d| d.traffic_policy.as_ref())
    });
    let lb = subset
        .and_then(|p| p.load_balancer.as_ref())
        .or_else(|| port.and_then(|p| p.load_balancer.as_ref()))
        .or_else(|| host.and_then(|p| p.load_balancer.as_ref()));
    let pool = subset
        .and_then(|p| p.connection_pool.as_ref())
        .or_else(|| port.and_then(|p| p.connection_pool.as_ref()))
        .or_else(|| host.and_then(|p| p.connection_pool.as_ref()));
    let outlier = subset
        .and_then(|p| p.outlier_detection.as_ref())
        .or_else(|| port.and_then(|p| p.outlier_detection.as_ref()))
        .or_else(|| host.and_then(|p| p.outlier_detection.as_ref()));
    if lb.is_none() && pool.is_none() && outlier.is_none() {
        return None;
    }
    Some(wire::TrafficPolicy {
        load_balancer: lb.map(load_balancer),
        connection_pool: pool.map(connection_pool),
        outlier_detection: outlier.map(outlier_detection),
    })
}

fn millis(text: Option<&str>) -> Option<u64> {
    text.and_then(istio_duration)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn load_balancer(lb: &vs::LoadBalancer) -> wire::LoadBalancer {
    use wire::load_balancer::{Hash, Simple};
    let simple = match lb.simple.as_deref() {
        Some("ROUND_ROBIN") => Simple::RoundRobin,
        Some("RANDOM") => Simple::Random,
        _ => Simple::LeastRequest,
    };
    let hash = lb.consistent_hash.as_ref().and_then(|h| {
        if let Some(header) = &h.http_header_name {
            Some(Hash::Header(header.to_ascii_lowercase()))
        } else if let Some(cookie) = &h.http_cookie {
            Some(Hash::Cookie(cookie.name.clone()))
        } else if let Some(query) = &h.http_query_parameter_name {
            Some(Hash::QueryParameter(query.clone()))
        } else {
            h.use_source_ip.filter(|s| *s).map(Hash::SourceIp)
        }
    });
    wire::LoadBalancer {
        simple: simple as i32,
        hash,
    }
}

fn connection_pool(pool: &vs::ConnectionPool) -> wire::ConnectionPool {
    let http = pool.http.as_ref();
    let tcp = pool.tcp.as_ref();
    let by_requests = http.and_then(|h| h.http2_max_requests);
    let by_connections = tcp
        .and_then(|t| t.max_connections)
        .map(|c| c.saturating_add(http.and_then(|h| h.http1_max_pending_requests).unwrap_or(0)));
    let max_requests = match (by_requests, by_connections) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => http.and_then(|h| h.http1_max_pending_requests).unwrap_or(0),
    };
    wire::ConnectionPool { max_requests }
}

fn outlier_detection(o: &vs::OutlierDetection) -> wire::OutlierDetection {
    wire::OutlierDetection {
        consecutive_5xx: o
            .consecutive5xx_errors
            .or(o.consecutive_errors)
            .unwrap_or(5),
        consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
        base_ejection_ms: millis(o.base_ejection_time.as_deref()).unwrap_or(30_000),
        max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
        min_health_percent: o.min_health_percent.unwrap_or(0).min(100),
    }
}

/// What of a DestinationRule has no effect yet, and a host nothing routes at.
pub(super) fn notes(
    index: &Index<'_>,
    rule: &DestinationRule,
    out: &mut Compiled,
    wanted: &dyn Fn(&str) -> bool,
) {
    let namespace = rule.metadata.namespace();
    if !wanted(namespace) {
        return;
    }
    let object = format!("DestinationRule {namespace}/{}", rule.metadata.name);
    let mut unenforced: Vec<String> = rule
        .spec
        .traffic_policy
        .as_ref()
        .map(|p| {
            p.unenforced()
                .into_iter()
                .map(|f| format!("trafficPolicy.{f}"))
                .collect()
        })
        .unwrap_or_default();
    for (i, subset) in rule.spec.subsets.iter().enumerate() {
        if let Some(p) = &subset.traffic_policy {
            unenforced.extend(
                p.unenforced()
                    .into_iter()
                    .map(|f| format!("subsets[{i}].trafficPolicy.{f}")),
            );
        }
    }
    if !unenforced.is_empty() {
        out.report(
            object.clone(),
            format!(
                "accepted, not enforced yet: {} (tls ISTIO_MUTUAL and DISABLE are what the mesh does anyway)",
                unenforced.join(", ")
            ),
        );
    }
    if !rule.spec.export_to.is_empty() && rule.spec.export_to != ["*"] {
        out.report(
            object.clone(),
            "exportTo has no effect: the waypoints of its host apply it for every client".into(),
        );
    }
    match super::virtual_service::resolve(index, namespace, &rule.spec.host) {
        Err(why) => out.report(object, format!("host {:?}: {why}", rule.spec.host)),
        Ok((ns, name)) => {
            let bound = index
                .service(&ns, &name)
                .is_some_and(|s| super::waypoint::requested_by(index, &s.metadata).is_some());
            if !bound {
                out.report(
                    object,
                    format!(
                        "Service {ns}/{name} uses no waypoint: a DestinationRule is applied by the waypoint, so nothing uses this rule until one is bound"
                    ),
                );
            }
        }
    }
}
