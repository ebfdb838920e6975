//! Istio's traffic management at the waypoint, end to end: a VirtualService with
//! DestinationRule subsets on a service bound to a waypoint — header routing to a subset,
//! a weighted split, injected aborts (HTTP and gRPC) and delays, a direct response, a
//! redirect, a rewrite with header changes, CORS — and Istio's default retries hiding a
//! dead replica, which `retries: {attempts: 0}` turns off.

use std::time::{Duration, Instant};

use test_support::root_or_skip;

use super::{Lab, address_in, mesh_with_waypoint, text};

/// [`mesh_with_waypoint`] plus `reviews` (bound to the waypoint; pods `reviews-v1` and
/// `reviews-v2` labelled by version) and `flaky` (bound; one live and one dead replica).
fn mesh_for_traffic() -> String {
    use test_support::fixtures::{self, Container, Pod, Port, Service};
    let bound = |name: &str| {
        Service::new(name, "shop")
            .label("istio.io/use-waypoint", "waypoint")
            .selector("app", name)
            .port(Port::new(80).target("8080"))
    };
    mesh_with_waypoint()
        + "\n---\n"
        + &fixtures::documents(&[
            &Pod::new("reviews-v1", "shop")
                .label("app", "reviews")
                .label("version", "v1")
                .node("node-1")
                .container(Container::echo(8080)),
            &Pod::new("reviews-v2", "shop")
                .label("app", "reviews")
                .label("version", "v2")
                .node("node-2")
                .container(Container::echo(8080)),
            &bound("reviews"),
            &Pod::new("flaky-live", "shop")
                .label("app", "flaky")
                .node("node-2")
                .container(Container::echo(8080)),
            &Pod::new("flaky-dead", "shop")
                .label("app", "flaky")
                .node("node-1")
                .container(Container::new("idle").command(&["sleep", "infinity"])),
            &bound("flaky"),
        ])
}

