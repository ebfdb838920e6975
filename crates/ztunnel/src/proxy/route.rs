//! Where an outbound connection goes: the original destination resolved against the
//! mesh state into a tunnel (to the destination pod or its waypoint), a plain
//! passthrough (to an address, or to a host name resolved when the connection is made),
//! or a typed refusal ([`ProxyError`]). Load balancing over a service's
//! healthy endpoints is round robin per service, skipping endpoints whose connect failed
//! recently (all of them are tried again when every one failed).

use std::net::SocketAddr;

use identity::SpiffeId;

use super::ProxyInputs;
use super::error::{NoRoute, ProxyError};
use crate::state::{Service, Snapshot, TunnelProtocol, WaypointAddress, Workload};

/// The decision for one outbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Tunnel over HBONE.
    Hbone {
        /// The HBONE server (`<pod ip>:15008`, or the waypoint).
        hbone_addr: SocketAddr,
        /// `:authority` of the `CONNECT`.
        authority: SocketAddr,
        /// The identity the server must prove.
        identity: SpiffeId,
        /// The destination workload's uid (or the waypoint's), for logs.
        workload: String,
    },
    /// Plain TCP to this address (destination outside the mesh).
    Passthrough(SocketAddr),
    /// Plain TCP to what `host` resolves to, on `port` (a ServiceEntry's DNS endpoint).
    Resolve {
        /// The name, resolved from ztunnel's namespace when the connection is made.
        host: String,
        /// The endpoint's port.
        port: u16,
        /// The endpoint workload's uid, for logs.
        workload: String,
    },
}

impl Route {
    /// The address the connection is for: the tunnel's `:authority` or the passthrough
    /// target (`None` until a host name is resolved).
    pub fn target(&self) -> Option<SocketAddr> {
        match self {
            Self::Hbone { authority, .. } => Some(*authority),
            Self::Passthrough(target) => Some(*target),
            Self::Resolve { .. } => None,
        }
    }
}

/// Resolves `original` (the app's destination) for a connection from this node. A
/// destination that is one of ztunnel's own ports on a pod or loopback address is
/// [`ProxyError::OwnPort`].
pub fn resolve(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    original: SocketAddr,
) -> Result<Route, ProxyError> {
    if is_own_listener(inputs, snap, original) {
        return Err(ProxyError::OwnPort(original));
    }
    let route = resolve_unchecked(inputs, snap, original)?;
    if let Some(target) = route.target()
        && is_own_listener(inputs, snap, target)
    {
        return Err(ProxyError::OwnPort(target));
    }
    Ok(route)
}

/// Whether `addr` may be one of ztunnel's own listeners: one of its ports on a loopback,
/// unspecified or pod address.
pub(crate) fn is_own_listener(inputs: &ProxyInputs, snap: &Snapshot, addr: SocketAddr) -> bool {
    inputs.is_own_port(addr.port())
        && (addr.ip().is_loopback()
            || addr.ip().is_unspecified()
            || snap.workload_by_ip(addr.ip()).is_some())
}

fn resolve_unchecked(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    original: SocketAddr,
) -> Result<Route, ProxyError> {
    if let Some(service) = snap.service_by_vip(original.ip()) {
        return via_service(inputs, snap, service, original);
    }
    match snap.workload_by_ip(original.ip()) {
        Some(workload) => to_workload(inputs, snap, workload, original),
        None => Ok(Route::Passthrough(original)),
    }
}

fn via_service(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    service: &Service,
    original: SocketAddr,
) -> Result<Route, ProxyError> {
    let Some(mapping) = service
        .ports
        .iter()
        .find(|p| p.service_port == original.port())
    else {
        return Err(NoRoute::ServicePort {
            service: service.key(),
            port: original.port(),
        }
        .into());
    };
    if let Some(waypoint) = &service.waypoint {
        return to_waypoint(snap, waypoint, original);
    }
    let key = service.key();
    let candidates: Vec<_> = snap
        .endpoints(&key)
        .iter()
        .filter(|w| w.healthy && (!w.addresses.is_empty() || w.hostname.is_some()))
        .collect();
    if candidates.is_empty() {
        return Err(ProxyError::NoHealthyUpstream(key));
    }
    let fresh: Vec<_> = candidates
        .iter()
        .filter(|w| !w.addresses.iter().any(|ip| inputs.recently_failed(*ip)))
        .collect();
    // When every endpoint failed recently, try them anyway rather than refuse.
    let pool: Vec<_> = if fresh.is_empty() {
        candidates.iter().collect()
    } else {
        fresh
    };
    let endpoint = pool[snap.next_endpoint_index(&key) % pool.len()];
    let target_port = endpoint.target_port(&key, mapping);
    let Some(ip) = endpoint.addresses.first() else {
        return match &endpoint.hostname {
            Some(host) => Ok(Route::Resolve {
                host: host.clone(),
                port: target_port,
                workload: endpoint.uid.clone(),
            }),
            None => Err(NoRoute::NoAddress(endpoint.uid.clone()).into()),
        };
    };
    to_workload(inputs, snap, endpoint, SocketAddr::new(*ip, target_port))
}

fn to_workload(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    workload: &Workload,
    target: SocketAddr,
) -> Result<Route, ProxyError> {
    if let Some(waypoint) = &workload.waypoint {
        return to_waypoint(snap, waypoint, target);
    }
    Ok(match workload.protocol {
        TunnelProtocol::Hbone => Route::Hbone {
            hbone_addr: SocketAddr::new(target.ip(), inputs.settings.hbone_port),
            authority: target,
            identity: workload.identity.clone(),
            workload: workload.uid.clone(),
        },
        TunnelProtocol::None => Route::Passthrough(target),
    })
}

fn to_waypoint(
    snap: &Snapshot,
    waypoint: &WaypointAddress,
    authority: SocketAddr,
) -> Result<Route, ProxyError> {
    let address = match waypoint {
        WaypointAddress::Address(addr) => Some(*addr),
        WaypointAddress::Service { key, port } => snap
            .service(key)
            .and_then(|s| s.vips.first())
            .map(|vip| SocketAddr::new(*vip, *port)),
    };
    let Some(address) = address else {
        let name = match waypoint {
            WaypointAddress::Address(addr) => addr.to_string(),
            WaypointAddress::Service { key, port } => format!("{key}:{port}"),
        };
        return Err(NoRoute::WaypointUnresolved(name).into());
    };
    // The waypoint's identity is that of the workload at its address (or backing its
    // service).
    let backing = snap
        .workload_by_ip(address.ip())
        .or_else(|| match waypoint {
            WaypointAddress::Service { key, .. } => snap.endpoints(key).first(),
            WaypointAddress::Address(_) => None,
        });
    let Some(backing) = backing else {
        return Err(NoRoute::WaypointUnbacked(address).into());
    };
    let hbone_addr = match waypoint {
        WaypointAddress::Address(addr) => *addr,
        WaypointAddress::Service { port, .. } => match backing.addresses.first() {
            Some(ip) => SocketAddr::new(*ip, *port),
            None => return Err(NoRoute::NoAddress(backing.uid.clone()).into()),
        },
    };
    Ok(Route::Hbone {
        hbone_addr,
        authority,
        identity: backing.identity.clone(),
        workload: backing.uid.clone(),
    })
}
