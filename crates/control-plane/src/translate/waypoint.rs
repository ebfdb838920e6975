//! Waypoint binding: `istio.io/use-waypoint` on the object itself wins over its
//! namespace's label (`none` opts out, with no fallback); the waypoint's namespace comes
//! from `istio.io/use-waypoint-namespace` on the same object. The Gateway must exist, have
//! class `istio-waypoint`, handle this kind of traffic (`istio.io/waypoint-for`: `service`
//! by default, `workload`, `all`, `none`), admit the namespace (`allowedRoutes`), and have
//! its Service (the waypoint is only reachable once it does). A binding that fails is
//! reported, and the object gets no waypoint.

use config::resources::{
    self as k8s, GATEWAY_NAME_LABEL, Labels, MANAGED_LABEL, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE,
    WAYPOINT_FOR,
};
use xds::workload as wire;

use super::{Compiled, Index};

/// HBONE port of waypoints.
const WAYPOINT_HBONE_PORT: u32 = crate::waypoints::HBONE_PORT as u32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Traffic {
    Service,
    Workload,
}

pub(super) fn for_service(
    index: &Index<'_>,
    service: &k8s::Service,
    out: &mut Compiled,
) -> Option<wire::GatewayAddress> {
    if service.metadata.labels.contains_key(MANAGED_LABEL) {
        return None;
    }
    let object = format!(
        "Service {}/{}",
        service.metadata.namespace(),
        service.metadata.name
    );
    bind(index, &service.metadata, Traffic::Service, &object, out)
}

pub(super) fn for_pod(
    index: &Index<'_>,
    pod: &k8s::Pod,
    out: &mut Compiled,
) -> Option<wire::GatewayAddress> {
    if pod.metadata.labels.contains_key(GATEWAY_NAME_LABEL) {
        return None;
    }
    let object = format!("Pod {}/{}", pod.metadata.namespace(), pod.metadata.name);
    bind(index, &pod.metadata, Traffic::Workload, &object, out)
}

fn bind(
    index: &Index<'_>,
    meta: &k8s::ObjectMeta,
    traffic: Traffic,
    object: &str,
    out: &mut Compiled,
) -> Option<wire::GatewayAddress> {
    let namespace = meta.namespace();
    let (waypoint_namespace, name) = requested_by(index, meta)?;
    let Some(gateway) = index
        .gateways
        .get(&(waypoint_namespace.as_str(), name.as_str()))
    else {
        out.report(
            object.to_owned(),
            format!(
                "waypoint {waypoint_namespace}/{name} does not exist; traffic is not redirected"
            ),
        );
        return None;
    };
    let handles = gateway
        .metadata
        .labels
        .get(WAYPOINT_FOR)
        .map_or("service", String::as_str);
    let fits = matches!(
        (handles, traffic),
        ("all", _) | ("service", Traffic::Service) | ("workload", Traffic::Workload)
    );
    if !fits {
        // A namespace-wide binding naturally skips the other kind of traffic; only a
        // direct binding that cannot apply is worth a message.
        if meta.labels.contains_key(USE_WAYPOINT) {
            out.report(
                object.to_owned(),
                format!(
                    "waypoint {waypoint_namespace}/{name} is for {handles} traffic ({WAYPOINT_FOR}); not bound"
                ),
            );
        }
        return None;
    }
    let same_namespace_only = gateway
        .spec
        .listeners
        .iter()
        .find(|l| l.protocol == "HBONE")
        .and_then(|l| l.allowed_routes.as_ref())
        .and_then(|r| r.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .is_none_or(|from| from == "Same");
    if same_namespace_only && waypoint_namespace != namespace {
        out.report(
            object.to_owned(),
            format!(
                "waypoint {waypoint_namespace}/{name} admits only its own namespace (allowedRoutes.namespaces.from: Same)"
            ),
        );
        return None;
    }
    if !index.service_exists(&waypoint_namespace, &name) {
        out.report(
            object.to_owned(),
            format!("waypoint {waypoint_namespace}/{name} has no Service yet (no waypoint is running); traffic is not redirected"),
        );
        return None;
    }
    Some(wire::GatewayAddress {
        destination: Some(wire::gateway_address::Destination::Hostname(
            wire::NamespacedHostname {
                namespace: waypoint_namespace.clone(),
                hostname: index.hostname(&name, &waypoint_namespace),
            },
        )),
        hbone_mtls_port: WAYPOINT_HBONE_PORT,
    })
}

/// Whether waypoint `namespace/name` is running: its Gateway and Service exist and one of
/// its pods has an address and is neither pending nor finished. (In the lab, pods are
/// started before this is true and the lab waits for the waypoint's readiness probe.)
pub(super) fn running(index: &Index<'_>, namespace: &str, name: &str) -> bool {
    index.gateways.contains_key(&(namespace, name))
        && index.service_exists(namespace, name)
        && index.pods.iter().any(|pod| {
            pod.metadata.namespace() == namespace
                && crate::waypoints::gateway_of(pod) == Some(name)
                && !super::pod_addresses(pod).is_empty()
                && !matches!(
                    pod.status.phase.as_deref(),
                    Some("Pending" | "Succeeded" | "Failed")
                )
        })
}

/// The waypoint (`(namespace, name)`) an object asks for with its own or its namespace's
/// labels, whether or not the binding succeeds; `None` when it asks for none or opts out.
pub(super) fn requested_by(index: &Index<'_>, meta: &k8s::ObjectMeta) -> Option<(String, String)> {
    requested_with(meta, index.namespace_labels(meta.namespace()))
}

/// [`requested_by`], given the labels of the object's namespace.
pub fn requested_with(
    meta: &k8s::ObjectMeta,
    namespace_labels: Option<&Labels>,
) -> Option<(String, String)> {
    let namespace = meta.namespace();
    let (name, waypoint_namespace) = requested(&meta.labels, namespace)
        .or_else(|| namespace_labels.and_then(|labels| requested(labels, namespace)))?;
    Some((waypoint_namespace, name?))
}
/// `Some((Some(name), namespace))` when the labels bind a waypoint, `Some((None, _))` when
/// they opt out (`none`), `None` when they say nothing.
fn requested(labels: &Labels, own_namespace: &str) -> Option<(Option<String>, String)> {
    let name = labels.get(USE_WAYPOINT)?;
    if name == "none" {
        return Some((None, String::new()));
    }
    let namespace = labels
        .get(USE_WAYPOINT_NAMESPACE)
        .cloned()
        .unwrap_or_else(|| own_namespace.to_owned());
    Some((Some(name.clone()), namespace))
}
