//! Running a ztunnel: static settings ([`Config`], built once from the command line), and
//! [`run`], which wires state (with its snapshot file), certificates (with their cache),
//! pods, the node agent client and the operator surfaces, then drains on shutdown: stop
//! accepting, let live connections finish up to the deadline, then close them (their
//! cached certificates stay for the next start).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use identity::{
    CaConfig, CertificateAuthority, CertificateCache, CertificateManager, CertificateProvider,
    ManagerConfig,
};

use crate::admin::{self, AdminState, LogLevelSetter, Surface};
use crate::inpod::{PodInfo, PodPorts, Pods};
use crate::proxy::{ProxyInputs, ProxySettings};
use crate::state::{Store, file_source};

/// Where pod listeners live.
#[derive(Debug, Clone)]
pub enum Mode {
    /// In each pod's namespace, handed over by the node agent on this socket.
    InPod {
        /// The node agent's ZDS socket.
        node_agent_socket: PathBuf,
    },
    /// In ztunnel's own namespace, for a host whose local apps are the workload `uid`.
    Shared {
        /// The workload (from the configuration) this host is.
        workload_uid: String,
    },
}

/// Where the mesh state comes from.
#[derive(Debug, Clone)]
pub enum StateSource {
    /// A local file (workloads, services, policies in the compiled form), watched.
    File(PathBuf),
    /// The control plane's delta ADS.
    Xds(crate::state::xds_client::XdsConfig),
}

/// Where pod certificates come from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// An in-process CA over the root in this directory (`root-cert.pem`,
    /// `root-key.pem`), created if empty.
    LocalCa(PathBuf),
    /// The control plane's CA service.
    ControlPlane {
        /// `https://host:15012`.
        url: String,
        /// The mesh root, PEM.
        root_pem: String,
        /// This node's token.
        token_file: PathBuf,
    },
}

/// Static settings.
#[derive(Clone)]
pub struct Config {
    /// Pod listener placement.
    pub mode: Mode,
    /// Mesh state.
    pub state: StateSource,
    /// Certificates.
    pub certificates: CertificateSource,
    /// Trust domain.
    pub trust_domain: String,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// Metrics server address.
    pub metrics_addr: SocketAddr,
    /// Readiness server address.
    pub readiness_addr: SocketAddr,
    /// SOCKS5 address (shared mode).
    pub socks5_addr: SocketAddr,
    /// How long live connections may finish after shutdown begins.
    pub drain_deadline: Duration,
    /// Run-time log level control.
    pub log_level: Option<LogLevelSetter>,
    /// The DNS proxy in pods.
    pub dns: crate::dns::DnsSettings,
    /// With xDS: where the last accepted resources are kept, and served from at start
    /// (stale) until the control plane answers.
    pub snapshot_file: Option<PathBuf>,
    /// Where issued certificates are kept, and served from at start while valid.
    pub cert_cache_dir: Option<PathBuf>,
}

