//! ServiceEntry → what ztunnel holds, as Istio ambient translates it: each host becomes a
//! workload-API `Service` (hostname = the host, in the entry's namespace) with the
//! entry's `addresses` as VIPs, or one allocated from [`AUTO_RANGE`] (stable: from a hash
//! of namespace, name and host, the next free address on a collision), so ztunnel's DNS
//! proxy answers the host with it and connections to it are ztunnel's to route. Its
//! endpoints are
//!
//! - inline `endpoints` with IP addresses (STATIC, or DNS given addresses): one workload
//!   per address, outside the mesh (plaintext passthrough to the address and its port for
//!   the entry's port name, else `targetPort`, else the port), shared by every entry
//!   that lists the address — and none when the address is a pod's: that pod backs the
//!   entry itself ([`for_pod`]), since an address belongs to one workload;
//! - with resolution DNS, host-name endpoints — or, with no endpoints, the hosts
//!   themselves: a workload with that `hostname` and no address, which ztunnel resolves
//!   from its own namespace when a connection is made, sending it out in plaintext;
//! - with `workloadSelector`, the pods of the entry's namespace it selects (their HBONE
//!   if they are in the mesh), through [`for_pod`].
//!
//! An entry labelled `istio.io/use-waypoint` is not bound to the waypoint yet: a note
//! says so (its traffic goes straight to its endpoints).
//!
//! What ztunnel cannot act on is said in a note on the entry and nothing is made of it,
//! so clients keep what they had without it: resolution NONE (connections pass through
//! to the address dialled), STATIC without endpoints, wildcard hosts; CIDR `addresses`
//! wider than one address are noted and left out.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use config::resources as k8s;
use xds::workload as wire;

use super::{Compiled, Index};

/// Whether ztunnel can act on `entry` (see the module's docs for what it cannot).
fn applied(entry: &k8s::ServiceEntry) -> bool {
    let spec = &entry.spec;
    spec.workload_selector.is_some()
        || spec.resolution().starts_with("DNS")
        || (spec.resolution() == "STATIC" && !spec.endpoints.is_empty())
}

/// Where VIPs for entries without `addresses` come from (as Istio auto-allocates).
pub(super) const AUTO_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

/// An entry's services and endpoint workloads: what [`super::translate`] publishes.
#[derive(Debug, Default)]
pub(super) struct Translated {
    pub(super) services: Vec<wire::Service>,
    pub(super) workloads: Vec<wire::Workload>,
}

