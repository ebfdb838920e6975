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
    let e = error("apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n");
    assert_eq!(e.path, "kind");
    assert!(
        e.message
            .contains("\"Servce\" (v1) is not a kind Bowline knows")
            && e.message.contains("its kinds are Namespace"),
        "{e}"
    );
    // Said once: no `kind: kind "…"`.
    assert!(!e.to_string().contains("kind: kind"), "{e}");
    let e = error("apiVersion: v2\nkind: Pod\nmetadata: {name: x}\n");
    assert_eq!(e.path, "apiVersion");
    assert!(e.message.contains("read as v1"), "{e}");
}

#[test]
fn objects_the_mesh_does_not_use_are_accepted_and_listed_in_one_note() {
    let text = "---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {anything: goes, here: {nested: [1, 2]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop}
spec: {project: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
";
    let parsed = crate::parse_documents_noting(text, "mixed.yaml").unwrap();
    assert_eq!(parsed.resources.len(), 1);
    assert_eq!(
        parsed.unused,
        [
            "ConfigMap shop/settings",
            "NetworkPolicy shop/deny-all",
            "Application shop"
        ]
    );
    assert_eq!(
        parsed.unused_note().unwrap(),
        "not used by the mesh (accepted, not kept): ConfigMap shop/settings, NetworkPolicy shop/deny-all, Application shop"
    );
}

#[test]
fn mesh_kinds_bowline_does_not_implement_are_refused_by_kind_before_their_fields() {
    // Fields no Bowline type has: the refusal is about the kind, at its document.
    let e = error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: lua, namespace: shop}\nspec: {configPatches: [{applyTo: HTTP_FILTER}]}\n",
    );
    assert_eq!((e.document, e.path.as_str()), (2, "kind"));
    assert!(
        e.message
            .contains("EnvoyFilter (networking.istio.io/v1alpha3) changes how the mesh behaves"),
        "{e}"
    );
    // Istio's own Gateway: not supported, and no advice to change its apiVersion.
    let e = error(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ingress}\nspec: {selector: {istio: ingressgateway}, servers: []}\n",
    );
    assert!(
        e.message
            .contains("Istio's networking.istio.io Gateway is not supported")
            && !e.message.contains("is read as"),
        "{e}"
    );
    // A controller the lab does not play would lose its pods: refused, saying what to write.
    let e = error(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\nspec: {schedule: \"* * * * *\"}\n",
    );
    assert!(e.message.contains("write a Job to run its pod once"), "{e}");
    // A Gateway of another class is refused for its class, not for a field of its spec.
    let e = error(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: web}\nspec: {gatewayClassName: nginx, listeners: [{name: http, port: 80, protocol: HTTP, hostname: shop.example}], infrastructure: {labels: {a: b}}}\n",
    );
    assert_eq!(e.path, "spec.gatewayClassName", "{e}");
    assert!(
        e.message
            .contains("ingress gateways (gatewayClassName: istio)"),
        "{e}"
    );
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
            "gatewayClassName: istio-waypoint",
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
    let cases = cases
        .into_iter()
        .map(|(text, path, hint)| (text.to_owned(), path, hint))
        .chain(route_refusals());
    for (text, path, hint) in cases {
        let e = error(&text);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(hint), "{e}");
    }
}

/// A `kind` route `name` in `shop` attached to `parent` with `spec`'s other fields.
fn route(kind: &str, name: &str, parent: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{parentRefs: [{parent}], {spec}}}\n"
    )
}

/// An `HTTPRoute` in `shop` attached to `parent` with one rule that matches everything.
fn http_route_to(parent: &str) -> String {
    route("HTTPRoute", "r", parent, "rules: [{}]")
}

/// An `HTTPRoute` in `shop` attached to the `reviews` Service with `spec`'s other fields.
fn http_route(spec: &str) -> String {
    route(
        "HTTPRoute",
        "r",
        "{group: \"\", kind: Service, name: reviews}",
        spec,
    )
}

/// An `HTTPRoute` as [`http_route`] with one rule.
fn http_rule(rule: &str) -> String {
    http_route(&format!("rules: [{rule}]"))
}

