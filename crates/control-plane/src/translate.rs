//! Translation: the user's resources into what every ztunnel needs — `Workload`s,
//! `Service`s and `Authorization`s of Istio's workload API — as pure functions of one
//! config snapshot (no I/O), so any source (files, `apply`, a Kubernetes watcher) feeds
//! the same code.
//!
//! Rules follow istiod's ambient translation: every pod with an address becomes a
//! `Workload` with uid `<cluster>//Pod/<ns>/<name>` — an enrolled one carries the
//! `bowline.io/capture` extension (its node agent's cue to capture it) and is HBONE once
//! that agent reported the capture ([`Captured`]), NONE before and when not enrolled;
//! services get hostnames `<name>.<ns>.svc.<domain>` and their VIPs; waypoints bind by
//! `istio.io/use-waypoint` on the pod or service first, then its namespace, honouring the
//! Gateway's `istio.io/waypoint-for`; AuthorizationPolicies compile to L4 clauses (ALLOW
//! rules needing HTTP attributes are omitted, DENY rules drop their HTTP conditions and so
//! match more); PeerAuthentication STRICT becomes a DENY-without-identity policy listed on
//! the workloads it covers; policies attached through a waypoint (`targetRefs`) compile to
//! Bowline's own `bowline.l7.v1.Authorization` for waypoints, with L4 stand-ins on the
//! targeted pods (see [`authz`]). Whatever could only be partly enforced is reported in
//! [`Compiled::status`]. What a change takes away from running pods (capture, policy) is
//! found by comparing two compiled versions ([`warnings`]).

mod authz;
mod capture;
mod delegate;
mod destination_rule;
mod ingress;
mod l7;
mod peer;
mod routes;
mod service_entry;
mod virtual_service;
mod warnings;
mod waypoint;

pub use capture::{Captured, pod_of_uid};
pub use warnings::warnings;
pub use waypoint::requested_with as waypoint_requested;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use config::resources::{self as k8s, IntOrString, Labels};
use config::{ObjectKey, Resource};
use xds::workload as wire;

/// Settings of the mesh the translation needs.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// Cluster id (`Kubernetes`), the first part of workload uids.
    pub cluster_id: String,
    /// Trust domain of identities.
    pub trust_domain: String,
    /// Cluster domain of service hostnames.
    pub cluster_domain: String,
    /// Root namespace: policies there without a selector apply mesh-wide.
    pub root_namespace: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            cluster_id: "Kubernetes".into(),
            trust_domain: "cluster.local".into(),
            cluster_domain: config::CLUSTER_DOMAIN.into(),
            root_namespace: config::ROOT_NAMESPACE.into(),
        }
    }
}

/// The compiled mesh: resources by xDS name, and what could not be fully applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    /// `istio.workload.Address` by name (workload uid, or `namespace/hostname`). Shared,
    /// so a partial recompile keeps the untouched ones without copying them.
    pub addresses: BTreeMap<String, Arc<wire::Address>>,
    /// `istio.security.Authorization` by `namespace/name`.
    pub authorizations: BTreeMap<String, Arc<xds::security::Authorization>>,
    /// `bowline.l7.v1.Authorization` (policies for waypoints) by `namespace/name`.
    pub l7_authorizations: BTreeMap<String, Arc<xds::l7::Authorization>>,
    /// `bowline.l7.v1.RouteTable` (HTTP routes for waypoints) by `namespace/service`.
    pub route_tables: BTreeMap<String, Arc<xds::l7::RouteTable>>,
    /// Messages about resources applied partly or not at all, by object.
    pub status: BTreeMap<String, Vec<String>>,
    /// HTTPRoute and GRPCRoute status conditions (`Accepted`, `ResolvedRefs`), by object
    /// (`Kind ns/name`).
    pub conditions: BTreeMap<String, Vec<Condition>>,
}

/// One status condition, as the Gateway API writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, ….
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// Why, in one CamelCase word (`NoMatchingParent`, `BackendNotFound`, …).
    pub reason: &'static str,
}

impl Condition {
    /// A condition that holds (`True`) or not.
    pub fn new(kind: &'static str, holds: bool, reason: &'static str) -> Self {
        Self {
            kind,
            status: if holds { "True" } else { "False" },
            reason,
        }
    }
}

