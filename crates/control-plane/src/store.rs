//! The versioned config store every source feeds (files, the apply API; a Kubernetes
//! watcher could be added beside them), together with the pods node agents reported
//! captured (a translation input). A change is taken whole or not at all: it is
//! translated once, published as an immutable [`Snapshot`] (resources pre-encoded for
//! xDS), and subscribers are woken.
//!
//! Sources replace one another's objects, the last writer winning — except for status:
//! an object's status (and the fields the cluster allocates: a Pod's node, a Service's
//! VIP, a Node's pod CIDR) is written only by the file that created it (in a lab, the
//! lab's own file); an apply, or another file, keeps what is stored. Each change also
//! reports what it takes away from running pods ([`Report::warnings`]).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use config::{ObjectKey, Resource};
use prost::Message;
use xds::google::protobuf::Any;

use crate::translate::{self, Captured, Compiled, MeshSettings};

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Origin {
    /// A watched file.
    File(String),
    /// `bowline apply`.
    Api,
}

/// A stored object and its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The object.
    pub resource: Resource,
    /// Where it came from (its last writer).
    pub origin: Origin,
    /// The source that created it, the only one whose writes set its status and the
    /// fields the cluster allocates (see [`Store::apply`]).
    pub status_owner: Origin,
}

/// `resource`, written by `origin`, as it is stored over `stored`, with the source that
/// owns its status. The creator owns it; a file that owns it keeps writing it whole (the
/// lab's own file); anyone else — the apply API, other files — writes everything but
/// the status and the allocated fields, which are kept (Kubernetes' status subresource:
/// an apply never overwrites status).
fn written_over(
    resource: Resource,
    origin: &Origin,
    stored: Option<&Stored>,
) -> (Resource, Origin) {
    match stored {
        None => (resource, origin.clone()),
        Some(old) if matches!(origin, Origin::File(_)) && old.status_owner == *origin => {
            (resource, old.status_owner.clone())
        }
        Some(old) => (
            resource.keeping_cluster_fields_of(&old.resource),
            old.status_owner.clone(),
        ),
    }
}

/// What one change did, and what it takes away from running pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Each object's outcome.
    pub changes: Vec<Change>,
    /// Pods leaving the mesh, policies no longer enforced on running pods
    /// ([`translate::warnings`]).
    pub warnings: Vec<String>,
    /// The translation's notes on the state this change makes (or, for a dry run, would
    /// make): what of each object is not in force ([`translate::Compiled::status`]).
    #[serde(skip)]
    pub status: std::collections::BTreeMap<String, Vec<String>>,
}

impl translate::AsResource for Arc<Stored> {
    fn resource(&self) -> &Resource {
        &self.resource
    }
}

/// One resource ready to send: its name, version (a hash of its bytes) and encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// xDS name.
    pub name: String,
    /// Content hash, as hex.
    pub version: String,
    /// The `Any` the response carries.
    pub resource: Any,
}

/// Resources of one type, by name.
pub type PublishedSet = BTreeMap<String, Arc<Published>>;

/// What changed in one type between two versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Names added or changed.
    pub changed: std::collections::BTreeSet<String>,
    /// Names removed.
    pub removed: std::collections::BTreeSet<String>,
}

impl Delta {
    fn between(old: &PublishedSet, new: &PublishedSet) -> Self {
        let changed = new
            .iter()
            .filter(|(name, p)| old.get(*name).is_none_or(|o| o.version != p.version))
            .map(|(name, _)| name.clone())
            .collect();
        let removed = old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .cloned()
            .collect();
        Self { changed, removed }
    }

    /// This delta followed by `next`.
    fn then(&mut self, next: &Delta) {
        for name in &next.changed {
            self.removed.remove(name);
            self.changed.insert(name.clone());
        }
        for name in &next.removed {
            self.changed.remove(name);
            self.removed.insert(name.clone());
        }
    }
}

/// What changed in each served type between two versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    /// `istio.workload.Address`.
    pub addresses: Delta,
    /// `istio.security.Authorization`.
    pub authorizations: Delta,
    /// `bowline.l7.v1.Authorization`.
    pub l7_authorizations: Delta,
    /// `bowline.l7.v1.RouteTable`.
    pub route_tables: Delta,
}

