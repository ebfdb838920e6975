//! Running a waypoint: static settings ([`Config`]), and [`run`], which gets the
//! waypoint's certificate from the control plane's CA, follows the mesh state and the L7
//! policies over delta ADS (kept in snapshot files when given a directory, and served
//! from them at start), serves HBONE on 15008 (or, as an ingress gateway, the Gateway's
//! listeners) and the operator surfaces, then drains on shutdown: stop accepting, let
//! live tunnels finish up to the deadline, then close.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hbone::{ClientSettings, Pool, Server, ServerSettings};
use identity::{CertificateManager, ManagerConfig, SpiffeId};
use ztunnel::state::Store;
use ztunnel::state::xds_client::XdsConfig;

use crate::admin::{self, Surface};
use crate::inbound::Handler;
use crate::metrics::Metrics;
use crate::policies::PolicyStore;
use crate::upstream::{Connector, HttpClients};

/// Static settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Gateway this waypoint is: (namespace, name); its identity is
    /// `<trust domain>/ns/<namespace>/sa/<name>`.
    pub gateway: (String, String),
    /// Trust domain.
    pub trust_domain: String,
    /// The control plane's delta ADS (`http://host:15010` or `https://host:15012`).
    pub xds_url: String,
    /// The control plane's CA (`https://host:15012`).
    pub ca_url: String,
    /// The mesh root, PEM.
    pub root_pem: String,
    /// The token the CA accepts (the node's).
    pub token_file: PathBuf,
    /// This waypoint's address (for the xDS node id).
    pub instance_ip: String,
    /// HBONE listener.
    pub hbone_addr: SocketAddr,
    /// Admin server (`/config_dump`).
    pub admin_addr: SocketAddr,
    /// Metrics server (`/stats/prometheus`).
    pub metrics_addr: SocketAddr,
    /// Readiness server (`/healthz/ready`).
    pub readiness_addr: SocketAddr,
    /// How long live tunnels may finish after shutdown begins.
    pub drain_deadline: Duration,
    /// Where the last accepted config is kept (`mesh.snapshot`, `l7.snapshot`) and served
    /// from at start until the control plane answers.
    pub snapshot_dir: Option<PathBuf>,
    /// Run as the Gateway's ingress gateway (class `istio`): serve its listeners, not HBONE.
    pub ingress: bool,
    /// The service account whose identity this proxy has (default: the Gateway's name;
    /// an ingress gateway's is `<name>-istio`).
    pub service_account: Option<String>,
    /// An ingress gateway's certificates: `<dir>/<namespace>/<secret>/tls.{crt,key}`.
    pub secrets_dir: Option<PathBuf>,
}

/// What every request reads.
pub struct Shared {
    /// (namespace, name) of this waypoint's Gateway.
    pub gateway: (String, String),
    /// The waypoint's identity.
    pub identity: SpiffeId,
    /// The mesh (workloads, services).
    pub state: Arc<Store>,
    /// The L7 policies.
    pub policies: Arc<PolicyStore>,
    /// Telemetry.
    pub metrics: Arc<Metrics>,
    /// HBONE to endpoints.
    pub connector: Connector,
    /// Kept upstream HTTP connections.
    pub clients: HttpClients,
    /// Requests in flight per endpoint (least-request choice).
    pub load: crate::upstream::Load,
    /// Certificates.
    pub manager: CertificateManager,
}