impl Compiled {
    fn report(&mut self, object: String, message: String) {
        self.status.entry(object).or_default().push(message);
    }

    /// Adds a compiled policy under its key `namespace/name`.
    fn insert_authorization(&mut self, policy: xds::security::Authorization) {
        self.authorizations.insert(
            format!("{}/{}", policy.namespace, policy.name),
            Arc::new(policy),
        );
    }

    /// Adds a compiled waypoint policy under its key `namespace/name`.
    fn insert_l7_authorization(&mut self, policy: xds::l7::Authorization) {
        self.l7_authorizations.insert(
            format!("{}/{}", policy.namespace, policy.name),
            Arc::new(policy),
        );
    }

    /// The workload with this uid.
    pub fn workload(&self, uid: &str) -> Option<&wire::Workload> {
        match self.addresses.get(uid)?.as_ref().r#type.as_ref()? {
            wire::address::Type::Workload(w) => Some(w),
            wire::address::Type::Service(_) => None,
        }
    }

    /// The service with this `namespace/hostname`.
    pub fn service(&self, key: &str) -> Option<&wire::Service> {
        match self.addresses.get(key)?.as_ref().r#type.as_ref()? {
            wire::address::Type::Service(s) => Some(s),
            wire::address::Type::Workload(_) => None,
        }
    }
}

/// Something that holds a user resource (the store keeps more beside it).
pub trait AsResource {
    /// The resource.
    fn resource(&self) -> &Resource;
}

impl AsResource for Resource {
    fn resource(&self) -> &Resource {
        self
    }
}

/// The uid of pod `namespace/name` in cluster `cluster_id`.
pub fn pod_uid(cluster_id: &str, namespace: &str, name: &str) -> String {
    format!("{cluster_id}//Pod/{namespace}/{name}")
}