/// A `GRPCRoute` in `shop` attached to the `ratings` Service with one rule.
fn grpc_rule(rule: &str) -> String {
    route(
        "GRPCRoute",
        "g",
        "{group: \"\", kind: Service, name: ratings}",
        &format!("rules: [{rule}]"),
    )
}

/// One refused route per rule of `validate::routes`: the text, the field, a fragment of
/// the message.
fn route_refusals() -> Vec<(String, &'static str, &'static str)> {
    const BACKEND: &str = "backendRefs: [{name: reviews-v1, port: 9080}]";
    vec![
        // parentRefs
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {rules: [{backendRefs: [{name: reviews, port: 9080}]}]}\n".into(),
            "spec.parentRefs",
            "a route needs a parent",
        ),
        (
            http_route_to("{group: \"\", kind: Deployment, name: reviews}"),
            "spec.parentRefs[0].kind",
            "attaches to a Service (group \"\", kind: Service) or a waypoint's Gateway",
        ),
        (
            http_route_to("{group: apps, kind: Service, name: reviews}"),
            "spec.parentRefs[0].group",
            "group \"apps\" does not go with kind Service: write group \"\" for a Service",
        ),
        (
            http_route_to("{group: \"\", name: waypoint}"),
            "spec.parentRefs[0].group",
            "does not go with kind Gateway",
        ),
        (
            http_route_to("{group: \"\", kind: Service, name: reviews, namespace: Other}"),
            "spec.parentRefs[0].namespace",
            "not a valid name",
        ),
        // hostnames
        (
            http_route("hostnames: [Reviews.Shop]"),
            "spec.hostnames[0]",
            "not a host name",
        ),
        (
            http_route("hostnames: [10.0.0.1]"),
            "spec.hostnames[0]",
            "is an IP address",
        ),
        // rule names
        (
            http_route("rules: [{name: a}, {name: a}]"),
            "spec.rules[1].name",
            "rule names are unique in a route",
        ),
        // matches
        (
            http_rule("{matches: [{path: {type: Exact, value: reviews}}]}"),
            "spec.rules[0].matches[0].path.value",
            "a path starts with `/`",
        ),
        (
            http_rule("{matches: [{path: {value: /api//v1}}]}"),
            "spec.rules[0].matches[0].path.value",
            "a path match is a normalised path",
        ),
        (
            http_rule("{matches: [{path: {type: Suffix, value: /x}}]}"),
            "spec.rules[0].matches[0].path.type",
            "use Exact, PathPrefix or RegularExpression",
        ),
        (
            http_rule("{matches: [{path: {type: RegularExpression, value: \"/api/(v1\"}}]}"),
            "spec.rules[0].matches[0].path.value",
            "not a regular expression Bowline can use (RE2 syntax): unclosed group",
        ),
        (
            http_rule("{matches: [{headers: [{type: RegularExpression, name: x-user, value: \"[a-z\"}]}]}"),
            "spec.rules[0].matches[0].headers[0].value",
            "not a regular expression",
        ),
        (
            http_rule("{matches: [{queryParams: [{type: RegularExpression, name: page, value: \"*\"}]}]}"),
            "spec.rules[0].matches[0].queryParams[0].value",
            "not a regular expression",
        ),
        (
            http_rule("{matches: [{headers: [{name: \"x user\", value: a}]}]}"),
            "spec.rules[0].matches[0].headers[0].name",
            "not an HTTP header name",
        ),
        (
            http_rule("{matches: [{queryParams: [{name: \"page size\", value: \"10\"}]}]}"),
            "spec.rules[0].matches[0].queryParams[0].name",
            "not an HTTP query parameter name",
        ),
        (
            http_rule("{matches: [{headers: [{type: Prefix, name: x-user, value: a}]}]}"),
            "spec.rules[0].matches[0].headers[0].type",
            "use Exact or RegularExpression",
        ),
        (
            http_rule("{matches: [{method: FETCH}]}"),
            "spec.rules[0].matches[0].method",
            "use one of GET, HEAD, POST",
        ),
        // backendRefs
        (
            http_rule("{backendRefs: [{kind: Deployment, name: reviews-v1, port: 9080}]}"),
            "spec.rules[0].backendRefs[0].kind",
            "Bowline routes to Services only",
        ),
        (
            http_rule("{backendRefs: [{group: apps, name: reviews-v1, port: 9080}]}"),
            "spec.rules[0].backendRefs[0].group",
            "core group",
        ),
        (
            http_rule("{backendRefs: [{name: reviews-v1}]}"),
            "spec.rules[0].backendRefs[0].port",
            "give the port of Service",
        ),
        (
            http_rule("{backendRefs: [{name: reviews-v1, namespace: Canary, port: 9080}]}"),
            "spec.rules[0].backendRefs[0].namespace",
            "not a valid name",
        ),
        (
            http_rule("{backendRefs: [{name: reviews-v1, port: 9080, weight: 1000001}]}"),
            "spec.rules[0].backendRefs[0].weight",
            "weights are 0-1000000",
        ),
        // filters
        (
            http_rule("{filters: [{type: RequestHeaderModifier, responseHeaderModifier: {remove: [x]}}]}"),
            "spec.rules[0].filters[0].requestHeaderModifier",
            "missing: a filter of type RequestHeaderModifier",
        ),
        (
            http_rule("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x]}, urlRewrite: {hostname: a}}]}"),
            "spec.rules[0].filters[0].urlRewrite",
            "takes only requestHeaderModifier; put urlRewrite in a filter of its own, of type URLRewrite",
        ),
        (
            http_rule("{filters: [{type: CORS}]}"),
            "spec.rules[0].filters[0].type",
            "use one of RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror",
        ),
        (
            http_rule("{filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}, {type: URLRewrite, urlRewrite: {hostname: a}}]}"),
            "spec.rules[0].filters[1]",
            "a RequestRedirect and a URLRewrite cannot be used together",
        ),
        (
            http_rule("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308}}]}"),
            "spec.rules[0].filters[0].requestRedirect.statusCode",
            "301 (moved permanently) or 302",
        ),
        (
            http_rule("{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}"),
            "spec.rules[0].filters[0].requestRedirect.scheme",
            "use http or https",
        ),
        (
            http_rule(&format!("{{filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https}}}}], {BACKEND}}}")),
            "spec.rules[0].filters[0]",
            "its rule has no backendRefs",
        ),
        (
            http_rule("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}, {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}]}"),
            "spec.rules[0].filters[1].type",
            "RequestHeaderModifier is given twice",
        ),
        (
            http_rule("{matches: [{path: {type: Exact, value: /v1}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]}"),
            "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch",
            "needs exactly one match, of type PathPrefix",
        ),
        (
            http_rule("{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /v2}}}]}"),
            "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath",
            "missing: a path of type ReplaceFullPath",
        ),
        (
            http_rule("{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]}"),
            "spec.rules[0].filters[0].extensionRef",
            "Bowline has no extension filters",
        ),
        (
            http_rule("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: \"a\\r\\nx-admin: 1\"}]}}]}"),
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].value",
            "cannot hold control characters",
        ),
        (
            http_rule("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 9080}, percent: 150}}]}"),
            "spec.rules[0].filters[0].requestMirror.percent",
            "0-100",
        ),
        (
            http_rule("{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}]}"),
            "spec.rules[0].filters[0].requestMirror.backendRef.port",
            "give the port of Service",
        ),
        (
            http_rule(&format!("{{{BACKEND}, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{remove: [x]}}}}]}}").replace("port: 9080}", "port: 9080, filters: [{type: CORS}]}")),
            "spec.rules[0].backendRefs[0].filters[0].type",
            "use one of",
        ),
        // timeouts and retries
        (
            http_rule("{timeouts: {request: 1.5s}}"),
            "spec.rules[0].timeouts.request",
            "not a Gateway API duration",
        ),
        (
            http_rule("{timeouts: {request: 10s, backendRequest: 1m}}"),
            "spec.rules[0].timeouts.backendRequest",
            "\"1m\" is longer than the request timeout \"10s\"",
        ),
        (
            http_rule("{retry: {codes: [503, 200]}}"),
            "spec.rules[0].retry.codes[1]",
            "use codes 400-599",
        ),
        (
            http_rule("{retry: {attempts: 11}}"),
            "spec.rules[0].retry.attempts",
            "at most 10 — each retry sends the request again",
        ),
        (
            http_rule("{retry: {attempts: 2, backoff: 1x}}"),
            "spec.rules[0].retry.backoff",
            "not a Gateway API duration",
        ),
        // GRPCRoute
        (
            grpc_rule("{matches: [{method: {type: Exact}}]}"),
            "spec.rules[0].matches[0].method",
            "give service, method or both",
        ),
        (
            grpc_rule("{matches: [{method: {service: \"\", method: GetRating}}]}"),
            "spec.rules[0].matches[0].method.service",
            "not a gRPC service name",
        ),
        (
            grpc_rule("{matches: [{method: {service: shop.v1.Ratings, method: Get-Rating}}]}"),
            "spec.rules[0].matches[0].method.method",
            "not a gRPC method name",
        ),
        (
            grpc_rule("{matches: [{method: {type: RegularExpression, method: \"Get(\"}}]}"),
            "spec.rules[0].matches[0].method.method",
            "not a regular expression",
        ),
        (
            grpc_rule("{matches: [{method: {type: Prefix, method: Get}}]}"),
            "spec.rules[0].matches[0].method.type",
            "use Exact or RegularExpression",
        ),
        (
            grpc_rule("{matches: [{headers: [{name: \"x:tenant\", value: a}]}]}"),
            "spec.rules[0].matches[0].headers[0].name",
            "not an HTTP header name",
        ),
        (
            grpc_rule("{filters: [{type: RequestRedirect}]}"),
            "spec.rules[0].filters[0].type",
            "\"RequestRedirect\": use one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror",
        ),
        (
            grpc_rule("{backendRefs: [{name: ratings-v2, weight: 1}]}"),
            "spec.rules[0].backendRefs[0].port",
            "give the port of Service",
        ),
    ]
}

