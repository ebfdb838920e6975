//! Authorization: which connections a workload accepts and which requests a waypoint
//! passes — the one engine for ztunnel (L4) and the waypoint (L7).
//!
//! Owns the validated form of Istio's compiled `Authorization` resource and of Bowline's
//! waypoint resource `bowline.l7.v1.Authorization` ([`Policy`]), which policies apply to a
//! workload ([`Policy::applies_to`]) or to a request through a waypoint
//! ([`Policy::applies_through`]), and the decision ([`evaluate`] for a connection,
//! [`evaluate_request`] for a request) with Istio's semantics: DENY policies first — any
//! match denies; then, if any ALLOW policy applies and none matches, deny; otherwise
//! allow. Dry-run policies are evaluated and reported but never decide. Must not: do I/O
//! or know where policies come from.
//!
//! # HTTP attributes
//!
//! A [`Match`] may also hold conditions on the HTTP request ([`HttpRequest`]), compared
//! as Istio compares them:
//!
//! - `hosts`: without case, against the host without its port (so a policy host written
//!   with a port is refused at conversion: it could never match). An empty host is
//!   absent: `Presence` fails on it.
//! - `methods`: exactly, case-sensitive (`get` is not `GET`).
//! - `paths`: exact, prefix, suffix or presence, against the path without the query.
//! - `headers`: looked up by name (header names have no case). A header sent several
//!   times matches `values` if any of its values does, and `not_values` only if none
//!   does; a missing header fails `values` and passes `not_values` (Istio: a `notValues`
//!   condition on a missing header holds). Values are compared as bytes, so a value that
//!   is not UTF-8 can still match a prefix or suffix rather than slip past it.
//! - `remote_ips`: against [`HttpRequest::remote_ip`], the original client.
//!
//! When only L4 is known (`http: None`: the traffic is opaque TCP) a match with HTTP
//! conditions cannot be decided, and the engine never fails open: in a DENY policy its
//! HTTP part is taken as holding (the rule denies on its L4 part alone); in an ALLOW
//! policy the match does not match (it allows nothing). Its L4 fields are compared as
//! always.

#![forbid(unsafe_code)]

mod convert;
mod model;

pub use convert::PolicyError;
pub use model::{
    Action, Clause, HeaderMatch, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch,
    Target,
};

use std::net::IpAddr;

use identity::SpiffeId;

use model::Attributes;

/// What L4 knows about a connection.
#[derive(Debug, Clone, Copy)]
pub struct L4Request<'a> {
    /// The peer's verified identity; `None` for plaintext.
    pub source_identity: Option<&'a SpiffeId>,
    /// The connection's source address.
    pub source_ip: IpAddr,
    /// The destination address (the workload's).
    pub destination_ip: IpAddr,
    /// The destination port.
    pub destination_port: u16,
}

/// What the waypoint knows about an HTTP request, beyond its connection.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The host (`:authority` or `Host`) without the port.
    pub host: &'a str,
    /// The method, as sent.
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The original client (from `forwarded`; else the peer's address).
    pub remote_ip: IpAddr,
}

/// A connection and, once it is known to be HTTP, the request on it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The connection (for a waypoint, the tunnel's: its peer is the source).
    pub l4: L4Request<'a>,
    /// The HTTP request; `None` for opaque TCP.
    pub http: Option<HttpRequest<'a>>,
}

/// The outcome of [`evaluate`] and [`evaluate_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `by` names the ALLOW policy that matched, if any applied.
    Allow {
        /// `namespace/name` of the matching ALLOW policy.
        by: Option<String>,
    },
    /// Denied.
    Deny {
        /// `namespace/name` of the deciding policy (the DENY that matched, or every ALLOW
        /// that applied when none matched).
        by: String,
        /// Why, in words.
        reason: String,
    },
}

impl Decision {
    /// Whether the connection may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// A verdict plus the dry-run policies that would have changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The enforced decision.
    pub decision: Decision,
    /// Dry-run policies that matched (`namespace/name`): a dry-run DENY that matched, or
    /// a dry-run ALLOW that matched.
    pub dry_run_matches: Vec<String>,
}

/// Decides a connection of which only L4 is known against the policies that apply to the
/// destination workload; [`evaluate_request`] with `http: None`.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    request: &L4Request<'_>,
) -> Verdict {
    evaluate_request(
        policies,
        &Request {
            l4: *request,
            http: None,
        },
    )
}

/// Decides `request` against the policies that apply to it (to the destination workload,
/// or through the waypoint).
pub fn evaluate_request<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    request: &Request<'_>,
) -> Verdict {
    let attributes = Attributes::of(request);
    let mut allow_applied = Vec::new();
    let mut allowed_by = None;
    let mut denied_by = None;
    let mut dry_run_matches = Vec::new();
    for policy in policies {
        let matched = policy.matches_attributes(&attributes);
        if policy.dry_run {
            if matched {
                dry_run_matches.push(policy.key());
            }
            continue;
        }
        match policy.action {
            Action::Deny if matched && denied_by.is_none() => denied_by = Some(policy.key()),
            Action::Deny => {}
            Action::Allow => {
                if matched && allowed_by.is_none() {
                    allowed_by = Some(policy.key());
                }
                allow_applied.push(policy.key());
            }
        }
    }
    let decision = if let Some(by) = denied_by {
        Decision::Deny {
            reason: format!("denied by DENY policy {by}"),
            by,
        }
    } else if allow_applied.is_empty() || allowed_by.is_some() {
        Decision::Allow { by: allowed_by }
    } else {
        let by = allow_applied.join(",");
        Decision::Deny {
            reason: format!("no rule of the ALLOW policies {by} matches"),
            by,
        }
    };
    Verdict {
        decision,
        dry_run_matches,
    }
}

#[cfg(test)]
mod tests;