/// The resources of one snapshot, by kind, for lookups.
pub(crate) struct Index<'a> {
    pub(crate) settings: &'a MeshSettings,
    pub(crate) namespaces: BTreeMap<&'a str, &'a k8s::Namespace>,
    pub(crate) pods: Vec<&'a k8s::Pod>,
    pub(crate) services: Vec<&'a k8s::Service>,
    pub(crate) gateways: BTreeMap<(&'a str, &'a str), &'a k8s::Gateway>,
    /// Secrets (ingress gateways' certificates).
    pub(crate) secrets: BTreeMap<(&'a str, &'a str), &'a k8s::Secret>,
    pub(crate) policies: Vec<&'a k8s::AuthorizationPolicy>,
    pub(crate) http_routes: Vec<&'a k8s::HttpRoute>,
    pub(crate) grpc_routes: Vec<&'a k8s::GrpcRoute>,
    pub(crate) peer_authentications: Vec<&'a k8s::PeerAuthentication>,
    /// ServiceEntries.
    pub(crate) service_entries: Vec<&'a k8s::ServiceEntry>,
    /// VirtualServices.
    pub(crate) virtual_services: Vec<&'a k8s::VirtualService>,
    /// DestinationRules.
    pub(crate) destination_rules: Vec<&'a k8s::DestinationRule>,
    /// Kinds stored and not enforced yet (RequestAuthentication): only their notes.
    pub(crate) unenforced: Vec<(config::Kind, &'a k8s::Opaque)>,
    /// Workload controllers (only their notes: the mesh sees the pods they make).
    pub(crate) workloads: Vec<(config::Kind, &'a k8s::Workload)>,
    /// Services by namespace (pods are only selected by services of their namespace).
    pub(crate) services_by_namespace: BTreeMap<&'a str, Vec<&'a k8s::Service>>,
    /// Selector-scoped policies by namespace.
    pub(crate) selector_policies: BTreeMap<&'a str, Vec<&'a k8s::AuthorizationPolicy>>,
}

impl<'a> Index<'a> {
    fn new<R: AsResource>(objects: &'a BTreeMap<ObjectKey, R>, settings: &'a MeshSettings) -> Self {
        let mut index = Index {
            settings,
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            services: Vec::new(),
            gateways: BTreeMap::new(),
            secrets: BTreeMap::new(),
            policies: Vec::new(),
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
            peer_authentications: Vec::new(),
            workloads: Vec::new(),
            service_entries: Vec::new(),
            unenforced: Vec::new(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            services_by_namespace: BTreeMap::new(),
            selector_policies: BTreeMap::new(),
        };
        for resource in objects.values().map(AsResource::resource) {
            match resource {
                Resource::Namespace(ns) => {
                    index.namespaces.insert(&ns.metadata.name, ns);
                }
                Resource::Pod(pod) => index.pods.push(pod),
                Resource::Service(svc) => {
                    index.services.push(svc);
                    index
                        .services_by_namespace
                        .entry(svc.metadata.namespace())
                        .or_default()
                        .push(svc);
                }
                Resource::Gateway(gw) => {
                    index
                        .gateways
                        .insert((gw.metadata.namespace(), &gw.metadata.name), gw);
                }
                Resource::AuthorizationPolicy(p) => {
                    index.policies.push(p);
                    if p.spec.selector.is_some() {
                        index
                            .selector_policies
                            .entry(p.metadata.namespace())
                            .or_default()
                            .push(p);
                    }
                }
                Resource::PeerAuthentication(p) => index.peer_authentications.push(p),
                Resource::HttpRoute(r) => index.http_routes.push(r),
                Resource::GrpcRoute(r) => index.grpc_routes.push(r),
                Resource::Workload(kind, w) => index.workloads.push((*kind, w)),
                Resource::ServiceEntry(e) => index.service_entries.push(e),
                Resource::Opaque(kind, o) => index.unenforced.push((*kind, o)),
                Resource::VirtualService(v) => index.virtual_services.push(v),
                Resource::DestinationRule(r) => index.destination_rules.push(r),
                Resource::Secret(secret) => {
                    index
                        .secrets
                        .insert((secret.metadata.namespace(), &secret.metadata.name), secret);
                }
                Resource::Node(_) | Resource::ServiceAccount(_) => {}
            }
        }
        index
    }

    pub(crate) fn namespace_labels(&self, namespace: &str) -> Option<&'a Labels> {
        self.namespaces.get(namespace).map(|ns| &ns.metadata.labels)
    }

    pub(crate) fn hostname(&self, name: &str, namespace: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.settings.cluster_domain)
    }

    /// Service `namespace/name`.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&'a k8s::Service> {
        self.services_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .find(|s| s.metadata.name == name)
            .copied()
    }

    pub(crate) fn service_exists(&self, namespace: &str, name: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.metadata.namespace() == namespace && s.metadata.name == name)
    }
}

/// Whether a pod is enrolled in the ambient mesh: `istio.io/dataplane-mode=ambient` on the
/// pod or its namespace, not opted out with `none` on the pod, not host-network.
pub fn enrolled(pod: &k8s::Pod, namespace_labels: Option<&Labels>) -> bool {
    if pod.spec.host_network {
        return false;
    }
    match pod
        .metadata
        .labels
        .get(config::resources::DATAPLANE_MODE)
        .map(String::as_str)
    {
        Some("none") => false,
        Some("ambient") => true,
        _ => namespace_labels
            .and_then(|l| l.get(config::resources::DATAPLANE_MODE))
            .is_some_and(|m| m == "ambient"),
    }
}

/// The addresses of a pod.
pub fn pod_addresses(pod: &k8s::Pod) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = pod
        .status
        .pod_ips
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if out.is_empty()
        && let Some(ip) = pod.status.pod_ip.as_ref().and_then(|ip| ip.parse().ok())
    {
        out.push(ip);
    }
    out
}

/// Compiles a snapshot, with the pods the node agents reported captured.
pub fn translate<R: AsResource>(
    objects: &BTreeMap<ObjectKey, R>,
    settings: &MeshSettings,
    captured: &Captured,
) -> Compiled {
    compile(objects, settings, captured, None)
}

