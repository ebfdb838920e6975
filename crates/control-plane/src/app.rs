//! Running the control plane: the CA root and node-token key from the state directory,
//! the watched config files, the delta ADS server (plaintext on 15010 for the lab, TLS on
//! 15012 together with the CA service and the node agents' capture reports), and the HTTP
//! surfaces: public (metrics, readiness) on 15014, management (debug, apply) on
//! 127.0.0.1:15015 behind the operator token (`<state>/operator-token`, made at first
//! start). Objects applied through the API are kept in `<state>/applied.yaml`, the capture
//! reports in `<state>/captured.json`; both are restored at start — the applied objects
//! over the files, as they were written.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use identity::{CaConfig, CertificateAuthority};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use xds::agent::node_agent_status_server::NodeAgentStatusServer;
use xds::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use xds::discovery::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;

use crate::ads::{Ads, Clients};
use crate::ca_service::CaService;
use crate::capture_status::{self, CaptureStatusService};
use crate::http_api::{self, HttpState};
use crate::metrics::Metrics;
use crate::operator_token::OperatorToken;
use crate::store::{Origin, Store};
use crate::tokens::NodeTokens;
use crate::translate::MeshSettings;

/// The DNS name in the control plane's TLS certificate; clients verify it.
pub const SERVER_NAME: &str = "bowline-control-plane";
/// Largest xDS/CA message accepted or sent.
const MAX_MESSAGE: usize = 256 << 20;

/// Static settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// CA root, node-token key.
    pub state_dir: PathBuf,
    /// Files and directories of YAML, watched.
    pub config_paths: Vec<PathBuf>,
    /// Plaintext xDS (lab), if any.
    pub xds_plaintext_addr: Option<SocketAddr>,
    /// TLS xDS + CA.
    pub xds_tls_addr: SocketAddr,
    /// Metrics and readiness (read-only).
    pub http_addr: SocketAddr,
    /// The management API (debug, apply), behind the operator token.
    pub api_addr: SocketAddr,
    /// Extra names (DNS or IP) for the TLS certificate.
    pub tls_names: Vec<String>,
    /// Mesh settings.
    pub mesh: MeshSettings,
    /// Push debounce.
    pub debounce: Duration,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CA root.
    #[error(transparent)]
    Ca(#[from] identity::CaError),
    /// The token key.
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenError),
    /// The operator token.
    #[error(transparent)]
    OperatorToken(#[from] crate::operator_token::OperatorTokenError),
    /// A config file.
    #[error("{0}")]
    Config(String),
    /// A listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS set-up.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Where the control plane listens, once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Plaintext xDS.
    pub xds_plaintext: Option<SocketAddr>,
    /// TLS xDS + CA.
    pub xds_tls: SocketAddr,
    /// Public HTTP surface (metrics, readiness).
    pub http: SocketAddr,
    /// Management API.
    pub api: SocketAddr,
}

