//! The lab's workload controllers: which pods a `Deployment`, `ReplicaSet`,
//! `StatefulSet`, `DaemonSet` or `Job` wants, given the pods it owns now. Pods are named
//! and labelled as Kubernetes names them — `<deploy>-<pod-template-hash>-<5 chars>`
//! (owned by the ReplicaSet `<deploy>-<hash>`), `<rs>-<5 chars>`, `<sts>-<ordinal>`,
//! `<ds>-<5 chars>` on each node, `<job>-<5 chars>` — with the template's labels,
//! annotations and spec, and an `ownerReferences` entry naming their controller.
//!
//! Rollouts: a Deployment or DaemonSet whose template changed starts the new pods first
//! and stops the old ones once the new ones are ready (surge, never a gap); a StatefulSet
//! replaces one pod at a time from the highest ordinal (its pods keep their names, so the
//! old one goes first, as Kubernetes does); a ReplicaSet only counts (Kubernetes'
//! ReplicaSets do not roll); a Job makes its `completions` pods once.
//!
//! Owns: that decision, pure — `plan` asks it with no pods (at `up`), the lab controller
//! with the pods the control plane holds. Must not: run or stop anything.

use std::collections::BTreeSet;

use config::resources::{self as k8s, Kind, OwnerReference, Workload};

/// The label a Deployment's pods carry: the hash of the template they were made from.
pub(super) const TEMPLATE_HASH: &str = "pod-template-hash";
/// The label a StatefulSet's or DaemonSet's pods carry: `<name>-<template hash>`.
const REVISION: &str = "controller-revision-hash";

/// Kubernetes' alphabet for generated names: no vowels, no look-alike digits.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A pod a controller owns, and whether it is ready (running, and captured if enrolled).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owned<'a> {
    pub(super) pod: &'a k8s::Pod,
    pub(super) ready: bool,
}

/// What a controller does now: pods to make, names of its pods to stop.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) create: Vec<k8s::Pod>,
    pub(super) delete: Vec<String>,
}

/// The hash of `template`, as a pod label value (FNV-1a of its JSON, digits spelled in
/// [`ALPHABET`], as Kubernetes spells its `pod-template-hash`).
pub(super) fn template_hash(template: &k8s::PodTemplate) -> String {
    let json = serde_json::to_string(template).unwrap_or_default();
    let hash = json.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    spell(&hash.to_string())
}

fn spell(digits: &str) -> String {
    digits
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
        .collect()
}

/// Five random characters of [`ALPHABET`], as Kubernetes ends generated names.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut bits = hasher.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[usize::try_from(bits % 27).unwrap_or(0)];
            bits /= 27;
            char::from(c)
        })
        .collect()
}

/// The controller that owns `pod` — `(kind, name)` — from its `ownerReferences` (a
/// Deployment through its ReplicaSet `<deployment>-<pod-template-hash>`).
pub(super) fn owner(pod: &k8s::Pod) -> Option<(Kind, String)> {
    let reference = pod
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))?;
    let kind = Kind::from_name(&reference.kind).filter(|k| k.is_workload())?;
    if kind == Kind::ReplicaSet
        && let Some(hash) = pod.metadata.labels.get(TEMPLATE_HASH)
        && let Some(deployment) = reference.name.strip_suffix(&format!("-{hash}"))
    {
        return Some((Kind::Deployment, deployment.to_owned()));
    }
    Some((kind, reference.name.clone()))
}

