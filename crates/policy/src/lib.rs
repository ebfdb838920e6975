//! Authorization: which connections a workload accepts.
//!
//! Owns the validated form of Istio's compiled `Authorization` resource ([`Policy`]),
//! which policies apply to a workload (scope), and the decision for a connection
//! ([`evaluate`]) with Istio's semantics: DENY policies first — any match denies; then, if
//! any ALLOW policy applies and none matches, deny; otherwise allow. Dry-run policies are
//! evaluated and reported but never decide. Must not: do I/O or know where policies come
//! from.

#![forbid(unsafe_code)]

mod convert;
mod model;

pub use convert::PolicyError;
pub use model::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};

use std::net::IpAddr;

use identity::SpiffeId;

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

/// The outcome of [`evaluate`].
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

/// Decides `request` against the policies that apply to the destination workload.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    request: &L4Request<'_>,
) -> Verdict {
    let mut allow_applied = Vec::new();
    let mut allowed_by = None;
    let mut denied_by = None;
    let mut dry_run_matches = Vec::new();
    for policy in policies {
        let matched = policy.matches(request);
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
