//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: signs workload certificates
//! with the mesh root for ztunnels.
//!
//! The caller authenticates with a node token (`authorization: Bearer …`, see
//! [`crate::tokens`]) and names the pod identity it asks for in the `ImpersonatedIdentity`
//! metadata field. Without that field (Istio's ztunnel in dedicated mode sends none) the
//! identity is the CSR's one URI SAN. Either way the identity is granted only if a pod
//! with that namespace and service account is scheduled on the caller's node (by the
//! current config); every refusal says why.

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
        let identity: SpiffeId = match impersonated(body.metadata.as_ref()) {
            Some(asked) => asked.parse().map_err(|e| {
                Status::invalid_argument(format!("{IMPERSONATED_IDENTITY} {asked:?}: {e}"))
            })?,
            None => identity_of_csr(&body.csr, &node)?,
        };
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

/// The identity named in `metadata.ImpersonatedIdentity`, when the caller names one.
fn impersonated(metadata: Option<&prost_types::Struct>) -> Option<&str> {
    match &metadata?.fields.get(IMPERSONATED_IDENTITY)?.kind {
        Some(prost_types::value::Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Dedicated mode: the identity is the CSR's single URI SAN.
fn identity_of_csr(csr_pem: &str, node: &str) -> Result<SpiffeId, Status> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        Status::invalid_argument(format!(
            "the CSR cannot be read ({e}); send one PEM CERTIFICATE REQUEST"
        ))
    })?;
    let uris: Vec<&str> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::URI(uri) => Some(uri.as_str()),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => uri.parse().map_err(|e| {
            Status::invalid_argument(format!("the CSR's URI SAN {uri:?} is not a SPIFFE id: {e}"))
        }),
        [] => Err(Status::invalid_argument(format!(
            "the CSR has no URI SAN and metadata.{IMPERSONATED_IDENTITY} is not set: put the SPIFFE id of a pod on node {node} in one of them"
        ))),
        many => Err(Status::invalid_argument(format!(
            "the CSR carries {} URI SANs ({}); without metadata.{IMPERSONATED_IDENTITY} it must carry exactly one, the SPIFFE id of a pod on node {node}",
            many.len(),
            many.join(", ")
        ))),
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
