//! Routing and admission decisions, in process, no root: a mesh state from the file
//! format, the real resolver and admission check, and what each refusal maps to.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::error::{NoRoute, ProxyError};
use super::inbound::admit;
use super::route::{Route, resolve};
use super::{ProxyInputs, ProxySettings};
use crate::state::{Snapshot, Store, file_source};

const MESH: &str = r#"
workloads:
  - {uid: shop/client-0, name: client-0, namespace: shop, serviceAccount: client, addresses: [10.1.0.2], protocol: HBONE}
  - {uid: shop/reviews-0, name: reviews-0, namespace: shop, serviceAccount: reviews, addresses: [10.2.0.2], protocol: HBONE,
     services: {shop/reviews.shop.svc.cluster.local: [{servicePort: 9080, targetPort: 8080}]}}
  - {uid: shop/reviews-1, name: reviews-1, namespace: shop, serviceAccount: reviews, addresses: [10.2.0.3], protocol: HBONE,
     services: {shop/reviews.shop.svc.cluster.local: [{servicePort: 9080, targetPort: 8080}]}}
  - {uid: shop/ratings-0, name: ratings-0, namespace: shop, addresses: [10.2.0.4], protocol: HBONE, status: Unhealthy,
     services: {shop/ratings.shop.svc.cluster.local: [{servicePort: 9080}]}}
  - {uid: shop/legacy-0, name: legacy-0, namespace: shop, addresses: [10.2.0.5]}
  - {uid: shop/db-0, name: db-0, namespace: shop, serviceAccount: db, addresses: [10.2.0.6], protocol: HBONE,
     authorizationPolicies: [shop/db-only-reviews]}
  - {uid: shop/waypoint-0, name: waypoint-0, namespace: shop, serviceAccount: waypoint, addresses: [10.2.0.9], protocol: HBONE}
  - {uid: shop/payments-0, name: payments-0, namespace: shop, serviceAccount: payments, addresses: [10.2.0.7], protocol: HBONE,
     waypoint: {address: 10.2.0.9, port: 15008}}
  - {uid: shop/httpbin-dns, name: httpbin, namespace: shop, hostname: httpbin.example,
     services: {shop/httpbin.example: [{servicePort: 80, targetPort: 8080}]}}
services:
  - {name: httpbin, namespace: shop, hostname: httpbin.example, vips: [240.240.0.9],
     ports: [{servicePort: 80, targetPort: 80}]}
  - {name: reviews, namespace: shop, hostname: reviews.shop.svc.cluster.local, vips: [10.96.0.10],
     ports: [{servicePort: 9080, targetPort: 8080}]}
  - {name: ratings, namespace: shop, hostname: ratings.shop.svc.cluster.local, vips: [10.96.0.11],
     ports: [{servicePort: 9080, targetPort: 8080}]}
policies:
  - {name: db-only-reviews, namespace: shop, scope: WorkloadSelector, action: Allow,
     rules: [{clauses: [{matches: [{principals: [{exact: cluster.local/ns/shop/sa/reviews}]}]}]}]}
"#;

