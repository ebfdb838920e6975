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
pub enum SessionError {
    /// The stream could not be opened or broke.
    #[error(transparent)]
    Transport(#[from] xds::XdsError),
    /// The response is of a type ztunnel did not subscribe to.
    #[error("type {0} is not one ztunnel uses; is the control plane a Bowline or Istio one?")]
    UnknownType(String),
    /// Some resources of a response were refused (NACKed); the rest were applied.
    #[error("{}", join(.0))]
    Rejected(Vec<Refused>),
    /// The resources are valid one by one but conflict together; nothing was applied.
    #[error("the update conflicts: {0}")]
    Conflict(#[from] StateError),
}

impl SessionError {
    /// Whether the same again may succeed without the control plane's configuration
    /// changing: a lost stream may, a refused update may not (the client still reconnects
    /// with backoff; a refusal is for an operator to fix).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Transport(error) => error.is_retriable(),
            Self::UnknownType(_) | Self::Rejected(_) | Self::Conflict(_) => false,
        }
    }
}

fn join(refused: &[Refused]) -> String {
    refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One resource of a response that was refused, and why.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct Refused {
    /// The resource's xDS name.
    pub name: String,
    /// Why.
    pub reason: ResourceError,
}

/// Why one resource was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The resource carries no body.
    #[error("no resource body")]
    NoBody,
    /// The body is not a message of its type.
    #[error("cannot decode it as {type_url}: {source}")]
    Decode {
        /// The type it was sent as.
        type_url: &'static str,
        /// Why.
        source: prost::DecodeError,
    },
    /// An `Address` that is neither a workload nor a service.
    #[error("an Address with neither workload nor service")]
    EmptyAddress,
    /// It decodes, but is not valid (the field is named).
    #[error(transparent)]
    Invalid(#[from] StateError),
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
                Err(error) if error.is_retriable() => {
                    tracing::warn!(url = %config.url, %error, ?retry_in, stale = store.is_stale(), "xds: no control plane; serving the last good state")
                }
                Err(error) => {
                    tracing::error!(url = %config.url, %error, ?retry_in, stale = store.is_stale(), "xds: the control plane refuses this ztunnel; serving the last good state until that is fixed")
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
            Ok((_, errors)) => return Err(refused(SessionError::Rejected(errors).to_string())),
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
) -> Result<(), SessionError> {
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
    .await?;
    tracing::info!(url = %config.url, "xds: connected");
    // The types the control plane answered on this stream.
    let mut confirmed = HashSet::new();
    while let Some(response) = stream.next().await? {
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
            .await?;
    }
    Ok(())
}

/// Takes one response in: good resources are held (and, once every type answered, served),
/// bad ones listed in the error. The flag says whether anything was taken in.
fn receive(
    held: &mut Held,
    response: &DeltaDiscoveryResponse,
    store: &Store,
) -> Result<bool, (bool, SessionError)> {
    let (next, errors) = merge(held, response).map_err(|e| (false, e))?;
    if let Some(snapshot) = next.snapshot() {
        let snapshot = snapshot.map_err(|e| (false, SessionError::Conflict(e)))?;
        store.replace(snapshot);
    }
    *held = next;
    if errors.is_empty() {
        Ok(true)
    } else {
        Err((true, SessionError::Rejected(errors)))
    }
}

/// `held` with one response merged in, and the resources refused (with why).
fn merge(
    held: &Held,
    response: &DeltaDiscoveryResponse,
) -> Result<(Held, Vec<Refused>), SessionError> {
    let Some(type_url) = TYPES.into_iter().find(|t| *t == response.type_url) else {
        return Err(SessionError::UnknownType(response.type_url.clone()));
    };
    let mut next = held.clone();
    let mut errors = Vec::new();
    for resource in &response.resources {
        let result = match &resource.resource {
            None => Err(ResourceError::NoBody),
            Some(any) if type_url == xds::ADDRESS_TYPE_URL => {
                add_address(&mut next, &resource.name, &any.value)
            }
            Some(any) => add_policy(&mut next, &resource.name, &any.value),
        };
        match result {
            Ok(()) => {
                next.raw
                    .entry(type_url)
                    .or_default()
                    .insert(resource.name.clone(), Arc::new(resource.clone()));
            }
            Err(reason) => errors.push(Refused {
                name: resource.name.clone(),
                reason,
            }),
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
fn add_address(next: &mut Held, name: &str, bytes: &[u8]) -> Result<(), ResourceError> {
    let address = wire::Address::decode(bytes).map_err(|source| ResourceError::Decode {
        type_url: xds::ADDRESS_TYPE_URL,
        source,
    })?;
    match address.r#type {
        Some(wire::address::Type::Workload(w)) => {
            let w = convert::workload(w)?;
            // A name that changed kind must not linger as the other kind.
            next.services.remove(name);
            next.workloads.insert(name.to_owned(), w);
        }
        Some(wire::address::Type::Service(s)) => {
            let s = convert::service(s)?;
            next.workloads.remove(name);
            next.services.insert(name.to_owned(), s);
        }
        None => return Err(ResourceError::EmptyAddress),
    }
    Ok(())
}

/// Validates an `Authorization` into `next`.
fn add_policy(next: &mut Held, name: &str, bytes: &[u8]) -> Result<(), ResourceError> {
    let policy = sec::Authorization::decode(bytes).map_err(|source| ResourceError::Decode {
        type_url: xds::AUTHORIZATION_TYPE_URL,
        source,
    })?;
    next.policies
        .insert(name.to_owned(), convert::policy(policy)?);
    Ok(())
}

#[cfg(test)]
mod tests;
