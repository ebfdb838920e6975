//! The delta ADS client: mesh state from the control plane instead of a file.
//!
//! It subscribes (wildcard) to `istio.workload.Address` and `istio.security.Authorization`,
//! with the node id and metadata Istio's ztunnel sends. Each response is validated
//! resource by resource: good ones are applied, bad ones are NACKed with the reason and
//! the previous version stays. The store is first filled only once both types have
//! answered (readiness waits for that). When the control plane goes away, the last good
//! state keeps serving; the client reconnects with exponential backoff and decorrelated
//! jitter ([`xds::backoff`]: from 100 ms, at most 5 s, back to the start after a stream
//! that got an answer) and resyncs by telling the server the versions it holds.
//!
//! With a snapshot file ([`super::snapshot_file`]) every accepted update is also written
//! to disk, and at start the file is loaded before the control plane is asked: its
//! resources go through the same validation as an answer, the store serves them at once
//! marked stale, and the control plane's first answers (relative to the versions held)
//! replace them. A file that cannot be read, is damaged or holds anything refused is
//! ignored as a whole, with an error in the log: partial state could drop a DENY policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use xds::ads_client::AdsStream;
use xds::backoff::Backoff;
use xds::discovery::{DeltaDiscoveryResponse, Resource};
use xds::google::protobuf::{Struct, Value, value::Kind};
use xds::security as sec;
use xds::workload as wire;

use super::snapshot_file::{self, Contents, SnapshotFileError};
use super::{Service, Snapshot, StateError, Store, Workload, convert};

/// First reconnect delay.
pub const RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const RETRY_CAP: Duration = Duration::from_secs(5);

/// Who this ztunnel is, as the control plane sees it.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// `http://host:15010` or `https://host:15012`.
    pub url: String,
    /// The mesh root (needed for `https`).
    pub root_pem: Option<String>,
    /// The node this ztunnel serves.
    pub node_name: String,
    /// This ztunnel's address, for the node id.
    pub instance_ip: String,
}

impl XdsConfig {
    fn node(&self) -> xds::core::Node {
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        let pod = format!("ztunnel-{}", self.node_name);
        xds::core::Node {
            id: format!(
                "ztunnel~{}~{pod}.istio-system~istio-system.svc.cluster.local",
                self.instance_ip
            ),
            metadata: Some(Struct {
                fields: [
                    ("NAME".to_owned(), text(&pod)),
                    ("NAMESPACE".to_owned(), text("istio-system")),
                    ("INSTANCE_IPS".to_owned(), text(&self.instance_ip)),
                    ("NODE_NAME".to_owned(), text(&self.node_name)),
                ]
                .into(),
            }),
            ..Default::default()
        }
    }
}

/// Why a session with the control plane ended, or a response was refused.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The stream could not be opened or broke.
    #[error("{0}")]
    Stream(String),
    /// The response is of a type ztunnel did not subscribe to.
    #[error("type {0} is not one ztunnel uses")]
    UnknownType(String),
    /// Some resources of a response were refused (NACKed); the rest were applied.
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
    /// The resources are valid one by one but conflict together; nothing was applied.
    #[error("the update conflicts: {0}")]
    Conflict(#[from] StateError),
}

/// What the client holds: validated, by xDS name, and as received (for versions and the
/// snapshot file).
#[derive(Debug, Default, Clone)]
struct Held {
    workloads: HashMap<String, Workload>,
    services: HashMap<String, Service>,
    policies: HashMap<String, policy::Policy>,
    raw: HashMap<&'static str, BTreeMap<String, Arc<Resource>>>,
    answered: HashSet<&'static str>,
}

