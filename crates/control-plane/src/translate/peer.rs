//! PeerAuthentication → the policies ztunnel enforces on inbound plaintext.
//!
//! The effective mode of a pod is decided mesh (root namespace, no selector) → namespace
//! (no selector) → workload (selector), the oldest policy winning at each level; UNSET
//! inherits, and the mesh default is PERMISSIVE. A STRICT pod lists
//! `<root>/istio_converted_static_strict`: DENY when the peer has no identity. Port-level
//! modes compile to a per-policy `converted_peer_authentication_<name>` listed instead:
//! STRICT with exempt ports denies identity-less traffic to the other ports; PERMISSIVE
//! (or DISABLE) with strict ports denies it on those ports only.

use config::resources::{self as k8s, Mtls};
use xds::security as sec;

use super::authz::string_match;
use super::{Compiled, Index};

/// Name of the static STRICT policy.
pub(super) const STATIC_STRICT: &str = "istio_converted_static_strict";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Unset,
    Permissive,
    Strict,
}

fn mode(mtls: Option<&Mtls>) -> Mode {
    match mtls.and_then(|m| m.mode.as_deref()) {
        Some("STRICT") => Mode::Strict,
        Some("PERMISSIVE" | "DISABLE") => Mode::Permissive,
        _ => Mode::Unset,
    }
}

/// The converted policies, ready to be listed on workloads.
pub(super) struct PeerPolicies {
    any: bool,
    root: String,
}

impl PeerPolicies {
    /// Emits the static strict policy (when any PeerAuthentication exists) and the
    /// port-level conversions.
    pub(super) fn new(index: &Index<'_>, out: &mut Compiled) -> Self {
        let root = index.settings.root_namespace.clone();
        let any = !index.peer_authentications.is_empty();
        if any {
            out.insert_authorization(super::authz::deny_selected(
                &root,
                STATIC_STRICT.into(),
                vec![no_identity_rule(Vec::new(), Vec::new())],
            ));
        }
        for peer in &index.peer_authentications {
            if peer.spec.port_level_mtls.is_empty() || peer.spec.selector.is_none() {
                continue;
            }
            let namespace = peer.metadata.namespace();
            let name = format!("converted_peer_authentication_{}", peer.metadata.name);
            // The mode the port exceptions are relative to is decided per pod; compile both
            // shapes lazily would need per-pod policies, so use the policy's own mode or,
            // when UNSET, its namespace's (then the mesh's).
            let top = match mode(peer.spec.mtls.as_ref()) {
                Mode::Unset => inherited(index, namespace),
                m => m,
            };
            let rules = if top == Mode::Strict {
                let exempt: Vec<u32> = peer
                    .spec
                    .port_level_mtls
                    .iter()
                    .filter(|(_, m)| mode(Some(m)) == Mode::Permissive)
                    .filter_map(|(p, _)| p.port().map(u32::from))
                    .collect();
                vec![no_identity_rule(Vec::new(), exempt)]
            } else {
                peer.spec
                    .port_level_mtls
                    .iter()
                    .filter(|(_, m)| mode(Some(m)) == Mode::Strict)
                    .filter_map(|(p, _)| p.port())
                    .map(|p| no_identity_rule(vec![u32::from(p)], Vec::new()))
                    .collect()
            };
            out.insert_authorization(super::authz::deny_selected(namespace, name, rules));
        }
        Self { any, root }
    }

    /// The converted policy keys `pod` lists.
    pub(super) fn for_pod(&self, index: &Index<'_>, pod: &k8s::Pod) -> Vec<String> {
        if !self.any {
            return Vec::new();
        }
        let namespace = pod.metadata.namespace();
        let workload = oldest(index.peer_authentications.iter().copied().filter(|p| {
            p.metadata.namespace() == namespace
                && p.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty()
                        && s.match_labels
                            .iter()
                            .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
                })
        }));
        if let Some(peer) = workload
            && !peer.spec.port_level_mtls.is_empty()
        {
            return vec![format!(
                "{namespace}/converted_peer_authentication_{}",
                peer.metadata.name
            )];
        }
        let effective = match workload.map(|p| mode(p.spec.mtls.as_ref())) {
            Some(Mode::Strict) => Mode::Strict,
            Some(Mode::Permissive) => Mode::Permissive,
            _ => inherited(index, namespace),
        };
        if effective == Mode::Strict {
            vec![format!("{}/{STATIC_STRICT}", self.root)]
        } else {
            Vec::new()
        }
    }
}

/// The namespace's mode, else the mesh's (PERMISSIVE when nothing says).
fn inherited(index: &Index<'_>, namespace: &str) -> Mode {
    let level = |ns: &str| {
        oldest(index.peer_authentications.iter().copied().filter(|p| {
            p.metadata.namespace() == ns
                && p.spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty())
        }))
        .map(|p| mode(p.spec.mtls.as_ref()))
        .filter(|m| *m != Mode::Unset)
    };
    level(namespace)
        .or_else(|| level(&index.settings.root_namespace))
        .unwrap_or(Mode::Permissive)
}

fn oldest<'a>(
    peers: impl Iterator<Item = &'a k8s::PeerAuthentication>,
) -> Option<&'a k8s::PeerAuthentication> {
    peers.min_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    })
}

/// A rule matching a peer without identity, optionally only on `ports` or not on
/// `except_ports`.
fn no_identity_rule(ports: Vec<u32>, except_ports: Vec<u32>) -> sec::Rule {
    let mut clauses = vec![sec::Clause {
        matches: vec![sec::Match {
            not_principals: vec![string_match("*")],
            destination_ports: ports,
            ..Default::default()
        }],
    }];
    if !except_ports.is_empty() {
        clauses.push(sec::Clause {
            matches: vec![sec::Match {
                not_destination_ports: except_ports,
                ..Default::default()
            }],
        });
    }
    sec::Rule { clauses }
}
