//! Translation tables: YAML in, compiled resources out.

use std::collections::BTreeMap;

use config::{ObjectKey, Resource};
use test_support::fixtures;
use xds::security as sec;
use xds::workload as wire;

use super::*;

/// Compiles `yaml` as if every node agent had reported all its pods captured.
fn compile(yaml: &str) -> Compiled {
    let objects = objects(yaml);
    translate(&objects, &MeshSettings::default(), &all_captured(&objects))
}

/// Every pod with a node, reported captured by that node's agent.
fn all_captured(objects: &BTreeMap<ObjectKey, Resource>) -> Captured {
    let mut by_node: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for resource in objects.values() {
        if let Resource::Pod(pod) = resource
            && let Some(node) = &pod.spec.node_name
        {
            by_node.entry(node.clone()).or_default().insert(pod_uid(
                "Kubernetes",
                pod.metadata.namespace(),
                &pod.metadata.name,
            ));
        }
    }
    let mut captured = Captured::default();
    for (node, uids) in by_node {
        captured.replace(&node, uids);
    }
    captured
}

/// The shop: namespaces `shop` (`namespace`) and `legacy`; `reviews-0` (named container
/// port), `opted-out`, `legacy/old-0`, `no-ip`; the `reviews` service with a named, a
/// numbered, an unresolvable and a bare port.
fn shop_with(namespace: fixtures::Namespace) -> String {
    use fixtures::{Container, Namespace, Pod, Port};
    fixtures::documents(&[
        &namespace,
        &Namespace::new("legacy"),
        &fixtures::reviews_pod()
            .label("version", "v2")
            .container(Container::new("app").port("http", 8080)),
        &Pod::new("opted-out", "shop")
            .label(fixtures::DATAPLANE_MODE, "none")
            .ip("10.1.0.6"),
        &Pod::new("old-0", "legacy")
            .label("app", "old")
            .ip("10.2.0.5"),
        &Pod::new("no-ip", "shop"),
        &fixtures::reviews_service().ports([
            Port::new(9080).name("http").target("http"),
            Port::new(9090).name("admin").target("9091"),
            Port::new(7000).name("missing").target("nope"),
            Port::new(5000),
        ]),
    ])
}

/// [`shop_with`] the enrolled `shop` namespace.
fn shop() -> String {
    shop_with(fixtures::shop_namespace())
}

fn workload<'a>(c: &'a Compiled, ns: &str, name: &str) -> &'a wire::Workload {
    c.workload(&pod_uid("Kubernetes", ns, name))
        .unwrap_or_else(|| panic!("workload {ns}/{name}"))
}

#[test]
fn pods_become_workloads_enrolled_by_namespace_or_pod_label() {
    let c = compile(&shop());
    let w = workload(&c, "shop", "reviews-0");
    assert_eq!(w.uid, "Kubernetes//Pod/shop/reviews-0");
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::Hbone as i32);
    assert_eq!(w.addresses, vec![bytes::Bytes::from_static(&[10, 1, 0, 5])]);
    assert_eq!(w.service_account, "reviews");
    assert_eq!(w.node, "node-a");
    assert_eq!(
        (w.canonical_name.as_str(), w.canonical_revision.as_str()),
        ("reviews", "v2")
    );
    assert_eq!(w.workload_type, wire::WorkloadType::Pod as i32);
    assert_eq!(
        w.trust_domain, "",
        "the default trust domain is sent empty, as istiod does"
    );
    assert_eq!(w.cluster_id, "Kubernetes");

    let out = workload(&c, "shop", "opted-out");
    assert_eq!(out.tunnel_protocol, wire::TunnelProtocol::None as i32);
    assert_eq!(out.service_account, "default");
    assert_eq!(out.canonical_revision, "latest");
    let old = workload(&c, "legacy", "old-0");
    assert_eq!(old.tunnel_protocol, wire::TunnelProtocol::None as i32);
    assert!(
        c.workload("Kubernetes//Pod/shop/no-ip").is_none(),
        "no address, no workload"
    );
}

