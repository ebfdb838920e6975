//! Which enrolled pods their node agents have confirmed captured — an input of the
//! translation beside the user's objects. An enrolled pod is advertised as HBONE only once
//! the agent of the node it is scheduled on reported it captured (as istiod waits for the
//! CNI's `ambient.istio.io/redirection` annotation); until then it is advertised as
//! `NONE`, so clients reach it in plaintext instead of failing on a tunnel nobody serves.
//!
//! Owns: the per-node sets and their comparison. Must not: do I/O (reports arrive in
//! `crate::capture_status`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The pods each node's agent reported captured, by node. Cheap to clone (one pointer per
/// node), as every config version carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    by_node: BTreeMap<String, Arc<BTreeSet<String>>>,
}

impl Captured {
    /// Whether the agent of `node` reported the workload `uid` captured.
    pub fn contains(&self, node: &str, uid: &str) -> bool {
        self.by_node.get(node).is_some_and(|set| set.contains(uid))
    }

    /// What the agent of `node` reported last (empty when it never did).
    pub fn node(&self, node: &str) -> BTreeSet<String> {
        self.by_node
            .get(node)
            .map(|set| set.as_ref().clone())
            .unwrap_or_default()
    }

    /// Every node with its report.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.by_node.iter().map(|(n, s)| (n.as_str(), s.as_ref()))
    }

    /// Replaces what `node`'s agent reported; returns the uids whose capture changed
    /// (newly captured or no longer captured).
    pub fn replace(&mut self, node: &str, uids: BTreeSet<String>) -> BTreeSet<String> {
        let old = self.by_node.get(node).map(Arc::as_ref);
        let changed: BTreeSet<String> = match old {
            Some(old) => old.symmetric_difference(&uids).cloned().collect(),
            None => uids.clone(),
        };
        if uids.is_empty() {
            self.by_node.remove(node);
        } else if !changed.is_empty() {
            self.by_node.insert(node.to_owned(), Arc::new(uids));
        }
        changed
    }
}

/// The `(namespace, name)` of a pod workload uid `<cluster>//Pod/<namespace>/<name>`.
pub fn pod_of_uid(uid: &str) -> Option<(&str, &str)> {
    let (_, rest) = uid.split_once("//Pod/")?;
    let (namespace, name) = rest.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(uids: &[&str]) -> BTreeSet<String> {
        uids.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn a_report_replaces_the_nodes_set_and_names_what_changed() {
        let mut captured = Captured::default();
        assert_eq!(
            captured.replace("node-a", set(&["a", "b"])),
            set(&["a", "b"])
        );
        assert!(captured.contains("node-a", "a"));
        assert!(!captured.contains("node-b", "a"), "per node");
        assert_eq!(
            captured.replace("node-a", set(&["b", "c"])),
            set(&["a", "c"])
        );
        assert_eq!(captured.replace("node-a", set(&["b", "c"])), set(&[]));
        assert_eq!(captured.replace("node-a", set(&[])), set(&["b", "c"]));
        assert_eq!(
            captured,
            Captured::default(),
            "an empty report leaves nothing"
        );
    }

    #[test]
    fn pod_uids_split_into_namespace_and_name() {
        assert_eq!(
            pod_of_uid("Kubernetes//Pod/shop/reviews-0"),
            Some(("shop", "reviews-0"))
        );
        assert_eq!(pod_of_uid("shop/reviews-0"), None);
        assert_eq!(pod_of_uid("Kubernetes//Pod/shop/"), None);
        assert_eq!(pod_of_uid("Kubernetes//Pod/shop/a/b"), None);
    }
}
