//! `bowline waypoint run`: the L7 proxy process of one waypoint Gateway (its flags, also
//! read from the environment the waypoint's pod is given, turned into its configuration).
//!
//! Owns: these flags and the assembly of `waypoint::app::Config`. Must not: proxy
//! anything — that is the `waypoint` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::terminated;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WaypointCommand {
    /// Run the waypoint process of a Gateway (what a waypoint's pod runs).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The Gateway this waypoint is, `NAMESPACE/NAME`; its identity is
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`.
    #[arg(long)]
    gateway: String,
    /// The control plane's xDS (`http://HOST:15010` in a lab, `https://HOST:15012`).
    #[arg(long, env = "BOWLINE_XDS_ADDRESS")]
    xds_address: String,
    /// The control plane's CA service (`https://HOST:15012`).
    #[arg(long, env = "BOWLINE_CA_ADDRESS")]
    ca_address: String,
    /// The mesh root certificate (PEM).
    #[arg(long, env = "BOWLINE_CA_ROOT")]
    ca_root: PathBuf,
    /// The token the CA accepts for this waypoint's node.
    #[arg(long, env = "BOWLINE_TOKEN_FILE")]
    token_file: PathBuf,
    /// This waypoint's address, for its xDS node id.
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: String,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// HBONE listener.
    #[arg(long, default_value = "0.0.0.0:15008")]
    hbone_addr: std::net::SocketAddr,
    /// Admin server (`/config_dump`).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: std::net::SocketAddr,
    /// Prometheus metrics (`/stats/prometheus`).
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: std::net::SocketAddr,
    /// Readiness probe (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: std::net::SocketAddr,
    /// Seconds live tunnels may finish after SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
}

pub(crate) async fn run(command: WaypointCommand) -> anyhow::Result<()> {
    match command {
        WaypointCommand::Run(args) => run_process(args).await,
    }
}

async fn run_process(args: RunArgs) -> anyhow::Result<()> {
    let Some((namespace, name)) = args.gateway.split_once('/') else {
        anyhow::bail!(
            "--gateway {:?}: write NAMESPACE/NAME of the waypoint's Gateway",
            args.gateway
        );
    };
    let root_pem = std::fs::read_to_string(&args.ca_root)
        .with_context(|| format!("--ca-root {}", args.ca_root.display()))?;
    if !(args.drain_seconds.is_finite() && args.drain_seconds >= 0.0) {
        anyhow::bail!("--drain-seconds must be a number of seconds, 0 or more");
    }
    let config = waypoint::app::Config {
        gateway: (namespace.to_owned(), name.to_owned()),
        trust_domain: args.trust_domain,
        xds_url: args.xds_address,
        ca_url: args.ca_address,
        root_pem,
        token_file: args.token_file,
        instance_ip: args.instance_ip,
        hbone_addr: args.hbone_addr,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        drain_deadline: Duration::from_secs_f64(args.drain_seconds),
    };
    waypoint::app::run(config, terminated()).await?;
    Ok(())
}