#[test]
fn services_get_hostname_vips_and_ports_resolved_per_workload() {
    let c = compile(&shop());
    let s = c.service("shop/reviews.shop.svc.cluster.local").unwrap();
    assert_eq!(s.hostname, "reviews.shop.svc.cluster.local");
    assert_eq!(
        s.addresses[0].address,
        bytes::Bytes::from_static(&[10, 96, 0, 10])
    );
    let ports: Vec<(u32, u32)> = s
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(ports, [(9080, 0), (9090, 9091), (7000, 0), (5000, 5000)]);

    let w = workload(&c, "shop", "reviews-0");
    let list = &w.services["shop/reviews.shop.svc.cluster.local"].ports;
    let ports: Vec<(u32, u32)> = list
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    // The named port resolves from the container; an unknown name drops that port.
    assert_eq!(ports, [(9080, 8080), (9090, 9091), (5000, 5000)]);
    assert!(workload(&c, "shop", "opted-out").services.is_empty());
}

fn policy_yaml(spec: &str) -> String {
    let shop = shop();
    format!(
        "{shop}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}"
    )
}

fn exact(s: &str) -> sec::StringMatch {
    sec::StringMatch {
        match_type: Some(sec::string_match::MatchType::Exact(s.into())),
    }
}

#[test]
fn authorization_policy_fields_translate_to_l4_clauses() {
    let c = compile(&policy_yaml(
        r#"  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: [cluster.local/ns/shop/sa/frontend, "*/sa/admin", "spiffe*", "*"]
            notNamespaces: [legacy]
            ipBlocks: [10.1.0.0/16, 10.9.9.9]
            serviceAccounts: [shop/frontend, bare]
      to: [{operation: {ports: ["8080"], notPorts: ["9091"]}}]
      when:
        - {key: source.ip, notValues: [10.1.0.66]}
        - {key: destination.port, values: ["8080"]}
"#,
    ));
    let p = &c.authorizations["shop/p"];
    assert_eq!(p.scope, sec::Scope::WorkloadSelector as i32);
    assert_eq!(p.action, sec::Action::Allow as i32);
    assert_eq!(p.rules.len(), 1);
    let clauses = &p.rules[0].clauses;
    assert_eq!(clauses.len(), 4, "to, from, and one per when");
    assert_eq!(clauses[0].matches[0].destination_ports, [8080]);
    assert_eq!(clauses[0].matches[0].not_destination_ports, [9091]);
    let from = &clauses[1].matches[0];
    use sec::string_match::MatchType;
    let kinds: Vec<MatchType> = from
        .principals
        .iter()
        .map(|m| m.match_type.clone().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            MatchType::Exact("cluster.local/ns/shop/sa/frontend".into()),
            MatchType::Suffix("/sa/admin".into()),
            MatchType::Prefix("spiffe".into()),
            MatchType::Presence(()),
        ]
    );
    assert_eq!(from.not_namespaces, [exact("legacy")]);
    let ips: Vec<(Vec<u8>, u32)> = from
        .source_ips
        .iter()
        .map(|a| (a.address.to_vec(), a.length))
        .collect();
    assert_eq!(ips, [(vec![10, 1, 0, 0], 16), (vec![10, 9, 9, 9], 32)]);
    let accounts: Vec<(&str, &str)> = from
        .service_accounts
        .iter()
        .map(|a| (a.namespace.as_str(), a.service_account.as_str()))
        .collect();
    assert_eq!(accounts, [("shop", "frontend"), ("shop", "bare")]);
    assert_eq!(clauses[2].matches[0].not_source_ips[0].length, 32);
    assert_eq!(clauses[3].matches[0].destination_ports, [8080]);
    // Listed on the selected workload only.
    assert_eq!(
        workload(&c, "shop", "reviews-0").authorization_policies,
        ["shop/p"]
    );
    assert!(
        workload(&c, "shop", "opted-out")
            .authorization_policies
            .is_empty()
    );
    assert!(c.status.is_empty(), "{:?}", c.status);
}

#[test]
fn scope_follows_selector_and_root_namespace() {
    let c = compile(&format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: mesh, namespace: istio-system}}\nspec: {{action: DENY, rules: [{{from: [{{source: {{namespaces: [legacy]}}}}]}}]}}\n",
        policy_yaml("  action: ALLOW\n  rules: [{}]\n")
    ));
    assert_eq!(
        c.authorizations["shop/p"].scope,
        sec::Scope::Namespace as i32
    );
    assert_eq!(
        c.authorizations["shop/p"].rules,
        [sec::Rule { clauses: vec![] }],
        "rules: [{{}}] matches all"
    );
    assert_eq!(
        c.authorizations["istio-system/mesh"].scope,
        sec::Scope::Global as i32
    );
    assert_eq!(
        c.authorizations["istio-system/mesh"].action,
        sec::Action::Deny as i32
    );
    // No rules at all: an ALLOW policy that matches nothing (deny all).
    let c = compile(&policy_yaml("  action: ALLOW\n"));
    assert!(c.authorizations["shop/p"].rules.is_empty());
}

