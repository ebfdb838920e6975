//! The ingress gateway (Gateway class `istio`) end to end: `bowline up --publish` maps
//! host loopback ports to its listeners; HTTP routes by host name, HTTPS terminates TLS
//! with the certificate of the listener the client's SNI names (each from its own
//! `kubernetes.io/tls` Secret); a route from a namespace the listener does not allow is
//! refused with the Gateway API's reason; a service that asks for it
//! (`istio.io/ingress-use-waypoint`) is reached through its waypoint, whose L7 policy
//! then applies; once it no longer asks, ingress goes straight to its pods, which refuse
//! it while an L7 policy only the waypoint can apply is attached, and answer once not.
//! Also a VirtualService `tcp` route at the waypoint: opaque connections to a port that
//! declares TCP go to the route's destination, unread.

use std::time::{Duration, Instant};

use test_support::root_or_skip;

use super::{Lab, mesh_with_waypoint, text};

/// The waypoint-bound `server` as [`mesh_with_waypoint`] writes it, with `extra` labels.
fn server(extra: &[(&str, &str)]) -> String {
    use test_support::fixtures::{Port, Service};
    let mut service = Service::new("server", "shop")
        .label("istio.io/use-waypoint", "waypoint")
        .selector("app", "server")
        .port(Port::new(80).target("8080"));
    for (k, v) in extra {
        service = service.label(k, v);
    }
    service.to_string()
}