impl Held {
    /// Name → version of what is held of `type_url`.
    fn versions(&self, type_url: &str) -> HashMap<String, String> {
        self.raw
            .get(type_url)
            .map(|r| {
                r.iter()
                    .map(|(name, res)| (name.clone(), res.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state to serve, once every type has answered.
    fn snapshot(&self) -> Option<Result<Snapshot, StateError>> {
        (self.answered.len() == TYPES.len()).then(|| {
            Snapshot::build(
                self.workloads.values().cloned().collect(),
                self.services.values().cloned().collect(),
                self.policies.values().cloned().collect(),
            )
        })
    }

    /// What the snapshot file holds.
    fn contents(&self) -> Contents {
        TYPES
            .iter()
            .map(|t| {
                let resources = self
                    .raw
                    .get(t)
                    .map(|r| r.values().cloned().collect())
                    .unwrap_or_default();
                ((*t).to_owned(), resources)
            })
            .collect()
    }
}

const TYPES: [&str; 2] = [xds::ADDRESS_TYPE_URL, xds::AUTHORIZATION_TYPE_URL];

/// Runs the client until the task is dropped.
pub async fn run(config: XdsConfig, store: Arc<Store>) {
    run_with_snapshot(config, store, None).await;
}

/// Runs the client until the task is dropped; with `snapshot_file`, serves that file at
/// once (stale) if it holds a usable snapshot, and keeps it up to date.
pub async fn run_with_snapshot(
    config: XdsConfig,
    store: Arc<Store>,
    snapshot_file: Option<PathBuf>,
) {
    let mut held = Held::default();
    if let Some(path) = &snapshot_file {
        match load(path, &store).await {
            Ok(Some(loaded)) => held = loaded,
            Ok(None) => {
                tracing::info!(file = %path.display(), "xds: no snapshot file yet; waiting for the control plane");
            }
            Err(error) => {
                tracing::error!(%error, "xds: ignoring the snapshot file; no configuration until the control plane answers");
            }
        }
    }
    let (save, saved) = tokio::sync::watch::channel(None);
    let writer = async {
        if let Some(path) = snapshot_file.clone() {
            snapshot_file::write_latest(path, saved).await;
        }
        std::future::pending::<()>().await;
    };
    let client = async {
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
        loop {
            let mut answered = false;
            let result = session(&config, &store, &mut held, &save, &mut answered).await;
            let retry_in = retry_delay(&mut backoff, answered);
            match result {
                Ok(()) => {
                    tracing::info!(url = %config.url, ?retry_in, "xds: control plane closed the stream; reconnecting")
                }
                Err(error) => {
                    tracing::warn!(url = %config.url, %error, ?retry_in, stale = store.is_stale(), "xds: no control plane; serving the last good state")
                }
            }
            tokio::time::sleep(retry_in).await;
        }
    };
    tokio::join!(writer, client);
}

/// The delay before reconnecting: the backoff's next, from the start again when the
/// stream that ended had answered (it was healthy; this is a new outage).
fn retry_delay(backoff: &mut Backoff, answered: bool) -> Duration {
    if answered {
        backoff.reset();
    }
    backoff.next_delay()
}

/// Loads the snapshot file into the store (stale) through the same validation as an xDS
/// answer. `None` when there is no file.
async fn load(path: &Path, store: &Store) -> Result<Option<Held>, SnapshotFileError> {
    let Some(responses) = snapshot_file::read(path).await? else {
        return Ok(None);
    };
    let refused = |reason: String| SnapshotFileError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let mut held = Held::default();
    for response in &responses {
        held = match merge(&held, response) {
            Ok((next, errors)) if errors.is_empty() => next,
            Ok((_, errors)) => return Err(refused(errors.join("; "))),
            Err(error) => return Err(refused(error.to_string())),
        };
    }
    let snapshot = match held.snapshot() {
        Some(Ok(snapshot)) => snapshot,
        Some(Err(error)) => return Err(refused(error.to_string())),
        None => {
            return Err(SnapshotFileError::Damaged {
                path: path.to_path_buf(),
                reason: "it does not hold every resource type".into(),
            });
        }
    };
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    tracing::info!(
        file = %path.display(),
        workloads = held.workloads.len(),
        services = held.services.len(),
        policies = held.policies.len(),
        age = ?age,
        "xds: serving the snapshot file (stale) until the control plane answers"
    );
    store.set_stale(true);
    store.replace(snapshot);
    Ok(Some(held))
}

async fn session(
    config: &XdsConfig,
    store: &Store,
    held: &mut Held,
    save: &tokio::sync::watch::Sender<Option<Arc<Contents>>>,
    answered: &mut bool,
) -> Result<(), XdsError> {
    let subscriptions = TYPES
        .iter()
        .map(|t| ((*t).to_owned(), held.versions(t)))
        .collect();
    let mut stream = AdsStream::open(
        &config.url,
        config.root_pem.as_deref(),
        config.node(),
        subscriptions,
    )
    .await
    .map_err(XdsError::Stream)?;
    tracing::info!(url = %config.url, "xds: connected");
    // The types the control plane answered on this stream.
    let mut confirmed = HashSet::new();
    while let Some(response) = stream.next().await.map_err(XdsError::Stream)? {
        *answered = true;
        let outcome = receive(held, &response, store);
        let accepted = match &outcome {
            Ok(applied) | Err((applied, _)) => *applied,
        };
        if accepted && let Some(t) = TYPES.iter().find(|t| **t == response.type_url) {
            confirmed.insert(*t);
        }
        if confirmed.len() == TYPES.len() && store.is_stale() {
            store.set_stale(false);
            tracing::info!(url = %config.url, "xds: the control plane answered; its state replaces the snapshot file");
        }
        if accepted && held.answered.len() == TYPES.len() {
            save.send_replace(Some(Arc::new(held.contents())));
        }
        let error = outcome.err().map(|(_, e)| e);
        if let Some(errors) = &error {
            tracing::warn!(type_url = %response.type_url, %errors, "xds: rejected resources (NACK); keeping their previous versions");
        }
        stream
            .answer(&response, error.map(|e| e.to_string()))
            .await
            .map_err(XdsError::Stream)?;
    }
    Ok(())
}

/// Takes one response in: good resources are held (and, once every type answered, served),
/// bad ones listed in the error. The flag says whether anything was taken in.
fn receive(
    held: &mut Held,
    response: &DeltaDiscoveryResponse,
    store: &Store,
) -> Result<bool, (bool, XdsError)> {
    let (next, errors) = merge(held, response).map_err(|e| (false, e))?;
    if let Some(snapshot) = next.snapshot() {
        let snapshot = snapshot.map_err(|e| (false, XdsError::Conflict(e)))?;
        store.replace(snapshot);
    }
    *held = next;
    if errors.is_empty() {
        Ok(true)
    } else {
        Err((true, XdsError::Rejected(errors)))
    }
}

/// `held` with one response merged in, and the resources refused (with why).
fn merge(held: &Held, response: &DeltaDiscoveryResponse) -> Result<(Held, Vec<String>), XdsError> {
    let Some(type_url) = TYPES.into_iter().find(|t| *t == response.type_url) else {
        return Err(XdsError::UnknownType(response.type_url.clone()));
    };
    let mut next = held.clone();
    let mut errors = Vec::new();
    for resource in &response.resources {
        let Some(any) = &resource.resource else {
            errors.push(format!("{}: no resource body", resource.name));
            continue;
        };
        let result = if type_url == xds::ADDRESS_TYPE_URL {
            add_address(&mut next, &resource.name, &any.value)
        } else {
            sec::Authorization::decode(any.value.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|a| convert::policy(a).map_err(|e| e.to_string()))
                .map(|p| {
                    next.policies.insert(resource.name.clone(), p);
                })
        };
        match result {
            Ok(()) => {
                next.raw
                    .entry(type_url)
                    .or_default()
                    .insert(resource.name.clone(), Arc::new(resource.clone()));
            }
            Err(e) => errors.push(format!("{}: {e}", resource.name)),
        }
    }
    for name in &response.removed_resources {
        if type_url == xds::ADDRESS_TYPE_URL {
            next.workloads.remove(name);
            next.services.remove(name);
        } else {
            next.policies.remove(name);
        }
        if let Some(raw) = next.raw.get_mut(type_url) {
            raw.remove(name);
        }
    }
    next.answered.insert(type_url);
    Ok((next, errors))
}

/// Validates an `Address` (a workload or a service) into `next`.
fn add_address(next: &mut Held, name: &str, bytes: &[u8]) -> Result<(), String> {
    let address = wire::Address::decode(bytes).map_err(|e| e.to_string())?;
    match address.r#type {
        Some(wire::address::Type::Workload(w)) => {
            let w = convert::workload(w).map_err(|e| e.to_string())?;
            // A name that changed kind must not linger as the other kind.
            next.services.remove(name);
            next.workloads.insert(name.to_owned(), w);
        }
        Some(wire::address::Type::Service(s)) => {
            let s = convert::service(s).map_err(|e| e.to_string())?;
            next.workloads.remove(name);
            next.services.insert(name.to_owned(), s);
        }
        None => return Err("an Address with neither workload nor service".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