#[test]
fn l7_rules_are_omitted_from_allow_and_widened_in_deny_with_a_status() {
    let spec = r#"  rules:
    - to: [{operation: {methods: [GET], ports: ["8080"]}}]
    - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
      when: [{key: "request.headers[x-user]", values: [admin]}]
    - from: [{source: {namespaces: [shop]}}]
"#;
    let allow = compile(&policy_yaml(&format!("  action: ALLOW\n{spec}")));
    let p = &allow.authorizations["shop/p"];
    assert_eq!(p.rules.len(), 1, "only the pure-L4 rule survives in ALLOW");
    assert_eq!(p.rules[0].clauses[0].matches[0].namespaces, [exact("shop")]);
    let status = &allow.status["AuthorizationPolicy shop/p"];
    assert_eq!(status.len(), 2);
    assert!(
        status[0].contains("ALLOW rule 0") && status[0].contains("to.operation.methods"),
        "{status:?}"
    );

    let deny = compile(&policy_yaml(&format!("  action: DENY\n{spec}")));
    let p = &deny.authorizations["shop/p"];
    assert_eq!(p.rules.len(), 3, "DENY keeps every rule");
    assert_eq!(
        p.rules[0].clauses[0].matches[0].destination_ports,
        [8080],
        "the L4 part stays"
    );
    assert_eq!(
        p.rules[1].clauses.len(),
        1,
        "the header condition is dropped (taken as matching)"
    );
    assert!(deny.status["AuthorizationPolicy shop/p"][0].contains("denies more"));

    // A DENY whose only condition is HTTP denies everything at L4.
    let only_l7 = compile(&policy_yaml(
        "  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n",
    ));
    assert_eq!(
        only_l7.authorizations["shop/p"].rules,
        [sec::Rule { clauses: vec![] }]
    );
}

#[test]
fn a_policy_attached_through_a_waypoint_fails_closed_while_no_waypoint_enforces_it() {
    let c = compile(&policy_yaml(
        "  targetRefs: [{kind: Service, group: \"\", name: reviews}]\n  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
    ));
    // Not compiled as an L4 policy (that would drop the HTTP rule and allow nothing, or
    // everything): a deny-all stand-in on the targeted service's pods instead.
    assert!(!c.authorizations.contains_key("shop/p"));
    let stand_in = &c.authorizations["shop/l7-unenforced~p"];
    assert_eq!(stand_in.action, sec::Action::Deny as i32);
    assert_eq!(stand_in.scope, sec::Scope::WorkloadSelector as i32);
    assert_eq!(stand_in.rules, [sec::Rule { clauses: vec![] }]);
    assert!(
        workload(&c, "shop", "reviews-0")
            .authorization_policies
            .contains(&"shop/l7-unenforced~p".to_owned())
    );
    // Pods the service does not select are not affected.
    assert!(
        workload(&c, "shop", "opted-out")
            .authorization_policies
            .is_empty()
    );
    let status = &c.status["AuthorizationPolicy shop/p"];
    assert!(
        status.iter().any(|m| m.contains("refused (fail closed)")),
        "{status:?}"
    );
}

#[test]
fn a_policy_attached_to_a_waypoint_gateway_fails_closed_for_what_is_bound_to_it() {
    // The namespace asks for waypoint `waypoint` (which does not exist yet).
    let shop = shop_with(fixtures::shop_namespace().label(k8s::USE_WAYPOINT, "waypoint"));
    let c = compile(&format!(
        "{shop}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  action: DENY\n  rules: [{{to: [{{operation: {{methods: [POST]}}}}]}}]\n"
    ));
    assert!(
        workload(&c, "shop", "reviews-0")
            .authorization_policies
            .contains(&"shop/l7-unenforced~p".to_owned())
    );
    // A mesh-wide target outside the root namespace is reported as having no effect.
    let elsewhere = compile(&policy_yaml(
        "  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n",
    ));
    assert!(
        elsewhere.status["AuthorizationPolicy shop/p"]
            .iter()
            .any(|m| m.contains("outside the root namespace")),
        "{:?}",
        elsewhere.status
    );
}

