//! VirtualServices compile into the waypoint's route table: Istio's order, matches,
//! subsets resolved to pods, Istio's defaults; where nothing enforces one, a note.

use super::*;
use xds::l7;

const REVIEWS: &str = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}
spec:
  hosts: [reviews]
  http:
    - name: jason
      match:
        - headers: {end-user: {exact: jason}}
          uri: {prefix: /reviews}
          ignoreUriCase: true
        - withoutHeaders: {x-canary: {}}
          sourceLabels: {app: reviews}
      route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
      fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 12.5}}}
      retries: {attempts: 3, perTryTimeout: 0.5s, retryOn: \"gateway-error,409\"}
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 80}
        - {destination: {host: reviews.shop.svc.cluster.local, subset: v2}, weight: 20}
      timeout: 2s
      mirror: {host: reviews, subset: v2}
      mirrorPercentage: {value: 0.5}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: later, namespace: shop, creationTimestamp: \"2026-02-01T00:00:00Z\"}
spec:
  hosts: [reviews.shop]
  http: [{directResponse: {status: 418, body: {string: teapot}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}, tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

/// The first backend of the first entry of `shop/reviews`'s table.
fn first_backend(c: &Compiled) -> l7::BackendRef {
    c.route_tables["shop/reviews"].entries[0]
        .action
        .as_ref()
        .unwrap()
        .backends[0]
        .backend
        .clone()
        .unwrap()
}

fn notes(c: &Compiled, object: &str) -> String {
    c.status
        .get(object)
        .map(|n| n.join("\n"))
        .unwrap_or_default()
}

#[test]
fn a_virtual_service_compiles_in_istios_order_with_its_matches_subsets_and_defaults() {
    let c = compile(&format!("{}{REVIEWS}", shop_with_waypoint(true)));
    let table = &c.route_tables["shop/reviews"];
    let rules: Vec<(&str, u32)> = table
        .entries
        .iter()
        .map(|e| (e.route.as_str(), e.rule))
        .collect();
    assert_eq!(
        rules,
        [
            ("VirtualService shop/reviews", 0),
            ("VirtualService shop/reviews", 0),
            ("VirtualService shop/reviews", 1),
            ("VirtualService shop/later", 0),
        ],
        "one entry per match, as written, the older VirtualService first"
    );
    let first = table.entries[0].r#match.as_ref().unwrap();
    let path = first.path.as_ref().unwrap();
    assert_eq!(path.kind, l7::path_match::Kind::StringPrefix as i32);
    assert!(path.ignore_case);
    assert_eq!(first.headers[0].name, "end-user");
    let second = table.entries[1].r#match.as_ref().unwrap();
    assert_eq!(
        second.without_headers[0].kind,
        l7::value_match::Kind::Present as i32
    );
    assert_eq!(
        second.source_workloads.as_ref().unwrap().uids,
        ["Kubernetes//Pod/shop/reviews-0"]
    );

    let jason = table.entries[0].action.as_ref().unwrap();
    let v2 = jason.backends[0].backend.as_ref().unwrap();
    assert_eq!((v2.name.as_str(), v2.port), ("reviews", 9080));
    let subset = v2.subset.as_ref().unwrap();
    assert_eq!(
        subset.uids,
        ["Kubernetes//Pod/shop/reviews-0"],
        "reviews-0 is version v2"
    );
    let fault = jason.fault.as_ref().unwrap();
    assert!(fault.abort_grpc);
    assert_eq!(
        (fault.abort_grpc_status, fault.abort_per_million),
        (14, 125_000)
    );
    let retry = jason.retry.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.codes.as_slice()), (3, &[409][..]));
    assert_eq!(
        retry.on,
        [
            l7::RetryOn::GatewayError as i32,
            l7::RetryOn::RetriableStatusCodes as i32
        ]
    );
    assert_eq!(jason.backend_timeout_ms, 500);

    let split = table.entries[2].action.as_ref().unwrap();
    let weights: Vec<(String, u32)> = split
        .backends
        .iter()
        .map(|b| {
            (
                b.backend
                    .as_ref()
                    .unwrap()
                    .subset
                    .as_ref()
                    .unwrap()
                    .name
                    .clone(),
                b.weight,
            )
        })
        .collect();
    assert_eq!(weights, [("v1".into(), 80), ("v2".into(), 20)]);
    assert!(
        split.backends[0]
            .backend
            .as_ref()
            .unwrap()
            .subset
            .as_ref()
            .unwrap()
            .uids
            .is_empty()
    );
    assert_eq!(
        split.backends[0].backend.as_ref().unwrap().port,
        0,
        "no port given and several on the service: the request's own"
    );
    assert_eq!(split.request_timeout_ms, 2000);
    let default_retry = split.retry.as_ref().unwrap();
    assert_eq!(
        (default_retry.attempts, default_retry.codes.as_slice()),
        (2, &[503][..]),
        "Istio's default retries when a route has none"
    );
    assert_eq!(split.mirrors[0].per_million, 5_000);
    let direct = table.entries[3].action.as_ref().unwrap();
    assert_eq!(
        direct.direct_response,
        Some(l7::DirectResponse {
            status: 418,
            body: bytes::Bytes::from_static(b"teapot")
        })
    );
    let rule = notes(&c, "DestinationRule shop/reviews");
    assert!(
        rule.contains("not enforced yet: trafficPolicy.loadBalancer.warmup")
            && !rule.contains("tls.mode"),
        "{rule}"
    );
}