/// `kubectl get httproute reviews -n shop -o yaml`: a canary (90/10) for everyone, and
/// testers (header `x-canary: "true"` under `/api`) on the canary with a header set.
const REVIEWS_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: shop
  uid: 0b6a6c3e-1d2f-4c55-9a51-7f0e8c1d2a3b
  resourceVersion: "48213"
  generation: 3
  creationTimestamp: "2025-05-01T10:00:00Z"
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  hostnames:
  - reviews.shop.svc.cluster.local
  rules:
  - name: testers
    matches:
    - path:
        type: PathPrefix
        value: /api
      headers:
      - name: x-canary
        value: "true"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-route
          value: canary
        add:
        - name: x-trace
          value: "1"
        remove:
        - x-debug
    backendRefs:
    - name: reviews-v2
      namespace: shop-canary
      port: 9080
  - name: canary
    matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - group: ""
      kind: Service
      name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      namespace: shop-canary
      port: 9080
      weight: 10
    timeouts:
      request: 10s
      backendRequest: 2s
    retry:
      attempts: 3
      codes: [502, 503]
      backoff: 100ms
status:
  parents:
  - parentRef:
      group: ""
      kind: Service
      name: reviews
      port: 9080
    controllerName: istio.io/gateway-controller
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: Route was valid
      observedGeneration: 3
      lastTransitionTime: "2025-05-01T10:00:01Z"