/// The shop bound to waypoint `shop/waypoint`, with the Gateway and what it deploys
/// (its pod placed and addressed, as the lab does, when `running`).
fn shop_with_waypoint(running: bool) -> String {
    let shop = shop_with(fixtures::shop_namespace().label(k8s::USE_WAYPOINT, "waypoint"));
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";
    let (pod, service) = deployed(gateway, "10.1.0.9", "10.96.0.50");
    let pod = if running {
        format!("---\n{pod}\n")
    } else {
        String::new()
    };
    format!("{shop}---\n{gateway}---\n{service}\n{pod}")
}

/// What the first document of `gateway_yaml` (a Gateway) deploys, as JSON documents:
/// its pod placed on node-1 at `pod_ip`, and its Service at `vip` — as the lab does.
fn deployed(gateway_yaml: &str, pod_ip: &str, vip: &str) -> (String, String) {
    let deployment = match config::parse_documents(gateway_yaml, "gw.yaml")
        .unwrap()
        .remove(0)
    {
        Resource::Gateway(g) => crate::waypoints::deployment(&g),
        other => panic!("{other:?}"),
    };
    let mut pod = deployment.pod;
    pod.spec.node_name = Some("node-1".into());
    pod.status.pod_ip = Some(pod_ip.into());
    let mut service = deployment.service;
    service.spec.cluster_ip = Some(vip.into());
    let json = |r: Resource| serde_json::to_string(&r.to_json()).unwrap();
    (json(Resource::Pod(pod)), json(Resource::Service(service)))
}