#[test]
fn a_virtual_service_with_no_waypoint_or_beside_an_http_route_says_it_has_no_effect() {
    let unbound = compile(&format!("{}{REVIEWS}", shop()));
    assert!(unbound.route_tables.is_empty());
    let says = notes(&unbound, "VirtualService shop/reviews");
    assert!(
        says.contains("uses no waypoint") && says.contains("nothing enforces"),
        "{says}"
    );
    assert!(
        notes(&unbound, "DestinationRule shop/reviews").contains("nothing uses this rule"),
        "{:?}",
        unbound.status
    );

    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
";
    let mixed = compile(&format!("{}{REVIEWS}{route}", shop_with_waypoint(true)));
    let table = &mixed.route_tables["shop/reviews"];
    assert!(
        table
            .entries
            .iter()
            .all(|e| e.route == "HTTPRoute shop/reviews")
    );
    let says = notes(&mixed, "VirtualService shop/reviews");
    assert!(says.contains("mixing them with a VirtualService"), "{says}");
}

#[test]
fn an_undefined_subset_is_reported_and_gets_no_endpoint() {
    let yaml = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v9}}]}]
";
    let c = compile(&format!("{}{yaml}", shop_with_waypoint(true)));
    let backend = first_backend(&c);
    assert!(backend.subset.unwrap().uids.is_empty());
    assert!(
        notes(&c, "VirtualService shop/reviews")
            .contains("subset \"v9\" of shop/reviews is not defined"),
        "{:?}",
        c.status
    );
}

#[test]
fn a_destination_rule_policy_reaches_every_backend_of_its_host_and_a_service_without_routes() {
    let yaml = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: X-User}}
    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5, http2MaxRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 1m}
    portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: ROUND_ROBIN}
  subsets:
    - name: v2
      labels: {version: v2}
      trafficPolicy: {connectionPool: {http: {http2MaxRequests: 7}}}
";
    // No route at all: the service gets a catch-all table carrying the policy.
    let c = compile(&format!("{}{yaml}", shop_with_waypoint(true)));
    let table = &c.route_tables["shop/reviews"];
    assert_eq!(table.entries.len(), 1);
    let backend = table.entries[0].action.as_ref().unwrap().backends[0]
        .backend
        .clone()
        .unwrap();
    assert_eq!(backend.port, 0, "the request's own port");
    let policy = backend.policy.unwrap();
    assert_eq!(
        policy.load_balancer.unwrap().hash,
        Some(l7::load_balancer::Hash::Header("x-user".into()))
    );
    assert_eq!(
        policy.connection_pool.unwrap().max_requests,
        15,
        "maxConnections + http1MaxPendingRequests is below http2MaxRequests"
    );
    let outlier = policy.outlier_detection.unwrap();
    assert_eq!(
        (
            outlier.consecutive_5xx,
            outlier.base_ejection_ms,
            outlier.max_ejection_percent
        ),
        (3, 60_000, 10)
    );

    // Routed to port 9080, subset v2: the port's load balancer, the subset's pool.
    let service = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]}]