"#;

/// What `to_json` writes parses back to the same resource.
fn round_trips(resource: &Resource) {
    let json = serde_json::to_string(&resource.to_json()).unwrap();
    let again = parse_documents(&json, "dump.json").unwrap();
    assert_eq!(again, std::slice::from_ref(resource), "{json}");
}

#[test]
fn an_http_route_exported_with_kubectl_parses_typed_and_round_trips() {
    use crate::resources::{RouteParent, Timeouts};
    use crate::validate::gateway_duration;
    use std::time::Duration;

    let resources = parse_documents(REVIEWS_ROUTE, "reviews-route.yaml").unwrap();
    let [Resource::HttpRoute(route)] = resources.as_slice() else {
        panic!("one HTTPRoute: {resources:?}")
    };
    assert_eq!(resources[0].key().to_string(), "HTTPRoute shop/reviews");
    let spec = &route.spec;
    assert_eq!(spec.parent_refs[0].parent(), Some(RouteParent::Service));
    assert_eq!(spec.parent_refs[0].namespace_or("shop"), "shop");
    assert_eq!(spec.parent_refs[0].port, Some(9080));

    let testers = &spec.rules[0];
    assert_eq!(testers.name.as_deref(), Some("testers"));
    let path = testers.matches[0].path.as_ref().unwrap();
    assert_eq!(
        (path.effective_type(), path.effective_value()),
        ("PathPrefix", "/api")
    );
    let header = &testers.matches[0].headers[0];
    assert_eq!(
        (
            header.effective_type(),
            header.name.as_str(),
            header.value.as_str()
        ),
        ("Exact", "x-canary", "true")
    );
    let modifier = testers.filters[0].request_header_modifier.as_ref().unwrap();
    assert_eq!(testers.filters[0].type_, "RequestHeaderModifier");
    assert_eq!(
        (
            modifier.set[0].name.as_str(),
            modifier.set[0].value.as_str()
        ),
        ("x-route", "canary")
    );
    assert_eq!(modifier.add[0].value, "1");
    assert_eq!(modifier.remove, ["x-debug"]);
    assert_eq!(testers.backend_refs[0].effective_weight(), 1);
    assert_eq!(
        testers.backend_refs[0].namespace.as_deref(),
        Some("shop-canary")
    );

    let canary = &spec.rules[1];
    let weights: Vec<(&str, u32)> = canary
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.effective_weight()))
        .collect();
    assert_eq!(weights, [("reviews-v1", 90), ("reviews-v2", 10)]);
    let Some(Timeouts {
        request: Some(request),
        backend_request: Some(backend_request),
    }) = &canary.timeouts
    else {
        panic!("timeouts: {:?}", canary.timeouts)
    };
    assert_eq!(gateway_duration(request), Some(Duration::from_secs(10)));
    assert_eq!(
        gateway_duration(backend_request),
        Some(Duration::from_secs(2))
    );
    let retry = canary.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.codes.as_slice()),
        (Some(3), &[502, 503][..])
    );
    assert_eq!(
        gateway_duration(retry.backoff.as_deref().unwrap()),
        Some(Duration::from_millis(100))
    );

    // The status is kept as exported.
    let status = route.status.as_ref().unwrap();
    assert_eq!(
        status["parents"][0]["controllerName"],
        "istio.io/gateway-controller"
    );
    let json = resources[0].to_json();
    assert_eq!(
        (&json["apiVersion"], &json["kind"]),
        (
            &serde_json::json!("gateway.networking.k8s.io/v1"),
            &serde_json::json!("HTTPRoute")
        )
    );
    round_trips(&resources[0]);
}