/// Runs until `shutdown` completes. `on_bound` learns the bound addresses.
pub async fn run(
    config: Config,
    on_bound: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let ca = Arc::new(CertificateAuthority::load_or_generate(
        &config.state_dir.join("ca"),
        CaConfig::new(config.mesh.trust_domain.clone()),
    )?);
    let tokens = Arc::new(NodeTokens::load_or_create(&config.state_dir)?);
    let operator_token = Arc::new(OperatorToken::load_or_create(&config.state_dir)?);
    let store = Arc::new(Store::new(config.mesh.clone()));
    let metrics = Arc::new(Metrics::default());
    let clients = Arc::new(Clients::default());
    match capture_status::restore(&store, &config.state_dir) {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "restored the pods node agents reported captured"),
        Err(error) => {
            tracing::error!(%error, "starting with no pod captured; the node agents report again when they reconnect")
        }
    }

    // Files first, then what was applied over them: the order in which they were
    // written, so the applied objects win again and the files keep owning status.
    let applied_file = config.state_dir.join("applied.yaml");
    let mut files = FileSources::new(config.config_paths.clone());
    files.applied_file = Some(applied_file.clone());
    if let Some(error) = files.poll(&store, &metrics).into_iter().next() {
        return Err(StartError::Config(error));
    }
    if let Ok(text) = std::fs::read_to_string(&applied_file) {
        let resources = config::parse_documents(&text, &applied_file.display().to_string())
            .map_err(|e| StartError::Config(format!("objects applied earlier: {e}")))?;
        let count = resources.len();
        store.apply(resources, &Origin::Api, false);
        tracing::info!(count, file = %applied_file.display(), "restored objects applied earlier");
    }
    let mut tasks = Vec::new();
    {
        let store = store.clone();
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                files.poll(&store, &metrics);
            }
        }));
    }

    let ads = Ads::new(
        store.clone(),
        clients.clone(),
        metrics.clone(),
        config.debounce,
    );
    let ads_service = || {
        AggregatedDiscoveryServiceServer::new(ads.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut xds_plaintext = None;
    if let Some(addr) = config.xds_plaintext_addr {
        let listener = bind(addr).await?;
        xds_plaintext = Some(
            listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?,
        );
        let server = Server::builder()
            .add_service(ads_service())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "plaintext xDS server failed");
            }
        }));
    }

    let mut names = vec![SERVER_NAME.to_owned(), "localhost".to_owned()];
    names.extend(config.tls_names.iter().cloned());
    let (chain, key) = ca.issue_server_certificate(&names, Duration::from_secs(365 * 24 * 3600))?;
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(chain.join(""), key));
    let listener = bind(config.xds_tls_addr).await?;
    let xds_tls = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.xds_tls_addr,
        source,
    })?;
    let ca_service = IstioCertificateServiceServer::new(CaService::new(
        ca.clone(),
        tokens.clone(),
        store.clone(),
        metrics.clone(),
    ));
    let capture_service = NodeAgentStatusServer::new(CaptureStatusService::new(
        tokens,
        store.clone(),
        Some(&config.state_dir),
    ));
    let server = Server::builder()
        .tls_config(tls)
        .map_err(|e| StartError::Tls(e.to_string()))?
        .add_service(ads_service())
        .add_service(ca_service)
        .add_service(capture_service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "TLS xDS/CA server failed");
        }
    }));

    let state = HttpState::new(
        store.clone(),
        clients,
        metrics,
        Some(applied_file),
        operator_token,
    );
    let listen = |surface, addr| {
        let state = state.clone();
        async move {
            http_api::spawn(surface, addr, state)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        }
    };
    let (http, task) = listen(http_api::Surface::Public, config.http_addr).await?;
    tasks.push(task);
    let (api, task) = listen(http_api::Surface::Management, config.api_addr).await?;
    tasks.push(task);
    let bound = Bound {
        xds_plaintext,
        xds_tls,
        http,
        api,
    };
    tracing::info!(
        xds_plaintext = ?bound.xds_plaintext,
        xds_tls = %bound.xds_tls,
        http = %bound.http,
        api = %bound.api,
        objects = store.load().objects.len(),
        "control plane serving"
    );
    on_bound(bound);

    shutdown.await;
    tracing::info!("control plane shutting down");
    let _ = stop_tx.send(true);
    for task in tasks {
        task.abort();
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Watched YAML files and directories. Each file is its own source: a file that fails to
/// parse keeps its last good objects and the error is logged.
#[derive(Debug)]
pub struct FileSources {
    roots: Vec<PathBuf>,
    /// File → hash of the content last taken (or refused).
    seen: BTreeMap<PathBuf, u64>,
    /// Rewritten when a file takes an object back from the apply API, so a restart does
    /// not restore the applied version over the file's.
    pub applied_file: Option<PathBuf>,
}

impl FileSources {
    /// Sources under `roots`.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            seen: BTreeMap::new(),
            applied_file: None,
        }
    }

    /// Reads what changed into `store`; returns the errors of refused files.
    pub fn poll(&mut self, store: &Store, metrics: &Metrics) -> Vec<String> {
        let mut errors = Vec::new();
        let mut present = Vec::new();
        for root in &self.roots {
            collect_yaml(root, &mut present, &mut errors);
        }
        for path in &present {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let hash = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            };
            if self.seen.get(path) == Some(&hash) {
                continue;
            }
            self.seen.insert(path.clone(), hash);
            let name = path.display().to_string();
            match config::parse_documents_noting(&text, &name) {
                Ok(parsed) => {
                    if let Some(note) = parsed.unused_note() {
                        tracing::warn!(file = %name, "{note}");
                    }
                    let resources = parsed.resources;
                    let before = store.load();
                    let changes = store.replace_origin(&Origin::File(name.clone()), resources);
                    let took_back = changes.iter().any(|c| {
                        before
                            .objects
                            .get(&c.key)
                            .is_some_and(|o| o.origin == Origin::Api)
                            && c.outcome == crate::store::Outcome::Configured
                    });
                    if took_back
                        && let Some(file) = &self.applied_file
                        && let Err(e) = http_api::save_applied(store, file)
                    {
                        tracing::error!(file = %file.display(), error = %e, "cannot save applied objects");
                    }
                    let changed = changes
                        .iter()
                        .filter(|c| c.outcome != crate::store::Outcome::Unchanged)
                        .count();
                    if changed > 0 {
                        tracing::info!(file = %name, changed, "config file loaded");
                        // What of the file's objects is not in force, where its
                        // operator looks: the control plane's log.
                        let status = &store.load().compiled.status;
                        for change in &changes {
                            let object = &change.object;
                            for note in status.get(object).into_iter().flatten() {
                                tracing::warn!(file = %name, %object, "{note}");
                            }
                        }
                    }
                }
                Err(e) => {
                    metrics.config_errors.inc();
                    tracing::error!(error = %e, "config file refused; its last good version stays in force");
                    errors.push(e.to_string());
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.seen.remove(&path);
            store.replace_origin(&Origin::File(path.display().to_string()), Vec::new());
            tracing::info!(file = %path.display(), "config file removed; its objects are deleted");
        }
        errors
    }
}

fn collect_yaml(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                entries.sort();
                for entry in entries {
                    collect_yaml(&entry, out, errors);
                }
            }
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    } else if path
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
    {
        out.push(path.to_owned());
    } else if !path.exists() {
        errors.push(format!("{}: no such file or directory", path.display()));
    }
}
