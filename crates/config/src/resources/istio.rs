//! Istio's networking kinds. [`ServiceEntry`] is typed: the control plane translates it
//! into workload-API services for ztunnel. `DestinationRule` and `VirtualService` are
//! kept as written for the waypoint (their traffic management is a later issue) but
//! their shape is checked here ([`check_shape`]) — field names and types as Istio defines
//! them, the parts Istio requires — so a typo is refused with its path now rather than
//! silently ignored later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Kind, Labels};

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

/// Checks the spec of a `DestinationRule` or `VirtualService` against the shape Istio
/// defines; `(path under spec, message)` on failure. Other kinds pass.
pub(crate) fn check_shape(kind: Kind, spec: &serde_json::Value) -> Result<(), (String, String)> {
    let shaped = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    };
    match kind {
        Kind::DestinationRule => {
            let rule: shapes::DestinationRule =
                serde_path_to_error::deserialize(spec).map_err(shaped)?;
            if rule.host.trim().is_empty() {
                return Err(("host".into(), "a DestinationRule needs a host".into()));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, subset) in rule.subsets.iter().enumerate() {
                if subset.name.is_empty() {
                    return Err((format!("subsets[{i}].name"), "a subset needs a name".into()));
                }
                if !names.insert(&subset.name) {
                    return Err((
                        format!("subsets[{i}].name"),
                        format!("subset {:?} is defined twice", subset.name),
                    ));
                }
            }
            Ok(())
        }
        Kind::VirtualService => {
            let service: shapes::VirtualService =
                serde_path_to_error::deserialize(spec).map_err(shaped)?;
            if service.hosts.is_empty() {
                return Err((
                    "hosts".into(),
                    "a VirtualService needs hosts (delegate VirtualServices are not supported)"
                        .into(),
                ));
            }
            for (i, route) in service.http.iter().enumerate() {
                for (j, destination) in route.route.iter().enumerate() {
                    if destination.destination.host.is_empty() {
                        return Err((
                            format!("http[{i}].route[{j}].destination.host"),
                            "a destination needs a host".into(),
                        ));
                    }
                    if destination.weight.is_some_and(|w| w > 100) {
                        return Err((
                            format!("http[{i}].route[{j}].weight"),
                            "a weight is a percentage, 0-100".into(),
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The shapes Istio defines, down to where their contents are free-form enough to be
/// kept as written (fault injection, retries, CORS, header edits, TLS settings…).
// Read only to check their shape: most fields are never looked at again.
#[allow(dead_code)]
mod shapes {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct DestinationRule {
        #[serde(default)]
        pub(super) host: String,
        #[serde(default)]
        pub(super) traffic_policy: Option<TrafficPolicy>,
        #[serde(default)]
        pub(super) subsets: Vec<Subset>,
        #[serde(default)]
        pub(super) export_to: Vec<String>,
        #[serde(default)]
        pub(super) workload_selector: Option<Selector>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct Selector {
        #[serde(default)]
        pub(super) match_labels: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct TrafficPolicy {
        #[serde(default)]
        pub(super) load_balancer: Option<Value>,
        #[serde(default)]
        pub(super) connection_pool: Option<Value>,
        #[serde(default)]
        pub(super) outlier_detection: Option<Value>,
        #[serde(default)]
        pub(super) tls: Option<Value>,
        #[serde(default)]
        pub(super) port_level_settings: Vec<Value>,
        #[serde(default)]
        pub(super) tunnel: Option<Value>,
        #[serde(default)]
        pub(super) proxy_protocol: Option<Value>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct Subset {
        #[serde(default)]
        pub(super) name: String,
        #[serde(default)]
        pub(super) labels: BTreeMap<String, String>,
        #[serde(default)]
        pub(super) traffic_policy: Option<TrafficPolicy>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct VirtualService {
        #[serde(default)]
        pub(super) hosts: Vec<String>,
        #[serde(default)]
        pub(super) gateways: Vec<String>,
        #[serde(default)]
        pub(super) http: Vec<HttpRoute>,
        #[serde(default)]
        pub(super) tls: Vec<L4Route>,
        #[serde(default)]
        pub(super) tcp: Vec<L4Route>,
        #[serde(default)]
        pub(super) export_to: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct HttpRoute {
        #[serde(default)]
        pub(super) name: Option<String>,
        #[serde(default, rename = "match")]
        pub(super) matches: Vec<HttpMatch>,
        #[serde(default)]
        pub(super) route: Vec<Destination>,
        #[serde(default)]
        pub(super) redirect: Option<Value>,
        #[serde(default)]
        pub(super) direct_response: Option<Value>,
        #[serde(default)]
        pub(super) delegate: Option<Value>,
        #[serde(default)]
        pub(super) rewrite: Option<Value>,
        #[serde(default)]
        pub(super) timeout: Option<String>,
        #[serde(default)]
        pub(super) retries: Option<Value>,
        #[serde(default)]
        pub(super) fault: Option<Value>,
        #[serde(default)]
        pub(super) mirror: Option<PlainDestination>,
        #[serde(default)]
        pub(super) mirrors: Vec<Value>,
        #[serde(default)]
        pub(super) mirror_percentage: Option<Value>,
        #[serde(default)]
        pub(super) mirror_percent: Option<Value>,
        #[serde(default)]
        pub(super) cors_policy: Option<Value>,
        #[serde(default)]
        pub(super) headers: Option<Value>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct HttpMatch {
        #[serde(default)]
        pub(super) name: Option<String>,
        #[serde(default)]
        pub(super) uri: Option<StringMatch>,
        #[serde(default)]
        pub(super) scheme: Option<StringMatch>,
        #[serde(default)]
        pub(super) method: Option<StringMatch>,
        #[serde(default)]
        pub(super) authority: Option<StringMatch>,
        #[serde(default)]
        pub(super) headers: BTreeMap<String, StringMatch>,
        #[serde(default)]
        pub(super) port: Option<u16>,
        #[serde(default)]
        pub(super) source_labels: BTreeMap<String, String>,
        #[serde(default)]
        pub(super) gateways: Vec<String>,
        #[serde(default)]
        pub(super) query_params: BTreeMap<String, StringMatch>,
        #[serde(default)]
        pub(super) ignore_uri_case: Option<bool>,
        #[serde(default)]
        pub(super) without_headers: BTreeMap<String, StringMatch>,
        #[serde(default)]
        pub(super) source_namespace: Option<String>,
        #[serde(default)]
        pub(super) stat_prefix: Option<String>,
    }

    /// Exactly one of `exact`, `prefix`, `regex` (an empty match matches anything).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct StringMatch {
        #[serde(default)]
        pub(super) exact: Option<String>,
        #[serde(default)]
        pub(super) prefix: Option<String>,
        #[serde(default)]
        pub(super) regex: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct Destination {
        pub(super) destination: PlainDestination,
        #[serde(default)]
        pub(super) weight: Option<u32>,
        #[serde(default)]
        pub(super) headers: Option<Value>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct PlainDestination {
        #[serde(default)]
        pub(super) host: String,
        #[serde(default)]
        pub(super) subset: Option<String>,
        #[serde(default)]
        pub(super) port: Option<PortSelector>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct PortSelector {
        pub(super) number: u16,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(super) struct L4Route {
        #[serde(default, rename = "match")]
        pub(super) matches: Vec<Value>,
        #[serde(default)]
        pub(super) route: Vec<Destination>,
    }
}