#[test]
fn a_grpc_route_through_a_waypoint_parses_typed_and_round_trips() {
    use crate::resources::RouteParent;

    let text = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: ratings, namespace: shop}
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: waypoint, sectionName: mesh}
  - {name: waypoint, namespace: shop-canary}
  hostnames: ["*.shop.svc.cluster.local"]
  rules:
  - matches:
    - method: {service: shop.v1.Ratings, method: GetRating}
      headers: [{name: x-tenant, value: gold}]
    - method: {type: RegularExpression, service: 'shop\.v1\..*'}
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-served-by, value: ratings-v2}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: ratings-shadow, port: 9090}, percent: 5}
    backendRefs:
    - {name: ratings-v2, port: 9090, weight: 1}
    - name: ratings-v1
      port: 9090
      weight: 0
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {add: [{name: x-legacy, value: "yes"}]}
status: {parents: "whatever a controller wrote: kept, not read"}
"#;
    let resources = parse_documents(text, "ratings-route.yaml").unwrap();
    let [Resource::GrpcRoute(route)] = resources.as_slice() else {
        panic!("one GRPCRoute: {resources:?}")
    };
    assert_eq!(resources[0].key().to_string(), "GRPCRoute shop/ratings");
    let spec = &route.spec;
    // An omitted kind and group are a Gateway's, as in the Gateway API.
    let parents: Vec<_> = spec.parent_refs.iter().map(|p| p.parent()).collect();
    assert_eq!(
        parents,
        [Some(RouteParent::Gateway), Some(RouteParent::Gateway)]
    );
    assert_eq!(spec.parent_refs[1].namespace_or("shop"), "shop-canary");
    let rule = &spec.rules[0];
    let exact = rule.matches[0].method.as_ref().unwrap();
    assert_eq!(
        (
            exact.effective_type(),
            exact.service.as_deref(),
            exact.method.as_deref()
        ),
        ("Exact", Some("shop.v1.Ratings"), Some("GetRating"))
    );
    assert_eq!(rule.matches[0].headers[0].name, "x-tenant");
    let pattern = rule.matches[1].method.as_ref().unwrap();
    assert_eq!(pattern.effective_type(), "RegularExpression");
    assert_eq!(pattern.method, None);
    let mirror = rule.filters[1].request_mirror.as_ref().unwrap();
    assert_eq!(
        (mirror.backend_ref.name.as_str(), mirror.percent),
        ("ratings-shadow", Some(5))
    );
    assert_eq!(rule.backend_refs[1].effective_weight(), 0);
    assert_eq!(
        rule.backend_refs[1].filters[0].type_,
        "RequestHeaderModifier"
    );
    assert!(route.status.is_some());
    round_trips(&resources[0]);
}

