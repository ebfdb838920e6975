//! The node agent's loop: which pods of this node are enrolled (from the control plane's
//! workload xDS: a workload on this node carrying the `bowline.io/capture` extension is
//! enrolled), and making that true — capture rules inside the pod's namespace, then the
//! namespace handed to ztunnel over ZDS; the reverse when a pod leaves or is un-enrolled.
//! The set of pods captured this way is reported to the control plane ([`crate::report`]),
//! which advertises a pod as HBONE only once it is in that set.
//!
//! A restarted agent reports nothing until it knows both the control plane's pods and
//! ztunnel's (it has replayed to a connected ztunnel): an early, empty report would turn
//! every pod of the node back to plaintext for a moment.
//!
//! A pod is never captured while ztunnel is not connected (nobody would be listening);
//! the agent says so and enrols it when ztunnel connects. When ztunnel (re)connects, the
//! agent replays every captured pod and then sends `snapshot_sent`. Pod namespaces are
//! found by name: `<netns_prefix><namespace>-<pod>` under `/run/netns`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::Namespace;
use netns::capture::{self, CaptureSpec};
use prost::Message;
use tokio::sync::{mpsc, watch};
use xds::ads_client::AdsStream;

use crate::report::{self, ReportConfig, Reporter};
use crate::zds::{AgentError, AgentSocket, PodRef, ZtunnelConnection};

/// Settings of one node agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node it serves.
    pub node_name: String,
    /// The control plane's xDS (`http://HOST:15010` or `https://HOST:15012`).
    pub xds_url: String,
    /// The mesh root, for `https`.
    pub root_pem: Option<String>,
    /// The ZDS socket ztunnel connects to.
    pub zds_socket: PathBuf,
    /// Prefix of pod namespace names.
    pub netns_prefix: String,
    /// Capture DNS (port 53) to ztunnel's DNS proxy on 15053.
    pub dns_capture: bool,
    /// Where captures are reported (`https://HOST:15012`).
    pub status_url: String,
    /// The node token for reports.
    pub token_file: PathBuf,
}