/// Which namespaces a change of these objects can affect: `None` when it can affect any
/// (gateways, peer authentication, mesh-wide policies, a waypoint's service), else the
/// set (empty when nothing that is translated changed).
pub fn affected_namespaces<'a, R: AsResource>(
    changed: impl IntoIterator<Item = &'a ObjectKey>,
    objects: &BTreeMap<ObjectKey, R>,
    settings: &MeshSettings,
) -> Option<std::collections::BTreeSet<String>> {
    use config::Kind;
    let mut namespaces = std::collections::BTreeSet::new();
    for key in changed {
        match key.kind {
            // Routes can attach to a waypoint (every service bound to it) and name
            // backends anywhere.
            Kind::Gateway | Kind::PeerAuthentication | Kind::HTTPRoute | Kind::GRPCRoute => {
                return None;
            }
            Kind::AuthorizationPolicy if key.namespace == settings.root_namespace => return None,
            // A policy attached through a waypoint can target pods in other namespaces
            // (those bound to its Gateway).
            Kind::AuthorizationPolicy
                if objects.get(key).is_some_and(|o| {
                    matches!(o.resource(), Resource::AuthorizationPolicy(p)
                        if p.spec.target_refs.iter().any(|t| t.kind != "Service"))
                }) =>
            {
                return None;
            }
            Kind::Service => {
                let is_waypoint = objects.contains_key(&ObjectKey {
                    kind: Kind::Gateway,
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                });
                if is_waypoint {
                    return None;
                }
                namespaces.insert(key.namespace.clone());
            }
            Kind::Namespace => {
                namespaces.insert(key.name.clone());
            }
            // A waypoint's pod coming or going changes how the policies attached
            // through it are enforced, wherever the pods it serves are.
            Kind::Pod
                if objects
                    .keys()
                    .any(|k| k.kind == Kind::Gateway && k.namespace == key.namespace) =>
            {
                return None;
            }
            Kind::Pod
            | Kind::AuthorizationPolicy
            | Kind::Deployment
            | Kind::ReplicaSet
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::Job => {
                namespaces.insert(key.namespace.clone());
            }
            // Only their notes change.
            Kind::RequestAuthentication => {
                namespaces.insert(key.namespace.clone());
            }
            // Their hosts and destinations can be in any namespace, and subsets are
            // looked up from other namespaces' routes.
            Kind::VirtualService | Kind::DestinationRule => return None,
            Kind::Node | Kind::ServiceAccount => {}
            // Only an ingress gateway's listeners read them (noted where refs miss).
            Kind::Secret => return None,
            // Its hosts are visible in every namespace, and its VIPs are allocated
            // among all entries: everything is compiled again.
            Kind::ServiceEntry => return None,
        }
    }
    // An ingress gateway's tables hold routes (and their backends' services, subsets and
    // waypoint labels) from any namespace: whatever changed, they are compiled again.
    if !namespaces.is_empty() {
        // Keys sort by kind first: only the Gateways are visited.
        let first = ObjectKey {
            kind: Kind::Gateway,
            namespace: String::new(),
            name: String::new(),
        };
        let gateways = objects
            .range(first..)
            .take_while(|(k, _)| k.kind == Kind::Gateway);
        for (_, object) in gateways {
            if let Resource::Gateway(g) = object.resource()
                && g.spec.gateway_class_name == k8s::INGRESS_CLASS
            {
                namespaces.insert(g.metadata.namespace().to_owned());
            }
        }
    }
    Some(namespaces)
}

/// Recompiles only the resources of `namespaces`, keeping `previous` for the others.
/// Equal to [`translate`] when `namespaces` came from [`affected_namespaces`].
pub fn translate_namespaces<R: AsResource>(
    objects: &BTreeMap<ObjectKey, R>,
    settings: &MeshSettings,
    captured: &Captured,
    previous: &Compiled,
    namespaces: &std::collections::BTreeSet<String>,
) -> Compiled {
    let mut out = compile(objects, settings, captured, Some(namespaces));
    let keep = |name: &str| !namespaces.contains(resource_namespace(name));
    for (name, address) in &previous.addresses {
        if keep(name) {
            out.addresses
                .entry(name.clone())
                .or_insert_with(|| address.clone());
        }
    }
    for (name, policy) in &previous.authorizations {
        if keep(name) {
            out.authorizations
                .entry(name.clone())
                .or_insert_with(|| policy.clone());
        }
    }
    for (name, policy) in &previous.l7_authorizations {
        if keep(name) {
            out.l7_authorizations
                .entry(name.clone())
                .or_insert_with(|| policy.clone());
        }
    }
    for (name, table) in &previous.route_tables {
        if keep(name) {
            out.route_tables
                .entry(name.clone())
                .or_insert_with(|| table.clone());
        }
    }
    let untouched = |object: &str| {
        let namespace = object
            .split_once(' ')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map_or("", |(ns, _)| ns);
        !namespaces.contains(namespace)
    };
    for (object, messages) in &previous.status {
        if untouched(object) {
            out.status
                .entry(object.clone())
                .or_insert_with(|| messages.clone());
        }
    }
    for (object, conditions) in &previous.conditions {
        if untouched(object) {
            out.conditions
                .entry(object.clone())
                .or_insert_with(|| conditions.clone());
        }
    }
    out
}