fn setup() -> (ProxyInputs, Arc<Snapshot>) {
    let store = Arc::new(Store::default());
    store.replace(file_source::parse(MESH, Path::new("mesh.yaml")).unwrap());
    let ca = test_support::TestCa::new();
    let inputs = ProxyInputs::new(store.clone(), ca.manager(), ProxySettings::default());
    (inputs, store.load())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_service_vip_is_tunnelled_to_an_endpoint_on_its_target_port() {
    let (inputs, snap) = setup();
    let Ok(Route::Hbone {
        hbone_addr,
        authority,
        identity,
        ..
    }) = resolve(&inputs, &snap, addr("10.96.0.10:9080"))
    else {
        panic!("expected a tunnel");
    };
    assert_eq!(authority.port(), 8080);
    assert_eq!(hbone_addr, SocketAddr::new(authority.ip(), 15008));
    assert_eq!(
        identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/reviews"
    );
}

#[test]
fn a_host_name_endpoint_is_resolved_when_the_connection_is_made() {
    let (inputs, snap) = setup();
    let route = resolve(&inputs, &snap, addr("240.240.0.9:80")).unwrap();
    assert_eq!(
        route,
        Route::Resolve {
            host: "httpbin.example".into(),
            port: 8080,
            workload: "shop/httpbin-dns".into(),
        }
    );
    assert_eq!(route.target(), None);
}

#[test]
fn round_robin_alternates_between_a_services_endpoints() {
    let (inputs, snap) = setup();
    let picks: Vec<_> = (0..4)
        .map(|_| {
            resolve(&inputs, &snap, addr("10.96.0.10:9080"))
                .unwrap()
                .target()
        })
        .collect();
    assert_eq!(picks[0], picks[2]);
    assert_eq!(picks[1], picks[3]);
    assert_ne!(picks[0], picks[1]);
}

#[test]
fn an_endpoint_that_failed_recently_is_skipped_until_it_answers() {
    let (inputs, snap) = setup();
    inputs.endpoint_failed("10.2.0.2".parse().unwrap());
    for _ in 0..4 {
        let target = resolve(&inputs, &snap, addr("10.96.0.10:9080"))
            .unwrap()
            .target();
        assert_eq!(target, Some(addr("10.2.0.3:8080")));
    }
    inputs.endpoint_recovered("10.2.0.2".parse().unwrap());
    let targets: std::collections::HashSet<_> = (0..4)
        .map(|_| {
            resolve(&inputs, &snap, addr("10.96.0.10:9080"))
                .unwrap()
                .target()
        })
        .collect();
    assert_eq!(targets.len(), 2);
}

#[test]
fn when_every_endpoint_failed_they_are_tried_anyway() {
    let (inputs, snap) = setup();
    inputs.endpoint_failed("10.2.0.2".parse().unwrap());
    inputs.endpoint_failed("10.2.0.3".parse().unwrap());
    assert!(resolve(&inputs, &snap, addr("10.96.0.10:9080")).is_ok());
}

#[test]
fn a_service_port_that_does_not_exist_has_no_route() {
    let (inputs, snap) = setup();
    let error = resolve(&inputs, &snap, addr("10.96.0.10:81")).unwrap_err();
    assert!(
        matches!(
            error,
            ProxyError::NoRoute(NoRoute::ServicePort { port: 81, .. })
        ),
        "{error}"
    );
    assert_eq!(super::outcome::response_flags::<()>(&Err(error)), "NR");
}

#[test]
fn a_service_with_only_unhealthy_endpoints_has_no_healthy_upstream() {
    let (inputs, snap) = setup();
    let error = resolve(&inputs, &snap, addr("10.96.0.11:9080")).unwrap_err();
    assert!(matches!(error, ProxyError::NoHealthyUpstream(_)), "{error}");
    assert!(error.is_retriable());
}

#[test]
fn destinations_outside_the_mesh_and_plain_workloads_pass_through() {
    let (inputs, snap) = setup();
    for dst in ["192.0.2.1:443", "10.2.0.5:80"] {
        assert_eq!(
            resolve(&inputs, &snap, addr(dst)).unwrap(),
            Route::Passthrough(addr(dst))
        );
    }
}

#[test]
fn a_workload_with_a_waypoint_is_reached_through_it() {
    let (inputs, snap) = setup();
    let Ok(Route::Hbone {
        hbone_addr,
        authority,
        identity,
        ..
    }) = resolve(&inputs, &snap, addr("10.2.0.7:8080"))
    else {
        panic!("expected a tunnel to the waypoint");
    };
    assert_eq!(hbone_addr, addr("10.2.0.9:15008"));
    assert_eq!(authority, addr("10.2.0.7:8080"));
    assert_eq!(
        identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/waypoint"
    );
}

#[test]
fn ztunnels_own_ports_are_never_a_route() {
    let (inputs, snap) = setup();
    for dst in [
        "127.0.0.1:15001",
        "10.2.0.2:15008",
        "0.0.0.0:15006",
        "10.1.0.2:15080",
    ] {
        let error = resolve(&inputs, &snap, addr(dst)).unwrap_err();
        assert!(matches!(error, ProxyError::OwnPort(_)), "{dst}: {error}");
    }
    // The same port outside the mesh is somebody else's.
    assert!(resolve(&inputs, &snap, addr("192.0.2.1:15008")).is_ok());
}

#[test]
fn admission_allows_what_no_policy_forbids() {
    let (inputs, snap) = setup();
    let peer = test_support::id("shop", "client");
    let result = admit(
        &inputs,
        &snap,
        "shop/reviews-0",
        "shop/reviews-0",
        Some(&peer),
        addr("10.1.0.2:40000"),
        addr("10.2.0.2:8080"),
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn admission_denies_a_peer_a_selector_policy_does_not_allow() {
    let (inputs, snap) = setup();
    let (client, reviews) = (
        test_support::id("shop", "client"),
        test_support::id("shop", "reviews"),
    );
    let check = |peer| {
        admit(
            &inputs,
            &snap,
            "shop/db-0",
            "shop/db-0",
            Some(peer),
            addr("10.1.0.2:40000"),
            addr("10.2.0.6:5432"),
        )
    };
    let error = check(&client).unwrap_err();
    assert!(matches!(error, ProxyError::Denied { .. }), "{error}");
    assert_eq!(
        super::outcome::hbone_status(&error),
        http::StatusCode::UNAUTHORIZED
    );
    assert!(check(&reviews).is_ok());
}

#[test]
fn admission_refuses_targets_that_are_not_the_pods_or_are_ztunnels_own() {
    let (inputs, snap) = setup();
    let peer = test_support::id("shop", "client");
    let check = |uid, target| {
        admit(
            &inputs,
            &snap,
            uid,
            uid,
            Some(&peer),
            addr("10.1.0.2:40000"),
            addr(target),
        )
    };
    assert!(matches!(
        check("shop/reviews-0", "10.2.0.3:8080"),
        Err(ProxyError::NotPodAddress { .. })
    ));
    assert!(matches!(
        check("shop/reviews-0", "10.2.0.2:15008"),
        Err(ProxyError::OwnPort(_))
    ));
    assert!(matches!(
        check("shop/gone", "10.2.0.2:8080"),
        Err(ProxyError::UnknownPod(_))
    ));
}

#[test]
fn a_pod_behind_a_waypoint_admits_only_the_waypoint() {
    let (inputs, snap) = setup();
    let check = |peer: &identity::SpiffeId| {
        admit(
            &inputs,
            &snap,
            "shop/payments-0",
            "shop/payments-0",
            Some(peer),
            addr("10.2.0.9:40000"),
            addr("10.2.0.7:8080"),
        )
    };
    assert!(matches!(
        check(&test_support::id("shop", "client")),
        Err(ProxyError::MustPassWaypoint)
    ));
    assert!(check(&test_support::id("shop", "waypoint")).is_ok());
}

#[test]
fn only_updates_that_can_change_admission_wake_live_connections() {
    let store = Store::default();
    store.replace(file_source::parse(MESH, Path::new("mesh.yaml")).unwrap());
    let mut admission = store.subscribe_admission();
    admission.mark_unchanged();
    // Endpoint churn: a pod becomes unhealthy.
    let churn = MESH.replacen("status: Unhealthy", "status: Healthy", 1);
    store.replace(file_source::parse(&churn, Path::new("mesh.yaml")).unwrap());
    assert!(!admission.has_changed().unwrap());
    // A policy change.
    let policy = churn.replace("sa/reviews}", "sa/client}");
    store.replace(file_source::parse(&policy, Path::new("mesh.yaml")).unwrap());
    assert!(admission.has_changed().unwrap());
}