const TRAFFIC: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
    - match: [{headers: {end-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - match: [{uri: {prefix: /fault}}]
      fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
      route: [{destination: {host: reviews, subset: v1}}]
    - match: [{uri: {prefix: /grpc}}]
      fault: {abort: {grpcStatus: UNAVAILABLE}}
      route: [{destination: {host: reviews, subset: v1}}]
    - match: [{uri: {prefix: /slow}}]
      fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
      route: [{destination: {host: reviews, subset: v1}}]
    - match: [{uri: {exact: /teapot}}]
      directResponse: {status: 418, body: {string: short and stout}}
    - match: [{uri: {prefix: /old}}]
      redirect: {uri: /new, authority: elsewhere.example}
    - match: [{uri: {prefix: /api/}}]
      rewrite: {uri: /v2/}
      headers:
        request: {set: {x-routed: vs}}
        response: {add: {x-served-by: waypoint}}
      corsPolicy:
        allowOrigins: [{exact: https://shop.example}]
        allowMethods: [GET, POST]
        maxAge: 1h
      route: [{destination: {host: reviews, subset: v1}}]
    - route:
        - {destination: {host: reviews, subset: v1}, weight: 50}
        - {destination: {host: reviews, subset: v2}, weight: 50}
";

const NO_RETRIES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: shop}
spec:
  hosts: [flaky]
  http: [{route: [{destination: {host: flaky}}], retries: {attempts: 0}}]
";

#[test]
fn virtual_services_route_subsets_split_inject_faults_answer_redirect_rewrite_and_retry() {
    if !root_or_skip(
        "virtual_services_route_subsets_split_inject_faults_answer_redirect_rewrite_and_retry",
    ) {
        return;
    }
    let (lab, status) = Lab::started("t14vs", &mesh_for_traffic());
    let vip = |service: &str| address_in(&status, service, true);
    let (reviews, flaky) = (vip("shop/reviews"), vip("shop/flaky"));
    let client = netns::Namespace::existing(&lab.namespace("p-shop-client"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |method: &str, url: &str, headers: &[(&str, &str)]| {
        runtime
            .block_on(lab::client::exchange(
                Some(&client),
                method,
                url,
                None,
                headers,
            ))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    };
    let get = |path: &str, headers: &[(&str, &str)]| {
        send("GET", &format!("http://{reviews}:80{path}"), headers)
    };
    let pod_of = |body: &str| -> String {
        let echoed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        echoed["pod"].as_str().unwrap_or("-").to_owned()
    };

    let out = lab.config(
        "apply",
        "traffic.yaml",
        Some(&format!("{TRAFFIC}---\n{NO_RETRIES}")),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("DestinationRule shop/reviews")
            && text(&out)
                .contains("not enforced yet: trafficPolicy.connectionPool.tcp (connectTimeout"),
        "what is not enforced is said: {}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/teapot", &[]).status != 418 {
        assert!(
            Instant::now() < deadline,
            "the VirtualService never applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A header match goes to the subset, every time.
    for _ in 0..10 {
        let answer = get("/", &[("end-user", "jason")]);
        assert_eq!(
            (answer.status, pod_of(&answer.body).as_str()),
            (200, "reviews-v2"),
            "{answer:?}"
        );
    }
    // 50/50 between the subsets.
    let v2 = (0..100)
        .filter(|_| pod_of(&get("/", &[]).body) == "reviews-v2")
        .count();
    assert!(
        (25..=75).contains(&v2),
        "reviews-v2 got {v2} of 100 (weight 50)"
    );

    // Injected faults: an abort, a gRPC abort, a delay of 400 ms.
    let abort = get("/fault", &[]);
    assert_eq!(
        (abort.status, abort.body.as_str()),
        (418, "fault filter abort")
    );
    let grpc = get("/grpc/Check", &[("content-type", "application/grpc")]);
    assert_eq!(
        (grpc.status, grpc.header("grpc-status")),
        (200, Some("14")),
        "{grpc:?}"
    );
    let started = Instant::now();
    let slow = get("/slow", &[]);
    let took = started.elapsed();
    assert_eq!(slow.status, 200);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(400 + 2000),
        "delayed {took:?} for a 400 ms fault"
    );

    // Answers the waypoint gives itself.
    let teapot = get("/teapot", &[]);
    assert_eq!(
        (teapot.status, teapot.body.as_str()),
        (418, "short and stout")
    );
    let moved = get("/old/x", &[]);
    assert_eq!(
        (moved.status, moved.header("location")),
        (301, Some("http://elsewhere.example/new")),
        "{moved:?}"
    );

    // A rewrite with header changes, and CORS on the same route.
    let api = get("/api/items?q=1", &[("origin", "https://shop.example")]);
    assert_eq!(api.status, 200, "{api:?}");
    let echoed: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(echoed["path"], "/v2/items?q=1", "{}", api.body);
    assert_eq!(echoed["headers"]["x-routed"], "vs", "{}", api.body);
    assert_eq!(api.header("x-served-by"), Some("waypoint"));
    assert_eq!(
        api.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let preflight = send(
        "OPTIONS",
        &format!("http://{reviews}:80/api/items"),
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        (
            preflight.header("access-control-allow-methods"),
            preflight.header("access-control-max-age")
        ),
        (Some("GET,POST"), Some("3600"))
    );
    let stranger = get("/api/items", &[("origin", "https://evil.example")]);
    assert_eq!(stranger.header("access-control-allow-origin"), None);

    // Retries: turned off, the dead replica fails calls; Istio's default (a route
    // without `retries`) retries connect failures on another endpoint.
    let failed = (0..20)
        .filter(|_| send("GET", &format!("http://{flaky}:80/"), &[]).status != 200)
        .count();
    assert!(failed > 0, "the dead replica is called without retries");
    let defaults = NO_RETRIES.replace(", retries: {attempts: 0}", "");
    let out = lab.config("apply", "flaky.yaml", Some(&defaults));
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..20 {
        let answer = send("GET", &format!("http://{flaky}:80/"), &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(
        status
            .lines()
            .any(|l| l.contains("VirtualService shop/reviews") && l.ends_with("in force"))
            && status
                .lines()
                .any(|l| l.contains("DestinationRule shop/reviews")
                    && l.contains("NOT FULLY IN FORCE")),
        "status lists what is not enforced: {status}"
    );
}

const POLICIES: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    connectionPool: {http: {http2MaxRequests: 2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: shop}
spec:
  host: flaky
  trafficPolicy:
    outlierDetection: {consecutiveGatewayErrors: 1, baseEjectionTime: 3s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: shop}
spec:
  hosts: [flaky]
  http: [{route: [{destination: {host: flaky}}], retries: {attempts: 0}}]
";

/// The waypoint's `istio_requests_total` for destination `service` with `flags`.
fn requests_flagged(lab: &Lab, service: &str, flags: &str) -> u64 {
    super::waypoint_requests_with(
        lab,
        &[
            &format!("destination_service_name=\"{service}\""),
            &format!("response_flags=\"{flags}\""),
        ],
    )
}

#[test]
fn destination_rules_hash_users_to_one_pod_shed_load_above_the_limit_and_eject_failing_endpoints() {
    if !root_or_skip(
        "destination_rules_hash_users_to_one_pod_shed_load_above_the_limit_and_eject_failing_endpoints",
    ) {
        return;
    }
    let (lab, status) = Lab::started("t14dr", &mesh_for_traffic());
    let vip = |service: &str| address_in(&status, service, true);
    let (reviews, flaky) = (vip("shop/reviews"), vip("shop/flaky"));
    let client = netns::Namespace::existing(&lab.namespace("p-shop-client"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |url: &str, headers: &[(&str, &str)]| {
        runtime
            .block_on(lab::client::exchange(
                Some(&client),
                "GET",
                url,
                None,
                headers,
            ))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    };
    let pod_of = |body: &str| -> String {
        let echoed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        echoed["pod"].as_str().unwrap_or("-").to_owned()
    };
    let out = lab.config("apply", "policies.yaml", Some(POLICIES));
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(1));

    // A consistent hash on a header: one user always reaches one pod; users spread.
    let mut pods = std::collections::BTreeSet::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let first = pod_of(&send(&format!("http://{reviews}:80/"), &[("x-user", &user)]).body);
        for _ in 0..5 {
            let again = send(&format!("http://{reviews}:80/"), &[("x-user", &user)]);
            assert_eq!(pod_of(&again.body), first, "{user} moved: {again:?}");
        }
        pods.insert(first);
    }
    assert_eq!(pods.len(), 2, "16 users all hashed to {pods:?}");

    // Circuit breaking: 8 slow requests at once, 2 allowed in flight — the rest are
    // answered 503 `UO` at once, and counted so.
    let before = requests_flagged(&lab, "reviews", "UO");
    let url = format!("http://{reviews}:80/delay/1000");
    let answers: Vec<Result<lab::client::Answer, String>> = runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (ns, url) = (lab.namespace("p-shop-client"), url.clone());
            calls.spawn(async move {
                let ns = netns::Namespace::existing(&ns);
                lab::client::exchange(Some(&ns), "GET", &url, None, &[]).await
            });
        }
        calls.join_all().await
    });
    let statuses: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().map_or(0, |a| a.status))
        .collect();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 2 && shed >= 4,
        "{statuses:?}"
    );
    assert!(
        answers
            .iter()
            .flatten()
            .any(|a| a.body.contains("overflow"))
    );
    assert!(requests_flagged(&lab, "reviews", "UO") >= before + shed as u64);

    // Outlier detection: the dead replica fails once, is ejected for 3 s (every call
    // reaches the live one), then comes back (and fails again).
    let failed_within =
        |tries: usize| (0..tries).any(|_| send(&format!("http://{flaky}:80/"), &[]).status != 200);
    assert!(failed_within(30), "the dead replica was never chosen");
    let ejected_at = Instant::now();
    for _ in 0..20 {
        let answer = send(&format!("http://{flaky}:80/"), &[]);
        assert_eq!(answer.status, 200, "called while ejected: {answer:?}");
    }
    assert!(
        ejected_at.elapsed() < Duration::from_secs(3),
        "the checks outlasted the ejection"
    );
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(ejected_at.elapsed()) + Duration::from_millis(300),
    );
    assert!(
        failed_within(30),
        "the ejected endpoint was never readmitted"
    );
}