/// Every ServiceEntry of `index`, translated; notes on what is not in force go to `out`.
pub(super) fn translate(index: &Index<'_>, out: &mut Compiled) -> Translated {
    let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let pod_ips: BTreeSet<IpAddr> = index
        .pods
        .iter()
        .flat_map(|p| super::pod_addresses(p))
        .collect();
    let mut by_address: std::collections::BTreeMap<IpAddr, wire::Workload> =
        std::collections::BTreeMap::new();
    let mut entries: Vec<&&k8s::ServiceEntry> = index.service_entries.iter().collect();
    entries.sort_by_key(|e| (e.metadata.namespace(), e.metadata.name.as_str()));
    let mut translated = Translated::default();
    for entry in entries {
        let ns = entry.metadata.namespace();
        let name = &entry.metadata.name;
        let object = format!("ServiceEntry {ns}/{name}");
        let spec = &entry.spec;
        let endpoints: Vec<(&k8s::WorkloadEntrySpec, IpAddr)> = spec
            .endpoints
            .iter()
            .filter_map(|e| Some((e, e.address.parse::<IpAddr>().ok()?)))
            .collect();
        if entry.metadata.labels.contains_key(k8s::USE_WAYPOINT) {
            out.report(
                object.clone(),
                format!(
                    "{}: a ServiceEntry is not bound to a waypoint yet; its traffic goes from ztunnel straight to its endpoints, and L7 policy of the waypoint does not apply to it",
                    k8s::USE_WAYPOINT
                ),
            );
        }
        if !applied(entry) {
            let why = if spec.resolution() == "NONE" {
                "resolution NONE: nothing for ztunnel to route — connections pass through to the address the client dialled, as without the entry"
            } else {
                "resolution STATIC with no endpoints and no workloadSelector: nothing to send its connections to, so the entry is not applied"
            };
            out.report(object, why.into());
            continue;
        }
        // Host names ztunnel resolves: the endpoints given by name, or (none given) the
        // hosts themselves.
        let by_name: Vec<(&str, &std::collections::BTreeMap<String, u16>)> =
            if spec.workload_selector.is_some() || !spec.resolution().starts_with("DNS") {
                Vec::new()
            } else if spec.endpoints.is_empty() {
                spec.hosts
                    .iter()
                    .filter(|h| !h.starts_with("*."))
                    .map(|h| (h.as_str(), &EMPTY))
                    .collect()
            } else {
                spec.endpoints
                    .iter()
                    .filter(|e| e.address.parse::<IpAddr>().is_err())
                    .map(|e| (e.address.as_str(), &e.ports))
                    .collect()
            };
        let given: Vec<IpAddr> = spec
            .addresses
            .iter()
            .filter_map(|a| a.strip_suffix("/32").unwrap_or(a).parse().ok())
            .collect();
        if given.len() < spec.addresses.len() {
            out.report(
                object.clone(),
                "addresses: a CIDR of more than one address is not matched by ztunnel yet; only single addresses are used".into(),
            );
        }
        for host in &spec.hosts {
            if host.starts_with("*.") {
                out.report(
                    object.clone(),
                    format!("host {host:?}: a wildcard host has no address of its own; it is not applied"),
                );
                continue;
            }
            let vips = if given.is_empty() {
                allocate(&format!("{ns}/{name}/{host}"), &mut taken)
                    .map(IpAddr::V4)
                    .into_iter()
                    .collect()
            } else {
                given.clone()
            };
            translated.services.push(wire::Service {
                name: name.clone(),
                namespace: ns.to_owned(),
                hostname: host.clone(),
                addresses: vips
                    .into_iter()
                    .map(|ip| wire::NetworkAddress {
                        network: String::new(),
                        address: xds::ip_to_bytes(ip).into(),
                        length: None,
                    })
                    .collect(),
                ports: spec
                    .ports
                    .iter()
                    .map(|p| wire::Port {
                        service_port: u32::from(p.number),
                        target_port: u32::from(p.target_port.unwrap_or(p.number)),
                        app_protocol: protocol(p.protocol.as_deref()) as i32,
                    })
                    .collect(),
                ..Default::default()
            });
        }
        for (endpoint, ip) in endpoints {
            if pod_ips.contains(&ip) {
                continue;
            }
            let workload = endpoint_workload(index, entry, endpoint, ip);
            match by_address.get_mut(&ip) {
                Some(first) => first.services.extend(workload.services),
                None => {
                    by_address.insert(ip, workload);
                }
            }
        }
        for (host, named) in by_name {
            translated
                .workloads
                .push(host_workload(index, entry, host, named));
        }
    }
    translated.workloads.extend(by_address.into_values());
    translated
}

/// No port names to map.
static EMPTY: std::collections::BTreeMap<String, u16> = std::collections::BTreeMap::new();

/// The workload of a host-name endpoint: no address, the name for ztunnel to resolve.
fn host_workload(
    index: &Index<'_>,
    entry: &k8s::ServiceEntry,
    host: &str,
    named: &std::collections::BTreeMap<String, u16>,
) -> wire::Workload {
    let ns = entry.metadata.namespace();
    let name = &entry.metadata.name;
    wire::Workload {
        uid: format!(
            "{}/networking.istio.io/ServiceEntry/{ns}/{name}/{host}",
            index.settings.cluster_id
        ),
        name: name.clone(),
        namespace: ns.to_owned(),
        hostname: host.to_owned(),
        tunnel_protocol: wire::TunnelProtocol::None as i32,
        service_account: "default".into(),
        canonical_name: name.clone(),
        canonical_revision: "latest".into(),
        workload_name: name.clone(),
        services: entry
            .spec
            .hosts
            .iter()
            .map(|h| (format!("{ns}/{h}"), port_list(entry, named)))
            .collect(),
        cluster_id: index.settings.cluster_id.clone(),
        ..Default::default()
    }
}

