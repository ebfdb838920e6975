//! The store as its sources use it: who owns status, in which order sources write, and
//! what an apply warns about.

use test_support::fixtures::{self, Container, Node, Pod, Port, Service};

use super::*;

/// `shop/client`, a shell on `node-1`, as a user writes it.
fn client() -> Pod {
    Pod::new("client", "shop")
        .label("app", "client")
        .node("node-1")
        .container(Container::new("shell").command(&["sleep", "infinity"]))
}

/// `shop/reviews` on port 9080, without a VIP.
fn reviews_service() -> Service {
    fixtures::reviews_service()
        .no_cluster_ip()
        .ports([Port::new(9080)])
}

/// What a lab writes to its own file: every pod placed and addressed (the client at
/// `client_ip`), VIPs, pod CIDRs.
fn lab_file_with(client_ip: &str) -> String {
    fixtures::documents(&[
        &Node::new("node-1").pod_cidr("10.10.0.0/24"),
        &fixtures::shop_namespace(),
        &client().ip(client_ip),
        &fixtures::reviews_pod().node("node-1").ip("10.10.0.4"),
        &reviews_service().cluster_ip("10.96.0.101"),
    ])
}

/// [`lab_file_with`] the client at 10.10.0.3.
fn lab_file() -> String {
    lab_file_with("10.10.0.3")
}

/// The same objects as a user wrote them (with `client`): no addresses, no VIP, no pod
/// CIDR.
fn user_files_with(client: Pod) -> String {
    fixtures::documents(&[
        &Node::new("node-1"),
        &fixtures::shop_namespace(),
        &client,
        &fixtures::reviews_pod().no_node().no_ip(),
        &reviews_service(),
    ])
}

/// [`user_files_with`] the usual client.
fn user_files() -> String {
    user_files_with(client())
}

const LAB: &str = "/run/bowline/lab/config/lab.yaml";

fn parse(yaml: &str) -> Vec<Resource> {
    config::parse_documents(yaml, "test.yaml").unwrap()
}

fn lab_store() -> Store {
    let store = Store::new(MeshSettings::default());
    store.replace_origin(&Origin::File(LAB.into()), parse(&lab_file()));
    store
}

fn outcomes(report: &Report) -> Vec<(String, Outcome)> {
    report
        .changes
        .iter()
        .map(|c| (c.object.clone(), c.outcome.clone()))
        .collect()
}

fn pod_ip(store: &Store, name: &str) -> Option<String> {
    let key = ObjectKey {
        kind: config::Kind::Pod,
        namespace: "shop".into(),
        name: name.into(),
    };
    match &store.load().objects.get(&key)?.resource {
        Resource::Pod(pod) => pod.status.pod_ip.clone(),
        _ => None,
    }
}

