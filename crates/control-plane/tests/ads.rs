//! The delta ADS server driven by a raw client: subscribe, ACK, NACK, incremental
//! change, delete, reconnect with the versions held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::ControlPlane;
use support::xds_client::Client;
use test_support::fixtures;
use xds::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

/// The shop's namespace, `reviews-0` and the `reviews` service.
fn mesh() -> String {
    fixtures::shop()
}

/// `ratings-0` on `node-b`.
fn extra_pod() -> String {
    fixtures::documents(&[&fixtures::ratings_pod().no_service_account()])
}

fn policy() -> String {
    fixtures::documents(&[&fixtures::deny_namespace("deny-legacy", "shop", "legacy")])
}

/// Adds `ratings-0` (`extra.yaml`) and returns the next response, which must hold it
/// alone: only what changed, and nothing pushed before it that had not.
async fn add_extra_pod(
    cp: &ControlPlane,
    client: &mut Client,
    why: &str,
) -> DeltaDiscoveryResponse {
    std::fs::write(cp.config_dir().join("extra.yaml"), extra_pod()).unwrap();
    let next = client.next().await;
    assert_eq!(next.type_url, xds::ADDRESS_TYPE_URL, "{why}");
    assert_eq!(names(&next), ["Kubernetes//Pod/shop/ratings-0"], "{why}");
    next
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_new_client_gets_every_resource_and_an_answer_for_each_type() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
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
    // Nothing more without a change: the next answer is the one for the next change.
    add_extra_pod(&cp, &mut client, "nothing more without a change").await;
}

#[tokio::test]
async fn changes_are_pushed_as_differences_and_deletions_as_removals() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::ADDRESS_TYPE_URL).await;
    client.synced(xds::AUTHORIZATION_TYPE_URL).await;

    let added = add_extra_pod(&cp, &mut client, "only what changed").await;
    assert!(added.removed_resources.is_empty());
    client.ack(&added).await;

    std::fs::write(cp.config_dir().join("policy.yaml"), policy()).unwrap();
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
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
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
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
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
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::ADDRESS_TYPE_URL).await;
    std::fs::write(
        cp.config_dir().join("mesh.yaml"),
        fixtures::documents(&[
            &fixtures::shop_namespace(),
            &fixtures::reviews_pod(),
            &fixtures::reviews_service().cluster_ip("10.96.0.300"),
        ]),
    )
    .unwrap();
    // The refusal is counted once the file was read.
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = support::http(&cp.bound.http, "GET", "/metrics", None, None)
            .await
            .1;
        if metrics.contains("bowline_config_errors_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("bowline_config_errors_total 1"),
        "{metrics}"
    );
    let dump = cp.api("GET", "/debug/config", None).await.1;
    assert!(dump.contains("10.96.0.10"), "the last good service stays");
    // Nothing pushed: the next answer is the one for the next good change, and holds only
    // what that change made.
    add_extra_pod(&cp, &mut client, "nothing pushed").await;
}
