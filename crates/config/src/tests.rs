//! Parsing what users write: good documents come through typed, bad ones are refused with
//! the source, the document index and the field path.

use super::*;
use crate::resources::IntOrString;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-0
  namespace: shop
  labels: {app: reviews}
spec:
  nodeName: node-a
  serviceAccountName: reviews
  containers:
    - name: app
      command: [bowline, echo]
      args: [--port, "8080"]
      ports: [{name: http, containerPort: 8080}]
status:
  podIP: 10.1.0.5
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports: [{port: 9080, targetPort: http}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
    - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
      to: [{operation: {ports: ["8080"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec: {hosts: [reviews]}
"#;

#[test]
fn a_multi_document_file_parses_into_typed_resources() {
    let resources = parse_documents(SHOP, "shop.yaml").unwrap();
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
    let text = SHOP.replace("ports: [\"8080\"]", "portz: [\"8080\"]");
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
