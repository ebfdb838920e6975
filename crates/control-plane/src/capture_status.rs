//! `bowline.agent.v1.NodeAgentStatus/ReportCapture`: node agents tell the control plane
//! which pods of their node they have captured, so that a pod is advertised as HBONE only
//! once its traffic really reaches a ztunnel (until then clients reach it in plaintext).
//!
//! Authenticated like the CA service: `authorization: Bearer <node token>` names the node
//! ([`crate::tokens`]). A report is the agent's whole set and replaces the node's previous
//! one; it is refused whole when it names a pod scheduled on another node. Uids of pods
//! the control plane does not know (deleted meanwhile) are not recorded and are listed in
//! the answer. The sets are kept in `<state-dir>/captured.json`, so a restarted control
//! plane does not turn captured pods back to plaintext until their agents report again.
//!
//! Owns: checking reports and keeping them. Must not: decide what a capture means for the
//! workloads (that is [`crate::translate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use config::{Kind, ObjectKey, Resource};
use tonic::{Request, Response, Status};
use xds::agent::node_agent_status_server::NodeAgentStatus;
use xds::agent::{CaptureReport, CaptureReportResponse};

use crate::store::Store;
use crate::tokens::NodeTokens;
use crate::translate;

/// The file in the state directory that keeps the reports.
pub const FILE: &str = "captured.json";

/// Why the kept reports could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    /// Reading or writing the file.
    #[error("captured pods {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what this control plane writes.
    #[error("captured pods {path}: {source}; remove it, the node agents report again")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// The reports kept in `state_dir`: node → captured workload uids (empty when none).
pub fn load(state_dir: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, CaptureFileError> {
    let path = state_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| CaptureFileError::Parse {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(CaptureFileError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Puts the reports kept in `state_dir` into `store`; returns how many pods they name.
pub fn restore(store: &Store, state_dir: &Path) -> Result<usize, CaptureFileError> {
    let kept = load(state_dir)?;
    let mut count = 0;
    for (node, uids) in kept {
        count += uids.len();
        store.set_captured(&node, uids);
    }
    Ok(count)
}

/// Writes the store's current reports to `file`, atomically.
fn save(store: &Store, file: &Path) -> Result<(), CaptureFileError> {
    let snapshot = store.load();
    let sets: BTreeMap<&str, &BTreeSet<String>> = snapshot.captured.nodes().collect();
    let io = |source| CaptureFileError::Io {
        path: file.display().to_string(),
        source,
    };
    let text = serde_json::to_string_pretty(&sets).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

/// The report service.
#[derive(Debug, Clone)]
pub struct CaptureStatusService {
    tokens: Arc<NodeTokens>,
    store: Arc<Store>,
    /// Where reports are kept (none in tests that do not need it), and the lock that
    /// keeps two writers from interleaving.
    file: Option<(PathBuf, Arc<Mutex<()>>)>,
}

impl CaptureStatusService {
    /// Takes reports from callers holding a token from `tokens`, checks them against the
    /// pods in `store` and keeps them in `<state_dir>/captured.json`.
    pub fn new(tokens: Arc<NodeTokens>, store: Arc<Store>, state_dir: Option<&Path>) -> Self {
        Self {
            tokens,
            store,
            file: state_dir.map(|dir| (dir.join(FILE), Arc::new(Mutex::new(())))),
        }
    }

    /// The node named by the caller's token.
    fn node(&self, request: &Request<CaptureReport>) -> Result<String, Status> {
        self.tokens.node_of(request)
    }

    /// The reported pods of `node` (to record) and the uids of no known pod; refused when
    /// a uid belongs to a pod of another node.
    fn check(
        &self,
        node: &str,
        report: &CaptureReport,
    ) -> Result<(BTreeSet<String>, Vec<String>), Status> {
        let snapshot = self.store.load();
        let cluster = &self.store.settings().cluster_id;
        let mut own = BTreeSet::new();
        let mut unknown = Vec::new();
        let mut foreign = Vec::new();
        for uid in &report.captured {
            let pod = translate::pod_of_uid(uid)
                .filter(|(namespace, name)| translate::pod_uid(cluster, namespace, name) == *uid)
                .and_then(|(namespace, name)| {
                    snapshot.objects.get(&ObjectKey {
                        kind: Kind::Pod,
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                })
                .and_then(|stored| match &stored.resource {
                    Resource::Pod(pod) => Some(pod),
                    _ => None,
                });
            match pod.map(|p| p.spec.node_name.as_deref()) {
                None => unknown.push(uid.clone()),
                Some(Some(n)) if n == node => {
                    own.insert(uid.clone());
                }
                Some(other) => foreign.push(format!(
                    "{uid} is scheduled on {}",
                    other.map_or_else(|| "no node".to_owned(), |n| format!("node {n}"))
                )),
            }
        }
        if !foreign.is_empty() {
            return Err(Status::permission_denied(format!(
                "node {node} may only report the pods scheduled on it, but {}; nothing was recorded",
                foreign.join(", ")
            )));
        }
        Ok((own, unknown))
    }

    async fn report(
        &self,
        request: Request<CaptureReport>,
    ) -> Result<CaptureReportResponse, Status> {
        let node = self.node(&request)?;
        let report = request.into_inner();
        if !report.node.is_empty() && report.node != node {
            return Err(Status::invalid_argument(format!(
                "the report is for node {} but the token is node {node}'s; give the agent its own node's token",
                report.node
            )));
        }
        let (own, unknown) = self.check(&node, &report)?;
        let recorded = u32::try_from(own.len()).unwrap_or(u32::MAX);
        let changes = self.store.set_captured(&node, own);
        if !changes.is_empty() {
            let pods: Vec<&str> = changes.iter().map(|c| c.object.as_str()).collect();
            tracing::info!(%node, captured = recorded, changed = ?pods, "node agent reported its captured pods");
            if let Some((file, lock)) = self.file.clone() {
                let store = self.store.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    save(&store, &file)
                })
                .await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(%error, "cannot keep the captured pods; they are in force but a restart forgets them until the agents report again")
                    }
                    Err(error) => {
                        tracing::error!(%error, "the task keeping the captured pods failed")
                    }
                }
            }
        }
        if !unknown.is_empty() {
            tracing::debug!(%node, ?unknown, "report names pods that do not exist (any more)");
        }
        Ok(CaptureReportResponse { recorded, unknown })
    }
}

#[tonic::async_trait]
impl NodeAgentStatus for CaptureStatusService {
    async fn report_capture(
        &self,
        request: Request<CaptureReport>,
    ) -> Result<Response<CaptureReportResponse>, Status> {
        match self.report(request).await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(status) => {
                tracing::warn!(code = ?status.code(), reason = status.message(), "capture report refused");
                Err(status)
            }
        }
    }
}