#[test]
fn a_policy_attached_through_a_running_waypoint_goes_to_it_and_its_pods_accept_only_the_waypoint() {
    let policy = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: reviews}]\n  rules: [{to: [{operation: {methods: [GET], paths: [\"/api/*\"]}}], when: [{key: \"request.headers[x-user]\", values: [alice]}]}]\n";
    let c = compile(&format!("{}{policy}", shop_with_waypoint(true)));
    // The waypoint gets the policy with its HTTP attributes.
    let l7 = &c.l7_authorizations["shop/p"];
    assert_eq!(l7.targets.len(), 1);
    assert_eq!(l7.targets[0].kind, xds::l7::target::Kind::Service as i32);
    assert_eq!(
        (
            l7.targets[0].namespace.as_str(),
            l7.targets[0].name.as_str()
        ),
        ("shop", "reviews")
    );
    let to = &l7.rules[0].clauses[0].matches[0];
    assert_eq!(to.methods.len(), 1);
    assert_eq!(to.paths.len(), 1);
    assert_eq!(l7.rules[0].clauses[1].matches[0].headers[0].name, "x-user");
    // It converts into the engine's model (what the waypoint does with it).
    let model = policy::Policy::try_from((**l7).clone()).unwrap();
    assert!(model.applies_through(("shop", "waypoint"), Some(("shop", "reviews"))));
    // The targeted pods accept only the waypoint's identity, instead of nothing.
    let reviews = workload(&c, "shop", "reviews-0");
    let via = "shop/l7-via~p~shop~waypoint".to_owned();
    assert!(
        reviews.authorization_policies.contains(&via),
        "{:?}",
        reviews.authorization_policies
    );
    assert!(
        !reviews
            .authorization_policies
            .contains(&"shop/l7-unenforced~p".to_owned())
    );
    let only = &c.authorizations[&via];
    assert_eq!(only.action, sec::Action::Deny as i32);
    let m = &only.rules[0].clauses[0].matches[0];
    assert_eq!(
        m.not_principals,
        [authz::string_match("cluster.local/ns/shop/sa/waypoint")]
    );
    // The waypoint's own pod: HBONE (it terminates tunnels), never captured, unbound.
    let waypoint = workload(&c, "shop", "waypoint-0");
    assert_eq!(waypoint.tunnel_protocol, wire::TunnelProtocol::Hbone as i32);
    assert!(waypoint.extensions.is_empty());
    assert!(waypoint.waypoint.is_none());
    assert_eq!(waypoint.service_account, "waypoint");
    // Without its pod the waypoint is not running: back to deny-all.
    let gone = compile(&format!("{}{policy}", shop_with_waypoint(false)));
    assert!(
        workload(&gone, "shop", "reviews-0")
            .authorization_policies
            .contains(&"shop/l7-unenforced~p".to_owned())
    );
}

#[test]
fn an_allow_rule_the_waypoint_cannot_check_allows_nothing_and_says_so() {
    let yaml = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  rules: [{{from: [{{source: {{requestPrincipals: [\"*\"]}}}}]}}]\n",
        shop_with_waypoint(true)
    );
    let c = compile(&yaml);
    assert!(c.l7_authorizations["shop/p"].rules.is_empty());
    assert!(
        c.status["AuthorizationPolicy shop/p"]
            .iter()
            .any(|m| m.contains("JWT") && m.contains("allows nothing")),
        "{:?}",
        c.status
    );
}

#[test]
fn routes_of_a_waypoint_bound_service_compile_into_its_table_in_precedence_order() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs:
        - {name: reviews, port: 9080, weight: 90}
        - {name: reviews-v2, port: 9080, weight: 10}
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {attempts: 2, codes: [503], backoff: 100ms}
    - matches: [{path: {type: Exact, value: /api/login}, headers: [{name: X-User, value: alice}]}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-routed, value: login}]}
      backendRefs: [{name: reviews, port: 9080}]
    - filters:
        - type: RequestRedirect
          requestRedirect: {hostname: elsewhere.example, statusCode: 301}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unbound, namespace: legacy}
spec:
  parentRefs: [{group: \"\", kind: Service, name: old}]
  rules: [{backendRefs: [{name: old, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {selector: {app: old}, ports: [{port: 80}]}
";
    let c = compile(&format!("{}{routes}", shop_with_waypoint(true)));
    let table = &c.route_tables["shop/reviews"];
    let kinds: Vec<(i32, &str)> = table
        .entries
        .iter()
        .map(|e| {
            let p = e.r#match.as_ref().unwrap().path.as_ref().unwrap();
            (p.kind, p.value.as_str())
        })
        .collect();
    use xds::l7::path_match::Kind;
    // Exact first, then the longest prefix, then the catch-all rule.
    assert_eq!(
        kinds,
        [
            (Kind::Exact as i32, "/api/login"),
            (Kind::Prefix as i32, "/api"),
            (Kind::Prefix as i32, "/")
        ]
    );
    let login = &table.entries[0];
    assert_eq!(login.r#match.as_ref().unwrap().headers[0].name, "x-user");
    let canary = table.entries[1].action.as_ref().unwrap();
    let weights: Vec<(String, u32)> = canary
        .backends
        .iter()
        .map(|b| (b.backend.as_ref().unwrap().hostname.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("reviews.shop.svc.cluster.local".to_owned(), 90),
            ("reviews-v2.shop.svc.cluster.local".to_owned(), 10)
        ]
    );
    assert_eq!(
        (canary.request_timeout_ms, canary.backend_timeout_ms),
        (2000, 500)
    );
    assert_eq!(canary.retry.as_ref().unwrap().codes, [503]);
    let redirect = table.entries[2]
        .action
        .as_ref()
        .unwrap()
        .redirect
        .as_ref()
        .unwrap();
    assert_eq!(
        (redirect.hostname.as_str(), redirect.status_code),
        ("elsewhere.example", 301)
    );
    // The waypoint accepts it as it is.
    waypoint_accepts(table);
    // A missing backend and a service without a waypoint are reported.
    let canary_status = &c.status["HTTPRoute shop/canary"];
    assert!(
        canary_status
            .iter()
            .any(|m| m.contains("reviews-v2 does not exist")),
        "{canary_status:?}"
    );
    assert!(!c.route_tables.contains_key("legacy/old"));
    assert!(
        c.status["HTTPRoute legacy/unbound"]
            .iter()
            .any(|m| m.contains("uses no waypoint")),
        "{:?}",
        c.status
    );
    // The same facts as the Gateway API's conditions.
    use super::Condition;
    assert_eq!(
        c.conditions["HTTPRoute shop/canary"],
        [
            Condition::new("Accepted", true, "Accepted"),
            Condition::new("ResolvedRefs", false, "BackendNotFound"),
        ]
    );
    assert_eq!(
        c.conditions["HTTPRoute legacy/unbound"],
        [
            Condition::new("Accepted", false, "NoMatchingParent"),
            Condition::new("ResolvedRefs", true, "ResolvedRefs"),
        ]
    );
}

/// The route table passes the waypoint's own validation (what it does with it).
fn waypoint_accepts(table: &xds::l7::RouteTable) {
    // The waypoint crate is not a dependency here; its rules are checked there. What
    // the control plane must guarantee: every backend names a hostname and a port.
    for entry in &table.entries {
        for backend in &entry.action.as_ref().unwrap().backends {
            let b = backend.backend.as_ref().unwrap();
            assert!(!b.hostname.is_empty() && b.port != 0, "{b:?}");
        }
    }
}

#[test]
fn grpc_methods_become_paths() {
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules:
    - matches: [{method: {service: shop.Reviews, method: Get}}]
      backendRefs: [{name: reviews, port: 9080}]
    - matches: [{method: {service: shop.Reviews}}]
      backendRefs: [{name: reviews, port: 9080}]
";
    let c = compile(&format!("{}{route}", shop_with_waypoint(true)));
    let paths: Vec<String> = c.route_tables["shop/reviews"]
        .entries
        .iter()
        .map(|e| {
            e.r#match
                .as_ref()
                .unwrap()
                .path
                .as_ref()
                .unwrap()
                .value
                .clone()
        })
        .collect();
    assert_eq!(paths, ["/shop.Reviews/Get", "/shop.Reviews"]);
}

#[test]
fn dry_run_policies_are_marked_dry_run() {
    let dry = compile(&policy_yaml("  rules: [{}]\n").replace(
        "metadata: {name: p, namespace: shop}",
        "metadata: {name: p, namespace: shop, annotations: {istio.io/dry-run: \"true\"}}",
    ));
    assert!(dry.authorizations["shop/p"].dry_run);
}

const PEER: &str = r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#;

#[test]
fn peer_authentication_strict_lists_the_static_policy_and_permissive_overrides() {
    let none = compile(&shop());
    assert!(
        none.authorizations.is_empty(),
        "nothing converted without a PeerAuthentication"
    );
    let shop = shop();
    let c = compile(&format!("{shop}{PEER}"));
    let strict = &c.authorizations["istio-system/istio_converted_static_strict"];
    assert_eq!(strict.action, sec::Action::Deny as i32);
    assert_eq!(strict.scope, sec::Scope::WorkloadSelector as i32);
    assert!(matches!(
        strict.rules[0].clauses[0].matches[0].not_principals[0].match_type,
        Some(sec::string_match::MatchType::Presence(()))
    ));
    assert_eq!(
        workload(&c, "shop", "reviews-0").authorization_policies,
        ["istio-system/istio_converted_static_strict"]
    );
    // A namespace PERMISSIVE overrides the mesh; a workload STRICT overrides that.
    let c = compile(&format!(
        "{shop}{PEER}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: ns, namespace: shop}}\nspec: {{mtls: {{mode: PERMISSIVE}}}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: reviews, namespace: shop}}\nspec: {{selector: {{matchLabels: {{app: reviews}}}}, mtls: {{mode: STRICT}}}}\n"
    ));
    assert!(
        workload(&c, "shop", "opted-out")
            .authorization_policies
            .is_empty()
    );
    assert_eq!(
        workload(&c, "shop", "reviews-0").authorization_policies,
        ["istio-system/istio_converted_static_strict"]
    );
}

#[test]
fn port_level_exceptions_compile_to_a_converted_policy() {
    let shop = shop();
    let c = compile(&format!(
        "{shop}{PEER}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: metrics, namespace: shop}}\nspec: {{selector: {{matchLabels: {{app: reviews}}}}, portLevelMtls: {{9091: {{mode: PERMISSIVE}}}}}}\n"
    ));
    let p = &c.authorizations["shop/converted_peer_authentication_metrics"];
    assert_eq!(p.rules.len(), 1);
    assert_eq!(
        p.rules[0].clauses[1].matches[0].not_destination_ports,
        [9091]
    );
    assert_eq!(
        workload(&c, "shop", "reviews-0").authorization_policies,
        ["shop/converted_peer_authentication_metrics"]
    );
}

const WAYPOINT: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop, labels: {gateway.istio.io/managed: istio.io-mesh-controller}}
spec: {clusterIP: 10.96.0.99, ports: [{port: 15008}]}
"#;

fn waypoint_host(w: &Option<wire::GatewayAddress>) -> Option<String> {
    match w.as_ref()?.destination.as_ref()? {
        wire::gateway_address::Destination::Hostname(h) => {
            Some(format!("{}/{}", h.namespace, h.hostname))
        }
        wire::gateway_address::Destination::Address(_) => None,
    }
}

#[test]
fn waypoint_binding_follows_istios_precedence() {
    let bound_ns = shop_with(fixtures::shop_namespace().label("istio.io/use-waypoint", "waypoint"));
    let c = compile(&format!("{bound_ns}{WAYPOINT}"));
    let host = Some("shop/waypoint.shop.svc.cluster.local".to_owned());
    let reviews = c.service("shop/reviews.shop.svc.cluster.local").unwrap();
    assert_eq!(
        waypoint_host(&reviews.waypoint),
        host,
        "namespace label binds services"
    );
    assert_eq!(
        c.service("shop/waypoint.shop.svc.cluster.local")
            .unwrap()
            .waypoint,
        None,
        "never the waypoint's own service"
    );
    assert_eq!(
        workload(&c, "shop", "reviews-0").waypoint,
        None,
        "waypoint-for defaults to service"
    );

    // waypoint-for: all binds workloads too; a pod's own `none` opts it out.
    let all = WAYPOINT.replace("metadata: {name: waypoint, namespace: shop}\nspec:\n  gatewayClassName", "metadata: {name: waypoint, namespace: shop, labels: {istio.io/waypoint-for: all}}\nspec:\n  gatewayClassName");
    let opt_out = bound_ns.replace(
        "labels: {app: reviews, version: v2}",
        "labels: {app: reviews, version: v2, istio.io/use-waypoint: none}",
    );
    let c = compile(&format!("{opt_out}{all}"));
    assert_eq!(workload(&c, "shop", "reviews-0").waypoint, None);
    assert_eq!(
        waypoint_host(&workload(&c, "shop", "opted-out").waypoint),
        host
    );

    // A label naming a waypoint that is missing gives no waypoint and says why.
    let c = compile(&bound_ns);
    assert_eq!(
        c.service("shop/reviews.shop.svc.cluster.local")
            .unwrap()
            .waypoint,
        None
    );
    assert!(c.status["Service shop/reviews"][0].contains("does not exist"));
    // A Gateway without its Service (no waypoint running yet) is not bound either.
    let no_service = WAYPOINT
        .split("---\napiVersion: v1")
        .next()
        .unwrap()
        .to_owned();
    let c = compile(&format!("{bound_ns}{no_service}"));
    assert!(c.status["Service shop/reviews"][0].contains("no Service yet"));
}

fn objects(yaml: &str) -> BTreeMap<ObjectKey, Resource> {
    config::parse_documents(yaml, "test.yaml")
        .unwrap()
        .into_iter()
        .map(|r| (r.key(), r))
        .collect()
}

#[test]
fn recompiling_only_the_affected_namespaces_gives_the_full_result() {
    let settings = MeshSettings::default();
    let other_ns = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: x-0, namespace: legacy, labels: {app: x}}\nstatus: {podIP: 10.2.0.9}\n";
    let before_yaml = format!(
        "{}{other_ns}",
        policy_yaml("  rules: [{from: [{source: {namespaces: [legacy]}}]}]\n")
    );
    let before = objects(&before_yaml);
    let captured = all_captured(&before);
    let previous = translate(&before, &settings, &captured);
    let edits = [
        // A pod's label changes (its services and policies follow).
        before_yaml.replace(
            "labels: {app: reviews, version: v2}",
            "labels: {app: other, version: v3}",
        ),
        // A policy changes.
        before_yaml.replace("namespaces: [legacy]", "namespaces: [shop]"),
        // A namespace label changes (enrolment of its pods).
        before_yaml.replace(
            "metadata: {name: legacy}",
            "metadata: {name: legacy, labels: {istio.io/dataplane-mode: ambient}}",
        ),
        // A service is renamed (one removed, one created).
        before_yaml.replace(
            "kind: Service\nmetadata: {name: reviews, namespace: shop}",
            "kind: Service\nmetadata: {name: reviews2, namespace: shop}",
        ),
    ];
    for edited in edits {
        let after = objects(&edited);
        let changed: Vec<ObjectKey> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .cloned()
            .collect();
        let namespaces = affected_namespaces(&changed, &after, &settings).expect("a local change");
        assert!(!namespaces.is_empty());
        let partial = translate_namespaces(&after, &settings, &captured, &previous, &namespaces);
        assert_eq!(
            partial,
            translate(&after, &settings, &captured),
            "after {changed:?}"
        );
    }
    // Gateways and peer authentication can affect every namespace.
    let gateway = ObjectKey {
        kind: config::Kind::Gateway,
        namespace: "shop".into(),
        name: "waypoint".into(),
    };
    assert_eq!(affected_namespaces([&gateway], &before, &settings), None);
}

fn has_capture_extension(w: &wire::Workload) -> bool {
    w.extensions
        .iter()
        .any(|e| e.name == xds::CAPTURE_EXTENSION)
}

#[test]
fn an_enrolled_pod_is_plaintext_until_its_node_agent_reports_it_captured() {
    let settings = MeshSettings::default();
    let objects = objects(&shop());
    let uid = pod_uid("Kubernetes", "shop", "reviews-0");
    let reviews = |c: &Compiled| c.workload(&uid).unwrap().clone();

    // Enrolled, nobody confirmed the capture yet: plaintext, and the agent is asked to
    // capture it.
    let none = Captured::default();
    let waiting = translate(&objects, &settings, &none);
    let w = reviews(&waiting);
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::None as i32);
    assert!(has_capture_extension(&w), "{:?}", w.extensions);

    // Another node's agent cannot vouch for it.
    let mut elsewhere = Captured::default();
    elsewhere.replace("node-b", [uid.clone()].into());
    let w = reviews(&translate(&objects, &settings, &elsewhere));
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::None as i32);

    // Its own node's agent reported it: HBONE, still carrying the extension.
    let mut captured = Captured::default();
    let changed = captured.replace("node-a", [uid.clone()].into());
    let full = translate(&objects, &settings, &captured);
    let w = reviews(&full);
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::Hbone as i32);
    assert!(has_capture_extension(&w));
    let w = full
        .workload(&pod_uid("Kubernetes", "shop", "opted-out"))
        .unwrap();
    assert!(w.extensions.is_empty(), "not enrolled: no extension");
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::None as i32);

    // Recompiling only the namespaces of the pods whose capture changed gives the same.
    let namespaces = changed
        .iter()
        .filter_map(|u| pod_of_uid(u))
        .map(|(ns, _)| ns.to_owned())
        .collect();
    let partial = translate_namespaces(&objects, &settings, &captured, &waiting, &namespaces);
    assert_eq!(partial, full);

    // A pod that leaves the mesh is plaintext whatever its agent said.
    let unenrolled = objects_without_enrolment();
    let w = translate(&unenrolled, &settings, &captured)
        .workload(&uid)
        .unwrap()
        .clone();
    assert_eq!(w.tunnel_protocol, wire::TunnelProtocol::None as i32);
    assert!(!has_capture_extension(&w));
}

fn objects_without_enrolment() -> BTreeMap<ObjectKey, Resource> {
    objects(&shop_with(fixtures::Namespace::new("shop")))
}

#[test]
fn a_service_port_says_its_protocol_by_app_protocol_or_name_prefix() {
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports:
    - {name: grpc-api, port: 9000}
    - {name: http, port: 80}
    - {name: web, port: 81, appProtocol: http2}
    - {name: tcp-db, port: 5432}
    - {name: admin, port: 9090}
";
    let c = compile(yaml);
    let service = c.service("shop/api.shop.svc.cluster.local").unwrap();
    let protocols: Vec<(u32, i32)> = service
        .ports
        .iter()
        .map(|p| (p.service_port, p.app_protocol))
        .collect();
    assert_eq!(
        protocols,
        [
            (9000, wire::AppProtocol::Grpc as i32),
            (80, wire::AppProtocol::Http11 as i32),
            (81, wire::AppProtocol::Http2 as i32),
            (5432, wire::AppProtocol::Tcp as i32),
            (9090, wire::AppProtocol::Unknown as i32),
        ]
    );
}

#[test]
fn service_settings_without_effect_are_noted_on_the_service() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{type: NodePort, selector: {{app: reviews}}, ports: [{{port: 80, nodePort: 30080}}], sessionAffinity: ClientIP}}\n",
        shop()
    );
    let c = compile(&yaml);
    let notes = &c.status["Service shop/web"];
    assert!(
        notes.iter().any(|n| n == "accepted without effect: type NodePort: served on its cluster IP only (the lab has no node ports or load balancers)"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("sessionAffinity ClientIP: not honoured")),
        "{notes:?}"
    );
}

#[test]
fn pod_fields_without_effect_are_named_in_one_note_on_the_pod() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: shop, labels: {{app: web}}}}\nspec: {{nodeSelector: {{disk: ssd}}, containers: [{{name: web, command: [sleep, infinity], resources: {{limits: {{memory: 64Mi}}}}}}]}}\n",
        shop()
    );
    let c = compile(&yaml);
    assert_eq!(
        c.status["Pod shop/web-0"],
        ["accepted without effect in the lab: spec.nodeSelector, spec.containers[0].resources"]
    );
}

mod ingress;
mod service_entries;
mod virtual_services;