/// The VIP of `key` in [`AUTO_RANGE`]: from its hash, the next free one on a collision.
fn allocate(key: &str, taken: &mut BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (base, len) = AUTO_RANGE;
    let size = 1u32 << (32 - u32::from(len));
    let hash = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    // Host addresses only: not the range's first or last.
    let usable = size - 2;
    (0..usable)
        .map(|i| Ipv4Addr::from(u32::from(base) + 1 + (hash.wrapping_add(i) % usable)))
        .find(|ip| taken.insert(*ip))
}

fn protocol(name: Option<&str>) -> wire::AppProtocol {
    match name.map(str::to_ascii_uppercase).as_deref() {
        Some("HTTP") => wire::AppProtocol::Http11,
        Some("HTTP2") => wire::AppProtocol::Http2,
        Some("GRPC") => wire::AppProtocol::Grpc,
        Some("TLS" | "HTTPS") => wire::AppProtocol::Tls,
        Some("TCP" | "MONGO") => wire::AppProtocol::Tcp,
        _ => wire::AppProtocol::Unknown,
    }
}

/// The port list of `entry` for one of its endpoints (or selected pods): each port to
/// the endpoint's port of that name, else `targetPort`, else the port itself.
fn port_list(
    entry: &k8s::ServiceEntry,
    named: &std::collections::BTreeMap<String, u16>,
) -> wire::PortList {
    wire::PortList {
        ports: entry
            .spec
            .ports
            .iter()
            .map(|p| wire::Port {
                service_port: u32::from(p.number),
                target_port: u32::from(
                    named
                        .get(&p.name)
                        .copied()
                        .or(p.target_port)
                        .unwrap_or(p.number),
                ),
                app_protocol: 0,
            })
            .collect(),
    }
}

/// The workload of one inline endpoint: outside the mesh, behind every host of `entry`.
fn endpoint_workload(
    index: &Index<'_>,
    entry: &k8s::ServiceEntry,
    endpoint: &k8s::WorkloadEntrySpec,
    ip: IpAddr,
) -> wire::Workload {
    let ns = entry.metadata.namespace();
    let name = &entry.metadata.name;
    let services = entry
        .spec
        .hosts
        .iter()
        .map(|host| (format!("{ns}/{host}"), port_list(entry, &endpoint.ports)))
        .collect();
    wire::Workload {
        uid: format!(
            "{}/networking.istio.io/ServiceEntry/{ns}/{name}/{ip}",
            index.settings.cluster_id
        ),
        name: name.clone(),
        namespace: ns.to_owned(),
        addresses: vec![xds::ip_to_bytes(ip).into()],
        tunnel_protocol: wire::TunnelProtocol::None as i32,
        service_account: endpoint
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into()),
        canonical_name: name.clone(),
        canonical_revision: "latest".into(),
        workload_name: name.clone(),
        services,
        cluster_id: index.settings.cluster_id.clone(),
        ..Default::default()
    }
}

/// The entries `pod` backs — its namespace's entries whose `workloadSelector` selects
/// it, and any entry listing one of its addresses as an endpoint: their hosts as
/// `namespace/host` keys of the pod's `services`, with their ports.
pub(super) fn for_pod(index: &Index<'_>, pod: &k8s::Pod) -> Vec<(String, wire::PortList)> {
    let ns = pod.metadata.namespace();
    let empty = std::collections::BTreeMap::new();
    let addresses = super::pod_addresses(pod);
    let mut out = Vec::new();
    for entry in index.service_entries.iter().filter(|e| applied(e)) {
        let entry_ns = entry.metadata.namespace();
        let selected = entry_ns == ns
            && entry.spec.workload_selector.as_ref().is_some_and(|s| {
                s.labels
                    .iter()
                    .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
            });
        let listed = entry.spec.endpoints.iter().find(|e| {
            e.address
                .parse::<IpAddr>()
                .is_ok_and(|ip| addresses.contains(&ip))
        });
        let named = match (selected, listed) {
            (true, _) => &empty,
            (false, Some(endpoint)) => &endpoint.ports,
            (false, None) => continue,
        };
        for host in entry.spec.hosts.iter().filter(|h| !h.starts_with("*.")) {
            out.push((format!("{entry_ns}/{host}"), port_list(entry, named)));
        }
    }
    out
}
