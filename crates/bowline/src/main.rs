//! The `bowline` binary: parses the command line and dispatches to the crates that do
//! the work. No logic lives here.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc keeps freed large buffers for reuse; glibc's allocator returns them to the
/// kernel and pays page faults on every reuse, which costs a third of bulk throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bowline — a sidecar-less (ambient) service mesh.
#[derive(Debug, Parser)]
#[command(name = "bowline", version, about)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `hbone=debug`.
    #[arg(long, global = true, default_value = "warn", env = "BOWLINE_LOG")]
    log: String,
    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, global = true)]
    worker_threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a CA, an HBONE server in front of an echo target and a client; push data
    /// through mutual-TLS tunnels and report what happened.
    HboneDemo {
        /// Concurrent streams.
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Bytes each stream sends (and gets echoed back).
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        bytes: u64,
    },
    /// The per-node L4 proxy: mTLS, identity, L4 policy and telemetry for the pods of
    /// this node.
    Ztunnel(Box<ZtunnelArgs>),
    /// Benchmarks that report ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Debug, clap::Args)]
struct ZtunnelArgs {
    /// Workloads, services and policies (YAML or JSON); watched, bad edits are refused.
    #[arg(long)]
    config: PathBuf,
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ZtunnelMode {
    Inpod,
    Shared,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Pod → pod direct vs through two ztunnels over HBONE, in fresh namespaces (root):
    /// throughput, RTT, HTTP request rate, connection rate, ztunnel RSS and CPU.
    L4 {
        /// Seconds per measure and path, split into alternating rounds.
        #[arg(long, default_value_t = 4.0)]
        duration: f64,
        /// Also write the results as a flat JSON object to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// HBONE vs plain TCP on loopback: throughput (1 and 16 streams) and 64-byte RTT.
    Hbone {
        /// Seconds per measure, split into three rounds that alternate with the others.
        #[arg(long, default_value_t = 6.0)]
        duration: f64,
        /// Also write the results as a flat JSON object to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;

    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?;
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let set_level: ztunnel::admin::LogLevelSetter = std::sync::Arc::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        reload.reload(filter).map_err(|e| e.to_string())
    });
    identity::install_default_provider();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(dispatch(cli.command, set_level))
}

/// Writes `report` as pretty JSON to `path`, if given.
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[allow(clippy::print_stdout)]
async fn dispatch(
    command: Command,
    set_level: ztunnel::admin::LogLevelSetter,
) -> anyhow::Result<()> {
    match command {
        Command::Ztunnel(args) => {
            let args = *args;
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
            let config = ztunnel::app::Config {
                mode,
                config_file: args.config,
                ca_dir: args.ca_dir,
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
            };
            ztunnel::app::run(config, terminated()).await?;
        }
        Command::HboneDemo { streams, bytes } => {
            let report = hbone::demo::run(streams, bytes).await?;
            println!("{report}");
        }
        Command::Bench {
            which: Bench::L4 { duration, json },
        } => {
            let phase = Duration::try_from_secs_f64(duration)
                .context("--duration must be a positive number of seconds")?;
            let binary = std::env::current_exe().context("locating the bowline binary")?;
            let report = lab::bench_l4::run(&binary, phase).await?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
        Command::Bench {
            which: Bench::Hbone { duration, json },
        } => {
            let phase = Duration::try_from_secs_f64(duration)
                .context("--duration must be a positive number of seconds")?;
            let report = hbone::bench::run(phase).await?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
    }
    Ok(())
}