/// An enrolled pod of this node, as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledPod {
    /// Workload uid.
    pub uid: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentStartError {
    /// The ZDS socket.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The control plane address.
    #[error("control plane: {0}")]
    ControlPlane(#[from] xds::XdsError),
}

/// Runs the agent until the task is dropped.
pub async fn run(config: AgentConfig) -> Result<(), AgentStartError> {
    let socket =
        AgentSocket::bind(&config.zds_socket).map_err(|source| AgentStartError::Socket {
            path: config.zds_socket.display().to_string(),
            source,
        })?;
    xds::transport::lazy_channel(&config.xds_url, config.root_pem.as_deref())?;
    let reporter = Reporter::new(ReportConfig {
        node_name: config.node_name.clone(),
        url: config.status_url.clone(),
        root_pem: config.root_pem.clone(),
        token_file: config.token_file.clone(),
    })?;
    let (reported, reported_rx) = watch::channel(None);
    let (sessions, sessions_rx) = watch::channel(0u64);
    tokio::spawn(report::run(reporter, reported_rx, sessions_rx));
    let (pods_tx, mut pods_rx) = watch::channel(None::<BTreeMap<String, EnrolledPod>>);
    tokio::spawn(watch_pods(config.clone(), pods_tx, sessions));
    let (conn_tx, mut conn_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            match socket.accept().await {
                Ok(connection) => {
                    if conn_tx.send(connection).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    // Out of descriptors, usually: wait rather than spin on the error.
                    tracing::warn!(%error, "a ztunnel failed to connect");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    let mut agent = Agent {
        spec: CaptureSpec {
            dns_port: config.dns_capture.then_some(15053),
            ..CaptureSpec::default()
        },
        config,
        desired: BTreeMap::new(),
        captured: BTreeMap::new(),
        first_seen: BTreeMap::new(),
        ztunnel: None,
        warned: BTreeSet::new(),
        desired_known: false,
        replayed: false,
        reported,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            changed = pods_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let pods = pods_rx.borrow_and_update().clone();
                if let Some(pods) = pods {
                    agent.set_desired(pods);
                    agent.reconcile().await;
                    agent.publish();
                }
            }
            Some(connection) = conn_rx.recv() => {
                tracing::info!("ztunnel connected; replaying the pods of this node");
                agent.ztunnel = Some(connection);
                agent.warned.clear();
                agent.replay().await;
                agent.publish();
            }
            _ = tick.tick() => {
                agent.reconcile().await;
                agent.publish();
            }
        }
    }
}

struct Agent {
    config: AgentConfig,
    spec: CaptureSpec,
    desired: BTreeMap<String, EnrolledPod>,
    /// Pods whose capture is installed and which ztunnel accepted.
    captured: BTreeMap<String, EnrolledPod>,
    first_seen: BTreeMap<String, Instant>,
    ztunnel: Option<ZtunnelConnection>,
    warned: BTreeSet<String>,
    /// The control plane's pods of this node have arrived at least once.
    desired_known: bool,
    /// A ztunnel connected and was replayed to at least once.
    replayed: bool,
    /// What the reporter sends: the captured uids, once both of the above hold.
    reported: watch::Sender<Option<BTreeSet<String>>>,
}

impl Agent {
    /// Hands the captured set to the reporter (it sends only what changed).
    fn publish(&self) {
        if !(self.desired_known && self.replayed) {
            return;
        }
        let now: BTreeSet<String> = self.captured.keys().cloned().collect();
        self.reported.send_if_modified(|held| {
            if held.as_ref() == Some(&now) {
                false
            } else {
                *held = Some(now);
                true
            }
        });
    }

    fn set_desired(&mut self, pods: BTreeMap<String, EnrolledPod>) {
        let now = Instant::now();
        for uid in pods.keys() {
            self.first_seen.entry(uid.clone()).or_insert(now);
        }
        self.first_seen.retain(|uid, _| pods.contains_key(uid));
        self.desired = pods;
        self.desired_known = true;
    }

    fn netns(&self, pod: &EnrolledPod) -> Namespace {
        Namespace::existing(&format!(
            "{}{}-{}",
            self.config.netns_prefix, pod.namespace, pod.name
        ))
    }

    async fn reconcile(&mut self) {
        let gone: Vec<EnrolledPod> = self
            .captured
            .iter()
            .filter(|(uid, pod)| self.desired.get(*uid) != Some(pod))
            .map(|(_, pod)| pod.clone())
            .collect();
        for pod in gone {
            self.unenrol(&pod).await;
        }
        let wanted: Vec<EnrolledPod> = self
            .desired
            .iter()
            .filter(|(uid, _)| !self.captured.contains_key(*uid))
            .map(|(_, pod)| pod.clone())
            .collect();
        for pod in wanted {
            if self.ztunnel.is_none() {
                if self.warned.insert(pod.uid.clone()) {
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), "not capturing this pod: ztunnel is not connected, nobody would receive its traffic; it is captured as soon as ztunnel connects");
                }
                continue;
            }
            self.enrol(&pod).await;
        }
    }

    async fn replay(&mut self) {
        let captured: Vec<EnrolledPod> = self.captured.values().cloned().collect();
        for pod in captured {
            if let Err(error) = self.hand_over(&pod).await {
                tracing::warn!(pod = %pod.name, %error, "ztunnel refused a replayed pod");
            }
        }
        self.reconcile().await;
        if let Some(z) = &self.ztunnel
            && let Err(error) = z.snapshot_sent().await
        {
            tracing::warn!(%error, "ztunnel did not take the snapshot");
            self.ztunnel = None;
        }
        self.replayed = true;
    }

    async fn hand_over(&mut self, pod: &EnrolledPod) -> Result<(), AgentError> {
        let Some(z) = &self.ztunnel else {
            return Err(AgentError::Closed);
        };
        let file = self
            .netns(pod)
            .open()
            .map_err(|e| AgentError::Io(std::io::Error::other(e.to_string())))?;
        let result = z
            .add(
                &PodRef {
                    uid: &pod.uid,
                    name: &pod.name,
                    namespace: &pod.namespace,
                    service_account: &pod.service_account,
                },
                file.as_fd(),
            )
            .await;
        if matches!(
            result,
            Err(AgentError::Closed | AgentError::Io(_) | AgentError::Timeout(_))
        ) {
            tracing::warn!("lost the ztunnel connection");
            self.ztunnel = None;
        }
        result
    }

    async fn enrol(&mut self, pod: &EnrolledPod) {
        let name = format!("{}/{}", pod.namespace, pod.name);
        let ns = self.netns(pod);
        if !ns.path().exists() {
            if self.warned.insert(pod.uid.clone()) {
                tracing::warn!(pod = %name, netns = %ns.name(), "pod namespace not found yet; will retry");
            }
            return;
        }
        let spec = self.spec;
        let ns_for_rules = Namespace::existing(ns.name());
        let installed =
            tokio::task::spawn_blocking(move || capture::install(&ns_for_rules, &spec)).await;
        match installed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(pod = %name, %error, "cannot install capture rules");
                return;
            }
            Err(error) => {
                tracing::error!(pod = %name, %error, "capture task failed");
                return;
            }
        }
        match self.hand_over(pod).await {
            Ok(()) => {
                let ms = self
                    .first_seen
                    .get(&pod.uid)
                    .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
                tracing::info!(pod = %name, capture_ms = ms, "pod captured: traffic now goes through ztunnel");
                self.captured.insert(pod.uid.clone(), pod.clone());
                self.warned.remove(&pod.uid);
            }
            Err(error) => {
                tracing::error!(pod = %name, %error, "ztunnel did not take the pod; capture removed");
                let _ = tokio::task::spawn_blocking(move || capture::remove(&ns)).await;
            }
        }
    }

    async fn unenrol(&mut self, pod: &EnrolledPod) {
        let name = format!("{}/{}", pod.namespace, pod.name);
        if let Some(z) = &self.ztunnel
            && let Err(error) = z.del(&pod.uid).await
        {
            tracing::warn!(pod = %name, %error, "ztunnel did not acknowledge the removal");
        }
        let ns = self.netns(pod);
        if ns.path().exists() {
            match tokio::task::spawn_blocking(move || capture::remove(&ns)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(pod = %name, %error, "cannot remove capture rules")
                }
                Err(error) => tracing::warn!(pod = %name, %error, "capture task failed"),
            }
        }
        self.captured.remove(&pod.uid);
        tracing::info!(pod = %name, "pod released: capture removed");
    }
}

