//! Node agents' capture reports over TLS on the xDS port: an enrolled pod is advertised as
//! HBONE only once the agent of its node reported it captured; node tokens, pods of the
//! caller's node only; the reports survive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use control_plane::tokens::NodeTokens;
use prost::Message;
use support::ControlPlane;
use test_support::fixtures;
use tonic::Code;
use xds::agent::CaptureReport;
use xds::agent::node_agent_status_client::NodeAgentStatusClient;
use xds::workload as wire;

/// The shop's namespace, `reviews-0` on `node-a` and `ratings-0` on `node-b`.
fn pods() -> String {
    fixtures::documents(&[
        &fixtures::shop_namespace(),
        &fixtures::reviews_pod().no_labels(),
        &fixtures::ratings_pod(),
    ])
}

const REVIEWS: &str = "Kubernetes//Pod/shop/reviews-0";
const RATINGS: &str = "Kubernetes//Pod/shop/ratings-0";

async fn client(cp: &ControlPlane) -> NodeAgentStatusClient<tonic::transport::Channel> {
    NodeAgentStatusClient::new(cp.tls_channel())
}

fn token(cp: &ControlPlane, node: &str) -> String {
    cp.node_token(node)
}

fn report(node: &str, uids: &[&str], token: Option<&str>) -> tonic::Request<CaptureReport> {
    let mut request = tonic::Request::new(CaptureReport {
        node: node.into(),
        captured: uids.iter().map(|u| (*u).to_owned()).collect(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// The workloads a newly connecting ztunnel is sent, by uid.
async fn workloads(cp: &ControlPlane) -> BTreeMap<String, wire::Workload> {
    let node = xds::core::Node {
        id: "ztunnel~10.0.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    let mut stream = xds::ads_client::AdsStream::open(
        &cp.plaintext_url(),
        None,
        node,
        vec![(xds::ADDRESS_TYPE_URL.to_owned(), Default::default())],
    )
    .await
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an answer within 5 s")
        .unwrap()
        .expect("stream open");
    response
        .resources
        .iter()
        .filter_map(|r| {
            let address = wire::Address::decode(r.resource.as_ref()?.value.as_slice()).ok()?;
            match address.r#type? {
                wire::address::Type::Workload(w) => Some((w.uid.clone(), w)),
                wire::address::Type::Service(_) => None,
            }
        })
        .collect()
}

fn protocol(workloads: &BTreeMap<String, wire::Workload>, uid: &str) -> wire::TunnelProtocol {
    wire::TunnelProtocol::try_from(workloads[uid].tunnel_protocol).unwrap()
}

#[tokio::test]
async fn an_enrolled_pod_is_hbone_only_after_its_node_agent_reported_it_captured() {
    let cp = ControlPlane::start(&[("pods.yaml", &pods())]).await;
    let before = workloads(&cp).await;
    assert_eq!(protocol(&before, REVIEWS), wire::TunnelProtocol::None);
    assert!(
        before[REVIEWS]
            .extensions
            .iter()
            .any(|e| e.name == xds::CAPTURE_EXTENSION),
        "the agent is asked to capture it"
    );

    let answer = client(&cp)
        .await
        .report_capture(report(
            "node-a",
            &[REVIEWS, "Kubernetes//Pod/shop/gone-0"],
            Some(&token(&cp, "node-a")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.recorded, 1);
    assert_eq!(answer.unknown, ["Kubernetes//Pod/shop/gone-0"]);
    let after = workloads(&cp).await;
    assert_eq!(protocol(&after, REVIEWS), wire::TunnelProtocol::Hbone);
    assert_eq!(
        protocol(&after, RATINGS),
        wire::TunnelProtocol::None,
        "node-b's agent has not reported"
    );

    // The next report is the whole set again: an empty one takes the pod out.
    client(&cp)
        .await
        .report_capture(report("node-a", &[], Some(&token(&cp, "node-a"))))
        .await
        .unwrap();
    assert_eq!(
        protocol(&workloads(&cp).await, REVIEWS),
        wire::TunnelProtocol::None
    );
}

#[tokio::test]
async fn a_report_naming_another_nodes_pod_is_refused_with_the_reason_and_records_nothing() {
    let cp = ControlPlane::start(&[("pods.yaml", &pods())]).await;
    let status = client(&cp)
        .await
        .report_capture(report(
            "node-a",
            &[REVIEWS, RATINGS],
            Some(&token(&cp, "node-a")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(
            "node node-a may only report the pods scheduled on it, but Kubernetes//Pod/shop/ratings-0 is scheduled on node node-b"
        ),
        "{status}"
    );
    let now = workloads(&cp).await;
    assert_eq!(protocol(&now, REVIEWS), wire::TunnelProtocol::None);
    assert_eq!(protocol(&now, RATINGS), wire::TunnelProtocol::None);
}

#[tokio::test]
async fn reports_without_a_valid_token_of_that_node_are_refused() {
    let cp = ControlPlane::start(&[("pods.yaml", &pods())]).await;
    let mut agent = client(&cp).await;

    let status = agent
        .report_capture(report("node-a", &[REVIEWS], None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("no bearer token"), "{status}");

    let forged = NodeTokens::new(&[7u8; 32])
        .issue("node-a", Duration::from_secs(60))
        .unwrap();
    let status = agent
        .report_capture(report("node-a", &[REVIEWS], Some(&forged)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("invalid node token"), "{status}");

    let status = agent
        .report_capture(report("node-a", &[REVIEWS], Some(&token(&cp, "node-b"))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("the report is for node node-a but the token is node node-b's"),
        "{status}"
    );
    assert_eq!(
        protocol(&workloads(&cp).await, REVIEWS),
        wire::TunnelProtocol::None
    );
}

#[tokio::test]
async fn captured_pods_stay_in_the_mesh_across_a_control_plane_restart() {
    let cp = ControlPlane::start(&[("pods.yaml", &pods())]).await;
    client(&cp)
        .await
        .report_capture(report("node-a", &[REVIEWS], Some(&token(&cp, "node-a"))))
        .await
        .unwrap();
    let dir = cp.stop().await;
    let cp = ControlPlane::start_in(dir, &[("pods.yaml", &pods())]).await;
    assert_eq!(
        protocol(&workloads(&cp).await, REVIEWS),
        wire::TunnelProtocol::Hbone,
        "no agent has reported since the restart"
    );
}
