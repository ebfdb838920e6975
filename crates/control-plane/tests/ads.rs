//! The delta ADS server driven by a raw client: subscribe, ACK, NACK, incremental
//! change, delete, reconnect with the versions held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::ControlPlane;
use support::xds_client::Client;
use xds::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: shop, labels: {app: reviews}}
spec: {nodeName: node-a, serviceAccountName: reviews}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{port: 9080, targetPort: 8080}]}
"#;

const EXTRA_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ratings-0, namespace: shop}
spec: {nodeName: node-b}
status: {podIP: 10.1.0.6}
"#;

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-legacy, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [legacy]}}]}]}
"#;

fn names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_new_client_gets_every_resource_and_an_answer_for_each_type() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)]).await;
    let mut client = Client::connect(&cp).await;
    client
        .subscribe(xds::ADDRESS_TYPE_URL, HashMap::new())
        .await;
    let addresses = client.next().await;
    assert_eq!(addresses.type_url, xds::ADDRESS_TYPE_URL);
    assert_eq!(
        names(&addresses),
        [
            "Kubernetes//Pod/shop/reviews-0",
            "shop/reviews.shop.svc.cluster.local"
        ]
    );
    assert!(!addresses.nonce.is_empty());
    for r in &addresses.resources {
        let any = r.resource.as_ref().unwrap();
        assert_eq!(any.type_url, xds::ADDRESS_TYPE_URL);
        assert!(!r.version.is_empty());
    }
    client.ack(&addresses).await;
    // No policies yet: still an (empty) answer, which ztunnel waits for to be ready.
    client
        .subscribe(xds::AUTHORIZATION_TYPE_URL, HashMap::new())
        .await;
    let policies = client.next().await;
    assert_eq!(policies.type_url, xds::AUTHORIZATION_TYPE_URL);
    assert!(policies.resources.is_empty());
    client.ack(&policies).await;
    assert!(
        client.quiet(Duration::from_millis(300)).await,
        "nothing more without a change"
    );
}

#[tokio::test]
async fn changes_are_pushed_as_differences_and_deletions_as_removals() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::ADDRESS_TYPE_URL).await;
    client.synced(xds::AUTHORIZATION_TYPE_URL).await;

    std::fs::write(cp.config_dir().join("extra.yaml"), EXTRA_POD).unwrap();
    let added = client.next().await;
    assert_eq!(added.type_url, xds::ADDRESS_TYPE_URL);
    assert_eq!(
        names(&added),
        ["Kubernetes//Pod/shop/ratings-0"],
        "only what changed"
    );
    assert!(added.removed_resources.is_empty());
    client.ack(&added).await;

    std::fs::write(cp.config_dir().join("policy.yaml"), POLICY).unwrap();
    let policy = client.next().await;
    assert_eq!(policy.type_url, xds::AUTHORIZATION_TYPE_URL);
    assert_eq!(names(&policy), ["shop/deny-legacy"]);
    client.ack(&policy).await;

    std::fs::remove_file(cp.config_dir().join("extra.yaml")).unwrap();
    let removed = client.next().await;
    assert!(removed.resources.is_empty());
    assert_eq!(
        removed.removed_resources,
        ["Kubernetes//Pod/shop/ratings-0"]
    );
}

#[tokio::test]
async fn a_nack_is_recorded_with_the_clients_reason() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)]).await;
    let mut client = Client::connect(&cp).await;
    client
        .subscribe(xds::ADDRESS_TYPE_URL, HashMap::new())
        .await;
    let response = client.next().await;
    client
        .send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(xds::google::rpc::Status {
                code: 3,
                message: "workload x: addresses[0]: 5 bytes is not an IP address".into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    let mut seen = String::new();
    for _ in 0..50 {
        seen = cp.api("GET", "/debug/connections", None).await.1;
        if seen.contains("\"nacks\": 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.contains("\"nacks\": 1"), "{seen}");
    assert!(seen.contains("5 bytes is not an IP address"), "{seen}");
    assert!(seen.contains("\"node\": \"node-a\""), "{seen}");
}

#[tokio::test]
async fn a_reconnecting_client_gets_only_what_changed_and_removals() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)]).await;
    let mut first = Client::connect(&cp).await;
    first.subscribe(xds::ADDRESS_TYPE_URL, HashMap::new()).await;
    let response = first.next().await;
    let mut held: HashMap<String, String> = response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(first);
    held.insert("Kubernetes//Pod/shop/gone-0".into(), "1234".into());

    let mut again = Client::connect(&cp).await;
    again.subscribe(xds::ADDRESS_TYPE_URL, held).await;
    let resync = again.next().await;
    assert!(resync.resources.is_empty(), "versions held are current");
    assert_eq!(resync.removed_resources, ["Kubernetes//Pod/shop/gone-0"]);
}

#[tokio::test]
async fn a_broken_config_file_is_refused_and_the_last_good_one_stays() {
    let cp = ControlPlane::start(&[("mesh.yaml", MESH)]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::ADDRESS_TYPE_URL).await;
    std::fs::write(
        cp.config_dir().join("mesh.yaml"),
        MESH.replace("clusterIP: 10.96.0.10", "clusterIP: 10.96.0.300"),
    )
    .unwrap();
    assert!(
        client.quiet(Duration::from_millis(1500)).await,
        "nothing pushed"
    );
    let dump = cp.api("GET", "/debug/config", None).await.1;
    assert!(dump.contains("10.96.0.10"), "the last good service stays");
    let metrics = support::http(&cp.bound.http, "GET", "/metrics", None, None)
        .await
        .1;
    assert!(
        metrics.contains("bowline_config_errors_total 1"),
        "{metrics}"
    );
}
