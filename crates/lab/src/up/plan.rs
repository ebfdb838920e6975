//! Reading a lab's manifests: every document checked as the control plane checks it,
//! then the lab's own rules — nodes (default two) and their pod CIDRs, the pods of
//! workload controllers made ([`super::workloads`]), pods placed on known nodes with
//! unique names and given addresses, services that select a pod (or a workload's
//! template) and get a VIP. Nothing is built until the whole plan holds.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use config::Resource;
use config::resources as k8s;

use super::{LabError, invalid};

/// What `up` will build.
pub(super) struct Plan {
    /// Nodes and their pod address pools.
    pub(super) nodes: Vec<(String, ipnet_lite::Cidr)>,
    /// Pods, placed and addressed: (pod, node, address).
    pub(super) pods: Vec<(k8s::Pod, String, Ipv4Addr)>,
    /// Services: (`ns/name`, VIP).
    pub(super) services: Vec<(String, String)>,
    /// Everything for the control plane but pods and nodes (services with their VIPs).
    pub(super) rest: Vec<Resource>,
    /// Every document as written.
    pub(super) all: Vec<Resource>,
    /// What the files held that the mesh does not use, one note per file.
    pub(super) notes: Vec<String>,
}

pub(super) mod ipnet_lite {
    use std::net::Ipv4Addr;

    /// An IPv4 CIDR handing out host addresses from .2 up.
    #[derive(Debug, Clone, Copy)]
    pub(in crate::up) struct Cidr {
        pub(in crate::up) base: Ipv4Addr,
        pub(in crate::up) next: u32,
        pub(in crate::up) size: u32,
    }

    impl Cidr {
        pub(in crate::up) fn parse(text: &str) -> Option<Self> {
            let (ip, len) = text.split_once('/')?;
            let ip: Ipv4Addr = ip.parse().ok()?;
            let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Some(Self {
                base: Ipv4Addr::from(u32::from(ip) & mask),
                next: 2,
                size: 1u32 << (32 - len),
            })
        }

        pub(in crate::up) fn allocate(&mut self) -> Option<Ipv4Addr> {
            if self.next + 1 >= self.size {
                return None;
            }
            let ip = Ipv4Addr::from(u32::from(self.base) + self.next);
            self.next += 1;
            Some(ip)
        }
    }
}

