//! The resource types, as users write them. Only the fields Bowline acts on exist here;
//! `deny_unknown_fields` makes anything else a located error instead of a silent no-op.
//! Bookkeeping metadata a Kubernetes export carries (`uid`, `resourceVersion`,
//! `generation`, `creationTimestamp`) is accepted. The Gateway API routes ([`HttpRoute`],
//! [`GrpcRoute`] and their parts) live in a submodule of their own, re-exported here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod gateway;
mod istio;
mod routes;
pub mod traffic;
mod unenforced;
mod workloads;
pub use gateway::*;
pub use istio::{
    ServiceEntry, ServiceEntryPort, ServiceEntrySpec, WorkloadEntrySpec, WorkloadSelector,
};
pub use routes::*;
pub use traffic::{DestinationRule, VirtualService};
pub use unenforced::{ContainerExtras, PodSpecExtras};
pub use workloads::*;

/// Labels and annotations.
pub type Labels = BTreeMap<String, String>;

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace (`default` when omitted on a namespaced kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Labels,
    /// Kubernetes uid (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Creation time (RFC 3339); the oldest PeerAuthentication at a level wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// What made it (the lab's controllers set these on the pods they make).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// The namespace, `default` when omitted.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// `Namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    /// Metadata (labels enrol it: `istio.io/dataplane-mode=ambient`).
    pub metadata: ObjectMeta,
}

/// `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: NodeSpec,
}

/// `Node.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Pod addresses of this node (the lab allocates from it).
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
}

/// `ServiceAccount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    /// Metadata.
    pub metadata: ObjectMeta,
}

/// `Pod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: PodSpec,
    /// Status: the address (set by the lab or the cluster).
    #[serde(default)]
    pub status: PodStatus,
}

/// `Pod.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its service account (`default` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Host-network pods are never captured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Its processes.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Fields users' pod specs carry that have no effect in the lab, read as written
    /// (each named in one note on the object, [`PodSpec::without_effect`]).
    #[serde(flatten)]
    pub unenforced: Box<PodSpecExtras>,
}

impl PodSpec {
    /// The service account, `default` when omitted.
    pub fn service_account(&self) -> &str {
        self.service_account_name.as_deref().unwrap_or("default")
    }
}

/// A container: in the lab, a process run inside the pod's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image (informational in the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Program and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// More arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Named ports (a service's named `targetPort` resolves against these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Fields read and not acted on in the lab.
    #[serde(flatten)]
    pub unenforced: ContainerExtras,
}

/// An environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A container port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port.
    pub container_port: u16,
    /// `TCP` (default), `UDP`, `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `Pod.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    /// Primary address.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// All addresses.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// One of `status.podIPs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// `Service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ServiceSpec,
    /// What a cluster wrote back (`kubectl get -o yaml`): read and not kept.
    #[serde(default, skip_serializing)]
    pub status: Option<Ignored>,
}

/// A part of an object that is read and not kept (a `status` a cluster wrote).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Ignored)
    }
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Pods backing it (an empty selector selects none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: Labels,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `ClusterIP` (default); `ExternalName`, `NodePort`, `LoadBalancer` are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The VIP (`None` for headless); the lab allocates one when omitted.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// All VIPs.
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    /// `SingleStack`, `PreferDualStack`, `RequireDualStack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
    /// `IPv4`, `IPv6`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    /// `None` (default) or `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// `clientIP.timeoutSeconds` for `ClientIP` affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<serde_json::Value>,
    /// `Cluster` or `Local` (external traffic: NodePort and LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
    /// `Cluster` or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    /// Whether not-ready pods are endpoints too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
    /// LoadBalancer settings a cloud reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    /// Where a cluster allocates node ports for LoadBalancer services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<bool>,
}

/// A service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The service port.
    pub port: u16,
    /// The pod port: a number or a container port name (defaults to `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// `TCP` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `http`, `http2`, `grpc`, `tcp`, `tls`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The node port of a NodePort or LoadBalancer service (no effect in the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// A port number or name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(u16),
    /// A name.
    String(String),
}

/// A workload selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Labels a pod must carry.
    #[serde(default)]
    pub match_labels: Labels,
}

/// Istio `AuthorizationPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Metadata (`istio.io/dry-run` annotation).
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Which pods (none: the namespace, or the mesh in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// What the policy is attached to through a waypoint (a Service, the waypoint's
    /// Gateway, or GatewayClass `istio-waypoint` mesh-wide) — enforced by a waypoint, not
    /// by ztunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<TargetRef>,
    /// `ALLOW` (default) or `DENY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Rules (OR-ed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AuthorizationRule>>,
}