/// Follows the control plane's workloads; publishes this node's enrolled pods, and counts
/// in `sessions` every stream that got a first answer.
async fn watch_pods(
    config: AgentConfig,
    pods: watch::Sender<Option<BTreeMap<String, EnrolledPod>>>,
    sessions: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Err(error) = pods_session(&config, &pods, &sessions).await {
            tracing::warn!(url = %config.xds_url, %error, "node agent: no control plane; keeping the current pods");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn pods_session(
    config: &AgentConfig,
    pods: &watch::Sender<Option<BTreeMap<String, EnrolledPod>>>,
    sessions: &watch::Sender<u64>,
) -> Result<(), xds::XdsError> {
    let node = xds::core::Node {
        id: format!("cni~{}", config.node_name),
        ..Default::default()
    };
    let mut stream = AdsStream::open(
        &config.xds_url,
        config.root_pem.as_deref(),
        node,
        vec![(xds::ADDRESS_TYPE_URL.to_owned(), Default::default())],
    )
    .await?;
    // Every workload of this node by uid (enrolled or not), rebuilt from deltas.
    let mut all: BTreeMap<String, (EnrolledPod, bool)> = BTreeMap::new();
    let mut first = true;
    while let Some(response) = stream.next().await? {
        for resource in &response.resources {
            let Some(any) = &resource.resource else {
                continue;
            };
            let Ok(address) = xds::workload::Address::decode(any.value.as_slice()) else {
                continue;
            };
            all.remove(&resource.name);
            if let Some(xds::workload::address::Type::Workload(w)) = address.r#type
                && w.node == config.node_name
            {
                let enrolled = w
                    .extensions
                    .iter()
                    .any(|e| e.name == xds::CAPTURE_EXTENSION);
                let sa = if w.service_account.is_empty() {
                    "default".to_owned()
                } else {
                    w.service_account
                };
                all.insert(
                    resource.name.clone(),
                    (
                        EnrolledPod {
                            uid: w.uid,
                            name: w.name,
                            namespace: w.namespace,
                            service_account: sa,
                        },
                        enrolled,
                    ),
                );
            }
        }
        for name in &response.removed_resources {
            all.remove(name);
        }
        let enrolled = all
            .values()
            .filter(|(_, e)| *e)
            .map(|(p, _)| (p.uid.clone(), p.clone()))
            .collect();
        pods.send_replace(Some(enrolled));
        stream.answer(&response, None).await?;
        if first {
            first = false;
            sessions.send_modify(|n| *n += 1);
        }
    }
    Ok(())
}
