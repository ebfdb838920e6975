//! Ingress gateways (Gateway class `istio`): which listeners a route attaches to, and the
//! route table of each of the Gateway's ports.
//!
//! A route whose parentRef is an ingress Gateway (optionally one listener by
//! `sectionName`, or a `port`) attaches to every listener it names that allows routes from
//! its namespace (`allowedRoutes.namespaces.from`: `Same`, the default, or `All`) and
//! whose hostname intersects the route's (Gateway API rules: an exact name matches itself
//! or a wildcard above it, `*.example.com` matches names under `example.com`; a route or
//! listener without hostnames takes the other's). Its entries then go to the table of that
//! listener's port, each carrying the host names it serves there; the table is sorted
//! most specific host first (exact, then the longest wildcard, then any host), then by
//! the mesh precedence — which is the Gateway API's precedence across listeners and routes.
//! Every port gets its table even without routes, so the gateway listens (and answers 404).
//!
//! From the gateway, a backend Service bound to a waypoint is reached through that
//! waypoint when the Service or its Namespace says `istio.io/ingress-use-waypoint:
//! "true"` (label or annotation), else straight at its pods' ztunnels, as Istio does.

use std::cmp::Reverse;

use config::resources::{self as k8s, INGRESS_CLASS, INGRESS_USE_WAYPOINT, TLS_SECRET_TYPE};
use xds::l7 as wire;

use super::{Compiled, Index};

/// Why a route was not attached to an ingress Gateway (its `Accepted=False` reason).
pub(super) type Reason = &'static str;

/// The listeners of ingress Gateway `gateway` that a route in `route_ns` with `hostnames`
/// attaches to through `parent`: (port, host names it serves there), or why none.
pub(super) fn attach(
    gateway: &k8s::Gateway,
    route_ns: &str,
    parent: &k8s::ParentRef,
    hostnames: &[String],
) -> Result<Vec<(u16, Vec<String>)>, Reason> {
    let gateway_ns = gateway.metadata.namespace();
    let named: Vec<&k8s::Listener> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|l| parent.port.is_none_or(|p| p == l.port))
        .collect();
    if named.is_empty() {
        return Err("NoMatchingParent");
    }
    let allowed: Vec<&k8s::Listener> = named
        .into_iter()
        .filter(|l| {
            let from = l
                .allowed_routes
                .as_ref()
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.from.as_deref())
                .unwrap_or("Same");
            from == "All" || route_ns == gateway_ns
        })
        .collect();
    if allowed.is_empty() {
        return Err("NotAllowedByListeners");
    }
    let mut attached: Vec<(u16, Vec<String>)> = Vec::new();
    for listener in allowed {
        let Some(hosts) = intersect(listener.hostname.as_deref(), hostnames) else {
            continue;
        };
        match attached.iter_mut().find(|(p, _)| *p == listener.port) {
            // Two listeners on one port: the route serves the union of their hosts
            // (any host if either takes any).
            Some((_, existing)) if existing.is_empty() || hosts.is_empty() => existing.clear(),
            Some((_, existing)) => {
                existing.extend(hosts);
                existing.sort();
                existing.dedup();
            }
            None => attached.push((listener.port, hosts)),
        }
    }
    if attached.is_empty() {
        return Err("NoMatchingListenerHostname");
    }
    Ok(attached)
}