const INGRESS_USE_WAYPOINT: (&str, &str) = ("istio.io/ingress-use-waypoint", "'true'");

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - name: https-a
      port: 443
      protocol: HTTPS
      hostname: a.shop.example
      tls: {certificateRefs: [{kind: Secret, name: cert-a}]}
    - name: https-b
      port: 443
      protocol: HTTPS
      hostname: b.shop.example
      tls: {certificateRefs: [{kind: Secret, name: cert-b}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [a.shop.example]
  rules: [{backendRefs: [{name: server, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: back, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [b.shop.example]
  rules: [{backendRefs: [{name: neighbour, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: intruder, namespace: plain}
spec:
  parentRefs: [{name: web, namespace: shop}]
  rules: [{backendRefs: [{name: outsider, port: 80}]}]
";

/// An L7 policy on `server`, which only its waypoint can apply.
const NO_PRIVATE: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-private, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: \"\", name: server}]
  action: DENY
  rules: [{to: [{operation: {paths: [/private]}}]}]
";

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pod that answered and one request header, from the echo server's JSON.
fn echoed(body: &str, header: &str) -> (String, String) {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let field = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    (field(&json["pod"]), field(&json["headers"][header]))
}

#[test]
fn an_ingress_gateway_routes_by_host_terminates_tls_by_sni_and_uses_the_waypoint_when_asked() {
    if !root_or_skip(
        "an_ingress_gateway_routes_by_host_terminates_tls_by_sni_and_uses_the_waypoint_when_asked",
    ) {
        return;
    }
    let cert_a = test_support::WebCertificate::new(&["a.shop.example"]);
    let cert_b = test_support::WebCertificate::new(&["b.shop.example"]);
    let manifest = mesh_with_waypoint().replace(&server(&[]), &server(&[INGRESS_USE_WAYPOINT]))
        + "\n---\n"
        + GATEWAY
        + "---\n"
        + NO_PRIVATE
        + "---\n"
        + &cert_a.secret_yaml("shop", "cert-a")
        + "---\n"
        + &cert_b.secret_yaml("shop", "cert-b");
    assert!(manifest.contains("ingress-use-waypoint"));
    let (http_port, https_port) = (free_port(), free_port());
    let lab = Lab::new("t14in", &manifest);
    let out = lab.up_with(&[
        "--publish",
        &format!("{http_port}=shop/web:80"),
        "--publish",
        &format!("127.0.0.1:{https_port}=shop/web:443"),
    ]);
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(
        status.contains("INGRESS GATEWAYS")
            && status.contains(&format!("from the host: http://127.0.0.1:{http_port}"))
            && status.contains(&format!("from the host: https://127.0.0.1:{https_port}")),
        "{status}"
    );
    assert!(
        status.contains("HTTPRoute plain/intruder") && status.contains("NotAllowedByListeners"),
        "a route from a namespace the listener does not allow is refused: {status}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = |host: &str, path: &str| {
        runtime.block_on(lab::client::exchange(
            None,
            "GET",
            &format!("http://127.0.0.1:{http_port}{path}"),
            None,
            &[("host", host)],
        ))
    };
    let https = |name: &str, root: &str, path: &str| {
        runtime.block_on(lab::client::exchange_tls(
            &format!("127.0.0.1:{https_port}"),
            name,
            root,
            "GET",
            path,
            &[],
        ))
    };
    // The listeners bind as their route tables arrive and the certificates as the lab
    // controller writes them: wait for both.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let plain = http("b.shop.example", "/");
        let tls = https("b.shop.example", &cert_b.root_pem, "/");
        if matches!((&plain, &tls), (Ok(a), Ok(b)) if a.status == 200 && b.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingress not serving: {plain:?} {tls:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // HTTP: the host picks the route.
    let a = http("a.shop.example", "/public").unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        echoed(&a.body, "x-forwarded-proto"),
        ("server".into(), "http".into())
    );
    let b = http("b.shop.example", "/").unwrap();
    assert_eq!(echoed(&b.body, "x-forwarded-proto").0, "neighbour");
    let none = http("c.example", "/").unwrap();
    assert_eq!(none.status, 404, "no route for that host: {}", none.body);

    // HTTPS: each server name gets its listener's certificate.
    let a = https("a.shop.example", &cert_a.root_pem, "/public").unwrap();
    assert_eq!(
        echoed(&a.body, "x-forwarded-proto"),
        ("server".into(), "https".into())
    );
    let b = https("b.shop.example", &cert_b.root_pem, "/").unwrap();
    assert_eq!(echoed(&b.body, "x-forwarded-proto").0, "neighbour");
    let wrong = https("a.shop.example", &cert_b.root_pem, "/");
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("TLS")),
        "a.shop.example is served a.shop.example's certificate, which cert-b's CA did not sign: {wrong:?}"
    );
    let unknown = https("c.shop.example", &cert_a.root_pem, "/");
    assert!(unknown.is_err(), "no listener takes that name: {unknown:?}");

    // Through the waypoint: its L7 policy applies.
    let private = http("a.shop.example", "/private").unwrap();
    assert_eq!(private.status, 403, "{}", private.body);
    assert!(
        private.body.contains("RBAC: access denied"),
        "{}",
        private.body
    );
    // Once the service no longer asks, ingress goes straight to its pods (as Istio's) —
    // but its pods' ztunnel refuses traffic that would pass by the L7 policy only the
    // waypoint can apply: refused, never silently unenforced.
    let out = lab.config("apply", "server.yaml", Some(&server(&[])));
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = http("a.shop.example", "/private").unwrap();
        if answer.status == 503 {
            break;
        }
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(Instant::now() < deadline, "still through the waypoint");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Without that policy, the pods answer the gateway directly.
    let out = lab.config("delete", "policy.yaml", Some(NO_PRIVATE));
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = http("a.shop.example", "/private").unwrap();
        if answer.status == 200 {
            assert_eq!(echoed(&answer.body, "-").0, "server");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {}: {}",
            answer.status,
            answer.body
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A service bound to the waypoint whose port declares TCP (`tcp`), and a VirtualService
/// sending its connections to `neighbour`.
const TCP_ROUTE: &str = "apiVersion: v1
kind: Service
metadata: {name: opaque, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {selector: {app: server}, ports: [{name: tcp, port: 90, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: opaque, namespace: shop}
spec:
  hosts: [opaque]
  tcp:
    - match: [{port: 90, sourceNamespace: shop}]
      route: [{destination: {host: neighbour, port: {number: 80}}, weight: 100}]
";

#[test]
fn a_virtual_service_tcp_route_sends_opaque_connections_to_its_destination() {
    if !root_or_skip("a_virtual_service_tcp_route_sends_opaque_connections_to_its_destination") {
        return;
    }
    let (lab, status) = Lab::started("t14tcp", &(mesh_with_waypoint() + "\n---\n" + TCP_ROUTE));
    let vip = super::address_in(&status, "shop/opaque", true);
    let client = netns::Namespace::existing(&lab.namespace("p-shop-client"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // HTTP bytes over a port that declares TCP: the waypoint pumps them, unread, to the
    // route's destination (no x-request-id added: it did not serve HTTP).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = runtime.block_on(lab::client::exchange(
            Some(&client),
            "GET",
            &format!("http://{vip}:90/"),
            None,
            &[],
        ));
        if let Ok(answer) = &answer
            && echoed(&answer.body, "x-request-id") == ("neighbour".into(), "-".into())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not routed to neighbour as opaque TCP: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
