//! The lab's kube-proxy: every Service VIP reachable from every pod, enrolled or not, as
//! on Kubernetes. It sits where the real one sits — on the pods' path out, here the
//! cluster network (router) namespace every pod's veth ends in — so capture inside an
//! enrolled pod comes first exactly as on a node: ztunnel takes the pod's connection to a
//! VIP before it leaves the pod, and only traffic ztunnel does not take (pods outside the
//! mesh) reaches these rules. Each Service port is DNAT'ed to one of its endpoints — the
//! pods it selects that have an address, the `targetPort` resolved against their
//! containers' named ports — chosen at random with equal weight (per-endpoint
//! probability 1/n, 1/(n-1), …, as kube-proxy's iptables mode does); replies are
//! un-NAT'ed by conntrack on the way back through the same namespace.
//!
//! Owns: the rules, from the objects the control plane holds. Must not: decide anything
//! about the mesh — a DNAT'ed connection arrives at the pod like any other, and the
//! pod's own capture and ztunnel decide what happens to it (PERMISSIVE or STRICT).

use config::Resource;
use config::resources::{self as k8s, IntOrString};
use netns::Namespace;

use super::LabError;

/// The nat chain in the router namespace, hooked from PREROUTING.
pub(super) const CHAIN: &str = "BOWLINE-SERVICES";

/// The rules (without `-A CHAIN`) that send each Service port's VIP to its endpoints.
pub(super) fn rules(objects: &[Resource]) -> Vec<String> {
    let pods: Vec<&k8s::Pod> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) if p.status.pod_ip.is_some() && !p.spec.host_network => Some(p),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for r in objects {
        let Resource::Service(service) = r else {
            continue;
        };
        let spec = &service.spec;
        let Some(vip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        else {
            continue;
        };
        let ns = service.metadata.namespace();
        let selected: Vec<&k8s::Pod> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.metadata.namespace() == ns
                    && !spec.selector.is_empty()
                    && spec
                        .selector
                        .iter()
                        .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .collect();
        for port in &spec.ports {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let endpoints: Vec<String> = selected
                .iter()
                .filter_map(|pod| {
                    let target = target_port(pod, port)?;
                    Some(format!("{}:{target}", pod.status.pod_ip.as_deref()?))
                })
                .collect();
            let n = endpoints.len();
            for (i, endpoint) in endpoints.iter().enumerate() {
                let chance = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {:.5}",
                        1.0 / f64::from(u32::try_from(n - i).unwrap_or(u32::MAX))
                    )
                } else {
                    String::new()
                };
                out.push(format!(
                    "-d {vip}/32 -p tcp -m tcp --dport {}{chance} -m comment --comment \"{ns}/{}\" -j DNAT --to-destination {endpoint}",
                    port.port, service.metadata.name
                ));
            }
        }
    }
    out
}

/// The pod port a Service port sends to: a number, a container port name, or the
/// Service port itself.
fn target_port(pod: &k8s::Pod, port: &k8s::ServicePort) -> Option<u16> {
    match &port.target_port {
        None => Some(port.port),
        Some(target) => target.port().or_else(|| {
            let IntOrString::String(name) = target else {
                return None;
            };
            pod.spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }),
    }
}

/// Installs `rules` in the router namespace `router`, replacing the previous set.
pub(super) fn install(router: &Namespace, rules: &[String]) -> Result<(), LabError> {
    Ok(netns::nat::replace_chain(
        router,
        CHAIN,
        "PREROUTING",
        rules,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_port_is_sent_to_its_endpoints_with_equal_chances() {
        let objects = config::parse_documents_noting(
            "apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.10.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8081}]}]}
status: {podIP: 10.10.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: other, labels: {app: web}}
status: {podIP: 10.10.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.101
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: raw, port: 7000}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}
",
            "t.yaml",
        )
        .expect("parses")
        .resources;
        let comment = "-m comment --comment \"shop/web\"";
        assert_eq!(
            rules(&objects),
            [
                format!(
                    "-d 10.96.0.101/32 -p tcp -m tcp --dport 80 -m statistic --mode random --probability 0.50000 {comment} -j DNAT --to-destination 10.10.0.2:8080"
                ),
                format!(
                    "-d 10.96.0.101/32 -p tcp -m tcp --dport 80 {comment} -j DNAT --to-destination 10.10.0.3:8081"
                ),
                format!(
                    "-d 10.96.0.101/32 -p tcp -m tcp --dport 7000 -m statistic --mode random --probability 0.50000 {comment} -j DNAT --to-destination 10.10.0.2:7000"
                ),
                format!(
                    "-d 10.96.0.101/32 -p tcp -m tcp --dport 7000 {comment} -j DNAT --to-destination 10.10.0.3:7000"
                ),
            ]
        );
    }
}
