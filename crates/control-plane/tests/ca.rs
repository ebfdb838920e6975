//! The CA service over TLS on the xDS port: node tokens, identities of pods on the
//! caller's node only, CSRs checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use control_plane::tokens::NodeTokens;
use identity::{SpiffeId, WorkloadCertificate};
use support::ControlPlane;
use tonic::Code;
use xds::ca::IstioCertificateRequest;
use xds::ca::istio_certificate_service_client::IstioCertificateServiceClient;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: shop}
spec: {nodeName: node-a, serviceAccountName: reviews}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-0, namespace: shop}
spec: {nodeName: node-b, serviceAccountName: ratings}
status: {podIP: 10.1.0.6}
"#;

async fn client(cp: &ControlPlane) -> IstioCertificateServiceClient<tonic::transport::Channel> {
    IstioCertificateServiceClient::new(cp.tls_channel())
}

fn request(
    identity: &str,
    csr: &str,
    token: Option<&str>,
) -> tonic::Request<IstioCertificateRequest> {
    let metadata = prost_types::Struct {
        fields: [(
            "ImpersonatedIdentity".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(identity.into())),
            },
        )]
        .into(),
    };
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.into(),
        validity_duration: 3600,
        metadata: Some(metadata),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn token(cp: &ControlPlane, node: &str) -> String {
    cp.node_token(node)
}

#[tokio::test]
async fn a_node_gets_certificates_for_the_pods_scheduled_on_it() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    let reviews: SpiffeId = "spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap();
    let (csr, key) = identity::generate_csr(&reviews).unwrap();
    let chain = client(&cp)
        .await
        .create_certificate(request(
            &reviews.to_string(),
            &csr,
            Some(&token(&cp, "node-a")),
        ))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2, "leaf and root");
    let cert = WorkloadCertificate::from_pem_chain(&chain, &key).unwrap();
    assert_eq!(cert.identity(), &reviews);
    let lifetime = cert.info().lifetime();
    assert!(
        lifetime > Duration::from_secs(3500) && lifetime < Duration::from_secs(3700),
        "{lifetime:?}"
    );
}

#[tokio::test]
async fn an_identity_of_another_nodes_pod_is_refused_with_the_reason() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    let ratings: SpiffeId = "spiffe://cluster.local/ns/shop/sa/ratings".parse().unwrap();
    let (csr, _) = identity::generate_csr(&ratings).unwrap();
    let status = client(&cp)
        .await
        .create_certificate(request(
            &ratings.to_string(),
            &csr,
            Some(&token(&cp, "node-a")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("node node-a runs no pod with identity"),
        "{status}"
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_or_with_a_bad_csr_are_refused() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    let reviews = "spiffe://cluster.local/ns/shop/sa/reviews";
    let (csr, _) = identity::generate_csr(&reviews.parse().unwrap()).unwrap();
    let mut ca = client(&cp).await;

    let status = ca
        .create_certificate(request(reviews, &csr, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("no bearer token"), "{status}");

    let forged = NodeTokens::new(&[7u8; 32])
        .issue("node-a", Duration::from_secs(60))
        .unwrap();
    let status = ca
        .create_certificate(request(reviews, &csr, Some(&forged)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("invalid node token"), "{status}");

    let good = token(&cp, "node-a");
    let status = ca
        .create_certificate(request(
            reviews,
            "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n",
            Some(&good),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A CSR for another identity than the one asked for.
    let (other, _) =
        identity::generate_csr(&"spiffe://cluster.local/ns/shop/sa/ratings".parse().unwrap())
            .unwrap();
    let status = ca
        .create_certificate(request(reviews, &other, Some(&good)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("cannot sign"), "{status}");
}

/// Asks for a certificate from node-a as Istio's ztunnel does in dedicated mode: no
/// `ImpersonatedIdentity`, the identity only in the CSR.
async fn ask_dedicated(cp: &ControlPlane, csr: &str) -> Result<Vec<String>, tonic::Status> {
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.into(),
        validity_duration: 3600,
        metadata: None,
    });
    let bearer = format!("Bearer {}", token(cp, "node-a"));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let response = client(cp).await.create_certificate(request).await?;
    Ok(response.into_inner().cert_chain)
}

/// A CSR (fresh key) with these subject alternative names.
fn csr_with(sans: Vec<rcgen::SanType>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(text: &str) -> rcgen::SanType {
    rcgen::SanType::URI(text.try_into().unwrap())
}

#[tokio::test]
async fn a_dedicated_mode_csr_for_a_pod_on_the_callers_node_is_signed() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    let reviews: SpiffeId = "spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap();
    let (csr, key) = identity::generate_csr(&reviews).unwrap();
    let chain = ask_dedicated(&cp, &csr).await.unwrap();
    let cert = WorkloadCertificate::from_pem_chain(&chain, &key).unwrap();
    assert_eq!(cert.identity(), &reviews);
}

#[tokio::test]
async fn a_dedicated_mode_csr_for_an_identity_not_on_the_callers_node_is_refused() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    // ratings runs on node-b only.
    let ratings: SpiffeId = "spiffe://cluster.local/ns/shop/sa/ratings".parse().unwrap();
    let (csr, _) = identity::generate_csr(&ratings).unwrap();
    let status = ask_dedicated(&cp, &csr).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(
            "node node-a runs no pod with identity spiffe://cluster.local/ns/shop/sa/ratings"
        ),
        "{status}"
    );
}

#[tokio::test]
async fn a_dedicated_mode_csr_without_exactly_one_uri_san_is_refused_with_the_reason() {
    let cp = ControlPlane::start(&[("pods.yaml", PODS)]).await;
    let two = csr_with(vec![
        uri("spiffe://cluster.local/ns/shop/sa/reviews"),
        uri("spiffe://cluster.local/ns/shop/sa/ratings"),
    ]);
    let status = ask_dedicated(&cp, &two).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("carries 2 URI SANs"), "{status}");

    let none = csr_with(vec![rcgen::SanType::DnsName("reviews".try_into().unwrap())]);
    let status = ask_dedicated(&cp, &none).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("has no URI SAN"), "{status}");
}