/// A policy's `targetRefs` entry (Istio's `PolicyTargetReference`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// API group: `""` (core) for a Service, `gateway.networking.k8s.io` for a Gateway or
    /// GatewayClass.
    #[serde(default)]
    pub group: String,
    /// `Service`, `Gateway` or `GatewayClass`.
    pub kind: String,
    /// The target's name.
    pub name: String,
    /// The target's namespace: the policy's own (the only one allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The Gateway API group.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// A rule: `from`, `to` and `when` are AND-ed; entries of each are OR-ed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    /// Operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<To>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `from[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    /// The source.
    #[serde(default)]
    pub source: Source,
}

/// `from[].source`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `to[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// The operation.
    #[serde(default)]
    pub operation: Operation,
}

/// `to[].operation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// `when[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute (`source.ip`, `request.headers[x]`…).
    pub key: String,
    /// Values, any of which matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// Istio `PeerAuthentication`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

/// `PeerAuthentication.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Which pods (none: the namespace, or the mesh in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// The mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Per-port modes (workload-selector policies only), keyed by port number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<IntOrString, Mtls>,
}

/// `mtls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A kind stored for the waypoint, kept as written (`spec` unvalidated for now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Opaque {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec, as written.
    #[serde(default)]
    pub spec: serde_json::Value,
}

/// The kinds Bowline reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Kind {
    Namespace,
    Node,
    ServiceAccount,
    Secret,
    Pod,
    Service,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    HTTPRoute,
    GRPCRoute,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
}

impl Kind {
    /// The accepted `apiVersion`s of this kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace
            | Kind::Node
            | Kind::ServiceAccount
            | Kind::Secret
            | Kind::Pod
            | Kind::Service => &["v1"],
            Kind::Gateway | Kind::HTTPRoute => &[
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1",
            ],
            // GRPCRoute went from v1alpha2 straight to v1; it never had a v1beta1.
            Kind::GRPCRoute => &["gateway.networking.k8s.io/v1"],
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                &["security.istio.io/v1", "security.istio.io/v1beta1"]
            }
            Kind::VirtualService | Kind::DestinationRule | Kind::ServiceEntry => &[
                "networking.istio.io/v1",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3",
            ],
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::DaemonSet => {
                &["apps/v1"]
            }
            Kind::Job => &["batch/v1"],
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Every kind, for messages.
    pub const ALL: [Kind; 20] = [
        Kind::Namespace,
        Kind::Node,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::Pod,
        Kind::Service,
        Kind::Gateway,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
    ];

    /// Whether this kind is a workload controller (its objects make pods).
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::DaemonSet | Kind::Job
        )
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.to_string() == name)
    }
}