/// The namespace in an xDS resource name: `<cluster>//Pod/<ns>/<name>` or `<ns>/<rest>`.
fn resource_namespace(name: &str) -> &str {
    let uid = name
        .split_once("//Pod/")
        .or_else(|| name.split_once("/networking.istio.io/ServiceEntry/"));
    match uid {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(ns, _)| ns),
        None => name.split_once('/').map_or(name, |(ns, _)| ns),
    }
}

fn compile<R: AsResource>(
    objects: &BTreeMap<ObjectKey, R>,
    settings: &MeshSettings,
    captured: &Captured,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Compiled {
    let index = Index::new(objects, settings);
    let wanted = |namespace: &str| only.is_none_or(|set| set.contains(namespace));
    let mut out = Compiled::default();
    for service in &index.services {
        if !wanted(service.metadata.namespace()) {
            continue;
        }
        let compiled = service_resource(&index, service, &mut out);
        let key = format!("{}/{}", compiled.namespace, compiled.hostname);
        out.addresses.insert(
            key,
            Arc::new(wire::Address {
                r#type: Some(wire::address::Type::Service(compiled)),
            }),
        );
    }
    // Every entry, whichever namespaces are compiled: cheap, and their VIPs are
    // allocated among all of them.
    let entries = service_entry::translate(&index, &mut out);
    for service in entries.services {
        let key = format!("{}/{}", service.namespace, service.hostname);
        out.addresses.insert(
            key,
            Arc::new(wire::Address {
                r#type: Some(wire::address::Type::Service(service)),
            }),
        );
    }
    for workload in entries.workloads {
        out.addresses.insert(
            workload.uid.clone(),
            Arc::new(wire::Address {
                r#type: Some(wire::address::Type::Workload(workload)),
            }),
        );
    }
    let peer = peer::PeerPolicies::new(&index, &mut out);
    authz::policies(&index, &mut out, &wanted);
    routes::tables(&index, &mut out, &wanted);
    virtual_service::tables(&index, &mut out, &wanted);
    for (kind, object) in &index.unenforced {
        if !wanted(object.metadata.namespace()) {
            continue;
        }
        let why = "accepted, not enforced yet: JWT validation is not implemented, so no request is authenticated by it (AuthorizationPolicy rules on requestPrincipals are handled as their own notes say)";
        out.report(
            format!(
                "{kind} {}/{}",
                object.metadata.namespace(),
                object.metadata.name
            ),
            why.to_owned(),
        );
    }
    for gateway in index.gateways.values() {
        let unenforced = gateway.spec.without_effect();
        if wanted(gateway.metadata.namespace()) && !unenforced.is_empty() {
            out.report(
                format!(
                    "Gateway {}/{}",
                    gateway.metadata.namespace(),
                    gateway.metadata.name
                ),
                format!("accepted without effect: {}", unenforced.join(", ")),
            );
        }
    }
    for (kind, workload) in &index.workloads {
        let unenforced = workload.spec.without_effect();
        if wanted(workload.metadata.namespace()) && !unenforced.is_empty() {
            out.report(
                format!(
                    "{kind} {}/{}",
                    workload.metadata.namespace(),
                    workload.metadata.name
                ),
                format!(
                    "accepted without effect in the lab: {}",
                    unenforced.join(", ")
                ),
            );
        }
    }
    for pod in &index.pods {
        if !wanted(pod.metadata.namespace()) {
            continue;
        }
        let unenforced = pod.spec.without_effect();
        // A controller's pods: its own note names what of their template has no effect.
        let made = pod
            .metadata
            .owner_references
            .iter()
            .any(|o| o.controller == Some(true));
        if !unenforced.is_empty() && !made {
            out.report(
                format!("Pod {}/{}", pod.metadata.namespace(), pod.metadata.name),
                format!(
                    "accepted without effect in the lab: {}",
                    unenforced.join(", ")
                ),
            );
        }
        if let Some(workload) = workload_resource(&index, pod, &peer, captured, &mut out) {
            out.addresses.insert(
                workload.uid.clone(),
                Arc::new(wire::Address {
                    r#type: Some(wire::address::Type::Workload(workload)),
                }),
            );
        }
    }
    out
}

fn service_resource(
    index: &Index<'_>,
    service: &k8s::Service,
    out: &mut Compiled,
) -> wire::Service {
    let namespace = service.metadata.namespace();
    let spec = &service.spec;
    for phrase in spec.without_effect() {
        out.report(
            format!("Service {namespace}/{}", service.metadata.name),
            format!("accepted without effect: {phrase}"),
        );
    }
    let mut vips: Vec<&String> = spec.cluster_ips.iter().collect();
    if vips.is_empty()
        && let Some(ip) = &spec.cluster_ip
    {
        vips.push(ip);
    }
    let addresses = vips
        .into_iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| wire::NetworkAddress {
            network: String::new(),
            address: xds::ip_to_bytes(ip).into(),
            length: None,
        })
        .collect();
    let ports = spec
        .ports
        .iter()
        .map(|p| wire::Port {
            service_port: u32::from(p.port),
            target_port: match &p.target_port {
                None => u32::from(p.port),
                Some(IntOrString::Int(n)) => u32::from(*n),
                // Resolved per workload, from its container ports.
                Some(IntOrString::String(_)) => 0,
            },
            app_protocol: port_protocol(p) as i32,
        })
        .collect();
    let waypoint = waypoint::for_service(index, service, out);
    wire::Service {
        name: service.metadata.name.clone(),
        namespace: namespace.to_owned(),
        hostname: index.hostname(&service.metadata.name, namespace),
        addresses,
        ports,
        waypoint,
        ..Default::default()
    }
}

