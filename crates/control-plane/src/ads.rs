//! The delta ADS server (`DeltaAggregatedResources`) serving
//! `istio.workload.Address` and `istio.security.Authorization`.
//!
//! Per connection and type it keeps the client's subscription (wildcard, the usual
//! ztunnel form, or explicit names) and the version of every resource it was sent. A
//! first request is answered at once, even when empty (ztunnel waits for it to be ready),
//! starting from the versions the client says it holds (`initial_resource_versions`, so a
//! reconnect resyncs and removes what vanished). Later store changes are debounced and
//! pushed as differences: only changed resources, plus removals. ACKs are recorded; a NACK
//! is logged with the client's message, and the client keeps its old resource.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use xds::discovery::aggregated_discovery_service_server::AggregatedDiscoveryService;
use xds::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};

use crate::metrics::Metrics;
use crate::store::{PublishedSet, Snapshot, Store};

/// What one connected client was sent, for `/debug/config_dump` and `/debug/connections`.
#[derive(Debug, Default)]
pub struct ClientState {
    /// Node id from the first request.
    pub node_id: String,
    /// `NODE_NAME` metadata (or the id).
    pub node_name: String,
    /// When it connected.
    pub connected: Option<std::time::SystemTime>,
    /// What the client holds, by type URL.
    pub sent: BTreeMap<String, Sent>,
    /// ACKs and NACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// The last NACK's message.
    pub last_nack: Option<String>,
    /// By type URL, the store version the client is known to hold: it acknowledged
    /// every push up to it, or there was nothing to push it (`apply --wait` waits on it).
    pub synced: BTreeMap<String, u64>,
}

impl ClientState {
    /// The oldest store version any of its types is known to hold (`None` before its
    /// first acknowledged type).
    pub fn synced_version(&self) -> Option<u64> {
        self.synced.values().min().copied()
    }
}

/// What a client holds of one type.
#[derive(Debug, Clone)]
pub enum Sent {
    /// Everything in this snapshot (a wildcard client that is in sync).
    Snapshot(Arc<Snapshot>),
    /// These resources (explicit names, or before the first sync).
    Resources(PublishedSet),
}

impl Sent {
    /// The resources of `type_url` the client holds.
    pub fn resources<'a>(&'a self, type_url: &str) -> Option<&'a PublishedSet> {
        match self {
            Sent::Snapshot(snapshot) => snapshot.resources(type_url),
            Sent::Resources(set) => Some(set),
        }
    }
}

/// Connected clients, by connection id.
#[derive(Debug, Default)]
pub struct Clients {
    next: AtomicU64,
    by_id: Mutex<BTreeMap<u64, Arc<Mutex<ClientState>>>>,
}

