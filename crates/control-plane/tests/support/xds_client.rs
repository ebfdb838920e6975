//! A raw delta ADS client for tests: subscribe, read, ACK.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

use super::ControlPlane;

pub(crate) struct Client {
    pub(crate) tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub(crate) rx: Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    pub(crate) async fn connect(cp: &ControlPlane) -> Self {
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

    pub(crate) async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    pub(crate) async fn subscribe(&self, type_url: &str, held: HashMap<String, String>) {
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

    pub(crate) async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("a response within 5 s")
            .unwrap()
            .expect("stream open")
    }

    pub(crate) async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Subscribes to `type_url` from scratch, ACKs the first answer and returns it.
    pub(crate) async fn synced(&mut self, type_url: &str) -> DeltaDiscoveryResponse {
        self.subscribe(type_url, HashMap::new()).await;
        let response = self.next().await;
        assert_eq!(response.type_url, type_url);
        self.ack(&response).await;
        response
    }

    /// Nothing arrives within `wait`.
    pub(crate) async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.message()).await.is_err()
    }
}
