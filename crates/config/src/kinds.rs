//! Kinds that are not Bowline's mesh config, sorted before their fields are read:
//!
//! - **Not used by the mesh** — ConfigMaps, Secrets, RBAC, NetworkPolicy, Ingress,
//!   autoscalers, CRDs, other projects' kinds (Argo's `Application`, cert-manager's
//!   `Certificate`, …): accepted and set aside, so users' files apply unchanged; the
//!   caller lists them in one note. Nothing in the mesh would read them.
//! - **Refused** — kinds that would change how the mesh behaves and that Bowline does not
//!   implement (EnvoyFilter, Sidecar, Telemetry, TCPRoute, Istio's own `Gateway`, …), and
//!   the workload controllers the lab does not play (CronJob, ReplicationController),
//!   whose pods would otherwise silently not exist: refused by kind, with what to do
//!   instead, never over a field of theirs.
//!
//! Anything else that is not one of Bowline's kinds is refused as unknown (a typo in a
//! core kind must not pass as "not used").

/// What to do with a document that is not one of Bowline's kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Foreign {
    /// Accepted and set aside.
    Unused,
    /// Refused with this message.
    Refused(String),
}

/// The API group of `api_version` (`""` for the core group's `v1`).
pub(crate) fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Kubernetes' own kinds the mesh has no use for, by group.
const UNUSED: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "ConfigMap",
            "LimitRange",
            "ResourceQuota",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Event",
        ],
    ),
    (
        "networking.k8s.io",
        &["NetworkPolicy", "Ingress", "IngressClass"],
    ),
    ("autoscaling", &["HorizontalPodAutoscaler"]),
    ("policy", &["PodDisruptionBudget"]),
    ("scheduling.k8s.io", &["PriorityClass"]),
    ("coordination.k8s.io", &["Lease"]),
];

/// Groups whose every kind the mesh has no use for.
const UNUSED_GROUPS: &[&str] = &[
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "monitoring.coreos.com",
];

/// Workload controllers the lab does not play (Deployment, ReplicaSet, StatefulSet,
/// DaemonSet and Job are kinds of ours): their pods would otherwise silently not exist.
const CONTROLLERS: &[(&str, &[&str], &str)] = &[
    (
        "batch",
        &["CronJob"],
        "the lab runs no schedules; write a Job to run its pod once",
    ),
    (
        "",
        &["ReplicationController"],
        "write a Deployment (apps/v1) with the same template",
    ),
];

/// Mesh kinds Bowline does not implement, with what to say.
const UNIMPLEMENTED: &[(&str, &str, &str)] = &[
    (
        "networking.istio.io",
        "Gateway",
        "Istio's networking.istio.io Gateway is not supported; write a Gateway API Gateway (apiVersion gateway.networking.k8s.io/v1) with gatewayClassName: istio for an ingress gateway (its routes as HTTPRoutes with parentRefs to it), or istio-waypoint for a waypoint",
    ),
    (
        "networking.istio.io",
        "EnvoyFilter",
        "Bowline has no Envoy to patch; remove it",
    ),
    (
        "networking.istio.io",
        "Sidecar",
        "there are no sidecars in ambient mode; remove it",
    ),
    (
        "networking.istio.io",
        "WorkloadEntry",
        "workloads outside the lab are not supported yet; remove it",
    ),
    (
        "networking.istio.io",
        "WorkloadGroup",
        "workloads outside the lab are not supported yet; remove it",
    ),
    (
        "networking.istio.io",
        "ProxyConfig",
        "proxy settings are Bowline's own flags (docs/ztunnel.md); remove it",
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        "Bowline runs no Wasm; remove it",
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        "telemetry is not configurable yet (metrics and access logs are always on); remove it",
    ),
    (
        "gateway.networking.k8s.io",
        "TCPRoute",
        "only HTTPRoute and GRPCRoute are routed; remove it",
    ),
    (
        "gateway.networking.k8s.io",
        "TLSRoute",
        "only HTTPRoute and GRPCRoute are routed; remove it",
    ),
    (
        "gateway.networking.k8s.io",
        "UDPRoute",
        "only HTTPRoute and GRPCRoute are routed; remove it",
    ),
    (
        "gateway.networking.k8s.io",
        "ReferenceGrant",
        "cross-namespace references are not supported yet; remove it",
    ),
    (
        "gateway.networking.k8s.io",
        "GatewayClass",
        "class istio-waypoint is built in and no other class is supported; remove it",
    ),
    ("", "Endpoints", "give the Service a selector instead"),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        "give the Service a selector instead",
    ),
];

