//! ServiceEntries become services ztunnel routes and its DNS proxy answers; pods made by
//! controllers are named for their workload.

use super::*;

const ENTRIES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: https, protocol: TLS}, {number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints:
    - {address: 10.20.0.5}
    - {address: 10.20.0.6, ports: {http: 9090}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed, namespace: shop}
spec:
  hosts: [db.internal.example]
  addresses: [10.99.0.7/32]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: by-dns, namespace: shop}
spec:
  hosts: [httpbin.example]
  resolution: DNS
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  hosts: [legacy.example]
  ports: [{number: 80, name: http}]
";

fn vips(service: &wire::Service) -> Vec<IpAddr> {
    service
        .addresses
        .iter()
        .filter_map(|a| xds::ip_from_bytes(&a.address))
        .collect()
}

#[test]
fn a_service_entry_becomes_a_service_of_its_host_with_its_endpoints_outside_the_mesh() {
    let c = compile(&format!("{}\n---\n{ENTRIES}", shop()));
    let service = c
        .service("shop/api.payments.example")
        .expect("the entry's service");
    assert_eq!(service.name, "payments");
    let allocated = vips(service);
    assert_eq!(allocated.len(), 1);
    assert!(
        allocated[0].to_string().starts_with("240.240."),
        "{allocated:?}"
    );
    // Stable: the same allocation from the same objects.
    let again = compile(&format!("{}\n---\n{ENTRIES}", shop()));
    assert_eq!(
        vips(again.service("shop/api.payments.example").unwrap()),
        allocated
    );
    let ports: Vec<(u32, u32, i32)> = service
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port, p.app_protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (443, 443, wire::AppProtocol::Tls as i32),
            (80, 8080, wire::AppProtocol::Http11 as i32)
        ]
    );
    let endpoint = c
        .workload("Kubernetes/networking.istio.io/ServiceEntry/shop/payments/10.20.0.6")
        .expect("an endpoint workload");
    assert_eq!(endpoint.tunnel_protocol, wire::TunnelProtocol::None as i32);
    let mapped: Vec<(u32, u32)> = endpoint.services["shop/api.payments.example"]
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(
        mapped,
        [(443, 443), (80, 9090)],
        "the endpoint's named port wins"
    );
    assert!(
        !c.status.contains_key("ServiceEntry shop/payments"),
        "{:?}",
        c.status
    );
}

#[test]
fn a_selected_pod_backs_the_entry_dns_hosts_are_left_to_ztunnel_and_none_is_said_not_applied() {
    let c = compile(&format!("{}\n---\n{ENTRIES}", shop()));
    let fixed = c
        .service("shop/db.internal.example")
        .expect("the selected entry");
    assert_eq!(vips(fixed), ["10.99.0.7".parse::<IpAddr>().unwrap()]);
    let pod = workload(&c, "shop", "reviews-0");
    assert!(
        pod.services.contains_key("shop/db.internal.example"),
        "{:?}",
        pod.services.keys()
    );
    // Resolution DNS without endpoints: the host itself, for ztunnel to resolve.
    assert!(c.service("shop/httpbin.example").is_some());
    let by_name = c
        .workload("Kubernetes/networking.istio.io/ServiceEntry/shop/by-dns/httpbin.example")
        .expect("a host-name workload");
    assert_eq!(by_name.hostname, "httpbin.example");
    assert!(by_name.addresses.is_empty());
    assert!(
        !c.status.contains_key("ServiceEntry shop/by-dns"),
        "{:?}",
        c.status
    );
    // Resolution NONE: nothing for ztunnel, said so.
    assert!(c.service("shop/legacy.example").is_none());
    let notes = c.status["ServiceEntry shop/none"].join("\n");
    assert!(notes.contains("resolution NONE"), "{notes}");
    assert!(notes.contains("not bound to a waypoint yet"), "{notes}");
}

#[test]
fn a_controllers_pods_are_named_for_their_workload() {
    let c = compile(
        "apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-5c8d9f7b9d-x2x4k
  namespace: shop
  labels: {app: reviews, pod-template-hash: 5c8d9f7b9d}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-5c8d9f7b9d, uid: u, controller: true}]
status: {podIP: 10.1.0.9}
---
apiVersion: v1
kind: Pod
metadata:
  name: migrate-b2x7q
  namespace: shop
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: migrate, uid: u, controller: true}]
status: {podIP: 10.1.0.10}
",
    );
    let deployment = workload(&c, "shop", "reviews-v1-5c8d9f7b9d-x2x4k");
    assert_eq!(deployment.workload_name, "reviews-v1");
    assert_eq!(
        deployment.workload_type,
        wire::WorkloadType::Deployment as i32
    );
    let job = workload(&c, "shop", "migrate-b2x7q");
    assert_eq!(job.workload_name, "migrate");
    assert_eq!(job.workload_type, wire::WorkloadType::Job as i32);
}

#[test]
fn an_endpoint_at_a_pods_address_is_that_pod_not_a_second_workload() {
    let c = compile(&format!(
        "{}\n---\n{}",
        shop(),
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: old, namespace: shop}
spec:
  hosts: [old.example]
  resolution: STATIC
  ports: [{number: 80, name: http, targetPort: 8080}]
  endpoints: [{address: 10.2.0.5}, {address: 10.30.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: also, namespace: legacy}
spec:
  hosts: [also.example]
  resolution: STATIC
  ports: [{number: 81, name: http}]
  endpoints: [{address: 10.30.0.1}]
"
    ));
    // legacy/old-0 has 10.2.0.5: it backs the entry, and no other workload claims it.
    let pod = workload(&c, "legacy", "old-0");
    let ports: Vec<(u32, u32)> = pod.services["shop/old.example"]
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(ports, [(80, 8080)]);
    let claims = |ip: &str| {
        c.addresses
            .values()
            .filter(|a| match &a.r#type {
                Some(wire::address::Type::Workload(w)) => w
                    .addresses
                    .iter()
                    .any(|b| xds::ip_from_bytes(b) == ip.parse().ok()),
                _ => false,
            })
            .count()
    };
    assert_eq!(claims("10.2.0.5"), 1);
    // Two entries listing one address share one workload (the first entry's, by
    // namespace and name).
    assert_eq!(claims("10.30.0.1"), 1);
    let shared = c
        .workload("Kubernetes/networking.istio.io/ServiceEntry/legacy/also/10.30.0.1")
        .expect("the shared endpoint");
    assert!(
        shared.services.contains_key("shop/old.example"),
        "{:?}",
        shared.services.keys()
    );
}

#[test]
fn request_authentication_is_noted_as_not_enforced() {
    let c = compile(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec: {jwtRules: [{issuer: example}]}
",
    );
    let notes = c.status["RequestAuthentication shop/jwt"].join("\n");
    assert!(
        notes.contains("not enforced yet") && notes.contains("JWT validation is not implemented"),
        "{notes}"
    );
}