impl Deltas {
    fn of(&self, type_url: &str) -> Option<&Delta> {
        match type_url {
            xds::ADDRESS_TYPE_URL => Some(&self.addresses),
            xds::AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            xds::L7_AUTHORIZATION_TYPE_URL => Some(&self.l7_authorizations),
            xds::ROUTE_TABLE_TYPE_URL => Some(&self.route_tables),
            _ => None,
        }
    }
}

/// Recent versions' deltas, oldest first.
type History = std::collections::VecDeque<(u64, Arc<Deltas>)>;

/// How many versions of deltas are kept for clients that fall behind.
const DELTA_HISTORY: usize = 256;

/// What the store holds at one version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every accepted change.
    pub version: u64,
    /// The user's objects and where each came from (shared between versions, so a change
    /// copies pointers, not objects).
    pub objects: BTreeMap<ObjectKey, Arc<Stored>>,
    /// The pods node agents reported captured (an input of the translation).
    pub captured: Captured,
    /// The translation.
    pub compiled: Compiled,
    /// `istio.workload.Address` resources, encoded.
    pub addresses: PublishedSet,
    /// `istio.security.Authorization` resources, encoded.
    pub authorizations: PublishedSet,
    /// `bowline.l7.v1.Authorization` resources (for waypoints), encoded.
    pub l7_authorizations: PublishedSet,
    /// `bowline.l7.v1.RouteTable` resources (for waypoints), encoded.
    pub route_tables: PublishedSet,
    /// Changes from the previous version.
    pub delta: Deltas,
}

impl Snapshot {
    /// The published set of `type_url`, if we serve that type.
    pub fn resources(&self, type_url: &str) -> Option<&PublishedSet> {
        match type_url {
            xds::ADDRESS_TYPE_URL => Some(&self.addresses),
            xds::AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            xds::L7_AUTHORIZATION_TYPE_URL => Some(&self.l7_authorizations),
            xds::ROUTE_TABLE_TYPE_URL => Some(&self.route_tables),
            _ => None,
        }
    }
}

/// What a change did to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// New.
    Created,
    /// Changed.
    Configured,
    /// Same as before.
    Unchanged,
    /// Removed.
    Deleted,
    /// Asked to delete, but absent.
    NotFound,
}

