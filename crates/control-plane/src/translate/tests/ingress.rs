//! Ingress gateways: routes attach to the listeners that take them, one table per port of
//! the Gateway (served even without routes), hosts intersected and ranked, certificates
//! named, backends through a waypoint only when the service asks for it.

use super::*;

const INGRESS: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - name: https
      port: 443
      protocol: HTTPS
      hostname: '*.shop.example'
      tls: {certificateRefs: [{name: shop-cert}, {name: gone}]}
    - {name: admin, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: shop, creationTimestamp: \"2026-01-01T00:00:00Z\"}
spec:
  parentRefs: [{name: web, sectionName: http}, {name: web, sectionName: https}]
  hostnames: [reviews.shop.example, www.other.example]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catch-all, namespace: shop, creationTimestamp: \"2026-02-01T00:00:00Z\"}
spec:
  parentRefs: [{name: web, port: 80}]
  rules: [{matches: [{path: {type: Exact, value: /exact}}], backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign, namespace: legacy}
spec:
  parentRefs: [{name: web, namespace: shop, sectionName: https}]
  rules: [{backendRefs: [{name: old, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: shop}
spec:
  parentRefs: [{name: web, sectionName: https}]
  hostnames: [shop.other.example]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
";

fn tls_secret() -> String {
    let cert = test_support::WebCertificate::new(&["*.shop.example"]);
    format!("---\n{}", cert.secret_yaml("shop", "shop-cert"))
}

fn condition(c: &Compiled, object: &str) -> (&'static str, &'static str) {
    let accepted = c.conditions[object]
        .iter()
        .find(|c| c.kind == "Accepted")
        .unwrap();
    (accepted.status, accepted.reason)
}

#[test]
fn an_ingress_gateway_gets_one_table_per_port_with_hosts_ranked_and_refused_routes_say_why() {
    let c = compile(&format!(
        "{}{INGRESS}{}",
        shop_with_waypoint(true),
        tls_secret()
    ));
    let http = &c.route_tables["shop/web:80"];
    let head = http.ingress.as_ref().unwrap();
    assert!(!head.tls);
    let entries: Vec<(&str, Vec<String>)> = http
        .entries
        .iter()
        .map(|e| (e.route.as_str(), e.hostnames.clone()))
        .collect();
    assert_eq!(
        entries,
        [
            (
                "HTTPRoute shop/front",
                vec![
                    "reviews.shop.example".to_owned(),
                    "www.other.example".to_owned()
                ]
            ),
            ("HTTPRoute shop/catch-all", vec![]),
        ],
        "a route with exact hosts comes before one for any host, even with an exact path"
    );
    let https = &c.route_tables["shop/web:443"];
    let head = https.ingress.as_ref().unwrap();
    assert!(head.tls);
    assert_eq!(head.listeners[0].hostname, "*.shop.example");
    assert_eq!(
        head.listeners[0].certificates,
        ["shop/shop-cert", "shop/gone"]
    );
    assert_eq!(https.entries.len(), 1);
    assert_eq!(
        https.entries[0].hostnames,
        ["reviews.shop.example"],
        "only the route's hosts the listener's wildcard takes"
    );
    assert!(
        c.route_tables["shop/web:8080"].entries.is_empty(),
        "a port without routes is still served"
    );
    assert_eq!(
        condition(&c, "HTTPRoute legacy/foreign"),
        ("False", "NotAllowedByListeners")
    );
    assert_eq!(
        condition(&c, "HTTPRoute shop/elsewhere"),
        ("False", "NoMatchingListenerHostname")
    );
    assert_eq!(condition(&c, "HTTPRoute shop/front"), ("True", "Accepted"));
    let notes = c.status["Gateway shop/web"].join("\n");
    assert!(notes.contains("Secret shop/gone does not exist"), "{notes}");
    assert!(
        !c.status
            .get("HTTPRoute shop/front")
            .is_some_and(|n| n.iter().any(|m| m.contains("spec.hostnames"))),
        "hostnames are in force at an ingress gateway"
    );
    let backend = http.entries[0].action.as_ref().unwrap().backends[0]
        .backend
        .clone()
        .unwrap();
    assert!(
        !backend.via_waypoint,
        "a waypoint-bound service is reached at its pods unless it asks"
    );
}

#[test]
fn a_service_that_asks_for_ingress_to_use_its_waypoint_is_reached_through_it() {
    let plain = shop_with(fixtures::shop_namespace().label(k8s::USE_WAYPOINT, "waypoint"));
    let asking = shop_with(
        fixtures::shop_namespace()
            .label(k8s::USE_WAYPOINT, "waypoint")
            .label(k8s::INGRESS_USE_WAYPOINT, "'true'"),
    );
    let yaml = shop_with_waypoint(true).replacen(&plain, &asking, 1);
    assert_ne!(yaml, shop_with_waypoint(true));
    let c = compile(&format!("{yaml}{INGRESS}{}", tls_secret()));
    let backend = c.route_tables["shop/web:80"].entries[0]
        .action
        .as_ref()
        .unwrap()
        .backends[0]
        .backend
        .clone()
        .unwrap();
    assert!(backend.via_waypoint);
}

#[test]
fn an_ingress_gateway_deploys_a_pod_that_is_a_plain_tcp_endpoint_outside_the_capture() {
    let (pod, _) = deployed(INGRESS, "10.1.0.20", "10.96.0.60");
    let c = compile(&format!("{}{INGRESS}---\n{pod}\n", shop()));
    let workload = c
        .addresses
        .values()
        .find_map(|a| match &a.r#type {
            Some(wire::address::Type::Workload(w)) if w.name == "web-istio-0" => Some(w.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(workload.tunnel_protocol, wire::TunnelProtocol::None as i32);
    assert!(workload.extensions.is_empty(), "not captured");
    assert_eq!(workload.service_account, "web-istio");
}

#[test]
fn a_change_in_a_routes_namespace_recompiles_the_ingress_gateway_of_another() {
    let edge = "---
apiVersion: v1
kind: Namespace
metadata: {name: edge}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: shop}
spec:
  parentRefs: [{name: web, namespace: edge}]
  hostnames: [a.example]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: back, namespace: legacy}
spec:
  parentRefs: [{name: web, namespace: edge}]
  hostnames: [b.example]
  rules: [{backendRefs: [{name: old, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {selector: {app: old}, ports: [{port: 80}]}
";
    let settings = MeshSettings::default();
    let before_yaml = format!("{}{edge}", shop_with_waypoint(true));
    let before = objects(&before_yaml);
    let captured = all_captured(&before);
    let previous = translate(&before, &settings, &captured);
    let hosts = |c: &Compiled| -> Vec<Vec<String>> {
        c.route_tables["edge/web:80"]
            .entries
            .iter()
            .map(|e| e.hostnames.clone())
            .collect()
    };
    assert_eq!(hosts(&previous).len(), 2, "routes of two namespaces");
    // legacy/old is bound to shop's waypoint and asks ingress to use it.
    let after_yaml = before_yaml.replace(
        "metadata: {name: old, namespace: legacy}",
        "metadata: {name: old, namespace: legacy, labels: {istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: shop, istio.io/ingress-use-waypoint: 'true'}}",
    );
    let after = objects(&after_yaml);
    let changed: Vec<ObjectKey> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    let namespaces = affected_namespaces(&changed, &after, &settings).expect("a local change");
    assert!(namespaces.contains("edge"), "{namespaces:?}");
    let partial = translate_namespaces(&after, &settings, &captured, &previous, &namespaces);
    let full = translate(&after, &settings, &captured);
    assert_eq!(partial, full);
    assert_eq!(hosts(&partial).len(), 2, "shop's route is still there");
    assert!(full.route_tables["edge/web:80"].entries.iter().any(|e| {
        e.action.as_ref().unwrap().backends[0]
            .backend
            .as_ref()
            .unwrap()
            .via_waypoint
    }));
}
