//! What ztunnel knows about the mesh: workloads, services and authorization policies.
//!
//! Held as an immutable [`Snapshot`] behind an atomic pointer ([`Store`]); an update
//! builds a whole new snapshot and swaps it in, so readers on the data path never block
//! and never see half an update. Indexes: workload by uid and by IP, service by VIP and by
//! hostname, endpoints by service, policies by scope (global, namespace, selector) so a
//! connection's policy lookup touches only what can apply. Sources (the local file, [`file_source`], or the control
//! plane's xDS, [`xds_client`]) hand in wire resources; [`convert`] validates them into
//! this model with errors that name the resource and field. With xDS, the resources held
//! are also kept on disk ([`snapshot_file`]) so a restart while the control plane is away
//! serves them at once, marked stale.

pub mod convert;
pub mod file_source;
pub mod snapshot_file;
pub mod xds_client;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use identity::SpiffeId;
use policy::{Policy, Scope};
use serde::Serialize;

pub use convert::StateError;

/// How a workload receives mesh traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TunnelProtocol {
    /// Not in the mesh: plain TCP.
    None,
    /// HBONE on port 15008.
    Hbone,
}

/// Where a waypoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum WaypointAddress {
    /// A fixed address.
    Address(SocketAddr),
    /// A service, resolved by hostname when used; `port` is its HBONE port.
    Service {
        /// `namespace/hostname` of the waypoint's service.
        key: String,
        /// HBONE port.
        port: u16,
    },
}

/// What a service port speaks, as its Service says (`appProtocol`, or its name's prefix:
/// `http-…`, `grpc-…`): the waypoint serves HTTP without sniffing, or TCP as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum AppProtocol {
    /// Not said: the first bytes decide.
    #[default]
    Unknown,
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (cleartext).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP.
    Tcp,
    /// TLS (opaque to the mesh).
    Tls,
}

/// A service port and the workload port it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortMapping {
    /// Port clients dial on the VIP.
    pub service_port: u16,
    /// Port the workload listens on (0 = same as the service port).
    pub target_port: u16,
    /// What the port speaks.
    pub protocol: AppProtocol,
}

/// A workload (pod, VM) as ztunnel needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Unique id.
    pub uid: String,
    /// Name (pod name).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Addresses.
    pub addresses: Vec<IpAddr>,
    /// Node it runs on.
    pub node: String,
    /// HBONE or plain.
    pub protocol: TunnelProtocol,
    /// Its SPIFFE identity.
    pub identity: SpiffeId,
    /// The waypoint traffic to it must pass, if any.
    pub waypoint: Option<WaypointAddress>,
    /// A host name resolved when a connection is made, for a workload without addresses
    /// (a ServiceEntry's DNS endpoint): traffic to it goes out in plaintext to what the
    /// name resolves to from ztunnel's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Services it backs: `namespace/hostname` → port mappings.
    pub services: HashMap<String, Vec<PortMapping>>,
    /// Selector-scoped policies that apply (`namespace/name`).
    pub authorization_policies: Vec<String>,
    /// Whether it should receive traffic.
    pub healthy: bool,
    /// `app` label (canonical service).
    pub canonical_name: String,
    /// `version` label (canonical revision).
    pub canonical_revision: String,
    /// Deployment (or other owner) name.
    pub workload_name: String,
    /// Cluster.
    pub cluster_id: String,
}

impl Workload {
    /// The port this workload serves `mapping` of service `service_key` on: its own
    /// mapping for that service, else the service's target port, else the service port.
    pub fn target_port(&self, service_key: &str, mapping: &PortMapping) -> u16 {
        self.services
            .get(service_key)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.service_port == mapping.service_port)
            })
            .map(|p| p.target_port)
            .filter(|p| *p != 0)
            .or(Some(mapping.target_port).filter(|p| *p != 0))
            .unwrap_or(mapping.service_port)
    }
}

/// A service as ztunnel needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `name.namespace.svc.cluster.local`.
    pub hostname: String,
    /// Virtual IPs.
    pub vips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<PortMapping>,
    /// The waypoint traffic to it must pass, if any.
    pub waypoint: Option<WaypointAddress>,
}

