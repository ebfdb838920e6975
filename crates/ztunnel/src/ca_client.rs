//! Certificates from the control plane's CA service instead of a local root: a
//! [`identity::CertificateProvider`] that sends the pod's CSR to
//! `IstioCertificateService/CreateCertificate` over TLS, authenticated with this node's
//! token (`authorization: Bearer`, re-read from its file on every request so a rotated
//! token is picked up; surrounding whitespace is ignored) and naming the pod identity in
//! `ImpersonatedIdentity`.

use std::path::PathBuf;
use std::time::Duration;

use identity::{CertificateProvider, ProviderError, SpiffeId};
use xds::ca::IstioCertificateRequest;
use xds::ca::istio_certificate_service_client::IstioCertificateServiceClient;

/// Asks the control plane's CA.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<tonic::transport::Channel>,
    token_file: PathBuf,
}

impl CaClient {
    /// A client of the CA at `url` (`https://host:15012`), verified with `root_pem`, using
    /// the node token in `token_file`.
    pub fn new(url: &str, root_pem: &str, token_file: PathBuf) -> Result<Self, xds::XdsError> {
        let channel = xds::transport::lazy_channel(url, Some(root_pem))?;
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            token_file,
        })
    }
}

#[async_trait::async_trait]
impl CertificateProvider for CaClient {
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            ProviderError::Unavailable(format!("node token {}: {e}", self.token_file.display()))
        })?;
        // Written by hand or by tools that add a newline: surrounding whitespace is not
        // part of the token.
        let token = token.trim();
        if token.is_empty() {
            return Err(ProviderError::Unavailable(format!(
                "node token {} is empty; write the token from `bowline control-plane token --node NODE` into it",
                self.token_file.display()
            )));
        }
        let metadata = prost_types::Struct {
            fields: [(
                "ImpersonatedIdentity".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(identity.to_string())),
                },
            )]
            .into(),
        };
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_owned(),
            validity_duration: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
            metadata: Some(metadata),
        });
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ProviderError::Unavailable("the node token is not valid text".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = self.client.clone();
        let response =
            tokio::time::timeout(Duration::from_secs(10), client.create_certificate(request))
                .await
                .map_err(|_| {
                    ProviderError::Unavailable("the CA did not answer within 10 s".into())
                })?
                .map_err(|status| match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown => {
                        ProviderError::Unavailable(status.message().to_owned())
                    }
                    _ => {
                        ProviderError::Refused(format!("{:?}: {}", status.code(), status.message()))
                    }
                })?;
        Ok(response.into_inner().cert_chain)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use tonic::{Request, Response, Status};
    use xds::ca::IstioCertificateResponse;
    use xds::ca::istio_certificate_service_server::{
        IstioCertificateService, IstioCertificateServiceServer,
    };

    use super::*;

    /// A CA that records the `authorization` header of every request.
    #[derive(Clone, Default)]
    struct RecordingCa(Arc<Mutex<Vec<String>>>);

    #[tonic::async_trait]
    impl IstioCertificateService for RecordingCa {
        async fn create_certificate(
            &self,
            request: Request<IstioCertificateRequest>,
        ) -> Result<Response<IstioCertificateResponse>, Status> {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.0.lock().unwrap().push(header);
            Ok(Response::new(IstioCertificateResponse {
                cert_chain: vec!["leaf".into()],
            }))
        }
    }

    async fn recording_ca() -> (String, RecordingCa) {
        let ca = RecordingCa::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IstioCertificateServiceServer::new(ca.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (url, ca)
    }

    #[tokio::test]
    async fn a_token_file_with_surrounding_whitespace_is_sent_without_it() {
        let (url, ca) = recording_ca().await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("node.token");
        std::fs::write(&token_file, "  node-token-1\n\n").unwrap();
        let client = CaClient::new(&url, "", token_file.clone()).unwrap();
        let identity: SpiffeId = "spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap();
        let chain = client
            .sign(&identity, "csr", Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(chain, ["leaf"]);
        assert_eq!(*ca.0.lock().unwrap(), ["Bearer node-token-1"]);

        // An empty (or blank) file says what to put in it, and nothing is sent.
        std::fs::write(&token_file, "\n").unwrap();
        let error = client
            .sign(&identity, "csr", Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("is empty"), "{error}");
        assert_eq!(ca.0.lock().unwrap().len(), 1);
    }
}