/// Why ztunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CA root could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] identity::CaError),
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] file_source::FileSourceError),
    /// An operator surface could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Shared mode could not start its listeners.
    #[error("shared mode: {0}")]
    Shared(String),
    /// The control plane address or root is unusable.
    #[error("control plane: {0}")]
    ControlPlane(#[from] xds::XdsError),
    /// The certificate cache directory is unusable.
    #[error(transparent)]
    CertCache(#[from] identity::CacheError),
}

/// Runs ztunnel until `shutdown` completes, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let (provider, root_pem): (Arc<dyn CertificateProvider>, String) = match &config.certificates {
        CertificateSource::LocalCa(dir) => {
            let ca = CertificateAuthority::load_or_generate(
                dir,
                CaConfig::new(config.trust_domain.clone()),
            )?;
            let root = ca.root_pem().to_owned();
            (Arc::new(ca), root)
        }
        CertificateSource::ControlPlane {
            url,
            root_pem,
            token_file,
        } => {
            let client = crate::ca_client::CaClient::new(url, root_pem, token_file.clone())?;
            (Arc::new(client), root_pem.clone())
        }
    };
    let manager = match &config.cert_cache_dir {
        Some(dir) => CertificateManager::with_cache(
            provider,
            ManagerConfig::default(),
            CertificateCache::open(dir, &root_pem)?,
        ),
        None => CertificateManager::new(provider, ManagerConfig::default()),
    };
    let store = Arc::new(Store::default());
    let watcher = match &config.state {
        StateSource::File(file) => {
            file_source::watch(file.clone(), store.clone(), Duration::from_secs(1))?
        }
        StateSource::Xds(xds) => {
            // Settings are checked now; reachability is the client's to retry.
            xds::transport::lazy_channel(&xds.url, xds.root_pem.as_deref())?;
            tokio::spawn(crate::state::xds_client::run_with_snapshot(
                xds.clone(),
                store.clone(),
                config.snapshot_file.clone(),
            ))
        }
    };
    let settings = ProxySettings {
        trust_domain: config.trust_domain.clone(),
        dns: config.dns.clone(),
        ..ProxySettings::default()
    };
    let inputs = Arc::new(ProxyInputs::new(store.clone(), manager, settings));
    let pods = Arc::new(Pods::new(inputs.clone(), PodPorts::default()));

    let mut tasks = vec![watcher];
    match &config.mode {
        Mode::InPod { node_agent_socket } => {
            pods.expect_node_agent();
            tasks.push(tokio::spawn(crate::inpod::zds::run(
                node_agent_socket.clone(),
                pods.clone(),
            )));
        }
        Mode::Shared { workload_uid } => {
            start_shared(&pods, &store, workload_uid).await?;
            let pod = pods
                .pod(workload_uid)
                .ok_or_else(|| StartError::Shared("the shared workload did not start".into()))?;
            let listener = tokio::net::TcpListener::bind(config.socks5_addr)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.socks5_addr,
                    source,
                })?;
            tasks.push(tokio::spawn(crate::proxy::socks5::serve(
                listener,
                pod,
                inputs.clone(),
            )));
        }
    }

    let state = AdminState {
        inputs: inputs.clone(),
        pods: pods.clone(),
        log_level: config.log_level.clone(),
    };
    for (addr, surface) in [
        (config.admin_addr, Surface::Admin),
        (config.metrics_addr, Surface::Metrics),
        (config.readiness_addr, Surface::Readiness),
    ] {
        let (bound, task) = admin::spawn(addr, surface, state.clone())
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(addr = %bound, ?surface, "serving");
        tasks.push(task);
    }

    shutdown.await;
    tracing::info!(deadline = ?config.drain_deadline, "shutting down: no new connections, draining live ones");
    pods.stop_accepting();
    // Every connection counts from accept (dialing included) until its record finishes.
    let _ = tokio::time::timeout(config.drain_deadline, inputs.metrics.drained()).await;
    let left = inputs.metrics.live_connections();
    if left > 0 {
        tracing::info!(
            connections = left,
            "drain deadline reached; closing the rest"
        );
    }
    pods.shutdown();
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Shared mode: the host itself is `workload_uid`; its listeners live in our namespace.
async fn start_shared(pods: &Pods, store: &Store, workload_uid: &str) -> Result<(), StartError> {
    // With xDS the state arrives after start; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store.loaded() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = store.load();
    let workload = snap.workload(workload_uid).ok_or_else(|| {
        StartError::Shared(format!(
            "workload {workload_uid:?} is not in the mesh configuration"
        ))
    })?;
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| StartError::Shared(format!("cannot open our network namespace: {e}")))?;
    pods.add(
        PodInfo {
            uid: workload.uid.clone(),
            name: workload.name.clone(),
            namespace: workload.namespace.clone(),
            service_account: workload.identity.service_account().to_owned(),
        },
        own.into(),
    )
    .await
    .map_err(|e| StartError::Shared(e.to_string()))
}