#[test]
fn route_fields_and_versions_bowline_does_not_read_are_refused() {
    let e = error(&http_rule("{sessionPersistence: {type: Cookie}}"));
    assert_eq!(e.path, "spec.rules[0].sessionPersistence", "{e}");
    assert!(e.message.contains("Bowline refuses fields"), "{e}");
    let e = error(&grpc_rule("{timeouts: {request: 1s}}"));
    assert_eq!(e.path, "spec.rules[0].timeouts", "{e}");
    let e = error(&grpc_rule("{}").replace("/v1\n", "/v1beta1\n"));
    assert_eq!(e.path, "apiVersion", "{e}");
    assert!(
        e.message
            .contains("GRPCRoute is read as gateway.networking.k8s.io/v1,"),
        "{e}"
    );
    // HTTPRoute is served as v1beta1 too.
    let v1beta1 = http_rule("{}").replace("/v1\n", "/v1beta1\n");
    assert_eq!(parse_documents(&v1beta1, "x").unwrap().len(), 1);
}

#[test]
fn gateway_durations_parse_as_the_gateway_api_writes_them() {
    use crate::validate::gateway_duration;
    use std::time::Duration;

    let ms = Duration::from_millis;
    for (text, expected) in [
        ("10s", Some(ms(10_000))),
        ("1m30s", Some(ms(90_000))),
        ("500ms", Some(ms(500))),
        ("0s", Some(Duration::ZERO)),
        ("1h1m1s1ms", Some(ms(3_661_001))),
        ("99999h", Some(Duration::from_secs(99_999 * 3600))),
        ("1s1s", Some(ms(2_000))),
        ("", None),
        ("10", None),
        ("1.5s", None),
        ("-1s", None),
        ("100000s", None),
        ("1h1m1s1ms1h", None),
        ("1d", None),
        ("10 s", None),
        ("s", None),
        ("1msms", None),
    ] {
        assert_eq!(gateway_duration(text), expected, "{text:?}");
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
            .resources
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

#[test]
fn service_fields_users_write_are_read_and_what_has_no_effect_is_named() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  publishNotReadyAddresses: true
status: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}
";
    let resources = parse_documents(text, "web.yaml").unwrap();
    let Resource::Service(service) = &resources[0] else {
        panic!("{resources:?}")
    };
    let notes = service.spec.without_effect().join("\n");
    for expected in [
        "type LoadBalancer: served on its cluster IP only",
        "IPv6 is not given",
        "sessionAffinity ClientIP: not honoured",
        "externalTrafficPolicy Local",
        "publishNotReadyAddresses: not honoured yet",
    ] {
        assert!(notes.contains(expected), "{expected}: {notes}");
    }
    assert!(
        !notes.contains("internalTrafficPolicy"),
        "Cluster is the default: {notes}"
    );
    // The written-back status is not kept.
    assert!(!resources[0].to_json().to_string().contains("203.0.113.7"));
    // Values are still checked, and ExternalName stays refused.
    let e = error(&text.replace("sessionAffinity: ClientIP", "sessionAffinity: Sticky"));
    assert_eq!(e.path, "spec.sessionAffinity", "{e}");
    let e = error(&text.replace("type: LoadBalancer", "type: ExternalName"));
    assert_eq!(e.path, "spec.type", "{e}");
}

