//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: signs workload certificates
//! with the mesh root for ztunnels.
//!
//! The caller authenticates with a node token (`authorization: Bearer …`, see
//! [`crate::tokens`]) and names the pod identity it asks for in the `ImpersonatedIdentity`
//! metadata field. The identity is granted only if a pod with that namespace and service
//! account is scheduled on the caller's node (by the current config); every refusal says
//! why.

use std::sync::Arc;
use std::time::Duration;

use identity::{CertificateAuthority, SpiffeId};
use tonic::{Request, Response, Status};
use xds::ca::istio_certificate_service_server::IstioCertificateService;
use xds::ca::{IstioCertificateRequest, IstioCertificateResponse};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::tokens::NodeTokens;

/// The metadata field naming the identity asked for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The CA service.
#[derive(Debug, Clone)]
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    tokens: Arc<NodeTokens>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl CaService {
    /// Signs with `ca` for callers holding a token from `tokens`, checking pods in `store`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        tokens: Arc<NodeTokens>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ca,
            tokens,
            store,
            metrics,
        }
    }

    fn create(&self, request: Request<IstioCertificateRequest>) -> Result<Vec<String>, Status> {
        let node = self.tokens.node_of(&request)?;
        let body = request.into_inner();
        let asked = body
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "metadata.{IMPERSONATED_IDENTITY} is required: the SPIFFE id of a pod on node {node}"
                ))
            })?;
        let identity: SpiffeId = asked.parse().map_err(|e| {
            Status::invalid_argument(format!("{IMPERSONATED_IDENTITY} {asked:?}: {e}"))
        })?;
        if !self.scheduled_on(&identity, &node) {
            return Err(Status::permission_denied(format!(
                "node {node} runs no pod with identity {identity}; a ztunnel may only ask for the pods on its own node"
            )));
        }
        let lifetime = u64::try_from(body.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        self.ca
            .sign_csr(&body.csr, &identity, lifetime)
            .map_err(|e| Status::invalid_argument(format!("cannot sign for {identity}: {e}")))
    }

    fn scheduled_on(&self, identity: &SpiffeId, node: &str) -> bool {
        let snapshot = self.store.load();
        snapshot.objects.values().any(|r| match &r.resource {
            config::Resource::Pod(pod) => {
                pod.spec.node_name.as_deref() == Some(node)
                    && pod.metadata.namespace() == identity.namespace()
                    && pod.spec.service_account() == identity.service_account()
            }
            _ => false,
        })
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        match self.create(request) {
            Ok(cert_chain) => {
                self.metrics.certificates_issued.inc();
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(status) => {
                self.metrics.certificates_refused.inc();
                tracing::warn!(code = ?status.code(), reason = status.message(), "certificate request refused");
                Err(status)
            }
        }
    }
}
