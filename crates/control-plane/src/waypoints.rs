//! The waypoint controller's rule: what a Gateway of class `istio-waypoint` deploys.
//!
//! For Gateway `<ns>/<name>` it is one pod `<name>-0` and one Service `<name>` in `<ns>`,
//! as istiod's deployment controller makes them: the pod runs `bowline waypoint` under
//! service account `<name>` (so its identity is `…/ns/<ns>/sa/<name>`), labelled
//! `gateway.networking.k8s.io/gateway-name: <name>`; the Service selects it and exposes
//! the HBONE port 15008 (`mesh`), both labelled `gateway.istio.io/managed:
//! istio.io-mesh-controller` (the pod also `istio.io/dataplane-mode: none`). Whoever runs pods (the lab, a kubelet) places and starts
//! them like any other; the translation treats a waypoint's pod as an HBONE endpoint that
//! is never captured.
//!
//! Only valid Gateways get here: class `istio-waypoint` and exactly one listener, port
//! 15008, protocol HBONE, are checked when the Gateway is accepted (`config::validate`).

use config::resources::{
    self as k8s, DATAPLANE_MODE, GATEWAY_NAME_LABEL, Labels, MANAGED_BY_MESH, MANAGED_LABEL,
};

/// HBONE port of waypoints (the `mesh` listener).
pub const HBONE_PORT: u16 = 15008;
/// A waypoint's readiness port (`/healthz/ready`).
pub const READY_PORT: u16 = 15021;
/// A waypoint's metrics port (`/stats/prometheus`).
pub const METRICS_PORT: u16 = 15020;
/// A waypoint's admin port (`/config_dump`), on its loopback.
pub const ADMIN_PORT: u16 = 15000;

/// What a waypoint Gateway deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The waypoint's pod (no node, no address yet).
    pub pod: k8s::Pod,
    /// The waypoint's Service (no VIP yet).
    pub service: k8s::Service,
}

/// The pod and Service Gateway `gateway` deploys (a validated Gateway: class and
/// listener were checked when it was accepted).
pub fn deployment(gateway: &k8s::Gateway) -> Deployment {
    let namespace = gateway.metadata.namespace().to_owned();
    let name = gateway.metadata.name.clone();
    let labels: Labels = [
        (GATEWAY_NAME_LABEL.to_owned(), name.clone()),
        (MANAGED_LABEL.to_owned(), MANAGED_BY_MESH.to_owned()),
    ]
    .into();
    let meta = |object: String, labels: Labels| k8s::ObjectMeta {
        name: object,
        namespace: Some(namespace.clone()),
        labels,
        ..Default::default()
    };
    // A waypoint terminates HBONE itself: its pod is never captured.
    let mut pod_labels = labels.clone();
    pod_labels.insert(DATAPLANE_MODE.to_owned(), "none".to_owned());
    let port = |name: &str, number: u16| k8s::ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: None,
    };
    let pod = k8s::Pod {
        metadata: meta(format!("{name}-0"), pod_labels),
        spec: k8s::PodSpec {
            service_account_name: Some(name.clone()),
            containers: vec![k8s::Container {
                name: "waypoint".into(),
                command: vec![
                    "bowline".into(),
                    "waypoint".into(),
                    "run".into(),
                    "--gateway".into(),
                    format!("{namespace}/{name}"),
                ],
                ports: vec![
                    port("mesh", HBONE_PORT),
                    port("metrics", METRICS_PORT),
                    port("status-port", READY_PORT),
                ],
                ..Default::default()
            }],
            ..Default::default()
        },
        status: k8s::PodStatus::default(),
    };
    let service = k8s::Service {
        metadata: meta(name.clone(), labels),
        spec: k8s::ServiceSpec {
            selector: [(GATEWAY_NAME_LABEL.to_owned(), name)].into(),
            ports: vec![k8s::ServicePort {
                name: Some("mesh".into()),
                port: HBONE_PORT,
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    };
    Deployment { pod, service }
}

/// Whether `pod` is a waypoint's own pod (of the Gateway it names).
pub fn gateway_of(pod: &k8s::Pod) -> Option<&str> {
    pod.metadata
        .labels
        .get(GATEWAY_NAME_LABEL)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> k8s::Gateway {
        match config::parse_documents(yaml, "test.yaml") {
            Ok(docs) => match docs.into_iter().next() {
                Some(config::Resource::Gateway(g)) => g,
                other => panic!("not a gateway: {other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    const WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
";

    #[test]
    fn a_waypoint_gateway_deploys_one_pod_under_its_own_identity_and_its_service() {
        let d = deployment(&gateway(WAYPOINT));
        assert_eq!(d.pod.metadata.name, "waypoint-0");
        assert_eq!(d.pod.metadata.namespace(), "shop");
        assert_eq!(d.pod.spec.service_account(), "waypoint");
        assert_eq!(gateway_of(&d.pod), Some("waypoint"));
        assert_eq!(
            d.pod.spec.containers[0].command[..3],
            ["bowline", "waypoint", "run"]
        );
        assert_eq!(d.service.metadata.name, "waypoint");
        assert_eq!(
            d.service
                .metadata
                .labels
                .get(MANAGED_LABEL)
                .map(String::as_str),
            Some(MANAGED_BY_MESH)
        );
        assert_eq!(d.service.spec.ports[0].port, 15008);
        assert!(
            d.service
                .spec
                .selector
                .iter()
                .all(|(k, v)| d.pod.metadata.labels.get(k) == Some(v))
        );
    }
}