/// What a service port speaks: its `appProtocol`, else the prefix of its name (`http`,
/// `http-web`, `grpc-api`, `tcp-db`…), as Istio reads them.
fn port_protocol(port: &k8s::ServicePort) -> wire::AppProtocol {
    match app_protocol(port.app_protocol.as_deref()) {
        wire::AppProtocol::Unknown => {
            let prefix = port
                .name
                .as_deref()
                .map(|n| n.split('-').next().unwrap_or(n));
            app_protocol(prefix)
        }
        known => known,
    }
}

fn app_protocol(name: Option<&str>) -> wire::AppProtocol {
    match name.map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "http1" | "http/1.1") => wire::AppProtocol::Http11,
        Some("http2" | "h2c" | "kubernetes.io/h2c") => wire::AppProtocol::Http2,
        Some("grpc") => wire::AppProtocol::Grpc,
        Some("tcp") => wire::AppProtocol::Tcp,
        Some("tls" | "https") => wire::AppProtocol::Tls,
        _ => wire::AppProtocol::Unknown,
    }
}

fn workload_resource(
    index: &Index<'_>,
    pod: &k8s::Pod,
    peer: &peer::PeerPolicies,
    captured: &Captured,
    out: &mut Compiled,
) -> Option<wire::Workload> {
    if matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let addresses = pod_addresses(pod);
    if addresses.is_empty() {
        return None;
    }
    let meta = &pod.metadata;
    let namespace = meta.namespace();
    let labels = &meta.labels;
    let enrolled = enrolled(pod, index.namespace_labels(namespace));
    let label = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let (owner_name, workload_type) = owner_workload(meta);
    let workload_name = label(&["service.istio.io/workload-name"]).unwrap_or(owner_name);
    let canonical_name = label(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload_name.clone());
    let canonical_revision = label(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());

    let mut services = std::collections::HashMap::new();
    for service in index
        .services_by_namespace
        .get(namespace)
        .into_iter()
        .flatten()
    {
        let selector = &service.spec.selector;
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let ports = service
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                let target = match &p.target_port {
                    None => p.port,
                    Some(IntOrString::Int(n)) => *n,
                    Some(IntOrString::String(name)) => named_port(pod, name)?,
                };
                Some(wire::Port {
                    service_port: u32::from(p.port),
                    target_port: u32::from(target),
                    app_protocol: 0,
                })
            })
            .collect();
        services.insert(
            format!(
                "{}/{}",
                namespace,
                index.hostname(&service.metadata.name, namespace)
            ),
            wire::PortList { ports },
        );
    }

    services.extend(service_entry::for_pod(index, pod));
    let mut policies: BTreeSet<String> = authz::selecting(index, pod).collect();
    policies.extend(authz::unenforced_for(index, pod));
    policies.extend(peer.for_pod(index, pod));
    let ready = !matches!(pod.status.phase.as_deref(), Some("Pending"));
    let trust_domain = &index.settings.trust_domain;
    let uid = pod_uid(&index.settings.cluster_id, namespace, &meta.name);
    let node = pod.spec.node_name.clone().unwrap_or_default();
    // HBONE only where a ztunnel really receives the pod's traffic (its agent said so),
    // and for a waypoint, which terminates HBONE itself and is never captured.
    // An ingress gateway's pod dials HBONE itself and is reached as plain TCP.
    let waypoint_pod = crate::waypoints::is_waypoint(pod);
    let enrolled = enrolled && crate::waypoints::gateway_of(pod).is_none();
    let hbone = waypoint_pod || (enrolled && captured.contains(&node, &uid));
    Some(wire::Workload {
        uid,
        name: meta.name.clone(),
        namespace: namespace.to_owned(),
        addresses: addresses
            .into_iter()
            .map(|ip| xds::ip_to_bytes(ip).into())
            .collect(),
        tunnel_protocol: if hbone {
            wire::TunnelProtocol::Hbone
        } else {
            wire::TunnelProtocol::None
        } as i32,
        trust_domain: if trust_domain == "cluster.local" {
            String::new()
        } else {
            trust_domain.clone()
        },
        service_account: pod.spec.service_account().to_owned(),
        waypoint: waypoint::for_pod(index, pod, out),
        node,
        canonical_name,
        canonical_revision,
        workload_type: workload_type as i32,
        workload_name,
        services,
        authorization_policies: policies.into_iter().collect(),
        status: if ready {
            wire::WorkloadStatus::Healthy
        } else {
            wire::WorkloadStatus::Unhealthy
        } as i32,
        cluster_id: index.settings.cluster_id.clone(),
        extensions: if enrolled {
            vec![wire::Extension {
                name: xds::CAPTURE_EXTENSION.to_owned(),
                config: None,
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    })
}

/// The workload a pod belongs to, named as Istio names it from its controller: a
/// Deployment's pods (owned by ReplicaSet `<deployment>-<pod-template-hash>`) are
/// `<deployment>`, a Job's or other controller's pods its name, a bare pod itself.
fn owner_workload(meta: &k8s::ObjectMeta) -> (String, wire::WorkloadType) {
    let Some(owner) = meta
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return (meta.name.clone(), wire::WorkloadType::Pod);
    };
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let deployment = meta
                .labels
                .get("pod-template-hash")
                .and_then(|hash| owner.name.strip_suffix(&format!("-{hash}")));
            (
                deployment.unwrap_or(&owner.name).to_owned(),
                wire::WorkloadType::Deployment,
            )
        }
        "Job" => (owner.name.clone(), wire::WorkloadType::Job),
        "CronJob" => (owner.name.clone(), wire::WorkloadType::Cronjob),
        _ => (owner.name.clone(), wire::WorkloadType::Deployment),
    }
}

/// The first TCP container port of `pod` named `name`.
fn named_port(pod: &k8s::Pod, name: &str) -> Option<u16> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().is_none_or(|pr| pr == "TCP")
        })
        .map(|p| p.container_port)
}

#[cfg(test)]
mod tests;