/// One object's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `Kind namespace/name`.
    pub object: String,
    /// What happened (or would, in a dry run).
    pub outcome: Outcome,
    /// The object's key.
    #[serde(skip)]
    pub key: ObjectKey,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    settings: MeshSettings,
    current: ArcSwap<Snapshot>,
    /// Serialises writers; readers never take it. Holds recent deltas by version.
    write: Mutex<History>,
    updates: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// An empty store.
    pub fn new(settings: MeshSettings) -> Self {
        let (updates, _) = tokio::sync::watch::channel(0);
        Self {
            settings,
            current: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(std::collections::VecDeque::new()),
            updates,
        }
    }

    /// The mesh settings.
    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Wakes on every new version.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Creates or replaces `resources` (from `origin`); with `dry_run`, only reports. An
    /// existing object keeps its status and allocated fields unless `origin` is the file
    /// that created it ([`config::Resource::keeping_cluster_fields_of`]); one that comes
    /// out the same is left alone (origin included).
    pub fn apply(&self, resources: Vec<Resource>, origin: &Origin, dry_run: bool) -> Report {
        self.change_reporting(dry_run, |objects, _| {
            resources
                .into_iter()
                .map(|resource| {
                    let key = resource.key();
                    let object = key.to_string();
                    let old = objects.get(&key);
                    let (resource, status_owner) =
                        written_over(resource, origin, old.map(|stored| &**stored));
                    let outcome = match old {
                        None => Outcome::Created,
                        Some(old) if old.resource == resource => Outcome::Unchanged,
                        Some(_) => Outcome::Configured,
                    };
                    if outcome != Outcome::Unchanged {
                        objects.insert(
                            key.clone(),
                            Arc::new(Stored {
                                resource,
                                origin: origin.clone(),
                                status_owner,
                            }),
                        );
                    }
                    Change {
                        object,
                        outcome,
                        key,
                    }
                })
                .collect()
        })
    }

    /// Removes the objects with these keys.
    pub fn delete(&self, keys: Vec<ObjectKey>, dry_run: bool) -> Report {
        self.change_reporting(dry_run, |objects, _| {
            keys.into_iter()
                .map(|key| {
                    let outcome = if objects.remove(&key).is_some() {
                        Outcome::Deleted
                    } else {
                        Outcome::NotFound
                    };
                    Change {
                        object: key.to_string(),
                        outcome,
                        key,
                    }
                })
                .collect()
        })
    }

    /// Makes `origin`'s objects exactly `resources` (a re-read file).
    pub fn replace_origin(&self, origin: &Origin, resources: Vec<Resource>) -> Vec<Change> {
        self.change(false, |objects, _| {
            let mut changes = Vec::new();
            let incoming: BTreeMap<ObjectKey, Resource> =
                resources.into_iter().map(|r| (r.key(), r)).collect();
            let gone: Vec<ObjectKey> = objects
                .iter()
                .filter(|(key, o)| o.origin == *origin && !incoming.contains_key(*key))
                .map(|(key, _)| key.clone())
                .collect();
            for key in gone {
                objects.remove(&key);
                changes.push(Change {
                    object: key.to_string(),
                    outcome: Outcome::Deleted,
                    key,
                });
            }
            for (key, resource) in incoming {
                let old = objects.get(&key);
                let (resource, status_owner) =
                    written_over(resource, origin, old.map(|stored| &**stored));
                let outcome = match old {
                    None => Outcome::Created,
                    Some(old) if old.resource == resource && old.origin == *origin => {
                        Outcome::Unchanged
                    }
                    Some(_) => Outcome::Configured,
                };
                changes.push(Change {
                    object: key.to_string(),
                    outcome: outcome.clone(),
                    key: key.clone(),
                });
                if outcome != Outcome::Unchanged {
                    objects.insert(
                        key,
                        Arc::new(Stored {
                            resource,
                            origin: origin.clone(),
                            status_owner,
                        }),
                    );
                }
            }
            changes
        })
    }

    /// Makes the pods `node`'s agent reported captured exactly `uids` (pods are HBONE
    /// only once captured); returns the pods whose capture changed, as `Configured`.
    pub fn set_captured(
        &self,
        node: &str,
        uids: std::collections::BTreeSet<String>,
    ) -> Vec<Change> {
        self.change(false, |_, captured| {
            captured
                .replace(node, uids)
                .iter()
                .filter_map(|uid| translate::pod_of_uid(uid))
                .map(|(namespace, name)| {
                    let key = ObjectKey {
                        kind: config::Kind::Pod,
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    };
                    Change {
                        object: key.to_string(),
                        outcome: Outcome::Configured,
                        key,
                    }
                })
                .collect()
        })
    }

    fn change(
        &self,
        dry_run: bool,
        edit: impl FnOnce(&mut BTreeMap<ObjectKey, Arc<Stored>>, &mut Captured) -> Vec<Change>,
    ) -> Vec<Change> {
        self.change_reporting(dry_run, edit).changes
    }

    /// Makes the change `edit` describes (translated, published) unless `dry_run`, and
    /// says what it takes away from running pods (also in a dry run).
    fn change_reporting(
        &self,
        dry_run: bool,
        edit: impl FnOnce(&mut BTreeMap<ObjectKey, Arc<Stored>>, &mut Captured) -> Vec<Change>,
    ) -> Report {
        let mut history = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let current = self.current.load_full();
        let mut objects = current.objects.clone();
        let mut captured = current.captured.clone();
        let changes = edit(&mut objects, &mut captured);
        let changed = changes.iter().any(|c| {
            matches!(
                c.outcome,
                Outcome::Created | Outcome::Configured | Outcome::Deleted
            )
        });
        if !changed {
            return Report {
                changes,
                warnings: Vec::new(),
                status: current.compiled.status.clone(),
            };
        }
        let cloned = started.elapsed();
        // Only the namespaces a change can affect are translated again.
        let touched = changes
            .iter()
            .filter(|c| c.outcome != Outcome::Unchanged && c.outcome != Outcome::NotFound)
            .map(|c| &c.key);
        let compiled = match translate::affected_namespaces(touched, &objects, &self.settings) {
            Some(namespaces) if current.version > 0 => translate::translate_namespaces(
                &objects,
                &self.settings,
                &captured,
                &current.compiled,
                &namespaces,
            ),
            _ => translate::translate(&objects, &self.settings, &captured),
        };
        let translated = started.elapsed();
        let warnings = translate::warnings(&current.compiled, &compiled);
        if dry_run {
            return Report {
                changes,
                warnings,
                status: compiled.status,
            };
        }
        for warning in &warnings {
            tracing::warn!(version = current.version + 1, "{warning}");
        }
        let addresses = publish(
            &compiled.addresses,
            &current.compiled.addresses,
            &current.addresses,
        );
        let authorizations = publish(
            &compiled.authorizations,
            &current.compiled.authorizations,
            &current.authorizations,
        );
        let l7_authorizations = publish(
            &compiled.l7_authorizations,
            &current.compiled.l7_authorizations,
            &current.l7_authorizations,
        );
        let route_tables = publish(
            &compiled.route_tables,
            &current.compiled.route_tables,
            &current.route_tables,
        );
        let delta = Deltas {
            addresses: Delta::between(&current.addresses, &addresses),
            authorizations: Delta::between(&current.authorizations, &authorizations),
            l7_authorizations: Delta::between(&current.l7_authorizations, &l7_authorizations),
            route_tables: Delta::between(&current.route_tables, &route_tables),
        };
        let version = current.version + 1;
        history.push_back((version, Arc::new(delta.clone())));
        if history.len() > DELTA_HISTORY {
            history.pop_front();
        }
        let status = compiled.status.clone();
        let snapshot = Snapshot {
            version,
            addresses,
            authorizations,
            l7_authorizations,
            route_tables,
            objects,
            captured,
            compiled,
            delta,
        };
        self.current.store(Arc::new(snapshot));
        self.updates.send_replace(version);
        tracing::debug!(
            version,
            objects_ms = cloned.as_secs_f64() * 1e3,
            translate_ms = (translated - cloned).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "config version published"
        );
        Report {
            changes,
            warnings,
            status,
        }
    }

    /// What changed in `type_url` after version `from` up to the current version, or
    /// `None` when `from` is older than the kept history (the client must resync).
    pub fn changes_since(&self, type_url: &str, from: u64, to: u64) -> Option<Delta> {
        let history = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = Delta::default();
        let mut next = from + 1;
        for (version, delta) in history.iter() {
            if *version < next {
                continue;
            }
            if *version != next || *version > to {
                break;
            }
            merged.then(delta.of(type_url)?);
            next += 1;
        }
        (next > to).then_some(merged)
    }
}

/// Encodes every resource once, so each client push only copies pointers. A resource
/// that is the very one of the previous version (kept by a partial translation) keeps its
/// previous encoding; one that was rebuilt is encoded, and keeps the previous allocation
/// when its bytes did not change.
fn publish<M: Message + prost::Name>(
    resources: &BTreeMap<String, Arc<M>>,
    previous_compiled: &BTreeMap<String, Arc<M>>,
    previous: &PublishedSet,
) -> PublishedSet {
    resources
        .iter()
        .map(|(name, message)| {
            if let (Some(old_message), Some(old)) =
                (previous_compiled.get(name), previous.get(name))
                && Arc::ptr_eq(old_message, message)
            {
                return (name.clone(), old.clone());
            }
            let value = message.encode_to_vec();
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            value.hash(&mut hasher);
            let version = format!("{:016x}", hasher.finish());
            if let Some(old) = previous.get(name)
                && old.version == version
            {
                return (name.clone(), old.clone());
            }
            let published = Published {
                name: name.clone(),
                version,
                resource: Any {
                    type_url: M::type_url(),
                    value,
                },
            };
            (name.clone(), Arc::new(published))
        })
        .collect()
}

#[cfg(test)]
mod tests;
