//! The state model, its indexes, and the local configuration file: good files load,
//! bad edits are refused with their position and leave the last good state serving.

use std::path::Path;
use std::time::Duration;

use super::file_source::{self, FileSourceError};
use super::*;

const GOOD: &str = r#"
workloads:
  - uid: shop/frontend-0
    name: frontend-0
    namespace: shop
    serviceAccount: frontend
    node: node-a
    addresses: [10.1.0.2]
    protocol: HBONE
  - uid: shop/reviews-0
    name: reviews-0
    namespace: shop
    serviceAccount: reviews
    node: node-b
    addresses: [10.2.0.2]
    protocol: HBONE
    services:
      shop/reviews.shop.svc.cluster.local: [{servicePort: 9080, targetPort: 8080}]
    authorizationPolicies: [shop/only-frontend]
  - uid: shop/reviews-1
    name: reviews-1
    namespace: shop
    serviceAccount: reviews
    node: node-b
    addresses: [10.2.0.3]
    protocol: HBONE
    status: Unhealthy
    services:
      shop/reviews.shop.svc.cluster.local: [{servicePort: 9080, targetPort: 8080}]
services:
  - name: reviews
    namespace: shop
    hostname: reviews.shop.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{servicePort: 9080, targetPort: 8080}]
policies:
  - name: only-frontend
    namespace: shop
    scope: WorkloadSelector
    action: Allow
    rules:
      - clauses:
          - matches:
              - principals: [{exact: cluster.local/ns/shop/sa/frontend}]
  - name: no-admin
    namespace: shop
    scope: Namespace
    action: Deny
    rules:
      - clauses:
          - matches:
              - destinationPorts: [9090]
                notSourceIps: [10.1.0.0/16]
"#;

fn parse(text: &str) -> Result<Snapshot, FileSourceError> {
    file_source::parse(text, Path::new("mesh.yaml"))
}

#[test]
fn a_good_file_builds_every_index() {
    let snap = parse(GOOD).unwrap();
    let fe = snap.workload("shop/frontend-0").unwrap();
    assert_eq!(
        fe.identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/frontend"
    );
    assert_eq!(fe.protocol, TunnelProtocol::Hbone);
    let by_ip = snap.workload_by_ip("10.2.0.3".parse().unwrap()).unwrap();
    assert_eq!(by_ip.uid, "shop/reviews-1");
    assert!(!by_ip.healthy);
    let svc = snap.service_by_vip("10.96.0.10".parse().unwrap()).unwrap();
    assert_eq!(svc.key(), "shop/reviews.shop.svc.cluster.local");
    assert_eq!(
        snap.service_by_hostname("reviews.shop.svc.cluster.local")
            .unwrap()
            .name,
        "reviews"
    );
    let endpoints: Vec<_> = snap
        .endpoints(&svc.key())
        .iter()
        .map(|w| w.uid.as_str())
        .collect();
    assert_eq!(endpoints, ["shop/reviews-0", "shop/reviews-1"]);
    // reviews-0 selects only-frontend and sits in shop (no-admin); frontend only no-admin.
    let reviews = snap.workload("shop/reviews-0").unwrap();
    let mut names: Vec<_> = snap.policies_for(reviews).map(|p| p.key()).collect();
    names.sort();
    assert_eq!(names, ["shop/no-admin", "shop/only-frontend"]);
    let names: Vec<_> = snap.policies_for(fe).map(|p| p.key()).collect();
    assert_eq!(names, ["shop/no-admin"]);
}

#[test]
fn json_works_too() {
    let snap = parse(r#"{"workloads": [{"uid": "a", "name": "a", "namespace": "n", "addresses": ["10.0.0.1"]}]}"#).unwrap();
    assert_eq!(snap.workload("a").unwrap().protocol, TunnelProtocol::None);
}

#[test]
fn a_bad_address_is_refused_with_its_line_and_column() {
    let text = GOOD.replace("addresses: [10.2.0.3]", "addresses: [10.2.0.300]");
    let err = parse(&text).unwrap_err();
    let FileSourceError::Parse {
        line,
        column,
        reason,
        ..
    } = &err
    else {
        panic!("expected a parse error, got {err}");
    };
    let expected_line = text.lines().position(|l| l.contains("10.2.0.300")).unwrap() + 1;
    assert_eq!(*line, expected_line, "{err}");
    assert!(*column > 0);
    assert!(reason.contains("address"), "{reason}");
    assert!(
        err.to_string()
            .starts_with(&format!("mesh.yaml:{expected_line}:")),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_not_ignored() {
    let text = GOOD.replace("serviceAccount: frontend", "serviceAcount: frontend");
    let err = parse(&text).unwrap_err();
    assert!(err.to_string().contains("serviceAcount"), "{err}");
}

#[test]
fn conflicts_and_invalid_resources_name_the_resource() {
    let twice = GOOD.replace("addresses: [10.2.0.3]", "addresses: [10.2.0.2]");
    let err = parse(&twice).unwrap_err();
    assert!(
        err.to_string()
            .contains("address 10.2.0.2 is also claimed by workload shop/reviews-0"),
        "{err}"
    );
    let bad_policy = GOOD.replace("destinationPorts: [9090]", "destinationPorts: [0]");
    let err = parse(&bad_policy).unwrap_err();
    assert!(err.to_string().contains("policies[1]"), "{err}");
    assert!(err.to_string().contains("destination_ports[0]"), "{err}");
    let no_uid = GOOD.replace("uid: shop/frontend-0", "uid: \"\"");
    let err = parse(&no_uid).unwrap_err();
    assert!(err.to_string().contains("workloads[0]"), "{err}");
}

#[tokio::test]
async fn a_bad_edit_keeps_the_last_good_state_and_a_good_edit_applies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let store = Arc::new(Store::default());
    let mut updates = store.subscribe();
    let task = file_source::watch(file.clone(), store.clone(), Duration::from_millis(20)).unwrap();
    assert!(store.load().workload("shop/frontend-0").is_some());
    updates.mark_unchanged();

    std::fs::write(&file, GOOD.replace("protocol: HBONE", "protocol: [broken")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !updates.has_changed().unwrap(),
        "a bad edit must not replace the state"
    );
    assert!(store.load().workload("shop/frontend-0").is_some());

    std::fs::write(&file, GOOD.replace("frontend-0", "frontend-9")).unwrap();
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .expect("the good edit applies")
        .unwrap();
    assert!(store.load().workload("shop/frontend-9").is_some());
    assert!(store.load().workload("shop/frontend-0").is_none());
    task.abort();
}

#[test]
fn a_broken_file_at_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, "workloads: {").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let err =
        file_source::watch(file, Arc::new(Store::default()), Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, FileSourceError::Parse { .. }), "{err}");
}
