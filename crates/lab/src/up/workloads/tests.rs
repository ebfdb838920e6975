use super::*;

fn workload(yaml: &str) -> (Kind, Workload) {
    let parsed = config::parse_documents_noting(yaml, "test.yaml").expect("parses");
    match parsed.resources.into_iter().next() {
        Some(config::Resource::Workload(kind, w)) => (kind, *w),
        other => panic!("not a workload: {other:?}"),
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}, annotations: {a: b}}
    spec:
      serviceAccountName: reviews
      containers: [{name: reviews, image: example/reviews:1, ports: [{containerPort: 9080}]}]
";

fn ready(pods: &[k8s::Pod]) -> Vec<Owned<'_>> {
    pods.iter().map(|pod| Owned { pod, ready: true }).collect()
}

#[test]
fn a_deployment_makes_its_replicas_named_and_labelled_as_kubernetes_does() {
    let (kind, w) = workload(DEPLOYMENT);
    let changes = reconcile(kind, &w, &[], &[]);
    assert_eq!(changes.create.len(), 2);
    assert!(changes.delete.is_empty());
    let hash = template_hash(&w.spec.template);
    assert!(
        hash.len() >= 6 && hash.bytes().all(|b| ALPHABET.contains(&b)),
        "{hash}"
    );
    for pod in &changes.create {
        let name = &pod.metadata.name;
        let suffix = name
            .strip_prefix(&format!("reviews-v1-{hash}-"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(suffix.len(), 5, "{name}");
        assert_eq!(pod.metadata.namespace(), "shop");
        assert_eq!(pod.metadata.labels["app"], "reviews");
        assert_eq!(pod.metadata.labels[TEMPLATE_HASH], hash);
        assert_eq!(pod.metadata.annotations["a"], "b");
        assert_eq!(pod.spec.service_account(), "reviews");
        assert_eq!(pod.metadata.owner_references[0].kind, "ReplicaSet");
        assert_eq!(
            owner(pod),
            Some((Kind::Deployment, "reviews-v1".to_owned()))
        );
    }
    assert_ne!(
        changes.create[0].metadata.name,
        changes.create[1].metadata.name
    );
    // With its pods there, nothing to do.
    assert!(
        reconcile(kind, &w, &[], &ready(&changes.create))
            .create
            .is_empty()
    );
}

#[test]
fn scaling_a_deployment_adds_or_stops_pods_not_ready_ones_first() {
    let (kind, mut w) = workload(DEPLOYMENT);
    let pods = reconcile(kind, &w, &[], &[]).create;
    w.spec.replicas = Some(3);
    let up = reconcile(kind, &w, &[], &ready(&pods));
    assert_eq!((up.create.len(), up.delete.len()), (1, 0));
    w.spec.replicas = Some(1);
    let owned = [
        Owned {
            pod: &pods[0],
            ready: true,
        },
        Owned {
            pod: &pods[1],
            ready: false,
        },
    ];
    let down = reconcile(kind, &w, &[], &owned);
    assert!(down.create.is_empty());
    assert_eq!(down.delete, vec![pods[1].metadata.name.clone()]);
}

#[test]
fn a_changed_template_starts_new_pods_and_stops_old_ones_once_the_new_are_ready() {
    let (kind, mut w) = workload(DEPLOYMENT);
    let old = reconcile(kind, &w, &[], &[]).create;
    w.spec.template.spec.containers[0].image = Some("example/reviews:2".into());
    let first = reconcile(kind, &w, &[], &ready(&old));
    assert_eq!(first.create.len(), 2, "new pods first");
    assert!(
        first.delete.is_empty(),
        "old ones kept until the new are ready"
    );
    let mut all = old.clone();
    all.extend(first.create.clone());
    let mut owned = ready(&all);
    owned[3].ready = false;
    let waiting = reconcile(kind, &w, &[], &owned);
    assert!(waiting.create.is_empty() && waiting.delete.is_empty());
    let done = reconcile(kind, &w, &[], &ready(&all));
    let mut stopped = done.delete.clone();
    stopped.sort();
    let mut expected: Vec<String> = old.iter().map(|p| p.metadata.name.clone()).collect();
    expected.sort();
    assert_eq!(stopped, expected);
}

#[test]
fn a_statefulset_numbers_its_pods_and_replaces_them_from_the_highest_ordinal() {
    let (kind, mut w) = workload(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: example/db}]}\n",
    );
    let pods = reconcile(kind, &w, &[], &[]).create;
    let names: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    assert_eq!(
        pods[2].metadata.labels["statefulset.kubernetes.io/pod-name"],
        "db-2"
    );
    assert_eq!(owner(&pods[0]), Some((Kind::StatefulSet, "db".to_owned())));
    w.spec.template.spec.containers[0].image = Some("example/db:2".into());
    let roll = reconcile(kind, &w, &[], &ready(&pods));
    assert_eq!(
        (roll.create.len(), roll.delete.clone()),
        (0, vec!["db-2".to_owned()])
    );
    // db-2 gone: made again from the new template.
    let remade = reconcile(kind, &w, &[], &ready(&pods[..2]));
    assert_eq!(remade.create.len(), 1);
    assert_eq!(remade.create[0].metadata.name, "db-2");
    w.spec.replicas = Some(1);
    let down = reconcile(kind, &w, &[], &ready(&pods));
    assert_eq!(down.delete, vec!["db-1".to_owned(), "db-2".to_owned()]);
}

#[test]
fn a_daemonset_runs_one_pod_on_each_node_and_a_job_its_completions_once() {
    let (kind, w) = workload(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: ops}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: a, image: example/agent}]}\n",
    );
    let nodes = ["node-1".to_owned(), "node-2".to_owned()];
    let pods = reconcile(kind, &w, &nodes, &[]).create;
    let on: Vec<Option<&str>> = pods.iter().map(|p| p.spec.node_name.as_deref()).collect();
    assert_eq!(on, [Some("node-1"), Some("node-2")]);
    assert!(pods.iter().all(|p| p.metadata.name.starts_with("agent-")));
    assert!(reconcile(kind, &w, &nodes, &ready(&pods)).create.is_empty());
    let (kind, w) = workload(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n  completions: 2\n  template:\n    spec: {restartPolicy: Never, containers: [{name: m, image: example/m}]}\n",
    );
    let pods = reconcile(kind, &w, &nodes, &[]).create;
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].metadata.labels["job-name"], "migrate");
    // Pods that ran stay the Job's: none made again.
    let owned: Vec<Owned<'_>> = pods.iter().map(|pod| Owned { pod, ready: false }).collect();
    let again = reconcile(kind, &w, &nodes, &owned);
    assert!(again.create.is_empty() && again.delete.is_empty());
}
