//! What each party hears when a connection ends — the one place that maps a
//! [`ProxyError`] (or success) to:
//!
//! - the HTTP status on an inbound HBONE `CONNECT` ([`hbone_status`]);
//! - how a captured TCP client is closed, reset or FIN ([`client_close`]);
//! - the SOCKS5 reply code ([`socks5_reply`]);
//! - Istio's response flags on `istio_tcp_*` and in the access log ([`response_flags`]);
//! - the `reason` label of `ztunnel_connection_failures_total` ([`failure_reason`]);
//! - what a status an HBONE peer answered means for this side ([`peer_refusal_hint`]).
//!
//! | error | HBONE status | captured client | SOCKS5 | flags | reason |
//! | --- | --- | --- | --- | --- | --- |
//! | no original destination | — | reset | — | `NR` | `no_original_destination` |
//! | own port (loop) | 400 | reset | 2 not allowed | `NR` | `own_port` |
//! | no route (port, waypoint) | — | reset | 4 host unreachable | `NR` | `no_route` |
//! | no healthy endpoint | — | reset | 4 host unreachable | `UH` | `no_healthy_upstream` |
//! | pod not in state | 503 | reset | 1 failure | `NR` | `unknown_pod` |
//! | target not the pod's | 400 | reset | — | `NR` | `bad_target` |
//! | must pass waypoint, policy deny | 401 | reset | 2 not allowed | `RBAC` | `policy_denied` |
//! | revoked by policy change | — | reset | — | `RBAC` | `policy_revoked` |
//! | connect failed | 503 | reset | 5 refused / 4 unreachable | `UF` | `upstream_unreachable` |
//! | tunnel failed | — | reset | 5 refused / 2 not allowed | `UF` (`UT` timed out, `UO` on 429) | `tunnel_failed` |
//! | pod removed, shutdown | — | reset | — | `LR` | `pod_removed` / `shutdown` |
//! | bytes failed downstream | — | reset | — | `DC` | `downstream_error` |
//! | bytes failed upstream | — | reset | — | `UC` | `upstream_error` |
//! | client gone during setup | — | — | — | `DC` | `downstream_closed` |
//!
//! A connection that ends cleanly is closed with FIN both ways and flags `-`.
//! The waypoint maps its own HTTP errors in a module of the same shape.

use http::StatusCode;

use super::error::{ProxyError, Side};
use hbone::HboneError;

/// How a TCP client connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Orderly: FIN after the last byte.
    Fin,
    /// Abort: RST, so the client sees the failure at once.
    Reset,
}

/// SOCKS5 reply codes (RFC 1928 §6).
pub mod socks5 {
    /// Succeeded.
    pub const SUCCEEDED: u8 = 0;
    /// General SOCKS server failure.
    pub const GENERAL_FAILURE: u8 = 1;
    /// Connection not allowed by ruleset.
    pub const NOT_ALLOWED: u8 = 2;
    /// Host unreachable.
    pub const HOST_UNREACHABLE: u8 = 4;
    /// Connection refused.
    pub const CONNECTION_REFUSED: u8 = 5;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 7;
    /// Address type not supported.
    pub const ADDRESS_NOT_SUPPORTED: u8 = 8;
}

/// The status an inbound HBONE `CONNECT` is answered with when refused.
pub fn hbone_status(error: &ProxyError) -> StatusCode {
    match error {
        ProxyError::OwnPort(_) | ProxyError::NotPodAddress { .. } => StatusCode::BAD_REQUEST,
        ProxyError::MustPassWaypoint | ProxyError::Denied { .. } | ProxyError::Revoked(_) => {
            StatusCode::UNAUTHORIZED
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// How the captured client connection is closed after `result`.
pub fn client_close<T>(result: &Result<T, ProxyError>) -> Close {
    match result {
        Ok(_) => Close::Fin,
        Err(_) => Close::Reset,
    }
}

/// The SOCKS5 reply for a connection that could not be set up.
pub fn socks5_reply(error: &ProxyError) -> u8 {
    match error {
        ProxyError::OwnPort(_) | ProxyError::MustPassWaypoint | ProxyError::Denied { .. } => {
            socks5::NOT_ALLOWED
        }
        ProxyError::NoRoute(_) | ProxyError::NoHealthyUpstream(_) => socks5::HOST_UNREACHABLE,
        ProxyError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            socks5::CONNECTION_REFUSED
        }
        ProxyError::Connect { .. } => socks5::HOST_UNREACHABLE,
        ProxyError::Tunnel(HboneError::Refused { status, .. })
            if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
        {
            socks5::NOT_ALLOWED
        }
        ProxyError::Tunnel(_) => socks5::CONNECTION_REFUSED,
        _ => socks5::GENERAL_FAILURE,
    }
}

/// Istio's (Envoy's) response flags for a connection's result: `-` when it succeeded.
pub fn response_flags<T>(result: &Result<T, ProxyError>) -> &'static str {
    let Err(error) = result else { return "-" };
    match error {
        ProxyError::NoOriginalDestination(_)
        | ProxyError::OwnPort(_)
        | ProxyError::NoRoute(_)
        | ProxyError::UnknownPod(_)
        | ProxyError::NotPodAddress { .. } => "NR",
        ProxyError::NoHealthyUpstream(_) => "UH",
        ProxyError::MustPassWaypoint | ProxyError::Denied { .. } | ProxyError::Revoked(_) => "RBAC",
        ProxyError::Connect { .. } => "UF",
        ProxyError::Tunnel(HboneError::ResponseTimeout { .. } | HboneError::Timeout { .. }) => "UT",
        ProxyError::Tunnel(HboneError::Refused { status, .. })
            if *status == StatusCode::TOO_MANY_REQUESTS =>
        {
            "UO"
        }
        ProxyError::Tunnel(_) => "UF",
        ProxyError::PodRemoved | ProxyError::Shutdown => "LR",
        ProxyError::Io {
            side: Side::Downstream,
            ..
        }
        | ProxyError::DownstreamClosed(_) => "DC",
        ProxyError::Io { .. } => "UC",
    }
}

/// The `reason` label of `ztunnel_connection_failures_total`.
pub fn failure_reason(error: &ProxyError) -> &'static str {
    match error {
        ProxyError::NoOriginalDestination(_) => "no_original_destination",
        ProxyError::OwnPort(_) => "own_port",
        ProxyError::NoRoute(_) => "no_route",
        ProxyError::NoHealthyUpstream(_) => "no_healthy_upstream",
        ProxyError::UnknownPod(_) => "unknown_pod",
        ProxyError::NotPodAddress { .. } => "bad_target",
        ProxyError::MustPassWaypoint | ProxyError::Denied { .. } => "policy_denied",
        ProxyError::Revoked(_) => "policy_revoked",
        ProxyError::Connect { .. } => "upstream_unreachable",
        ProxyError::Tunnel(_) => "tunnel_failed",
        ProxyError::PodRemoved => "pod_removed",
        ProxyError::Shutdown => "shutdown",
        ProxyError::Io {
            side: Side::Downstream,
            ..
        } => "downstream_error",
        ProxyError::Io { .. } => "upstream_error",
        ProxyError::DownstreamClosed(_) => "downstream_closed",
    }
}