/// Why the waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Gateway name does not make an identity.
    #[error("gateway {0}/{1} does not make a SPIFFE identity: {2}")]
    Identity(String, String, identity::SpiffeIdError),
    /// The control plane address or root is unusable.
    #[error("control plane: {0}")]
    ControlPlane(#[from] xds::XdsError),
    /// The snapshot directory cannot be made.
    #[error("snapshot directory {dir}: {source}")]
    SnapshotDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate cache is unusable.
    #[error(transparent)]
    CertCache(#[from] identity::CacheError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the waypoint until `shutdown` completes, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let (namespace, name) = config.gateway.clone();
    let account = config
        .service_account
        .clone()
        .unwrap_or_else(|| name.clone());
    let identity = SpiffeId::new(&config.trust_domain, &namespace, &account)
        .map_err(|e| StartError::Identity(namespace.clone(), account.clone(), e))?;
    let ca = ztunnel::ca_client::CaClient::new(
        &config.ca_url,
        &config.root_pem,
        config.token_file.clone(),
    )?;
    if let Some(dir) = &config.snapshot_dir {
        std::fs::create_dir_all(dir).map_err(|source| StartError::SnapshotDir {
            dir: dir.clone(),
            source,
        })?;
    }
    // With a snapshot directory the certificate is kept there too, so a restart while the
    // CA is away still presents it (while it is valid).
    let manager = match &config.snapshot_dir {
        Some(dir) => CertificateManager::with_cache(
            Arc::new(ca),
            ManagerConfig::default(),
            identity::CertificateCache::open(&dir.join("certs"), &config.root_pem)?,
        ),
        None => CertificateManager::new(Arc::new(ca), ManagerConfig::default()),
    };
    let root_pem = config
        .xds_url
        .starts_with("https://")
        .then(|| config.root_pem.clone());
    let xds = XdsConfig {
        url: config.xds_url.clone(),
        root_pem,
        node_name: format!("waypoint-{namespace}-{name}"),
        instance_ip: config.instance_ip.clone(),
    };
    xds::transport::lazy_channel(&xds.url, xds.root_pem.as_deref())?;
    let state = Arc::new(Store::default());
    let policies = Arc::new(PolicyStore::default());
    let node = waypoint_node(&config, &namespace, &name);
    let snapshot = |file: &str| config.snapshot_dir.as_ref().map(|d| d.join(file));
    let mut tasks = vec![
        tokio::spawn(ztunnel::state::xds_client::run_with_snapshot(
            xds.clone(),
            state.clone(),
            snapshot("mesh.snapshot"),
        )),
        tokio::spawn(crate::policies::run(
            xds,
            node,
            policies.clone(),
            snapshot("l7.snapshot"),
        )),
        tokio::spawn(keep_certificate(manager.clone(), identity.clone())),
    ];
    let shared = Arc::new(Shared {
        gateway: config.gateway.clone(),
        identity: identity.clone(),
        state,
        policies,
        metrics: Arc::new(Metrics::default()),
        connector: Connector {
            identity: identity.clone(),
            pool: Pool::new(manager.clone(), ClientSettings::default()),
            hbone_port: config.hbone_addr.port(),
        },
        clients: HttpClients::default(),
        load: crate::upstream::Load::default(),
        manager: manager.clone(),
    });

    let sweeper = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::upstream::IDLE_FOR / 6);
        loop {
            every.tick().await;
            sweeper.clients.sweep(crate::upstream::IDLE_FOR);
            sweeper.load.sweep();
        }
    }));
    let serving = if config.ingress {
        tracing::info!(gateway = %format!("{namespace}/{name}"), %identity, "ingress gateway: serving its listeners as their route tables arrive");
        tokio::spawn(crate::ingress::run(
            shared.clone(),
            config.secrets_dir.clone(),
            std::net::Ipv4Addr::UNSPECIFIED.into(),
        ))
    } else {
        let listener = tokio::net::TcpListener::bind(config.hbone_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.hbone_addr,
                source,
            })?;
        let server = Server::new(
            identity.clone(),
            manager,
            Handler {
                shared: shared.clone(),
            },
            ServerSettings::default(),
        );
        tracing::info!(addr = %config.hbone_addr, %identity, "waypoint serving HBONE");
        tokio::spawn(server.serve(listener))
    };
    for (addr, surface) in [
        (config.admin_addr, Surface::Admin),
        (config.metrics_addr, Surface::Metrics),
        (config.readiness_addr, Surface::Readiness),
    ] {
        let (bound, task) = admin::spawn(addr, surface, shared.clone())
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(addr = %bound, ?surface, "serving");
        tasks.push(task);
    }

    shutdown.await;
    tracing::info!(deadline = ?config.drain_deadline, "shutting down: no new tunnels, draining live ones");
    serving.abort();
    let _ = tokio::time::timeout(config.drain_deadline, shared.metrics.drained()).await;
    let left = shared.metrics.live_tunnels();
    if left > 0 {
        tracing::info!(tunnels = left, "drain deadline reached; closing the rest");
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The xDS node of a waypoint (Istio's `router~…` form).
fn waypoint_node(config: &Config, namespace: &str, name: &str) -> xds::core::Node {
    xds::core::Node {
        id: format!(
            "router~{}~{name}.{namespace}~{namespace}.svc.cluster.local",
            config.instance_ip
        ),
        ..Default::default()
    }
}

/// Fetches the waypoint's certificate, retrying until the CA answers; the manager renews
/// it from then on.
async fn keep_certificate(manager: CertificateManager, identity: SpiffeId) {
    let mut delay = Duration::from_millis(100);
    loop {
        match manager.fetch(&identity).await {
            Ok(_) => {
                tracing::info!(%identity, "certificate issued");
                return;
            }
            Err(error) => {
                tracing::warn!(%identity, %error, retry_in = ?delay, "no certificate yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