impl IntOrString {
    /// The port number, if this is one (a number, or a string of digits), 1-65535.
    pub fn port(&self) -> Option<u16> {
        match self {
            IntOrString::Int(n) => Some(*n).filter(|n| *n != 0),
            IntOrString::String(s) => s.parse::<u16>().ok().filter(|n| *n != 0),
        }
    }
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One resource.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Resource {
    Namespace(Namespace),
    Node(Node),
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    Pod(Pod),
    Service(Service),
    Gateway(Gateway),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    ServiceEntry(ServiceEntry),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    /// A kind kept for the waypoint.
    Opaque(Kind, Opaque),
    /// A workload controller (the lab makes its pods).
    Workload(Kind, Box<Workload>),
}

/// Identifies a resource: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace, empty for `Namespace` and `Node`.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Resource {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Node(_) => Kind::Node,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Secret(_) => Kind::Secret,
            Resource::Pod(_) => Kind::Pod,
            Resource::Service(_) => Kind::Service,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::HttpRoute(_) => Kind::HTTPRoute,
            Resource::GrpcRoute(_) => Kind::GRPCRoute,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Opaque(kind, _) | Resource::Workload(kind, _) => *kind,
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Namespace(r) => &r.metadata,
            Resource::Node(r) => &r.metadata,
            Resource::ServiceAccount(r) => &r.metadata,
            Resource::Secret(r) => &r.metadata,
            Resource::Pod(r) => &r.metadata,
            Resource::Service(r) => &r.metadata,
            Resource::Gateway(r) => &r.metadata,
            Resource::AuthorizationPolicy(r) => &r.metadata,
            Resource::PeerAuthentication(r) => &r.metadata,
            Resource::HttpRoute(r) => &r.metadata,
            Resource::GrpcRoute(r) => &r.metadata,
            Resource::ServiceEntry(r) => &r.metadata,
            Resource::VirtualService(r) => &r.metadata,
            Resource::DestinationRule(r) => &r.metadata,
            Resource::Opaque(_, r) => &r.metadata,
            Resource::Workload(_, r) => &r.metadata,
        }
    }

    /// Its key.
    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let meta = self.metadata();
        ObjectKey {
            kind,
            namespace: if kind.namespaced() {
                meta.namespace().to_owned()
            } else {
                String::new()
            },
            name: meta.name.clone(),
        }
    }

    /// This resource written over `stored` (the same object) by a writer that does not
    /// own the object's status: what the cluster keeps up for it is kept from `stored`, as
    /// the Kubernetes API server keeps it on an update — a Pod's `status` (always) and its
    /// `spec.nodeName` (when this one has none), a Service's `clusterIP`/`clusterIPs`
    /// (when this one has none), a Node's `spec.podCIDR` (when this one has none).
    pub fn keeping_cluster_fields_of(mut self, stored: &Resource) -> Resource {
        match (&mut self, stored) {
            (Resource::Pod(new), Resource::Pod(old)) => {
                new.status = old.status.clone();
                if new.spec.node_name.is_none() {
                    new.spec.node_name = old.spec.node_name.clone();
                }
            }
            (Resource::Service(new), Resource::Service(old))
                if new.spec.cluster_ip.is_none() && new.spec.cluster_ips.is_empty() =>
            {
                new.spec.cluster_ip = old.spec.cluster_ip.clone();
                new.spec.cluster_ips = old.spec.cluster_ips.clone();
            }
            (Resource::Node(new), Resource::Node(old)) if new.spec.pod_cidr.is_none() => {
                new.spec.pod_cidr = old.spec.pod_cidr.clone();
            }
            _ => {}
        }
        self
    }

    /// The resource as JSON (for dry runs and dumps).
    pub fn to_json(&self) -> serde_json::Value {
        let kind = self.kind();
        let body = match self {
            Resource::Namespace(r) => serde_json::to_value(r),
            Resource::Node(r) => serde_json::to_value(r),
            Resource::ServiceAccount(r) => serde_json::to_value(r),
            Resource::Secret(r) => serde_json::to_value(r),
            Resource::Pod(r) => serde_json::to_value(r),
            Resource::Service(r) => serde_json::to_value(r),
            Resource::Gateway(r) => serde_json::to_value(r),
            Resource::AuthorizationPolicy(r) => serde_json::to_value(r),
            Resource::PeerAuthentication(r) => serde_json::to_value(r),
            Resource::HttpRoute(r) => serde_json::to_value(r),
            Resource::GrpcRoute(r) => serde_json::to_value(r),
            Resource::ServiceEntry(r) => serde_json::to_value(r),
            Resource::VirtualService(r) => serde_json::to_value(r),
            Resource::DestinationRule(r) => serde_json::to_value(r),
            Resource::Opaque(_, r) => serde_json::to_value(r),
            Resource::Workload(_, r) => serde_json::to_value(r),
        };
        let mut value = body.unwrap_or(serde_json::Value::Null);
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "apiVersion".into(),
                kind.api_versions().first().copied().unwrap_or("v1").into(),
            );
            object.insert("kind".into(), kind.to_string().into());
        }
        value
    }
}

/// Label enrolling a namespace or pod in the ambient mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Label binding a namespace, service or pod to a waypoint.
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// The waypoint's namespace when not the object's own.
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// What traffic a waypoint handles: `service` (default), `workload`, `all`, `none`.
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// The Gateway class of waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The Gateway class of ingress gateways.
pub const INGRESS_CLASS: &str = "istio";
/// Label or annotation (on a Service or its Namespace) sending ingress traffic for the
/// service through its waypoint.
pub const INGRESS_USE_WAYPOINT: &str = "istio.io/ingress-use-waypoint";
/// Label on a waypoint's pods (and its Service): the Gateway they belong to.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label on the objects the waypoint controller made for a Gateway.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// Value of [`MANAGED_LABEL`] on a waypoint's objects.
pub const MANAGED_BY_MESH: &str = "istio.io-mesh-controller";
/// Annotation making an AuthorizationPolicy report-only.
pub const DRY_RUN: &str = "istio.io/dry-run";