/// The host names a route serves on a listener: `Some(empty)` for any host, `None` when
/// they do not intersect.
fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(listener) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![listener.to_owned()]);
    }
    let mut out: Vec<String> = route
        .iter()
        .filter_map(|r| {
            if covers(listener, r) {
                Some(r.clone())
            } else if covers(r, listener) {
                Some(listener.to_owned())
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

/// Whether pattern `wide` (exact or `*.suffix`) takes every name `narrow` does.
fn covers(wide: &str, narrow: &str) -> bool {
    if wide == narrow {
        return true;
    }
    let Some(suffix) = wide.strip_prefix("*.") else {
        return false;
    };
    let narrow = narrow.strip_prefix("*.").unwrap_or(narrow);
    narrow.len() > suffix.len()
        && narrow.ends_with(suffix)
        && narrow.as_bytes()[narrow.len() - suffix.len() - 1] == b'.'
}

/// How specific an entry's hosts are (smaller sorts first): an exact name, then the
/// longest wildcard, then any host.
pub(super) type HostRank = (u8, Reverse<usize>);

/// The rank of an entry serving `hostnames`.
pub(super) fn host_rank(hostnames: &[String]) -> HostRank {
    hostnames
        .iter()
        .map(|h| match h.strip_prefix("*.") {
            Some(suffix) => (1, Reverse(suffix.len())),
            None => (0, Reverse(h.len())),
        })
        .min()
        .unwrap_or((2, Reverse(0)))
}

/// `action` as the ingress gateway runs it: a backend (or mirror) Service bound to a
/// waypoint that asks for ingress to use it goes through the waypoint. A Service backend
/// without a port is reported (the gateway has no original port to keep).
pub(super) fn action(
    index: &Index<'_>,
    object: &str,
    action: &wire::RouteAction,
    out: &mut Compiled,
) -> wire::RouteAction {
    let mut action = action.clone();
    let targets = action
        .backends
        .iter_mut()
        .filter_map(|b| b.backend.as_mut())
        .chain(action.mirrors.iter_mut().filter_map(|m| m.backend.as_mut()));
    for b in targets {
        if b.port == 0 {
            out.report(
                object.to_owned(),
                format!(
                    "backendRef Service {}/{} has no port: at an ingress gateway every backend needs one (the listener's port is sent otherwise)",
                    b.namespace, b.name
                ),
            );
        }
        b.via_waypoint = uses_waypoint(index, &b.namespace, &b.name);
    }
    action
}

/// Whether ingress traffic to Service `namespace/name` goes through its waypoint.
fn uses_waypoint(index: &Index<'_>, namespace: &str, name: &str) -> bool {
    let Some(service) = index.service(namespace, name) else {
        return false;
    };
    fn says(meta: &k8s::ObjectMeta) -> Option<&str> {
        meta.labels
            .get(INGRESS_USE_WAYPOINT)
            .or_else(|| meta.annotations.get(INGRESS_USE_WAYPOINT))
            .map(String::as_str)
    }
    let asked = says(&service.metadata).or_else(|| {
        index
            .namespaces
            .get(namespace)
            .and_then(|n| says(&n.metadata))
    }) == Some("true");
    asked && super::waypoint::requested_by(index, &service.metadata).is_some()
}

/// The ingress Gateways of `wanted` namespaces.
pub(super) fn gateways<'a>(
    index: &'a Index<'a>,
    wanted: &'a dyn Fn(&str) -> bool,
) -> impl Iterator<Item = &'a k8s::Gateway> + 'a {
    index
        .gateways
        .values()
        .copied()
        .filter(move |g| g.spec.gateway_class_name == INGRESS_CLASS)
        .filter(move |g| wanted(g.metadata.namespace()))
}

/// What port `port` of ingress Gateway `gateway` serves: its listeners, most specific
/// host name first, with their certificates' Secrets; a missing or unusable Secret is
/// reported (that listener's handshakes fail until it is there).
pub(super) fn head(
    index: &Index<'_>,
    gateway: &k8s::Gateway,
    port: u16,
    out: &mut Compiled,
) -> wire::Ingress {
    let namespace = gateway.metadata.namespace();
    let object = format!("Gateway {namespace}/{}", gateway.metadata.name);
    let mut listeners: Vec<&k8s::Listener> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| l.port == port)
        .collect();
    listeners.sort_by_key(|l| host_rank(l.hostname.as_slice()));
    let mut tls = false;
    let listeners = listeners
        .into_iter()
        .map(|l| {
            tls |= l.protocol == "HTTPS";
            let mut certificates = Vec::new();
            for r in l.tls.iter().flat_map(|t| &t.certificate_refs) {
                let secret_ns = r.namespace.as_deref().unwrap_or(namespace);
                if secret_ns != namespace {
                    out.report(
                        object.clone(),
                        format!(
                            "listener {}: certificateRef Secret {secret_ns}/{} is in another namespace, which needs a ReferenceGrant (not supported yet): it is not used — put the Secret in namespace {namespace}",
                            l.name, r.name
                        ),
                    );
                    continue;
                }
                let usable = index
                    .secrets
                    .get(&(secret_ns, r.name.as_str()))
                    .is_some_and(|s| s.type_.as_deref() == Some(TLS_SECRET_TYPE));
                if !usable {
                    out.report(
                        object.clone(),
                        format!(
                            "listener {}: certificateRef Secret {secret_ns}/{} does not exist or is not of type {TLS_SECRET_TYPE}: TLS handshakes for it fail until it does",
                            l.name, r.name
                        ),
                    );
                }
                certificates.push(format!("{secret_ns}/{}", r.name));
            }
            wire::IngressListener {
                name: l.name.clone(),
                hostname: l.hostname.clone().unwrap_or_default(),
                certificates,
            }
        })
        .collect();
    wire::Ingress {
        port: u32::from(port),
        tls,
        listeners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn route_and_listener_hostnames_intersect_as_the_gateway_api_says() {
        assert_eq!(intersect(None, &[]), Some(vec![]));
        assert_eq!(
            intersect(Some("a.example"), &[]),
            Some(hosts(&["a.example"]))
        );
        assert_eq!(
            intersect(
                Some("*.example"),
                &hosts(&["a.example", "b.other", "x.y.example"])
            ),
            Some(hosts(&["a.example", "x.y.example"]))
        );
        assert_eq!(
            intersect(Some("a.example"), &hosts(&["*.example"])),
            Some(hosts(&["a.example"]))
        );
        assert_eq!(intersect(Some("*.example"), &hosts(&["example"])), None);
        assert_eq!(intersect(Some("a.example"), &hosts(&["b.example"])), None);
        assert_eq!(
            intersect(Some("*.example"), &hosts(&["*.a.example"])),
            Some(hosts(&["*.a.example"]))
        );
    }

    #[test]
    fn exact_hosts_rank_before_longer_wildcards_before_any_host() {
        let mut ranks = [
            host_rank(&[]),
            host_rank(&hosts(&["*.example"])),
            host_rank(&hosts(&["*.shop.example"])),
            host_rank(&hosts(&["a.example"])),
        ];
        ranks.sort();
        assert_eq!(ranks[0], host_rank(&hosts(&["a.example"])));
        assert_eq!(ranks[1], host_rank(&hosts(&["*.shop.example"])));
        assert_eq!(ranks[3], host_rank(&[]));
    }
}