impl Service {
    /// `namespace/hostname`, the key workloads use in `services`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

/// One consistent view of the mesh.
#[derive(Debug, Default)]
pub struct Snapshot {
    workloads_by_uid: HashMap<String, Arc<Workload>>,
    workloads_by_ip: HashMap<IpAddr, Arc<Workload>>,
    services_by_vip: HashMap<IpAddr, Arc<Service>>,
    services_by_key: HashMap<String, Arc<Service>>,
    services_by_hostname: HashMap<String, Arc<Service>>,
    endpoints: HashMap<String, Vec<Arc<Workload>>>,
    /// Round-robin position per service key (reset when a new snapshot is swapped in).
    round_robin: HashMap<String, AtomicUsize>,
    policies: HashMap<String, Arc<Policy>>,
    /// Root-namespace policies: apply to every workload.
    global_policies: Vec<Arc<Policy>>,
    /// Namespace-wide policies (no selector), by namespace.
    namespace_policies: HashMap<String, Vec<Arc<Policy>>>,
}

impl Snapshot {
    /// Builds a snapshot and its indexes; refuses conflicts (a uid, workload IP or VIP
    /// claimed twice).
    pub fn build(
        workloads: Vec<Workload>,
        services: Vec<Service>,
        policies: Vec<Policy>,
    ) -> Result<Self, StateError> {
        let mut snap = Self::default();
        for service in services {
            let service = Arc::new(service);
            let key = service.key();
            for vip in &service.vips {
                if let Some(other) = snap.services_by_vip.insert(*vip, service.clone()) {
                    return Err(StateError::conflict(
                        &key,
                        format!("VIP {vip} is also claimed by service {}", other.key()),
                    ));
                }
            }
            snap.services_by_hostname
                .insert(service.hostname.clone(), service.clone());
            if snap.services_by_key.insert(key.clone(), service).is_some() {
                return Err(StateError::conflict(&key, "service defined twice".into()));
            }
        }
        for workload in workloads {
            let workload = Arc::new(workload);
            for ip in &workload.addresses {
                if let Some(other) = snap.workloads_by_ip.insert(*ip, workload.clone()) {
                    return Err(StateError::conflict(
                        &workload.uid,
                        format!("address {ip} is also claimed by workload {}", other.uid),
                    ));
                }
            }
            for service in workload.services.keys() {
                snap.endpoints
                    .entry(service.clone())
                    .or_default()
                    .push(workload.clone());
            }
            let uid = workload.uid.clone();
            if snap
                .workloads_by_uid
                .insert(uid.clone(), workload)
                .is_some()
            {
                return Err(StateError::conflict(
                    &uid,
                    "workload uid defined twice".into(),
                ));
            }
        }
        for list in snap.endpoints.values_mut() {
            // A stable order, so round robin is predictable.
            list.sort_by(|a, b| a.uid.cmp(&b.uid));
        }
        snap.round_robin = snap
            .services_by_key
            .keys()
            .map(|key| (key.clone(), AtomicUsize::new(0)))
            .collect();
        for policy in policies {
            let key = policy.key();
            let policy = Arc::new(policy);
            match policy.scope {
                Scope::Global => snap.global_policies.push(policy.clone()),
                Scope::Namespace => snap
                    .namespace_policies
                    .entry(policy.namespace.clone())
                    .or_default()
                    .push(policy.clone()),
                Scope::WorkloadSelector | Scope::Targets => {}
            }
            if snap.policies.insert(key.clone(), policy).is_some() {
                return Err(StateError::conflict(&key, "policy defined twice".into()));
            }
        }
        Ok(snap)
    }

    /// The workload with `uid`.
    pub fn workload(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads_by_uid.get(uid)
    }

    /// The workload that owns `ip`.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workloads_by_ip.get(&ip)
    }

