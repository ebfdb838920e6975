//! Parsing what users write: good documents come through typed, bad ones are refused with
//! the source, the document index and the field path.

use super::*;
use crate::resources::IntOrString;

/// The shop's namespace, `reviews-0` with its container, the `reviews` service, an ALLOW
/// policy and a VirtualService.
fn shop() -> String {
    use test_support::fixtures::{self, Container, Object, Port};
    fixtures::documents(&[
        &fixtures::shop_namespace(),
        &fixtures::reviews_pod().container(
            Container::new("app")
                .command(&["bowline", "echo"])
                .args(&["--port", "8080"])
                .port("http", 8080),
        ),
        &fixtures::reviews_service().ports([Port::new(9080).target("http")]),
        &Object::new("security.istio.io/v1", "AuthorizationPolicy", "only-frontend", "shop").spec(
            "{selector: {matchLabels: {app: reviews}}, action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}], to: [{operation: {ports: [\"8080\"]}}]}]}",
        ),
        &Object::new("networking.istio.io/v1", "VirtualService", "reviews", "shop")
            .spec("{hosts: [reviews]}"),
    ])
}

#[test]
fn a_multi_document_file_parses_into_typed_resources() {
    let resources = parse_documents(&shop(), "shop.yaml").unwrap();
    let keys: Vec<String> = resources.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(
        keys,
        [
            "Namespace shop",
            "Pod shop/reviews-0",
            "Service shop/reviews",
            "AuthorizationPolicy shop/only-frontend",
            "VirtualService shop/reviews",
        ]
    );
    let Resource::Service(service) = &resources[2] else {
        panic!("a service")
    };
    assert_eq!(
        service.spec.ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );
}

fn error(text: &str) -> ConfigError {
    parse_documents(text, "bad.yaml").unwrap_err()
}

#[test]
fn an_unsupported_field_is_refused_with_document_and_path() {
    let text = shop().replace("ports: [\"8080\"]", "portz: [\"8080\"]");
    let e = error(&text);
    assert_eq!(e.document, 4);
    assert_eq!(
        e.object.as_deref(),
        Some("AuthorizationPolicy only-frontend")
    );
    assert_eq!(e.path, "spec.rules[0].to[0].operation.portz");
    assert!(e.message.contains("unknown field `portz`"), "{e}");
    assert!(e.to_string().starts_with("bad.yaml: document 4 (AuthorizationPolicy only-frontend): spec.rules[0].to[0].operation.portz: unknown field `portz`"), "{e}");
}

#[test]
fn an_unknown_kind_or_api_version_is_refused_naming_what_is_supported() {
    let e = error("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    assert_eq!(e.path, "kind");
    assert!(
        e.message.contains("Deployment") && e.message.contains("supported kinds: Namespace"),
        "{e}"
    );
    let e = error("apiVersion: v2\nkind: Pod\nmetadata: {name: x}\n");
    assert_eq!(e.path, "apiVersion");
    assert!(e.message.contains("read as v1"), "{e}");
}

#[test]
fn meaning_errors_name_the_field_and_the_fix() {
    let cases = [
        (
            // Found by the config_yaml fuzz target: accepted, then NACKed by every ztunnel.
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {serviceAccountName: 'r\"eviews', containers: []}\n",
            "spec.serviceAccountName",
            "not a valid name",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {action: AUDIT}\n",
            "spec.action",
            "use ALLOW or DENY",
        ),
        (
            "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{from: [{source: {ipBlocks: [10.0.0.300/8]}}]}]}\n",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "not an IP address or CIDR",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{to: [{operation: {ports: [http]}}]}]}\n",
            "spec.rules[0].to[0].operation.ports[0]",
            "not a port number",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {rules: [{when: [{key: source.ipp, values: [x]}]}]}\n",
            "spec.rules[0].when[0].key",
            "not a condition",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICTEST}}\n",
            "spec.mtls.mode",
            "use UNSET, DISABLE, PERMISSIVE or STRICT",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 53, protocol: UDP}]}\n",
            "spec.ports[0].protocol",
            "TCP only",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: banana}\n",
            "status.podIP",
            "not an IP address",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: nginx}\n",
            "spec.gatewayClassName",
            "only waypoints",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}, {name: web, port: 80, protocol: HTTP}]}\n",
            "spec.listeners[1]",
            "web (80/HTTP): a waypoint takes exactly one listener",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: istio-waypoint}\n",
            "spec.listeners",
            "needs its listener",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {matchLabels: {app: x}}, targetRefs: [{kind: Service, name: x}]}\n",
            "spec.targetRefs",
            "not both",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {targetRefs: [{kind: Deployment, group: apps, name: x}]}\n",
            "spec.targetRefs[0].kind",
            "target a Service",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: nginx}]}\n",
            "spec.targetRefs[0].name",
            "istio-waypoint",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: shop}\nspec: {targetRefs: [{kind: Service, name: x, namespace: other}]}\n",
            "spec.targetRefs[0].namespace",
            "its own namespace",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n",
            "metadata.name",
            "not a valid name",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: sidecar}}\n",
            "metadata.labels.istio.io/dataplane-mode",
            "\"ambient\"",
        ),
    ];
    for (text, path, hint) in cases {
        let e = error(text);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(hint), "{e}");
    }
}