";
    let c = compile(&format!("{}{yaml}{service}", shop_with_waypoint(true)));
    let backend = first_backend(&c);
    let policy = backend.policy.unwrap();
    let lb = policy.load_balancer.unwrap();
    assert_eq!(
        (lb.simple, lb.hash),
        (l7::load_balancer::Simple::RoundRobin as i32, None)
    );
    assert_eq!(policy.connection_pool.unwrap().max_requests, 7);
    assert!(
        policy.outlier_detection.is_some(),
        "the host's, not overridden"
    );
}

#[test]
fn a_delegating_route_stands_for_the_delegates_routes_with_the_roots_match_merged_in() {
    let delegation = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
    - match: [{uri: {prefix: /reviews}, headers: {end-user: {exact: jason}}}]
      delegate: {name: jason-routes}
    - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: jason-routes, namespace: shop}
spec:
  http:
    - match: [{uri: {prefix: /reviews/v2}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - match: [{uri: {prefix: /ratings}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unused, namespace: shop}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";
    let c = compile(&format!("{}{delegation}", shop_with_waypoint(true)));
    let table = &c.route_tables["shop/reviews"];
    let entries: Vec<(&str, String, usize)> = table
        .entries
        .iter()
        .map(|e| {
            let m = e.r#match.as_ref().unwrap();
            (
                e.route.as_str(),
                m.path.as_ref().unwrap().value.clone(),
                m.headers.len(),
            )
        })
        .collect();
    let delegated = "VirtualService shop/jason-routes (delegated by VirtualService shop/reviews)";
    assert_eq!(
        entries,
        [
            (delegated, "/reviews/v2".to_owned(), 1),
            (delegated, "/reviews".to_owned(), 1),
            ("VirtualService shop/reviews", "/".to_owned(), 0),
        ],
        "the delegate's routes in place of the root's, the root's header in each; /ratings is outside /reviews"
    );
    assert!(
        notes(&c, "VirtualService shop/jason-routes").contains("conflicts with the match"),
        "{:?}",
        c.status
    );
    assert!(notes(&c, "VirtualService shop/unused").contains("none does"));
}

#[test]
fn tcp_routes_compile_to_weighted_tcp_entries_per_match() {
    let tcp = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-tcp, namespace: shop}
spec:
  hosts: [reviews]
  tcp:
    - match: [{port: 9090, sourceLabels: {app: reviews}}, {sourceNamespace: legacy}]
      route:
        - {destination: {host: reviews, subset: v1}, weight: 80}
        - {destination: {host: reviews, subset: v2}, weight: 20}
    - route: [{destination: {host: reviews, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";
    let c = compile(&format!("{}{tcp}", shop_with_waypoint(true)));
    let table = &c.route_tables["shop/reviews"];
    assert!(table.entries.is_empty(), "no http routes");
    let entries: Vec<(u32, u32, String, usize)> = table
        .tcp
        .iter()
        .map(|e| (e.rule, e.port, e.source_namespace.clone(), e.backends.len()))
        .collect();
    assert_eq!(
        entries,
        [
            (0, 9090, String::new(), 2),
            (0, 0, "legacy".to_owned(), 2),
            (1, 0, String::new(), 1)
        ]
    );
    assert_eq!(
        table.tcp[0].source_workloads.as_ref().unwrap().uids,
        ["Kubernetes//Pod/shop/reviews-0"]
    );
    let v2 = table.tcp[0].backends[1].backend.as_ref().unwrap();
    assert_eq!(
        (
            v2.subset.as_ref().unwrap().name.as_str(),
            table.tcp[0].backends[1].weight
        ),
        ("v2", 20)
    );
    assert_eq!(
        table.tcp[2].backends[0].backend.as_ref().unwrap().port,
        9080
    );
}
