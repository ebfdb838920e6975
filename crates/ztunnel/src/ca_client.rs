//! Certificates from the control plane's CA service instead of a local root: a
//! [`identity::CertificateProvider`] that sends the pod's CSR to
//! `IstioCertificateService/CreateCertificate` over TLS, authenticated with this node's
//! token (`authorization: Bearer`, re-read from its file on every request so a rotated
//! token is picked up) and naming the pod identity in `ImpersonatedIdentity`.

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
    pub fn new(url: &str, root_pem: &str, token_file: PathBuf) -> Result<Self, String> {
        let channel = xds::transport::channel(url, Some(root_pem))?;
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
        let bearer = format!("Bearer {}", token.trim())
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
