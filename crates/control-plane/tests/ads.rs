//! The delta ADS server driven by a raw client: subscribe, ACK, NACK, incremental
//! change, delete, reconnect with the versions held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::ControlPlane;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
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

struct Client {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    async fn connect(cp: &ControlPlane) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(cp.plaintext_url())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    async fn subscribe(&self, type_url: &str, held: HashMap<String, String>) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            node: Some(xds::core::Node {
                id: "ztunnel~10.0.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local".into(),
                metadata: Some(xds::google::protobuf::Struct {
                    fields: [(
                        "NODE_NAME".to_owned(),
                        xds::google::protobuf::Value {
                            kind: Some(xds::google::protobuf::value::Kind::StringValue(
                                "node-a".into(),
                            )),
                        },
                    )]
                    .into(),
                }),
                ..Default::default()
            }),
            initial_resource_versions: held,
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .unwrap()
            .expect("stream open")
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Subscribes to `type_url` from scratch, ACKs the first answer and returns it.
    async fn synced(&mut self, type_url: &str) -> DeltaDiscoveryResponse {
        self.subscribe(type_url, HashMap::new()).await;
        let response = self.next().await;
        assert_eq!(response.type_url, type_url);
        self.ack(&response).await;
        response
    }

    /// Nothing arrives within `wait`.
    async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.message()).await.is_err()
    }
}

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
    let url = format!("http://{}/debug/connections", cp.bound.http);
    let mut seen = String::new();
    for _ in 0..50 {
        seen = http_get(&url).await;
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
    let dump = http_get(&format!("http://{}/debug/config", cp.bound.http)).await;
    assert!(dump.contains("10.96.0.10"), "the last good service stays");
    let metrics = http_get(&format!("http://{}/metrics", cp.bound.http)).await;
    assert!(
        metrics.contains("bowline_config_errors_total 1"),
        "{metrics}"
    );
}

/// A GET over a plain TCP connection (HTTP/1.0 style, read to the end).
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tcp.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}
