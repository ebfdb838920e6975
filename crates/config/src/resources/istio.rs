//! Istio's `ServiceEntry`, typed: the control plane translates it into workload-API
//! services for ztunnel. (`VirtualService` and `DestinationRule` are in
//! [`super::traffic`].)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Labels;

/// `ServiceEntry` (networking.istio.io).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Metadata.
    pub metadata: super::ObjectMeta,
    /// Spec.
    pub spec: ServiceEntrySpec,
    /// What a cluster reported of it (allocated addresses…): ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The hosts it names (DNS names; `*.` wildcards match no DNS answer).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Its virtual IPs (a CIDR of one address, or an IP); allocated when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<ServiceEntryPort>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Its endpoints (addresses for STATIC, host names or addresses for DNS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Pods of its namespace that are its endpoints (instead of `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces it is visible to (informational: every namespace sees it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Identities its endpoints may present (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntrySpec {
    /// `resolution`, `NONE` when omitted.
    pub fn resolution(&self) -> &str {
        self.resolution.as_deref().unwrap_or("NONE")
    }

    /// Whether it is outside the mesh (`location` omitted or `MESH_EXTERNAL`).
    pub fn external(&self) -> bool {
        self.location.as_deref() != Some("MESH_INTERNAL")
    }
}

/// A ServiceEntry port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntryPort {
    /// The port clients dial.
    pub number: u16,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `TCP`, `TLS`, `MONGO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The endpoints' port (default `number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
}

/// An endpoint of a ServiceEntry (a `WorkloadEntry` spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// An IP address, or a host name (DNS resolution).
    #[serde(default)]
    pub address: String,
    /// Port name → the endpoint's port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Its service account (identity), `default` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Read and not acted on (one network, one locality in the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Read and not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Read and not acted on (endpoints are balanced equally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `workloadSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a pod must carry.
    #[serde(default)]
    pub labels: Labels,
}