#[test]
fn broken_yaml_and_non_mappings_are_refused_without_a_panic() {
    let e = error("apiVersion: v1\nkind: [unclosed\n");
    assert!(e.message.starts_with("not valid YAML"), "{e}");
    let e = error("- just\n- a list\n");
    assert!(e.message.contains("must be a mapping"), "{e}");
    let e = error("kind: Pod\nmetadata: {name: x}\n");
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("apiVersion", "missing")
    );
    assert!(parse_documents("", "empty.yaml").unwrap().is_empty());
    assert!(
        parse_documents("---\n---\n", "empty.yaml")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn namespaced_kinds_default_to_the_default_namespace() {
    let resources = parse_documents(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n",
        "x",
    )
    .unwrap();
    assert_eq!(resources[0].key().to_string(), "ServiceAccount default/sa");
}

fn limit_of(text: &str, limits: &crate::Limits) -> (crate::Limit, ConfigError) {
    match crate::parse_documents_with(text, "apply", limits, &|| false) {
        Err(crate::ParseError::Limit { limit, error }) => (limit, error),
        other => panic!("expected a limit, got {other:?}"),
    }
}

#[test]
fn a_deeply_nested_body_is_refused_in_milliseconds_naming_the_depth_limit() {
    // 200 KB after a key: libyaml's scanner is quadratic in flow depth (149 s here before
    // the scan existed).
    let text = format!("a: {}", "[".repeat(200_000));
    let started = std::time::Instant::now();
    let (limit, e) = limit_of(&text, &crate::Limits::API);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(limit, crate::Limit::Depth);
    assert_eq!(
        e.to_string(),
        "apply: document 1: nested deeper than 64 levels at line 1 column 68 (`[`/`{` not closed); the limit is 64"
    );
    // Block nesting is held to the same limit while the values are built.
    let mut block = String::new();
    for level in 0..70 {
        block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
    }
    let (limit, e) = limit_of(&block, &crate::Limits::API);
    assert_eq!(limit, crate::Limit::Depth, "{e}");
    assert!(e.message.contains("nested deeper than 64 levels"), "{e}");
    // 64 levels are fine (and then refused for what they are, not for their depth).
    let ok = format!("a: {}{}", "[".repeat(63), "]".repeat(63));
    let e = crate::parse_documents_with(&ok, "apply", &crate::Limits::API, &|| false);
    assert!(matches!(e, Err(crate::ParseError::Invalid(_))), "{e:?}");
}

#[test]
fn documents_scalars_and_alias_expansion_are_limited() {
    let doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let limits = crate::Limits {
        max_documents: Some(3),
        ..crate::Limits::API
    };
    let three = format!("{doc}---\n{doc}---\n{doc}");
    assert_eq!(
        crate::parse_documents_with(&three, "apply", &limits, &|| false)
            .unwrap()
            .len(),
        3
    );
    let (limit, e) = limit_of(&format!("{three}---\n{doc}"), &limits);
    assert_eq!(limit, crate::Limit::Documents);
    assert_eq!(e.document, 4);
    assert!(e.message.contains("the limit is 3 per request"), "{e}");

    let big = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{a: {}}}}}\n",
        "x".repeat((1 << 20) + 1)
    );
    let (limit, e) = limit_of(&big, &crate::Limits::API);
    assert_eq!(limit, crate::Limit::ScalarBytes);
    assert!(
        e.message
            .contains("a scalar of 1048577 bytes; the limit is 1048576 bytes"),
        "{e}"
    );

    // 2,000 values repeated 1,000 times by aliases: 2,000,000 values from 15 KB, within
    // serde_norway's own alias limit (jumps up to 100 times the events).
    let bomb = format!(
        "a: &a [{}]\nb: [{}]\n",
        vec!["x"; 2000].join(", "),
        vec!["*a"; 1000].join(", ")
    );
    let (limit, e) = limit_of(&bomb, &crate::Limits::API);
    assert_eq!(limit, crate::Limit::Values, "{e}");
    assert!(e.message.contains("more than 1000000 values"), "{e}");
}

#[test]
fn a_cancelled_parse_stops_between_documents_and_returns_nothing() {
    let doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n";
    let asked = std::cell::Cell::new(0);
    let cancelled = || {
        asked.set(asked.get() + 1);
        asked.get() > 2
    };
    let e = crate::parse_documents_with(&doc.repeat(5), "apply", &crate::Limits::API, &cancelled);
    assert_eq!(
        e,
        Err(crate::ParseError::Cancelled {
            source_name: "apply".into(),
            documents: 2
        })
    );
}

#[test]
fn duplicate_keys_and_tags_read_as_before() {
    let e = error("apiVersion: v1\nkind: Namespace\nkind: Namespace\nmetadata: {name: x}\n");
    assert!(
        e.message.contains("duplicate entry with key \"kind\""),
        "{e}"
    );
    // A tag is read through, as serde_norway's own values do.
    let tagged = "apiVersion: v1\nkind: Namespace\nmetadata: !thing {name: x}\n";
    assert_eq!(parse_documents(tagged, "x").unwrap().len(), 1);
}