    /// The service with virtual IP `ip`.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.services_by_vip.get(&ip)
    }

    /// The service with `hostname` (`name.ns.svc.cluster.local`).
    pub fn service_by_hostname(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.services_by_hostname.get(hostname)
    }

    /// The service with key `namespace/hostname`.
    pub fn service(&self, key: &str) -> Option<&Arc<Service>> {
        self.services_by_key.get(key)
    }

    /// Workloads backing the service `namespace/hostname`, in a stable order.
    pub fn endpoints(&self, service_key: &str) -> &[Arc<Workload>] {
        self.endpoints
            .get(service_key)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Policies that apply to `workload`: the global ones, its namespace's, and those
    /// that select it — looked up by index, never a scan of every policy.
    pub fn policies_for<'a>(&'a self, workload: &'a Workload) -> impl Iterator<Item = &'a Policy> {
        let selected = workload
            .authorization_policies
            .iter()
            .filter_map(|key| self.policies.get(key))
            .filter(|p| p.scope == Scope::WorkloadSelector);
        self.global_policies
            .iter()
            .chain(
                self.namespace_policies
                    .get(&workload.namespace)
                    .into_iter()
                    .flatten(),
            )
            .chain(selected)
            .map(AsRef::as_ref)
    }

    /// The next round-robin position of service `key` (each service keeps its own).
    pub fn next_endpoint_index(&self, key: &str) -> usize {
        self.round_robin
            .get(key)
            .map_or(0, |n| n.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether admitting a connection may decide differently under `other`: policies,
    /// or the admission-relevant fields (addresses, identity, waypoint, selected
    /// policies) of a workload in both, or a service's waypoint, changed. Workloads
    /// coming and going do not count: their own connections end with the pod.
    pub fn admission_differs(&self, other: &Snapshot) -> bool {
        if self.policies != other.policies {
            return true;
        }
        let workload_differs = self.workloads_by_uid.iter().any(|(uid, a)| {
            other.workloads_by_uid.get(uid).is_some_and(|b| {
                a.addresses != b.addresses
                    || a.identity != b.identity
                    || a.namespace != b.namespace
                    || a.waypoint != b.waypoint
                    || a.authorization_policies != b.authorization_policies
            })
        });
        workload_differs
            || self.services_by_key.iter().any(|(key, a)| {
                other
                    .services_by_key
                    .get(key)
                    .is_some_and(|b| a.waypoint != b.waypoint || a.vips != b.vips)
            })
    }

    /// Every workload, sorted by uid.
    pub fn workloads(&self) -> Vec<&Arc<Workload>> {
        let mut all: Vec<_> = self.workloads_by_uid.values().collect();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }

    /// Every service, sorted by key.
    pub fn services(&self) -> Vec<&Arc<Service>> {
        let mut all: Vec<_> = self.services_by_key.values().collect();
        all.sort_by_key(|s| s.key());
        all
    }

    /// Every policy, sorted by key.
    pub fn policies(&self) -> Vec<&Arc<Policy>> {
        let mut all: Vec<_> = self.policies.values().collect();
        all.sort_by_key(|p| p.key());
        all
    }
}

/// The current snapshot, swapped atomically on update.
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Counts updates; wakes readiness waiters.
    updates: tokio::sync::watch::Sender<u64>,
    /// Counts updates that may change an admission decision (see
    /// [`Snapshot::admission_differs`]); live connections re-check only on these.
    admission: tokio::sync::watch::Sender<u64>,
    /// The state came from the snapshot file and the control plane has not confirmed it.
    stale: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Whether any configuration has been applied yet.
    pub fn loaded(&self) -> bool {
        *self.updates.borrow() > 0
    }

    /// Whether the state in force was loaded from the snapshot file at start and the
    /// control plane has not answered since (see [`xds_client`]).
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the state as served from disk (`true`) or confirmed by its source (`false`).
    pub fn set_stale(&self, stale: bool) {
        self.stale
            .store(stale, std::sync::atomic::Ordering::Relaxed);
    }

    /// The snapshot in force now. Cheap; hold it for the duration of one decision.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        let previous = self.current.swap(snapshot.clone());
        if previous.admission_differs(&snapshot) {
            self.admission.send_modify(|v| *v += 1);
        }
        self.updates.send_modify(|v| *v += 1);
    }

    /// A receiver that changes after every update.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// A receiver that changes only after updates that may change an admission decision.
    pub fn subscribe_admission(&self) -> tokio::sync::watch::Receiver<u64> {
        self.admission.subscribe()
    }
}

#[cfg(test)]
mod tests;
