//! Workload controllers and Istio's networking kinds as users write them: read typed (or
//! checked for shape), refused as the API server or Istio would refuse them, and what
//! the lab does not act on named.

use super::*;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  labels: {app: reviews, version: v1}
spec:
  replicas: 3
  revisionHistoryLimit: 5
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}}
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: reviews, version: v1}
      annotations: {bowline.io/stand-in-upstreams: 'http://ratings:9080/'}
    spec:
      serviceAccountName: bookinfo-reviews
      volumes: [{name: tmp, emptyDir: {}}]
      containers:
        - name: reviews
          image: istio/examples-bookinfo-reviews-v1:1.20.2
          ports: [{containerPort: 9080}]
status: {replicas: 3, readyReplicas: 3}
";

#[test]
fn deployments_statefulsets_daemonsets_replicasets_and_jobs_are_read_typed() {
    let resources = parse_documents(DEPLOYMENT, "reviews.yaml").unwrap();
    let Resource::Workload(Kind::Deployment, deployment) = &resources[0] else {
        panic!("{resources:?}")
    };
    assert_eq!(
        resources[0].key().to_string(),
        "Deployment default/reviews-v1"
    );
    let spec = &deployment.spec;
    assert_eq!(spec.wanted(Kind::Deployment), 3);
    assert_eq!(spec.template.metadata.labels["version"], "v1");
    assert_eq!(spec.template.spec.service_account(), "bookinfo-reviews");
    assert_eq!(
        spec.without_effect(),
        [
            "spec.strategy",
            "spec.revisionHistoryLimit",
            "spec.template.spec.volumes"
        ]
    );
    for (api_version, kind, spec) in [
        (
            "apps/v1",
            "StatefulSet",
            "{serviceName: db, replicas: 2, podManagementPolicy: Parallel, selector: {matchLabels: {app: db}}, template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db}]}}}",
        ),
        (
            "apps/v1",
            "DaemonSet",
            "{selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: a}}, spec: {containers: [{name: a}]}}}",
        ),
        (
            "apps/v1",
            "ReplicaSet",
            "{replicas: 2, selector: {matchLabels: {app: r}}, template: {metadata: {labels: {app: r}}, spec: {containers: [{name: r}]}}}",
        ),
        (
            "batch/v1",
            "Job",
            "{completions: 2, backoffLimit: 1, template: {spec: {restartPolicy: Never, containers: [{name: j, command: [sh, -c, exit]}]}}}",
        ),
    ] {
        let text = format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: w}}\nspec: {spec}\n"
        );
        let resources = parse_documents(&text, "w.yaml").unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(resources[0].kind().to_string(), kind);
    }
    // Sent on as it was read (what the lab's control plane stores).
    let json = resources[0].to_json();
    assert_eq!(json["apiVersion"], "apps/v1");
    assert!(json.get("status").is_none(), "{json}");
}

#[test]
fn workloads_the_api_server_would_refuse_are_refused_naming_the_field() {
    let cases = [
        (
            DEPLOYMENT.replace("matchLabels: {app: reviews, version: v1}", "matchLabels: {app: reviews, version: v2}"),
            "spec.selector.matchLabels.version",
            "the selector must select the pods the template makes",
        ),
        (
            DEPLOYMENT.replace("  selector:\n    matchLabels: {app: reviews, version: v1}\n", ""),
            "spec.selector",
            "needs a selector",
        ),
        (
            DEPLOYMENT.replace("kind: Deployment", "kind: DaemonSet"),
            "spec.replicas",
            "a DaemonSet has no replicas",
        ),
        (
            DEPLOYMENT.replace("replicas: 3", "completions: 3"),
            "spec.completions",
            "only a Job has completions",
        ),
        (
            DEPLOYMENT.replace("revisionHistoryLimit", "revisionHistoryLimmit"),
            "",
            "revisionHistoryLimmit",
        ),
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {containers: []}}}\n".to_owned(),
            "spec.template.spec.containers",
            "at least one container",
        ),
        (
            DEPLOYMENT.replace("apiVersion: apps/v1", "apiVersion: apps/v1beta1"),
            "apiVersion",
            "apps/v1",
        ),
    ];
    for (text, path, message) in cases {
        let e = error(&text);
        assert!(e.path.contains(path), "{path}: {e}");
        assert!(e.message.contains(message), "{message}: {e}");
    }
}