#[test]
fn lists_json_anchors_and_commented_separators_parse_as_kubectl_reads_them() {
    // `kubectl get -o yaml` output: a List, with a status written back.
    let list = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {selector: {app: web}, ports: [{port: 80}]}
  status: {loadBalancer: {}}
";
    let resources = parse_documents(list, "list.yaml").unwrap();
    assert_eq!(resources.len(), 2);
    // An error inside a List names the item.
    let e = error(&list.replace("ports: [{port: 80}]", "portz: [{port: 80}]"));
    assert_eq!(e.path, "items[1].spec.portz", "{e}");
    // JSON, as `kubectl get -o json` writes it.
    let json = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}}"#;
    assert_eq!(parse_documents(json, "ns.json").unwrap().len(), 1);
    // Anchors and aliases (within a document, as YAML has them); separators with
    // comments; unquoted IPv6 in a flow sequence.
    let yaml = "--- # the namespace
apiVersion: v1
kind: Namespace
metadata: {name: shop}
--- # its service
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: &web {app: web}
spec: {selector: *web, ports: [{port: 80}], clusterIPs: [fd00:10:96::a], ipFamilies: [IPv6]}
";
    let resources = parse_documents(yaml, "anchors.yaml").unwrap();
    assert_eq!(resources.len(), 2);
    let Resource::Service(web) = &resources[1] else {
        panic!("{resources:?}")
    };
    assert_eq!(
        web.spec.selector.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(web.spec.cluster_ips, ["fd00:10:96::a"]);
}

#[test]
fn a_leading_separator_does_not_shift_document_numbers() {
    let e = error(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Servce\nmetadata: {name: b}\n",
    );
    assert_eq!(e.document, 2, "{e}");
    let e = error("# a comment first\n---\napiVersion: v1\nkind: Servce\nmetadata: {name: b}\n");
    assert_eq!(e.document, 1, "{e}");
}

#[test]
fn pod_fields_users_write_are_read_and_named_when_without_effect_and_typos_are_refused() {
    let text = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  restartPolicy: Always
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Exists}]
  volumes: [{name: tmp, emptyDir: {}}]
  securityContext: {runAsNonRoot: true}
  terminationGracePeriodSeconds: 5
  containers:
    - name: web
      image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.2
      imagePullPolicy: IfNotPresent
      command: [bowline, echo]
      ports: [{containerPort: 9080}]
      resources: {requests: {cpu: 100m}}
      volumeMounts: [{name: tmp, mountPath: /tmp}]
      readinessProbe: {httpGet: {path: /health, port: 9080}}
";
    let resources = parse_documents(text, "pod.yaml").unwrap();
    let Resource::Pod(pod) = &resources[0] else {
        panic!("{resources:?}")
    };
    assert_eq!(
        pod.spec.without_effect(),
        [
            "spec.restartPolicy",
            "spec.nodeSelector",
            "spec.tolerations",
            "spec.terminationGracePeriodSeconds",
            "spec.volumes",
            "spec.securityContext",
            "spec.containers[0].imagePullPolicy",
            "spec.containers[0].resources",
            "spec.containers[0].volumeMounts",
            "spec.containers[0].readinessProbe",
        ]
    );
    // A field nobody has is still refused, in the spec and in a container.
    let e = error(&text.replace("restartPolicy", "restartPolicee"));
    assert!(e.message.contains("restartPolicee"), "{e}");
    let e = error(&text.replace("imagePullPolicy", "imagePullPolicee"));
    assert!(e.message.contains("imagePullPolicee"), "{e}");
}

mod gateways;
mod traffic;
mod workloads;