/// Pod `name` of `workload` (of `kind`) from its template at `hash`, on `node` if given.
fn make(kind: Kind, workload: &Workload, name: String, hash: &str, node: Option<&str>) -> k8s::Pod {
    let meta = &workload.metadata;
    let template = &workload.spec.template;
    let mut labels = template.metadata.labels.clone();
    let owner = match kind {
        Kind::Deployment => {
            labels.insert(TEMPLATE_HASH.into(), hash.into());
            ("ReplicaSet".to_owned(), format!("{}-{hash}", meta.name))
        }
        Kind::StatefulSet => {
            labels.insert(REVISION.into(), format!("{}-{hash}", meta.name));
            labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
            if let Some(ordinal) = name.rsplit('-').next() {
                labels.insert("apps.kubernetes.io/pod-index".into(), ordinal.into());
            }
            (kind.to_string(), meta.name.clone())
        }
        Kind::DaemonSet => {
            labels.insert(REVISION.into(), format!("{}-{hash}", meta.name));
            (kind.to_string(), meta.name.clone())
        }
        Kind::Job => {
            labels.insert("job-name".into(), meta.name.clone());
            labels.insert("batch.kubernetes.io/job-name".into(), meta.name.clone());
            (kind.to_string(), meta.name.clone())
        }
        _ => (kind.to_string(), meta.name.clone()),
    };
    let mut spec = template.spec.clone();
    if let Some(node) = node {
        spec.node_name = Some(node.to_owned());
    }
    k8s::Pod {
        metadata: k8s::ObjectMeta {
            name,
            namespace: meta.namespace.clone(),
            labels,
            annotations: template.metadata.annotations.clone(),
            owner_references: vec![OwnerReference {
                api_version: kind.api_versions().first().copied().unwrap_or("v1").into(),
                kind: owner.0,
                name: owner.1,
                uid: meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..Default::default()
        },
        spec,
        status: k8s::PodStatus::default(),
    }
}

/// A fresh `<prefix>-<5 chars>` not in `taken` (which it joins).
fn fresh_name(prefix: &str, taken: &mut BTreeSet<String>) -> String {
    loop {
        let name = format!("{prefix}-{}", random_suffix());
        if taken.insert(name.clone()) {
            return name;
        }
    }
}

/// The pods `workload` (of `kind`) should have and does not, and those of its pods it
/// should stop, given the pods it `owned` now; `nodes` are the lab's nodes (a DaemonSet
/// has one pod on each).
pub(super) fn reconcile(
    kind: Kind,
    workload: &Workload,
    nodes: &[String],
    owned: &[Owned<'_>],
) -> Changes {
    let name = &workload.metadata.name;
    let hash = template_hash(&workload.spec.template);
    let wanted = usize::try_from(workload.spec.wanted(kind)).unwrap_or(usize::MAX);
    let mut taken: BTreeSet<String> = owned.iter().map(|o| o.pod.metadata.name.clone()).collect();
    let mut changes = Changes::default();
    match kind {
        Kind::Deployment => {
            let prefix = format!("{name}-{hash}");
            let is_current =
                |o: &&Owned<'_>| o.pod.metadata.labels.get(TEMPLATE_HASH) == Some(&hash);
            let mut current: Vec<&Owned<'_>> = owned.iter().filter(is_current).collect();
            for _ in current.len()..wanted {
                let pod = fresh_name(&prefix, &mut taken);
                changes.create.push(make(kind, workload, pod, &hash, None));
            }
            // Scaling down stops pods that are not ready first.
            current.sort_by_key(|o| (o.ready, std::cmp::Reverse(o.pod.metadata.name.clone())));
            let extra = current.len().saturating_sub(wanted);
            changes.delete.extend(
                current
                    .iter()
                    .take(extra)
                    .map(|o| o.pod.metadata.name.clone()),
            );
            let ready = current.iter().skip(extra).filter(|o| o.ready).count();
            if ready >= wanted {
                changes.delete.extend(
                    owned
                        .iter()
                        .filter(|o| !is_current(o))
                        .map(|o| o.pod.metadata.name.clone()),
                );
            }
        }
        Kind::ReplicaSet | Kind::Job => {
            for _ in owned.len()..wanted {
                let pod = fresh_name(name, &mut taken);
                changes.create.push(make(kind, workload, pod, &hash, None));
            }
            if kind == Kind::ReplicaSet {
                let mut sorted: Vec<&Owned<'_>> = owned.iter().collect();
                sorted.sort_by_key(|o| (o.ready, std::cmp::Reverse(o.pod.metadata.name.clone())));
                let extra = owned.len().saturating_sub(wanted);
                changes.delete.extend(
                    sorted
                        .iter()
                        .take(extra)
                        .map(|o| o.pod.metadata.name.clone()),
                );
            }
        }
        Kind::StatefulSet => stateful(workload, &hash, wanted, owned, &mut changes),
        Kind::DaemonSet => {
            let revision = format!("{name}-{hash}");
            fn on<'o, 'p>(
                owned: &'o [Owned<'p>],
                node: &'o str,
            ) -> impl Iterator<Item = &'o Owned<'p>> {
                owned
                    .iter()
                    .filter(move |o| o.pod.spec.node_name.as_deref() == Some(node))
            }
            for node in nodes {
                let current = on(owned, node)
                    .find(|o| o.pod.metadata.labels.get(REVISION) == Some(&revision));
                match current {
                    None => {
                        let pod = fresh_name(name, &mut taken);
                        changes
                            .create
                            .push(make(kind, workload, pod, &hash, Some(node)));
                    }
                    Some(new) if new.ready => changes.delete.extend(
                        on(owned, node)
                            .filter(|o| o.pod.metadata.name != new.pod.metadata.name)
                            .map(|o| o.pod.metadata.name.clone()),
                    ),
                    Some(_) => {}
                }
            }
            changes.delete.extend(
                owned
                    .iter()
                    .filter(|o| {
                        o.pod
                            .spec
                            .node_name
                            .as_ref()
                            .is_none_or(|n| !nodes.contains(n))
                    })
                    .map(|o| o.pod.metadata.name.clone()),
            );
        }
        _ => {}
    }
    changes
}

/// A StatefulSet: ordinals `0..wanted`, the ones above stopped; once every pod is there
/// and ready and nothing else changes, the highest one made from an older template is
/// stopped (and made again, from the new one, on the next pass).
fn stateful(
    workload: &Workload,
    hash: &str,
    wanted: usize,
    owned: &[Owned<'_>],
    changes: &mut Changes,
) {
    let name = &workload.metadata.name;
    let revision = format!("{name}-{hash}");
    let ordinal = |o: &Owned<'_>| {
        o.pod
            .metadata
            .name
            .strip_prefix(&format!("{name}-"))
            .and_then(|n| n.parse::<usize>().ok())
    };
    for o in owned {
        if ordinal(o).is_none_or(|n| n >= wanted) {
            changes.delete.push(o.pod.metadata.name.clone());
        }
    }
    let present = |n: usize| owned.iter().find(|o| ordinal(o) == Some(n));
    for n in 0..wanted {
        if present(n).is_none() {
            changes.create.push(make(
                Kind::StatefulSet,
                workload,
                format!("{name}-{n}"),
                hash,
                None,
            ));
        }
    }
    let settled = changes.create.is_empty()
        && changes.delete.is_empty()
        && (0..wanted).all(|n| present(n).is_some_and(|o| o.ready));
    if settled
        && let Some(outdated) = (0..wanted)
            .rev()
            .filter_map(present)
            .find(|o| o.pod.metadata.labels.get(REVISION) != Some(&revision))
    {
        changes.delete.push(outdated.pod.metadata.name.clone());
    }
}

#[cfg(test)]
mod tests;
