//! `bowline ztunnel` (the node proxy's flags turned into its configuration) and
//! `bowline ztunnel-config` (what a running ztunnel holds, from its admin `/config_dump`).
//!
//! Owns: these commands' flags, the assembly of `ztunnel::app::Config`, and rendering the
//! config dump as JSON or YAML. Must not: proxy anything — that is the `ztunnel` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{read_ca_root, terminated};

#[derive(Debug, clap::Args)]
pub(crate) struct ZtunnelArgs {
    /// Workloads, services and policies (YAML or JSON); watched, bad edits are refused.
    /// Standalone mode; give --xds-address instead to follow a control plane.
    #[arg(
        long,
        required_unless_present = "xds_address",
        conflicts_with = "xds_address"
    )]
    config: Option<PathBuf>,
    /// The control plane's xDS (`http://HOST:15010` in a lab, `https://HOST:15012`).
    #[arg(long)]
    xds_address: Option<String>,
    /// The control plane's CA service (`https://HOST:15012`); default: a local CA in
    /// --ca-dir.
    #[arg(long, requires = "token_file")]
    ca_address: Option<String>,
    /// The mesh root certificate (PEM) that verifies the control plane (https).
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// This node's token for the CA service (`bowline control-plane token`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The node this ztunnel serves.
    #[arg(long, env = "NODE_NAME", default_value = "node")]
    node_name: String,
    /// This ztunnel's address, for its xDS node id.
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: String,
    /// `inpod`: listeners in each pod's namespace, handed over by the node agent;
    /// `shared`: listeners in ztunnel's own namespace (the host is the workload).
    #[arg(long, value_enum, default_value_t = ZtunnelMode::Inpod)]
    mode: ZtunnelMode,
    /// The node agent's socket (in-pod mode).
    #[arg(long, default_value = "/var/run/bowline/ztunnel.sock")]
    node_agent_socket: PathBuf,
    /// The workload uid this host is (shared mode).
    #[arg(long)]
    shared_workload: Option<String>,
    /// Directory of the mesh CA root; created on first start.
    #[arg(long, default_value = "/var/lib/bowline/ca")]
    ca_dir: PathBuf,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Admin server (config dump, log level).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: std::net::SocketAddr,
    /// Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: std::net::SocketAddr,
    /// Readiness probe.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: std::net::SocketAddr,
    /// SOCKS5 for apps that are not captured (shared mode).
    #[arg(long, default_value = "127.0.0.1:15080")]
    socks5_addr: std::net::SocketAddr,
    /// Seconds live connections may finish after SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
    /// Do not open the DNS proxy (15053) in pods.
    #[arg(long)]
    no_dns: bool,
    /// Resolver for names outside the mesh (repeatable); default: the nameservers of
    /// /etc/resolv.conf.
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<std::net::SocketAddr>,
    /// With --xds-address: keep the last accepted configuration in this file (0600) and
    /// serve it at start, marked stale, until the control plane answers.
    #[arg(long, requires = "xds_address")]
    snapshot_file: Option<PathBuf>,
    /// Keep issued certificates in this directory (0700, files 0600) and serve them at
    /// start while valid, before the CA answers.
    #[arg(long)]
    cert_cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ZtunnelMode {
    Inpod,
    Shared,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ZtunnelConfigArgs {
    /// workloads, services, policies, certificates or all.
    #[arg(default_value = "all")]
    what: String,
    /// The ztunnel's admin address.
    #[arg(long, default_value = "http://127.0.0.1:15000")]
    admin: String,
    /// In a lab: the node whose ztunnel to ask.
    #[arg(long)]
    node: Option<String>,
    /// The lab (default: the only running lab, when --node is given).
    #[arg(long)]
    name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Json)]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Json,
    Yaml,
}

/// `bowline ztunnel`: runs until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn run(
    args: ZtunnelArgs,
    set_level: ztunnel::admin::LogLevelSetter,
) -> anyhow::Result<()> {
    ztunnel::app::run(app_config(args, set_level)?, terminated()).await?;
    Ok(())
}

/// The proxy's configuration from its flags.
fn app_config(
    args: ZtunnelArgs,
    set_level: ztunnel::admin::LogLevelSetter,
) -> anyhow::Result<ztunnel::app::Config> {
    let mode = match args.mode {
        ZtunnelMode::Inpod => ztunnel::app::Mode::InPod {
            node_agent_socket: args.node_agent_socket,
        },
        ZtunnelMode::Shared => ztunnel::app::Mode::Shared {
            workload_uid: args
                .shared_workload
                .context("--mode shared needs --shared-workload UID")?,
        },
    };
    let root_pem = read_ca_root(args.ca_root.as_ref())?;
    let state = match (args.config, args.xds_address) {
        (Some(file), _) => ztunnel::app::StateSource::File(file),
        (None, Some(url)) => {
            ztunnel::app::StateSource::Xds(ztunnel::state::xds_client::XdsConfig {
                url,
                root_pem: root_pem.clone(),
                node_name: args.node_name.clone(),
                instance_ip: args.instance_ip.clone(),
            })
        }
        (None, None) => anyhow::bail!("give --config FILE or --xds-address URL"),
    };
    let certificates = match args.ca_address {
        Some(url) => ztunnel::app::CertificateSource::ControlPlane {
            url,
            root_pem: root_pem.context("--ca-address needs --ca-root")?,
            token_file: args.token_file.context("--ca-address needs --token-file")?,
        },
        None => ztunnel::app::CertificateSource::LocalCa(args.ca_dir),
    };
    Ok(ztunnel::app::Config {
        mode,
        state,
        certificates,
        trust_domain: args.trust_domain,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        socks5_addr: args.socks5_addr,
        drain_deadline: Duration::try_from_secs_f64(args.drain_seconds)
            .context("--drain-seconds must be a positive number")?,
        log_level: Some(set_level),
        dns: ztunnel::dns::DnsSettings {
            enabled: !args.no_dns,
            upstreams: if args.dns_upstreams.is_empty() {
                ztunnel::dns::system_upstreams()
            } else {
                args.dns_upstreams
            },
            ..ztunnel::dns::DnsSettings::default()
        },
        snapshot_file: args.snapshot_file,
        cert_cache_dir: args.cert_cache_dir,
    })
}

/// `bowline ztunnel-config`: asks `--admin`, or in a lab the ztunnel of `--node`.
#[allow(clippy::print_stdout)]
pub(crate) async fn config(args: ZtunnelConfigArgs) -> anyhow::Result<()> {
    let ns = match args.node {
        Some(node) => Some(lab::up::node_namespace(&lab::up::pick(args.name)?, &node)?),
        None => None,
    };
    let out = config_dump(
        ns.as_ref(),
        &args.admin,
        &args.what,
        matches!(args.output, Output::Yaml),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(())
}

/// `bowline ztunnel-config workloads|services|policies|certificates|all`.
async fn config_dump(
    ns: Option<&netns::Namespace>,
    admin: &str,
    what: &str,
    yaml: bool,
) -> Result<String, String> {
    let url = format!("{}/config_dump", admin.trim_end_matches('/'));
    let (status, text) = lab::client::http_in(ns, "GET", &url, None).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}: {text}"));
    }
    let dump: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let section = match what {
        "all" => dump,
        "workloads" | "services" | "policies" | "certificates" => dump[what].clone(),
        other => {
            return Err(format!(
                "{other:?}: choose workloads, services, policies, certificates or all"
            ));
        }
    };
    if yaml {
        serde_norway::to_string(&section).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&section)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    }
}