/// Whether `group` belongs to Kubernetes, Istio or the Gateway API (where an unknown
/// kind is a mistake, not someone else's object).
fn known_group(group: &str) -> bool {
    group.is_empty()
        || !group.contains('.')
        || group.ends_with(".k8s.io")
        || group.ends_with("istio.io")
}

/// Sorts a document of `kind` in `api_version` that is not one of Bowline's kinds;
/// `None` when it is neither known to be unused nor refused here (the caller says it is
/// unknown).
pub(crate) fn classify(api_version: &str, kind: &str) -> Option<Foreign> {
    let group = group(api_version);
    if let Some((_, _, hint)) = UNIMPLEMENTED
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
    {
        return Some(Foreign::Refused(format!(
            "{kind} ({api_version}) changes how the mesh behaves and Bowline does not implement it: {hint}"
        )));
    }
    if let Some((_, _, hint)) = CONTROLLERS
        .iter()
        .find(|(g, kinds, _)| *g == group && kinds.contains(&kind))
    {
        return Some(Foreign::Refused(format!(
            "{kind} ({api_version}) is not supported: {hint}"
        )));
    }
    let listed = UNUSED
        .iter()
        .any(|(g, kinds)| *g == group && kinds.contains(&kind));
    if listed || UNUSED_GROUPS.contains(&group) || !known_group(group) {
        return Some(Foreign::Unused);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_projects_and_plain_kubernetes_kinds_are_set_aside() {
        for (api_version, kind) in [
            ("v1", "ConfigMap"),
            ("networking.k8s.io/v1", "NetworkPolicy"),
            ("networking.k8s.io/v1", "Ingress"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("policy/v1", "PodDisruptionBudget"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            ("argoproj.io/v1alpha1", "Application"),
            ("cert-manager.io/v1", "Certificate"),
        ] {
            assert_eq!(
                classify(api_version, kind),
                Some(Foreign::Unused),
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn kinds_that_would_change_the_mesh_are_refused_with_what_to_do() {
        let refused = |api_version: &str, kind: &str| match classify(api_version, kind) {
            Some(Foreign::Refused(message)) => message,
            other => panic!("{api_version} {kind}: {other:?}"),
        };
        assert!(refused("networking.istio.io/v1alpha3", "EnvoyFilter").contains("remove it"));
        assert!(refused("networking.istio.io/v1", "Gateway").contains(
            "(apiVersion gateway.networking.k8s.io/v1) with gatewayClassName: istio for an ingress gateway"
        ));
        assert!(refused("gateway.networking.k8s.io/v1alpha2", "TCPRoute").contains("HTTPRoute"));
        assert!(refused("batch/v1", "CronJob").contains("write a Job"));
        assert!(refused("v1", "ReplicationController").contains("write a Deployment"));
        assert!(refused("telemetry.istio.io/v1", "Telemetry").contains("not configurable"));
    }

    #[test]
    fn an_unknown_kind_of_a_known_group_is_left_to_be_refused_as_unknown() {
        assert_eq!(classify("v1", "Servce"), None);
        assert_eq!(
            classify("security.istio.io/v1", "AuthorisationPolicy"),
            None
        );
        assert_eq!(classify("gateway.networking.k8s.io/v1", "HTTPRoutes"), None);
    }
}