impl Clients {
    /// The states of connected clients whose node name or id is `node`.
    pub fn for_node(&self, node: &str) -> Vec<Arc<Mutex<ClientState>>> {
        self.all()
            .into_iter()
            .filter(|c| {
                c.lock()
                    .map(|c| c.node_name == node || c.node_id == node)
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Every connected client.
    pub fn all(&self) -> Vec<Arc<Mutex<ClientState>>> {
        self.by_id
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn add(&self) -> (u64, Arc<Mutex<ClientState>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(Mutex::new(ClientState {
            connected: Some(std::time::SystemTime::now()),
            ..Default::default()
        }));
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(id, state.clone());
        }
        (id, state)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.by_id.lock() {
            m.remove(&id);
        }
    }
}

/// The ADS service.
#[derive(Debug, Clone)]
pub struct Ads {
    store: Arc<Store>,
    clients: Arc<Clients>,
    metrics: Arc<Metrics>,
    /// Bounds full syncs in flight (held from a first push until its ACK), so a
    /// reconnect storm does not hold every client's full state in memory at once.
    full_syncs: Arc<tokio::sync::Semaphore>,
    debounce: Duration,
}

impl Ads {
    /// Serves `store`; bursts of changes within `debounce` go out as one push.
    pub fn new(
        store: Arc<Store>,
        clients: Arc<Clients>,
        metrics: Arc<Metrics>,
        debounce: Duration,
    ) -> Self {
        Self {
            store,
            clients,
            metrics,
            debounce,
            full_syncs: Arc::new(tokio::sync::Semaphore::new(FULL_SYNCS_IN_FLIGHT)),
        }
    }
}

/// Full syncs sent but not yet acknowledged, across clients.
const FULL_SYNCS_IN_FLIGHT: usize = 16;
/// How long a full sync may stay unacknowledged before its permit is released anyway.
const FULL_SYNC_ACK_WAIT: Duration = Duration::from_secs(10);

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "Bowline serves workload xDS over delta ADS only: use DeltaAggregatedResources",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let connection = Connection {
            ads: self.clone(),
            peer,
            tx,
            types: HashMap::new(),
            nonce: 0,
            pending: HashMap::new(),
            evaluated: HashMap::new(),
            sync_permits: HashMap::new(),
        };
        tokio::spawn(connection.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One type's subscription on one connection.
#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: HashSet<String>,
    /// Name → version the client holds (before a wildcard client's first sync, and for
    /// explicit-name subscriptions).
    held: HashMap<String, String>,
    /// The store version a wildcard client is in sync with; later pushes are the store's
    /// deltas since then, so no per-client comparison of every resource is needed.
    at: Option<u64>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct Connection {
    ads: Ads,
    peer: String,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    types: HashMap<String, Subscription>,
    nonce: u64,
    /// Nonce → (type, when sent), for ACK latency.
    pending: HashMap<String, (String, Instant)>,
    /// By type, the last store version a push was worked out for (what the client holds
    /// once every push of that type is acknowledged).
    evaluated: HashMap<String, u64>,
    /// Full-sync permits by the nonce whose ACK releases them (a timer releases them
    /// too, so a client that never ACKs cannot starve the others).
    sync_permits: HashMap<String, Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>>,
}

/// Why a client's ADS stream ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    /// The client's request stream failed.
    #[error("stream error: {0}")]
    Stream(#[from] Status),
    /// The response channel is closed: the client went away.
    #[error("client went away")]
    ClientGone,
    /// The client is further behind than the store's history: it must resync.
    #[error("the client fell too far behind; closing the stream so it resyncs")]
    TooFarBehind,
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        let (id, state) = self.ads.clients.add();
        self.ads.metrics.clients.inc();
        let mut updates = self.ads.store.subscribe();
        updates.mark_unchanged();
        let outcome = loop {
            tokio::select! {
                request = inbound.message() => match request {
                    Ok(Some(request)) => {
                        if let Err(e) = self.handle(request, &state).await {
                            break Some(e);
                        }
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(StreamEnd::from(status)),
                },
                changed = updates.changed() => {
                    if changed.is_err() {
                        break None;
                    }
                    // Debounce: let a burst of changes settle into one push.
                    tokio::time::sleep(self.ads.debounce).await;
                    updates.mark_unchanged();
                    let snapshot = self.ads.store.load();
                    let types: Vec<String> = self.types.keys().cloned().collect();
                    let mut failed = None;
                    for type_url in types {
                        if let Err(e) = self.push(&type_url, &snapshot, false, &HashSet::new(), &state).await {
                            failed = Some(e);
                        }
                    }
                    if let Some(e) = failed {
                        break Some(e);
                    }
                }
            }
        };
        let node = state.lock().map(|s| s.node_id.clone()).unwrap_or_default();
        match outcome {
            Some(error) => {
                tracing::info!(peer = %self.peer, %node, %error, "xds: client disconnected")
            }
            None => tracing::info!(peer = %self.peer, %node, "xds: client disconnected"),
        }
        self.ads.clients.remove(id);
        self.ads.metrics.clients.dec();
    }

    async fn handle(
        &mut self,
        request: DeltaDiscoveryRequest,
        state: &Arc<Mutex<ClientState>>,
    ) -> Result<(), StreamEnd> {
        if let Some(node) = &request.node
            && let Ok(mut s) = state.lock()
            && s.node_id.is_empty()
        {
            s.node_id = node.id.clone();
            s.node_name = node_name(node);
            tracing::info!(peer = %self.peer, node = %node.id, "xds: client connected");
        }
        let type_url = request.type_url.clone();
        if self.ads.store.load().resources(&type_url).is_none() {
            // Unknown types get an empty answer so clients do not wait forever.
            tracing::debug!(peer = %self.peer, %type_url, "xds: type not served");
            let nonce = self.next_nonce();
            return self
                .send(DeltaDiscoveryResponse {
                    type_url,
                    nonce,
                    ..Default::default()
                })
                .await;
        }
        if !request.response_nonce.is_empty() {
            self.acknowledged(&request, state);
        }
        let first = !self.types.contains_key(&type_url);
        let subscription = self.types.entry(type_url.clone()).or_default();
        if first {
            subscription.wildcard = (request.resource_names_subscribe.is_empty()
                && request.resource_names_unsubscribe.is_empty())
                || request.resource_names_subscribe.iter().any(|n| n == "*");
            subscription.held = request
                .initial_resource_versions
                .clone()
                .into_iter()
                .collect();
        }
        let mut resend = HashSet::new();
        for name in &request.resource_names_subscribe {
            if name == "*" {
                subscription.wildcard = true;
            } else {
                subscription.names.insert(name.clone());
                // A named subscription is always (re)sent.
                resend.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                subscription.wildcard = false;
                if subscription.at.take().is_some() {
                    // Leave delta tracking: remember what the client holds by name.
                    let snapshot = self.ads.store.load();
                    subscription.held = snapshot
                        .resources(&type_url)
                        .into_iter()
                        .flatten()
                        .map(|(n, p)| (n.clone(), p.version.clone()))
                        .collect();
                }
            } else {
                subscription.names.remove(name);
            }
        }
        for name in &resend {
            subscription.held.remove(name);
        }
        let changed_subscription = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        if first || changed_subscription {
            // Only the (large) address type is throttled, and a connection holds at most
            // one permit, so waiting for one can never block an ACK that frees another.
            let permit = if first && type_url == xds::ADDRESS_TYPE_URL {
                self.ads.full_syncs.clone().acquire_owned().await.ok()
            } else {
                None
            };
            let snapshot = self.ads.store.load();
            self.push(&type_url, &snapshot, first, &resend, state)
                .await?;
            if let Some(permit) = permit {
                let held = Arc::new(Mutex::new(Some(permit)));
                self.sync_permits
                    .insert(self.nonce.to_string(), held.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(FULL_SYNC_ACK_WAIT).await;
                    if let Ok(mut p) = held.lock() {
                        p.take();
                    }
                });
            }
        }
        Ok(())
    }

    fn acknowledged(&mut self, request: &DeltaDiscoveryRequest, state: &Arc<Mutex<ClientState>>) {
        let sent = self.pending.remove(&request.response_nonce);
        if let Some(permit) = self.sync_permits.remove(&request.response_nonce)
            && let Ok(mut p) = permit.lock()
        {
            p.take();
        }
        let Ok(mut s) = state.lock() else { return };
        s.acks += 1;
        match &request.error_detail {
            Some(error) => {
                s.nacks += 1;
                s.last_nack = Some(error.message.clone());
                self.ads.metrics.nacks.inc();
                tracing::warn!(
                    peer = %self.peer,
                    node = %s.node_id,
                    type_url = %request.type_url,
                    error = %error.message,
                    "xds: client rejected a push (NACK); it keeps its previous resources"
                );
            }
            None => {
                if let Some((type_url, at)) = sent {
                    self.ads
                        .metrics
                        .push_ack_seconds
                        .observe(at.elapsed().as_secs_f64());
                    // With nothing else of its type in flight, the client holds what the
                    // last push of that type was worked out for.
                    let in_flight = self.pending.values().any(|(t, _)| *t == type_url);
                    if !in_flight && let Some(version) = self.evaluated.get(&type_url) {
                        s.synced.insert(type_url, *version);
                    }
                }
            }
        }
    }

    /// Sends what differs between the snapshot and what the client holds, plus the
    /// `forced` names. `always` answers even with nothing to send (first request).
    async fn push(
        &mut self,
        type_url: &str,
        snapshot: &Arc<Snapshot>,
        always: bool,
        forced: &HashSet<String>,
        state: &Arc<Mutex<ClientState>>,
    ) -> Result<(), StreamEnd> {
        let Some(current) = snapshot.resources(type_url) else {
            // A type the control plane serves nothing of: nothing to hold.
            if let Ok(mut s) = state.lock() {
                s.synced.insert(type_url.to_owned(), snapshot.version);
            }
            return Ok(());
        };
        let Some(subscription) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let (changed, mut removed): (Vec<&String>, Vec<String>) = match subscription.at {
            Some(at) if subscription.wildcard => {
                let delta = if at == snapshot.version {
                    crate::store::Delta::default()
                } else {
                    self.ads
                        .store
                        .changes_since(type_url, at, snapshot.version)
                        .ok_or(StreamEnd::TooFarBehind)?
                };
                let changed = current
                    .keys()
                    .filter(|n| delta.changed.contains(*n) || forced.contains(*n))
                    .collect();
                (changed, delta.removed.into_iter().collect())
            }
            _ => {
                let held = &subscription.held;
                let changed = current
                    .iter()
                    .filter(|(name, p)| {
                        subscription.wants(name) && held.get(*name) != Some(&p.version)
                    })
                    .map(|(name, _)| name)
                    .collect();
                let removed = held
                    .keys()
                    .filter(|name| !current.contains_key(*name) || !subscription.wants(name))
                    .cloned()
                    .collect();
                (changed, removed)
            }
        };
        // Explicitly subscribed names that do not exist are reported as removed.
        for name in forced.iter().chain(&subscription.names) {
            if !current.contains_key(name) && !removed.contains(name) {
                removed.push(name.clone());
            }
        }
        removed.sort();
        self.evaluated.insert(type_url.to_owned(), snapshot.version);
        if changed.is_empty() && removed.is_empty() && !always {
            if subscription.wildcard && subscription.at.is_some() {
                subscription.at = Some(snapshot.version);
            }
            // Nothing to send and nothing in flight: the client is in sync already.
            let in_flight = self.pending.values().any(|(t, _)| t == type_url);
            if !in_flight && let Ok(mut s) = state.lock() {
                s.synced.insert(type_url.to_owned(), snapshot.version);
            }
            return Ok(());
        }
        let resources: Vec<Resource> = changed
            .into_iter()
            .filter_map(|name| current.get(name))
            .map(|published| Resource {
                name: published.name.clone(),
                version: published.version.clone(),
                resource: Some(published.resource.clone()),
                ..Default::default()
            })
            .collect();
        let view = if subscription.wildcard {
            // In sync with this snapshot from now on.
            subscription.at = Some(snapshot.version);
            subscription.held = HashMap::new();
            Sent::Snapshot(snapshot.clone())
        } else {
            for r in &resources {
                subscription.held.insert(r.name.clone(), r.version.clone());
            }
            for name in &removed {
                subscription.held.remove(name);
            }
            Sent::Resources(
                current
                    .iter()
                    .filter(|(name, _)| subscription.held.contains_key(*name))
                    .map(|(n, p)| (n.clone(), p.clone()))
                    .collect(),
            )
        };
        if let Ok(mut s) = state.lock() {
            s.sent.insert(type_url.to_owned(), view);
        }
        let bytes: usize = resources
            .iter()
            .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len()))
            .sum();
        let nonce = self.next_nonce();
        self.pending
            .insert(nonce.clone(), (type_url.to_owned(), Instant::now()));
        self.ads.metrics.pushes.inc();
        self.ads.metrics.pushed_bytes.inc_by(bytes as u64);
        self.ads
            .metrics
            .pushed_resources
            .inc_by((resources.len() + removed.len()) as u64);
        self.send(DeltaDiscoveryResponse {
            system_version_info: snapshot.version.to_string(),
            type_url: type_url.to_owned(),
            resources,
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
        .await
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    async fn send(&self, response: DeltaDiscoveryResponse) -> Result<(), StreamEnd> {
        self.tx
            .send(Ok(response))
            .await
            .map_err(|_| StreamEnd::ClientGone)
    }
}

/// `NODE_NAME` from the node's metadata, else the node id.
fn node_name(node: &xds::core::Node) -> String {
    use xds::google::protobuf::value::Kind;
    node.metadata
        .as_ref()
        .and_then(|m| m.fields.get("NODE_NAME"))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| node.id.clone())
}