/// Reads and checks the lab's YAML: nodes, pods placed and addressed, service VIPs.
pub(super) fn plan(files: &[PathBuf]) -> Result<Plan, LabError> {
    let mut all = Vec::new();
    let mut notes = Vec::new();
    let mut sources: Vec<PathBuf> = Vec::new();
    for path in files {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            sources.extend(entries);
        } else if path.exists() {
            sources.push(path.clone());
        } else {
            return invalid(format!("{}: no such file or directory", path.display()));
        }
    }
    for source in &sources {
        let text = std::fs::read_to_string(source)?;
        let parsed = config::parse_documents_noting(&text, &source.display().to_string())
            .map_err(|e| LabError::Invalid(e.to_string()))?;
        if let Some(note) = parsed.unused_note() {
            notes.push(format!("{}: {note}", source.display()));
        }
        all.extend(parsed.resources);
    }
    deploy_waypoints(&mut all);
    let mut nodes: Vec<(String, ipnet_lite::Cidr)> = Vec::new();
    for (i, r) in all.iter().enumerate() {
        if let Resource::Node(node) = r {
            let cidr_text = node
                .spec
                .pod_cidr
                .clone()
                .unwrap_or_else(|| format!("10.{}.0.0/24", 10 + nodes.len()));
            let Some(cidr) = ipnet_lite::Cidr::parse(&cidr_text) else {
                return invalid(format!(
                    "Node {} (object {}): spec.podCIDR {cidr_text:?} must be an IPv4 CIDR of /30 or larger",
                    node.metadata.name,
                    i + 1
                ));
            };
            nodes.push((node.metadata.name.clone(), cidr));
        }
    }
    if nodes.is_empty() {
        for (i, name) in ["node-1", "node-2"].iter().enumerate() {
            let cidr = ipnet_lite::Cidr::parse(&format!("10.{}.0.0/24", 10 + i))
                .ok_or_else(|| LabError::Invalid("default CIDR".into()))?;
            nodes.push(((*name).to_owned(), cidr));
        }
    }
    let node_names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let made: Vec<Resource> = all
        .iter()
        .filter_map(|r| match r {
            Resource::Workload(kind, workload) => Some((*kind, workload)),
            _ => None,
        })
        .flat_map(|(kind, workload)| {
            super::workloads::reconcile(kind, workload, &node_names, &[]).create
        })
        .map(Resource::Pod)
        .collect();
    all.extend(made);
    let mut pods = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut spread = 0usize;
    for r in &all {
        let Resource::Pod(pod) = r else { continue };
        let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        if !seen.insert(key.clone()) {
            return invalid(format!(
                "Pod {key} is defined twice; pod names must be unique in a namespace"
            ));
        }
        let node = match &pod.spec.node_name {
            Some(node) => node.clone(),
            None => {
                let node = nodes[spread % nodes.len()].0.clone();
                spread += 1;
                node
            }
        };
        let Some((_, cidr)) = nodes.iter_mut().find(|(n, _)| *n == node) else {
            let known: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
            return invalid(format!(
                "Pod {key}: spec.nodeName {node:?} is not a node of this lab ({})",
                known.join(", ")
            ));
        };
        let ip = cidr
            .allocate()
            .ok_or_else(|| LabError::Invalid(format!("node {node}: pod CIDR is full")))?;
        let mut pod = pod.clone();
        pod.spec.node_name = Some(node.clone());
        pod.status.pod_ip = Some(ip.to_string());
        pods.push((pod, node, ip));
    }
    let mut services = Vec::new();
    let mut vip = 100u32;
    let mut rest = Vec::new();
    for r in &all {
        match r {
            Resource::Pod(_) | Resource::Node(_) => {}
            Resource::Service(service) => {
                let ns = service.metadata.namespace();
                let key = format!("{ns}/{}", service.metadata.name);
                let selected = |labels: &k8s::Labels| {
                    !service.spec.selector.is_empty()
                        && service
                            .spec
                            .selector
                            .iter()
                            .all(|(k, v)| labels.get(k) == Some(v))
                };
                // A Deployment scaled to zero still stands behind its Service.
                let selects = pods
                    .iter()
                    .any(|(p, _, _)| p.metadata.namespace() == ns && selected(&p.metadata.labels))
                    || all.iter().any(|r| {
                        matches!(r, Resource::Workload(_, w)
                        if w.metadata.namespace() == ns
                            && selected(&w.spec.template.metadata.labels))
                    });
                let is_waypoint = service.metadata.labels.contains_key(k8s::MANAGED_LABEL);
                if !selects && !is_waypoint {
                    return invalid(format!(
                        "Service {key} selects no pod of this lab (selector {:?}); fix the selector or the pods' labels",
                        service.spec.selector
                    ));
                }
                let mut service = service.clone();
                let ip = match &service.spec.cluster_ip {
                    Some(ip) => ip.clone(),
                    None => {
                        vip += 1;
                        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + vip)
                            .to_string();
                        service.spec.cluster_ip = Some(ip.clone());
                        ip
                    }
                };
                services.push((key, ip));
                rest.push(Resource::Service(service));
            }
            other => rest.push(other.clone()),
        }
    }
    Ok(Plan {
        nodes,
        pods,
        services,
        rest,
        all,
        notes,
    })
}

/// Plays the waypoint controller: every waypoint Gateway gets the pod and Service it
/// deploys ([`control_plane::waypoints::deployment`]), unless the manifests already hold
/// a pod of that Gateway (or a Service of its name), which then stand as written.
fn deploy_waypoints(all: &mut Vec<Resource>) {
    let mut deployed = Vec::new();
    for r in all.iter() {
        let Resource::Gateway(gateway) = r else {
            continue;
        };
        let ns = gateway.metadata.namespace();
        let name = gateway.metadata.name.as_str();
        let has_pod = all.iter().any(|r| {
            matches!(r, Resource::Pod(p)
            if p.metadata.namespace() == ns
                && control_plane::waypoints::gateway_of(p) == Some(name))
        });
        let deployment = control_plane::waypoints::deployment(gateway);
        let has_service = all.iter().any(|r| {
            matches!(r, Resource::Service(s)
            if s.metadata.namespace() == ns && s.metadata.name == deployment.service.metadata.name)
        });
        if !has_pod {
            deployed.push(Resource::Pod(deployment.pod));
        }
        if !has_service {
            deployed.push(Resource::Service(deployment.service));
        }
    }
    all.extend(deployed);
}
