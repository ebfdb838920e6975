//! The gateway controllers' rule: what a Gateway of class `istio-waypoint` (a waypoint) or
//! `istio` (an ingress gateway) deploys.
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
//! An ingress gateway `<ns>/<name>` is pod `<name>-istio-0`, Service and service account
//! `<name>-istio` (istiod's names), labelled `gateway.istio.io/managed:
//! istio.io-gateway-controller`: the pod runs `bowline waypoint run --ingress`, listening
//! on the Gateway's listener ports, which the Service exposes (with the status port). It
//! is not in the mesh's capture (it dials HBONE itself); its pods are plain TCP endpoints.
//!
//! Only valid Gateways get here: their class and listeners are checked when the Gateway
//! is accepted (`config::validate`).

use config::resources::{
    self as k8s, DATAPLANE_MODE, GATEWAY_NAME_LABEL, INGRESS_CLASS, Labels, MANAGED_BY_MESH,
    MANAGED_LABEL,
};

/// Value of [`MANAGED_LABEL`] on an ingress gateway's objects.
pub const MANAGED_BY_GATEWAY: &str = "istio.io-gateway-controller";

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
    let ingress = gateway.spec.gateway_class_name == INGRESS_CLASS;
    let labels: Labels = [
        (GATEWAY_NAME_LABEL.to_owned(), name.clone()),
        (
            MANAGED_LABEL.to_owned(),
            if ingress {
                MANAGED_BY_GATEWAY
            } else {
                MANAGED_BY_MESH
            }
            .to_owned(),
        ),
    ]
    .into();
    // Istio names an ingress gateway's objects `<name>-istio`.
    let object = if ingress {
        format!("{name}-istio")
    } else {
        name.clone()
    };
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
    let mut command: Vec<String> = ["bowline", "waypoint", "run", "--gateway"]
        .map(str::to_owned)
        .into();
    command.push(format!("{namespace}/{name}"));
    // The Gateway's ports (one per port, named after its first listener), else HBONE.
    let mut served: Vec<(String, u16)> = Vec::new();
    if ingress {
        command.extend(["--ingress".to_owned(), "--service-account".to_owned()]);
        command.push(object.clone());
        for l in &gateway.spec.listeners {
            if !served.iter().any(|(_, p)| *p == l.port) {
                served.push((l.name.clone(), l.port));
            }
        }
    } else {
        served.push(("mesh".to_owned(), HBONE_PORT));
    }
    let mut ports: Vec<k8s::ContainerPort> =
        served.iter().map(|(n, number)| port(n, *number)).collect();
    ports.push(port("metrics", METRICS_PORT));
    ports.push(port("status-port", READY_PORT));
    let pod = k8s::Pod {
        metadata: meta(format!("{object}-0"), pod_labels),
        spec: k8s::PodSpec {
            service_account_name: Some(object.clone()),
            containers: vec![k8s::Container {
                name: if ingress { "istio-proxy" } else { "waypoint" }.into(),
                command,
                ports,
                ..Default::default()
            }],
            ..Default::default()
        },
        status: k8s::PodStatus::default(),
    };
    let mut service_ports: Vec<k8s::ServicePort> = served
        .into_iter()
        .map(|(n, number)| k8s::ServicePort {
            name: Some(n),
            port: number,
            ..Default::default()
        })
        .collect();
    if ingress {
        service_ports.push(k8s::ServicePort {
            name: Some("status-port".into()),
            port: READY_PORT,
            ..Default::default()
        });
    }
    let service = k8s::Service {
        metadata: meta(object, labels),
        spec: k8s::ServiceSpec {
            selector: [(GATEWAY_NAME_LABEL.to_owned(), name)].into(),
            ports: service_ports,
            ..Default::default()
        },
        status: None,
    };
    Deployment { pod, service }
}

/// Whether `pod` is a gateway's own pod — a waypoint's or an ingress gateway's (of the
/// Gateway it names).
pub fn gateway_of(pod: &k8s::Pod) -> Option<&str> {
    pod.metadata
        .labels
        .get(GATEWAY_NAME_LABEL)
        .map(String::as_str)
}

/// Whether `pod` is an ingress gateway's pod (not a waypoint's).
pub fn is_ingress(pod: &k8s::Pod) -> bool {
    gateway_of(pod).is_some()
        && pod.metadata.labels.get(MANAGED_LABEL).map(String::as_str) == Some(MANAGED_BY_GATEWAY)
}

/// Whether `pod` is a waypoint's pod.
pub fn is_waypoint(pod: &k8s::Pod) -> bool {
    gateway_of(pod).is_some() && !is_ingress(pod)
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

    #[test]
    fn an_ingress_gateway_deploys_name_istio_on_its_listener_ports() {
        let d = deployment(&gateway(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - {name: other, port: 80, protocol: HTTP, hostname: a.example}
    - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}
",
        ));
        assert_eq!(d.pod.metadata.name, "bookinfo-gateway-istio-0");
        assert_eq!(d.pod.spec.service_account(), "bookinfo-gateway-istio");
        assert!(is_ingress(&d.pod) && !is_waypoint(&d.pod));
        assert!(
            d.pod.spec.containers[0]
                .command
                .contains(&"--ingress".to_owned())
        );
        assert_eq!(d.service.metadata.name, "bookinfo-gateway-istio");
        let ports: Vec<u16> = d.service.spec.ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [80, 443, READY_PORT]);
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
        assert!(is_waypoint(&d.pod));
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