/// What a refusal status answered by an HBONE peer means, for the operator reading this
/// side's log.
pub fn peer_refusal_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            "denied by the destination's authorization policy"
        }
        StatusCode::SERVICE_UNAVAILABLE => "the destination could not be reached from its node",
        StatusCode::BAD_REQUEST => "the destination's ztunnel refused the target address",
        StatusCode::TOO_MANY_REQUESTS => {
            "the destination's ztunnel refused too many streams on this connection"
        }
        _ => "refused by the destination's ztunnel",
    }
}

/// A one-line explanation of `error` with the hint for a peer's refusal appended.
pub fn describe(error: &ProxyError) -> String {
    match error {
        ProxyError::Tunnel(HboneError::Refused { status, .. }) => {
            format!("{error} ({})", peer_refusal_hint(*status))
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::proxy::error::NoRoute;

    fn addr() -> SocketAddr {
        "10.0.0.1:80".parse().unwrap()
    }

    #[test]
    fn policy_denials_answer_401_and_flag_rbac() {
        let denied = ProxyError::Denied {
            policy: "shop/deny".into(),
            reason: "denied".into(),
        };
        assert_eq!(hbone_status(&denied), StatusCode::UNAUTHORIZED);
        let result: Result<(), _> = Err(denied);
        assert_eq!(response_flags(&result), "RBAC");
        assert_eq!(client_close(&result), Close::Reset);
    }

    #[test]
    fn loops_and_bad_targets_answer_400_with_no_route_flag() {
        for error in [
            ProxyError::OwnPort("10.0.0.1:15008".parse().unwrap()),
            ProxyError::NotPodAddress {
                target: addr(),
                pod: "shop/a".into(),
            },
        ] {
            assert_eq!(hbone_status(&error), StatusCode::BAD_REQUEST);
            assert_eq!(response_flags::<()>(&Err(error)), "NR");
        }
    }

    #[test]
    fn upstream_connect_failures_flag_uf_and_answer_503() {
        let refused = ProxyError::Connect {
            target: addr(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(hbone_status(&refused), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(socks5_reply(&refused), socks5::CONNECTION_REFUSED);
        assert!(refused.is_retriable());
        assert_eq!(response_flags::<()>(&Err(refused)), "UF");
    }

    #[test]
    fn no_healthy_endpoint_flags_uh_and_no_route_flags_nr() {
        let uh = ProxyError::NoHealthyUpstream("shop/reviews".into());
        assert_eq!(socks5_reply(&uh), socks5::HOST_UNREACHABLE);
        assert_eq!(response_flags::<()>(&Err(uh)), "UH");
        let nr = ProxyError::NoRoute(NoRoute::ServicePort {
            service: "shop/reviews".into(),
            port: 81,
        });
        assert_eq!(response_flags::<()>(&Err(nr)), "NR");
    }

    #[test]
    fn byte_failures_are_flagged_by_the_side_that_failed() {
        let down = ProxyError::Io {
            side: Side::Downstream,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        let up = ProxyError::Io {
            side: Side::Upstream,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(response_flags::<()>(&Err(down)), "DC");
        assert_eq!(response_flags::<()>(&Err(up)), "UC");
    }

    #[test]
    fn a_clean_connection_closes_with_fin_and_no_flags() {
        let ok: Result<(), ProxyError> = Ok(());
        assert_eq!(client_close(&ok), Close::Fin);
        assert_eq!(response_flags(&ok), "-");
    }

    #[test]
    fn a_peer_denial_is_explained_on_the_source_side() {
        let error = ProxyError::Tunnel(HboneError::Refused {
            authority: addr(),
            status: StatusCode::UNAUTHORIZED,
        });
        assert!(
            describe(&error).contains("authorization policy"),
            "{}",
            describe(&error)
        );
        assert_eq!(socks5_reply(&error), socks5::NOT_ALLOWED);
    }
}
