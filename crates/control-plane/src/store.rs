//! The versioned config store every source feeds (files, the apply API; a Kubernetes
//! watcher could be added beside them). A change is taken whole or not at all: it is
//! translated once, published as an immutable [`Snapshot`] (resources pre-encoded for
//! xDS), and subscribers are woken.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use config::{ObjectKey, Resource};
use prost::Message;
use xds::google::protobuf::Any;

use crate::translate::{self, Compiled, MeshSettings};

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
    /// Where it came from.
    pub origin: Origin,
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

/// Recent versions' deltas (addresses, authorizations), oldest first.
type History = std::collections::VecDeque<(u64, Arc<(Delta, Delta)>)>;

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
    /// The translation.
    pub compiled: Compiled,
    /// `istio.workload.Address` resources, encoded.
    pub addresses: PublishedSet,
    /// `istio.security.Authorization` resources, encoded.
    pub authorizations: PublishedSet,
    /// Changes from the previous version: (addresses, authorizations).
    pub delta: (Delta, Delta),
}

impl Snapshot {
    /// The published set of `type_url`, if we serve that type.
    pub fn resources(&self, type_url: &str) -> Option<&PublishedSet> {
        match type_url {
            xds::ADDRESS_TYPE_URL => Some(&self.addresses),
            xds::AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
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

    /// Creates or replaces `resources` (from `origin`); with `dry_run`, only reports.
    pub fn apply(&self, resources: Vec<Resource>, origin: &Origin, dry_run: bool) -> Vec<Change> {
        self.change(dry_run, |objects| {
            resources
                .into_iter()
                .map(|resource| {
                    let key = resource.key();
                    let object = key.to_string();
                    let outcome = match objects.get(&key) {
                        None => Outcome::Created,
                        Some(old) if old.resource == resource => Outcome::Unchanged,
                        Some(_) => Outcome::Configured,
                    };
                    objects.insert(
                        key.clone(),
                        Arc::new(Stored {
                            resource,
                            origin: origin.clone(),
                        }),
                    );
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
    pub fn delete(&self, keys: Vec<ObjectKey>, dry_run: bool) -> Vec<Change> {
        self.change(dry_run, |objects| {
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
        self.change(false, |objects| {
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
                let outcome = match objects.get(&key) {
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
                        }),
                    );
                }
            }
            changes
        })
    }

    fn change(
        &self,
        dry_run: bool,
        edit: impl FnOnce(&mut BTreeMap<ObjectKey, Arc<Stored>>) -> Vec<Change>,
    ) -> Vec<Change> {
        let mut history = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let current = self.current.load_full();
        let mut objects = current.objects.clone();
        let changes = edit(&mut objects);
        let changed = changes.iter().any(|c| {
            matches!(
                c.outcome,
                Outcome::Created | Outcome::Configured | Outcome::Deleted
            )
        });
        if dry_run || !changed {
            return changes;
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
                &current.compiled,
                &namespaces,
            ),
            _ => translate::translate(&objects, &self.settings),
        };
        let translated = started.elapsed();
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
        let delta = (
            Delta::between(&current.addresses, &addresses),
            Delta::between(&current.authorizations, &authorizations),
        );
        let version = current.version + 1;
        history.push_back((version, Arc::new(delta.clone())));
        if history.len() > DELTA_HISTORY {
            history.pop_front();
        }
        let snapshot = Snapshot {
            version,
            addresses,
            authorizations,
            objects,
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
        changes
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
            merged.then(match type_url {
                xds::ADDRESS_TYPE_URL => &delta.0,
                _ => &delta.1,
            });
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