#[test]
fn service_entries_destination_rules_and_virtual_services_are_checked_for_shape() {
    let entry = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 443, name: https, protocol: TLS}]
  endpoints: [{address: 10.20.0.5, ports: {https: 8443}}]
";
    let resources = parse_documents(entry, "se.yaml").unwrap();
    let Resource::ServiceEntry(parsed) = &resources[0] else {
        panic!("{resources:?}")
    };
    assert_eq!(parsed.spec.endpoints[0].ports["https"], 8443);
    let rule = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";
    let service = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
    - match: [{headers: {end-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - route: [{destination: {host: reviews, subset: v1}, weight: 100}]
";
    for good in [rule, service] {
        parse_documents(good, "ok.yaml").unwrap_or_else(|e| panic!("{e}"));
    }
    let cases = [
        (
            entry.replace("resolution: STATIC", "resolution: STATIK"),
            "spec.resolution",
            "use NONE, STATIC, DNS",
        ),
        (
            entry.replace("address: 10.20.0.5", "address: api.internal"),
            "spec.endpoints[0].address",
            "resolution STATIC takes IP addresses",
        ),
        (
            entry.replace("hosts: [api.example.com]", "hosts: []"),
            "spec.hosts",
            "at least one host",
        ),
        (
            entry.replace("name: https, protocol: TLS", "name: https, protocol: QUIC"),
            "spec.ports[0].protocol",
            "use HTTP, HTTPS",
        ),
        (
            entry.replace("location: MESH_EXTERNAL", "locaton: MESH_EXTERNAL"),
            "",
            "locaton",
        ),
        (
            rule.replace("  host: reviews\n", ""),
            "spec.host",
            "needs a host",
        ),
        (
            rule.replace("name: v2", "name: v1"),
            "spec.subsets[1].name",
            "defined twice",
        ),
        (
            rule.replace("loadBalancer", "loadBalancr"),
            "spec.trafficPolicy",
            "loadBalancr",
        ),
        (
            service.replace("subset: v2", "subsett: v2"),
            "spec.http[0].route[0].destination",
            "subsett",
        ),
        (
            service.replace("weight: 100", "weight: 150"),
            "spec.http[1].route[0].weight",
            "0-100",
        ),
        (
            service.replace("  hosts: [reviews]\n", "  hosts: [reviews, ' ']\n"),
            "spec.hosts[1]",
            "cannot be empty",
        ),
        (
            service.replace("exact: jason", "exactly: jason"),
            "spec.http[0].match[0].headers",
            "exactly",
        ),
    ];
    for (text, path, message) in cases {
        let e = error(&text);
        assert!(e.path.starts_with(path), "{path}: {e}");
        assert!(e.message.contains(message), "{message}: {e}");
    }
}

#[test]
fn a_waypoint_gateways_tls_hostname_addresses_and_route_kinds_are_read_and_named() {
    let text = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  addresses: [{type: IPAddress, value: 10.96.0.50}]
  listeners:
    - name: mesh
      port: 15008
      protocol: HBONE
      tls: {mode: Terminate}
      allowedRoutes: {namespaces: {from: All}, kinds: [{kind: HTTPRoute}]}
";
    let resources = parse_documents(text, "gw.yaml").unwrap();
    let Resource::Gateway(gateway) = &resources[0] else {
        panic!("{resources:?}")
    };
    let notes = gateway.spec.without_effect().join("; ");
    for field in [
        "spec.addresses",
        "spec.listeners[0].tls",
        "spec.listeners[0].allowedRoutes.kinds",
    ] {
        assert!(notes.contains(field), "{field}: {notes}");
    }
    // A typo is still refused.
    let e = error(&text.replace("allowedRoutes", "allowedRoute"));
    assert!(e.message.contains("allowedRoute"), "{e}");
}
