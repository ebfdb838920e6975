//! What a change takes away from running pods, found by comparing two compiled versions:
//! a pod with an address that was in the mesh (enrolled: capture asked for, or HBONE) and
//! no longer is, and a policy that was enforced on such a pod and no longer is (deleted,
//! its selector no longer matching, made dry-run, attached to a waypoint, PeerAuthentication
//! no longer STRICT). The apply API answers these as `warnings`; nothing is refused for
//! them — the operator may mean it, but must not learn it from a packet capture.
//!
//! Pure; cheap when little changed: a workload kept as the very same resource, under the
//! same namespace- and mesh-wide policies, is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use xds::security::Scope;
use xds::workload as wire;

use super::Compiled;

/// Pods named in one warning before the rest are counted.
const PODS_NAMED: usize = 10;
/// "Leaves the mesh" warnings before the rest are counted.
const LEAVING_LISTED: usize = 50;

/// The warnings for going from `before` to `after`.
pub fn warnings(before: &Compiled, after: &Compiled) -> Vec<String> {
    let enforced = |c: &Compiled, key: &str| c.authorizations.get(key).is_some_and(|p| !p.dry_run);
    let (scoped_before, scoped_after) = (scoped(before), scoped(after));
    let none = BTreeSet::new();
    let global_same = scoped_before.get("") == scoped_after.get("");
    let mut leaving: Vec<(String, bool)> = Vec::new();
    let mut lost: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (uid, address) in &before.addresses {
        let Some(old) = workload(address).filter(|w| in_mesh(w)) else {
            continue;
        };
        let namespace = old.namespace.as_str();
        let new_address = after.addresses.get(uid);
        let unchanged = new_address.is_some_and(|new| Arc::ptr_eq(address, new))
            && global_same
            && scoped_before.get(namespace) == scoped_after.get(namespace)
            && old
                .authorization_policies
                .iter()
                .all(|k| enforced(before, k) == enforced(after, k));
        if unchanged {
            continue;
        }
        let pod = format!("{namespace}/{}", old.name);
        let Some(new) = new_address.and_then(|a| workload(a)).filter(|w| in_mesh(w)) else {
            leaving.push((pod, new_address.is_none()));
            continue;
        };
        let levels = [namespace, ""];
        let scoped_now = |key: &str| {
            levels
                .iter()
                .any(|ns| scoped_after.get(ns).unwrap_or(&none).contains(key))
        };
        let had = old
            .authorization_policies
            .iter()
            .map(String::as_str)
            .filter(|k| enforced(before, k))
            .chain(
                levels
                    .iter()
                    .flat_map(|ns| scoped_before.get(ns).unwrap_or(&none).iter().copied()),
            );
        for key in had {
            let kept = (new.authorization_policies.iter().any(|k| k == key)
                && enforced(after, key))
                || scoped_now(key);
            if !kept {
                lost.entry(key).or_default().push(pod.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (pod, removed) in leaving.iter().take(LEAVING_LISTED) {
        out.push(if *removed {
            format!(
                "pod {pod} is removed from the mesh's config while it has an address: if it still runs, traffic to and from it will be plaintext"
            )
        } else {
            format!("pod {pod} leaves the mesh: traffic to and from it will be plaintext")
        });
    }
    if leaving.len() > LEAVING_LISTED {
        out.push(format!(
            "… and {} more pods leave the mesh",
            leaving.len() - LEAVING_LISTED
        ));
    }
    for (key, pods) in lost {
        let (who, plural) = name_pods(&pods);
        let (is, them) = if plural {
            ("are", "them")
        } else {
            ("is", "it")
        };
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        out.push(if name == super::peer::STATIC_STRICT {
            format!(
                "{who} no longer {} mutual TLS (PeerAuthentication STRICT): plaintext connections to {them} will be accepted",
                if plural { "require" } else { "requires" }
            )
        } else if let Some(peer) = name.strip_prefix("converted_peer_authentication_") {
            format!(
                "{who} {is} no longer covered by PeerAuthentication {namespace}/{peer}: plaintext connections to {them} may be accepted"
            )
        } else {
            format!(
                "{who} {is} no longer protected by AuthorizationPolicy {key}: its rules are not enforced on {them} any more"
            )
        });
    }
    out
}

/// Enforced (not dry-run) namespace-wide policies by namespace, mesh-wide ones under "".
fn scoped(compiled: &Compiled) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, policy) in &compiled.authorizations {
        if policy.dry_run {
            continue;
        }
        let level = match Scope::try_from(policy.scope) {
            Ok(Scope::Global) => "",
            Ok(Scope::Namespace) => policy.namespace.as_str(),
            _ => continue,
        };
        out.entry(level).or_default().insert(key.as_str());
    }
    out
}

fn workload(address: &wire::Address) -> Option<&wire::Workload> {
    match address.r#type.as_ref()? {
        wire::address::Type::Workload(w) => Some(w),
        wire::address::Type::Service(_) => None,
    }
}

/// Enrolled: its node agent is asked to capture it, or it is HBONE already.
fn in_mesh(w: &wire::Workload) -> bool {
    w.tunnel_protocol == wire::TunnelProtocol::Hbone as i32
        || w.extensions
            .iter()
            .any(|e| e.name == xds::CAPTURE_EXTENSION)
}

/// "pod a/b", or "pods a/b, a/c and 3 more"; whether it is plural.
fn name_pods(pods: &[String]) -> (String, bool) {
    match pods {
        [one] => (format!("pod {one}"), false),
        _ => {
            let named = pods[..pods.len().min(PODS_NAMED)].join(", ");
            let rest = pods.len().saturating_sub(PODS_NAMED);
            if rest > 0 {
                (format!("pods {named} and {rest} more"), true)
            } else {
                (format!("pods {named}"), true)
            }
        }
    }
}
