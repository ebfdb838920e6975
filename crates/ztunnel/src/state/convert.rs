//! Wire resources (`istio.workload.*`, `istio.security.Authorization`) into the state
//! model, validated. An error names the resource and the field, so a bad resource is
//! refused (NACKed, or the file edit rejected) and the last good state stays.

use std::collections::HashMap;
use std::net::SocketAddr;

use identity::SpiffeId;
use policy::Policy;
use xds::security as sec;
use xds::workload as wire;

use super::{AppProtocol, PortMapping, Service, TunnelProtocol, WaypointAddress, Workload};

/// HBONE port used when a gateway does not say.
const DEFAULT_HBONE_PORT: u16 = 15008;

/// Why a resource was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {reason}")]
pub struct StateError {
    /// Which resource (`workload <uid>`, `service <ns/host>`, `policy <ns/name>`).
    pub resource: String,
    /// What is wrong, with the field.
    pub reason: String,
}

impl StateError {
    pub(crate) fn conflict(resource: &str, reason: String) -> Self {
        Self {
            resource: resource.to_owned(),
            reason,
        }
    }
}

/// Validates a workload.
pub fn workload(w: wire::Workload) -> Result<Workload, StateError> {
    let resource = format!(
        "workload {:?}",
        if w.uid.is_empty() { &w.name } else { &w.uid }
    );
    let err = |reason: String| StateError {
        resource: resource.clone(),
        reason,
    };
    if w.uid.is_empty() {
        return Err(err("uid is required".into()));
    }
    if w.name.is_empty() || w.namespace.is_empty() {
        return Err(err("name and namespace are required".into()));
    }
    let addresses = w
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            ip(a).ok_or_else(|| {
                err(format!(
                    "addresses[{i}]: {} bytes is not an IP address",
                    a.len()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let protocol = match wire::TunnelProtocol::try_from(w.tunnel_protocol) {
        Ok(wire::TunnelProtocol::None) => TunnelProtocol::None,
        Ok(wire::TunnelProtocol::Hbone) => TunnelProtocol::Hbone,
        Ok(wire::TunnelProtocol::LegacyIstioMtls) => {
            return Err(err(
                "tunnel_protocol: LEGACY_ISTIO_MTLS is not supported; use HBONE".into(),
            ));
        }
        Err(_) => {
            return Err(err(format!(
                "tunnel_protocol: unknown value {}",
                w.tunnel_protocol
            )));
        }
    };
    let trust_domain = if w.trust_domain.is_empty() {
        "cluster.local"
    } else {
        &w.trust_domain
    };
    let service_account = if w.service_account.is_empty() {
        "default"
    } else {
        &w.service_account
    };
    let identity = SpiffeId::new(trust_domain, &w.namespace, service_account)
        .map_err(|e| err(format!("identity: {e}")))?;
    let waypoint = w
        .waypoint
        .map(|g| gateway(g).map_err(|why| err(format!("waypoint: {why}"))))
        .transpose()?;
    let mut services = HashMap::with_capacity(w.services.len());
    for (key, list) in w.services {
        if !key.contains('/') {
            return Err(err(format!(
                "services: key {key:?} must be namespace/hostname"
            )));
        }
        let ports = ports(list.ports).map_err(|why| err(format!("services[{key}]: {why}")))?;
        services.insert(key, ports);
    }
    let healthy = match wire::WorkloadStatus::try_from(w.status) {
        Ok(wire::WorkloadStatus::Healthy) => true,
        Ok(wire::WorkloadStatus::Unhealthy) => false,
        Err(_) => return Err(err(format!("status: unknown value {}", w.status))),
    };
    Ok(Workload {
        uid: w.uid,
        name: w.name,
        namespace: w.namespace,
        addresses,
        hostname: Some(w.hostname).filter(|h| !h.is_empty()),
        node: w.node,
        protocol,
        identity,
        waypoint,
        services,
        authorization_policies: w.authorization_policies,
        healthy,
        canonical_name: w.canonical_name,
        canonical_revision: w.canonical_revision,
        workload_name: w.workload_name,
        cluster_id: w.cluster_id,
    })
}

/// Validates a service.
pub fn service(s: wire::Service) -> Result<Service, StateError> {
    let resource = format!("service {}/{}", s.namespace, s.hostname);
    let err = |reason: String| StateError {
        resource: resource.clone(),
        reason,
    };
    if s.name.is_empty() || s.namespace.is_empty() || s.hostname.is_empty() {
        return Err(err("name, namespace and hostname are required".into()));
    }
    let vips = s
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            ip(&a.address).ok_or_else(|| err(format!("addresses[{i}]: not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = ports(s.ports).map_err(err)?;
    let waypoint = s
        .waypoint
        .map(|g| gateway(g).map_err(|why| err(format!("waypoint: {why}"))))
        .transpose()?;
    Ok(Service {
        name: s.name,
        namespace: s.namespace,
        hostname: s.hostname,
        vips,
        ports,
        waypoint,
    })
}

/// Validates a policy.
pub fn policy(a: sec::Authorization) -> Result<Policy, StateError> {
    let resource = format!("policy {}/{}", a.namespace, a.name);
    Policy::try_from(a).map_err(|e| StateError {
        resource,
        reason: format!("{}: {}", e.field, e.reason),
    })
}

fn ports(list: Vec<wire::Port>) -> Result<Vec<PortMapping>, String> {
    list.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let service_port = u16::try_from(p.service_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("ports[{i}].service_port: {} is not a port", p.service_port)
                })?;
            let target_port = u16::try_from(p.target_port)
                .map_err(|_| format!("ports[{i}].target_port: {} is not a port", p.target_port))?;
            let protocol = match wire::AppProtocol::try_from(p.app_protocol) {
                Ok(wire::AppProtocol::Http11) => AppProtocol::Http,
                Ok(wire::AppProtocol::Http2) => AppProtocol::Http2,
                Ok(wire::AppProtocol::Grpc) => AppProtocol::Grpc,
                Ok(wire::AppProtocol::Tcp) => AppProtocol::Tcp,
                Ok(wire::AppProtocol::Tls) => AppProtocol::Tls,
                Ok(wire::AppProtocol::Unknown) | Err(_) => AppProtocol::Unknown,
            };
            Ok(PortMapping {
                service_port,
                target_port,
                protocol,
            })
        })
        .collect()
}

fn gateway(g: wire::GatewayAddress) -> Result<WaypointAddress, String> {
    let port = match g.hbone_mtls_port {
        0 => DEFAULT_HBONE_PORT,
        p => u16::try_from(p).map_err(|_| format!("hbone_mtls_port {p} is not a port"))?,
    };
    match g.destination {
        Some(wire::gateway_address::Destination::Address(a)) => {
            let addr = ip(&a.address).ok_or("address: not an IP address")?;
            Ok(WaypointAddress::Address(SocketAddr::new(addr, port)))
        }
        Some(wire::gateway_address::Destination::Hostname(h)) => Ok(WaypointAddress::Service {
            key: format!("{}/{}", h.namespace, h.hostname),
            port,
        }),
        None => Err("neither an address nor a hostname".into()),
    }
}

pub(crate) use xds::{ip_from_bytes as ip, ip_to_bytes as ip_bytes};
