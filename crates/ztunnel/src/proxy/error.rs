//! The one error type of the proxy path: why a connection was refused, failed or ended
//! badly. Each variant says what failed and where ([`Side`]) and whether a new attempt
//! may succeed; messages are written for an operator. What each party *hears* (HTTP
//! status, reset, SOCKS5 reply, response flag) is decided in one place,
//! [`super::outcome`], never where the error is raised.

use std::net::SocketAddr;

use hbone::HboneError;

/// Where a failure happened, seen from this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client side: the app (outbound) or the HBONE peer / plaintext client (inbound).
    Downstream,
    /// The destination side: the tunnel or passthrough target (outbound), the app
    /// (inbound).
    Upstream,
    /// An authorization decision.
    Policy,
    /// This proxy's own state.
    Internal,
}

/// Why a connection could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// The VIP is known but not on this port.
    #[error("service {service} has no port {port}")]
    ServicePort {
        /// `namespace/hostname`.
        service: String,
        /// The port asked for.
        port: u16,
    },
    /// The waypoint named by a service or workload does not resolve to an address.
    #[error("waypoint {0} cannot be resolved (is its service in the mesh state?)")]
    WaypointUnresolved(String),
    /// No workload backs the waypoint's address.
    #[error("no workload backs waypoint {0} (is the waypoint running?)")]
    WaypointUnbacked(SocketAddr),
    /// A chosen endpoint or waypoint has no address.
    #[error("workload {0} has no address")]
    NoAddress(String),
    /// A host-name endpoint did not resolve (or resolved to ztunnel's own listener).
    #[error("endpoint host {host} does not resolve: {why}")]
    Unresolved {
        /// The name.
        host: String,
        /// What the resolver said.
        why: String,
    },
}

/// Why a proxied connection was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A captured connection whose original destination cannot be read (not redirected
    /// by the capture rules).
    #[error("no original destination ({0}); was the connection captured by the pod's rules?")]
    NoOriginalDestination(std::io::Error),
    /// The destination is one of ztunnel's own listeners: forwarding would loop.
    #[error(
        "{0}: port {port} is one of ztunnel's own listeners; refused so that it cannot loop",
        port = .0.port()
    )]
    OwnPort(SocketAddr),
    /// Nothing to route to.
    #[error("no route: {0}")]
    NoRoute(#[from] NoRoute),
    /// The service has endpoints, but none healthy.
    #[error("service {0} has no healthy endpoints")]
    NoHealthyUpstream(String),
    /// The pod this connection is for is not (yet) in the mesh state.
    #[error("pod {0} is not in the mesh state (yet)")]
    UnknownPod(String),
    /// An inbound target that is not an address of the pod that received it.
    #[error("{target} is not an address of pod {pod}")]
    NotPodAddress {
        /// The requested target.
        target: SocketAddr,
        /// The receiving pod.
        pod: String,
    },
    /// The destination has a waypoint and the peer is not it.
    #[error("traffic to this pod must pass its waypoint")]
    MustPassWaypoint,
    /// An authorization policy denied the connection.
    #[error("denied by policy {policy}: {reason}")]
    Denied {
        /// `namespace/name` of the deciding policy (or the default).
        policy: String,
        /// What matched or did not.
        reason: String,
    },
    /// A policy change forbids a connection that is already open.
    #[error("closed by a policy change: {0}")]
    Revoked(Box<ProxyError>),
    /// The TCP connect to the destination (passthrough target, or the app) failed.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The address dialled.
        target: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HBONE tunnel could not be opened.
    #[error("{0}")]
    Tunnel(#[from] HboneError),
    /// The pod was removed from this node while the connection was open.
    #[error("the pod was removed from this node")]
    PodRemoved,
    /// This ztunnel is shutting down and its drain deadline passed.
    #[error("ztunnel is shutting down")]
    Shutdown,
    /// Moving bytes failed on one side.
    #[error("{side:?} connection failed: {source}")]
    Io {
        /// [`Side::Downstream`] or [`Side::Upstream`].
        side: Side,
        /// The socket or stream error.
        source: std::io::Error,
    },
    /// The client went away before the connection was set up (e.g. the SOCKS5 reply
    /// could not be written).
    #[error("the client closed before the connection was set up: {0}")]
    DownstreamClosed(std::io::Error),
}

impl ProxyError {
    /// Where the failure happened.
    pub fn side(&self) -> Side {
        match self {
            Self::NoOriginalDestination(_)
            | Self::NotPodAddress { .. }
            | Self::DownstreamClosed(_) => Side::Downstream,
            Self::OwnPort(_) | Self::MustPassWaypoint | Self::Denied { .. } | Self::Revoked(_) => {
                Side::Policy
            }
            Self::NoRoute(_)
            | Self::NoHealthyUpstream(_)
            | Self::Connect { .. }
            | Self::Tunnel(_) => Side::Upstream,
            Self::UnknownPod(_) | Self::PodRemoved | Self::Shutdown => Side::Internal,
            Self::Io { side, .. } => *side,
        }
    }

    /// Whether a new attempt (a new connection, a new endpoint) may succeed without
    /// anything changing in configuration.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::UnknownPod(_) | Self::NoHealthyUpstream(_) => true,
            Self::Tunnel(error) => error.is_transient(),
            _ => false,
        }
    }

    /// Whether this was a decision to refuse (policy, loop protection, bad target)
    /// rather than a failure: refusals are expected under attack and their log lines
    /// are rate-limited.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::OwnPort(_)
                | Self::NotPodAddress { .. }
                | Self::MustPassWaypoint
                | Self::Denied { .. }
                | Self::NoOriginalDestination(_)
        )
    }
}