#[test]
fn reapplying_the_users_files_to_a_running_lab_changes_nothing() {
    let store = lab_store();
    let before = store.load();
    let report = store.apply(parse(&user_files()), &Origin::Api, false);
    assert!(
        report
            .changes
            .iter()
            .all(|c| c.outcome == Outcome::Unchanged),
        "{:?}",
        outcomes(&report)
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let after = store.load();
    assert_eq!(after.version, before.version, "nothing was published");
    assert!(
        after
            .objects
            .values()
            .all(|o| o.origin == Origin::File(LAB.into())),
        "the lab's file still owns every object"
    );
    let uid = translate::pod_uid("Kubernetes", "shop", "client");
    assert!(after.compiled.workload(&uid).is_some(), "still a workload");
}

#[test]
fn an_apply_changes_the_spec_and_keeps_the_status_the_lab_owns() {
    let store = lab_store();
    let relabelled = user_files_with(client().label("version", "v2"));
    let report = store.apply(parse(&relabelled), &Origin::Api, false);
    assert_eq!(
        outcomes(&report)
            .into_iter()
            .filter(|(_, o)| *o != Outcome::Unchanged)
            .collect::<Vec<_>>(),
        [("Pod shop/client".to_owned(), Outcome::Configured)]
    );
    assert_eq!(pod_ip(&store, "client").as_deref(), Some("10.10.0.3"));
    let snapshot = store.load();
    let client = snapshot
        .objects
        .values()
        .find(|o| o.resource.key().name == "client")
        .unwrap();
    assert_eq!(client.origin, Origin::Api);
    assert_eq!(client.status_owner, Origin::File(LAB.into()));

    // An apply that carries a status does not overwrite it either.
    let moved = lab_file_with("10.10.0.99");
    store.apply(parse(&moved), &Origin::Api, false);
    assert_eq!(pod_ip(&store, "client").as_deref(), Some("10.10.0.3"));

    // The lab's own file still writes it (it owns the status).
    store.replace_origin(&Origin::File(LAB.into()), parse(&moved));
    assert_eq!(pod_ip(&store, "client").as_deref(), Some("10.10.0.99"));
    // Another file does not.
    store.replace_origin(
        &Origin::File("/etc/mesh/other.yaml".into()),
        parse(&lab_file()),
    );
    assert_eq!(pod_ip(&store, "client").as_deref(), Some("10.10.0.99"));
}

#[test]
fn a_restart_restores_applied_objects_over_the_files_as_they_were_written() {
    let store = lab_store();
    let relabelled = user_files_with(client().label("version", "v2"));
    store.apply(parse(&relabelled), &Origin::Api, false);
    // What `save_applied` keeps, and the start order of `app::run`: files, then applied.
    let applied: Vec<Resource> = store
        .load()
        .objects
        .values()
        .filter(|o| o.origin == Origin::Api)
        .map(|o| o.resource.clone())
        .collect();
    let restarted = lab_store();
    let report = restarted.apply(applied, &Origin::Api, false);
    assert_eq!(outcomes(&report).len(), 1);
    let objects = |s: &Store| -> Vec<(Resource, Origin, Origin)> {
        s.load()
            .objects
            .values()
            .map(|o| (o.resource.clone(), o.origin.clone(), o.status_owner.clone()))
            .collect()
    };
    assert_eq!(objects(&restarted), objects(&store));

    // An object the API created owns its status: it is taken as applied, and a file that
    // defines the same pod later does not move it.
    let store = Store::new(MeshSettings::default());
    store.apply(parse(&lab_file()), &Origin::Api, false);
    store.replace_origin(
        &Origin::File(LAB.into()),
        parse(&lab_file_with("10.10.0.7")),
    );
    assert_eq!(pod_ip(&store, "client").as_deref(), Some("10.10.0.3"));
}

#[test]
fn taking_a_running_pod_out_of_the_mesh_is_warned_about_also_in_a_dry_run() {
    let store = lab_store();
    let unenrol = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let expected = [
        "pod shop/client leaves the mesh: traffic to and from it will be plaintext",
        "pod shop/reviews-0 leaves the mesh: traffic to and from it will be plaintext",
    ];
    let dry = store.apply(parse(unenrol), &Origin::Api, true);
    assert_eq!(dry.warnings, expected);
    assert_eq!(store.load().version, 1, "a dry run changes nothing");
    let report = store.apply(parse(unenrol), &Origin::Api, false);
    assert_eq!(report.warnings, expected);

    // Enrolling again takes nothing away.
    let enrol = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n";
    assert!(
        store
            .apply(parse(enrol), &Origin::Api, false)
            .warnings
            .is_empty()
    );
    // Deleting a running pod's object makes the mesh forget it.
    let report = store.delete(
        vec![ObjectKey {
            kind: config::Kind::Pod,
            namespace: "shop".into(),
            name: "client".into(),
        }],
        false,
    );
    assert_eq!(
        report.warnings,
        [
            "pod shop/client is removed from the mesh's config while it has an address: if it still runs, traffic to and from it will be plaintext"
        ]
    );
}

#[test]
fn losing_a_policy_or_strict_mtls_is_warned_about_for_the_pods_it_protected() {
    let store = lab_store();
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-only-from-frontend, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]\n";
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n";
    let deny_all = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-legacy, namespace: shop}\nspec: {action: DENY, rules: [{from: [{source: {namespaces: [legacy]}}]}]}\n";
    let added = store.apply(
        parse(&format!("{policy}---\n{strict}---\n{deny_all}")),
        &Origin::Api,
        false,
    );
    assert!(
        added.warnings.is_empty(),
        "adding protection: {:?}",
        added.warnings
    );

    // Narrowed: the selector no longer matches the pod.
    let narrowed = policy.replace("{app: reviews}", "{app: reviews, version: v9}");
    assert_eq!(
        store.apply(parse(&narrowed), &Origin::Api, true).warnings,
        [
            "pod shop/reviews-0 is no longer protected by AuthorizationPolicy shop/reviews-only-from-frontend: its rules are not enforced on it any more"
        ]
    );
    // Made report-only.
    let dry_run = policy.replace(
        "namespace: shop}",
        "namespace: shop, annotations: {istio.io/dry-run: \"true\"}}",
    );
    assert_eq!(
        store
            .apply(parse(&dry_run), &Origin::Api, true)
            .warnings
            .len(),
        1
    );
    // STRICT → PERMISSIVE, and a namespace-wide policy deleted: every pod of the namespace.
    let report = store.apply(
        parse(&strict.replace("STRICT", "PERMISSIVE")),
        &Origin::Api,
        false,
    );
    assert_eq!(
        report.warnings,
        [
            "pods shop/client, shop/reviews-0 no longer require mutual TLS (PeerAuthentication STRICT): plaintext connections to them will be accepted"
        ]
    );
    let report = store.delete(parse(deny_all).iter().map(Resource::key).collect(), false);
    assert_eq!(
        report.warnings,
        [
            "pods shop/client, shop/reviews-0 are no longer protected by AuthorizationPolicy shop/deny-legacy: its rules are not enforced on them any more"
        ]
    );
    // Deleted.
    let report = store.delete(parse(policy).iter().map(Resource::key).collect(), false);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].starts_with("pod shop/reviews-0 is no longer protected"));
}

#[test]
fn a_dry_run_says_the_notes_of_the_state_it_would_make_and_changes_nothing() {
    let store = lab_store();
    let before = store.load().version;
    let web = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: reviews}, ports: [{port: 80}], sessionAffinity: ClientIP}\n";
    let dry = store.apply(parse(web), &Origin::Api, true);
    let notes = dry
        .status
        .get("Service shop/web")
        .cloned()
        .unwrap_or_default();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("sessionAffinity ClientIP: not honoured")),
        "{:?}",
        dry.status
    );
    assert_eq!(store.load().version, before, "a dry run publishes nothing");
    assert!(
        !store
            .load()
            .compiled
            .status
            .contains_key("Service shop/web")
    );
    // Applied for real, the same notes are the state's.
    let real = store.apply(parse(web), &Origin::Api, false);
    assert_eq!(real.status, dry.status);
    assert_eq!(store.load().compiled.status, dry.status);
}
