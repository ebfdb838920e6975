//! The `bowline` binary: parses the command line and dispatches to the crates that do
//! the work. No logic lives here.

#![deny(unsafe_code)] // one exception: the allocator option below

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc keeps freed large buffers for reuse; glibc's allocator returns them to the
/// kernel and pays page faults on every reuse, which costs a third of bulk throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's option enum (checked by a test below).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed memory back to the kernel at once instead of after its
/// default delay of one second, so a proxy's resident memory follows its live buffers
/// (ztunnel under `bench l4`: 16 → 10 MB anonymous peak, throughput unchanged). An
/// operator's `MIMALLOC_PURGE_DELAY` still wins.
#[allow(unsafe_code)]
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: stores one integer option; called first in `main`, before any other
        // thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// How often an idle worker thread hands its freed memory back (see below).
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST_COLLECT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs when a runtime worker thread goes idle: at most once per [`COLLECT_EVERY`], has
/// mimalloc free this thread's empty pages and blocks other threads freed into them.
/// mimalloc heaps are per thread and a block freed by another thread (a connection's
/// buffer dropped on another worker) waits on its page until the owning thread allocates
/// there again, so without this a proxy that served a burst of connections kept tens of
/// megabytes after they closed (5,000 connections: 71 MB kept against 2.4 MB idle).
#[allow(unsafe_code)]
fn collect_freed_memory_when_idle() {
    let due = LAST_COLLECT.with(|last| {
        let now = std::time::Instant::now();
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: collects the calling thread's own heap; no pointer is passed.
        unsafe { libmimalloc_sys::mi_collect(true) };
        #[cfg(target_env = "gnu")]
        // SAFETY: asks glibc's allocator (used by the C crypto library, aws-lc) to return
        // free memory at the top of its heaps; takes no pointer, safe at any time.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

/// Once per [`COLLECT_EVERY`], gives every worker a no-op task so that each one wakes and
/// parks again, and so collects (above) even when the process is otherwise idle: the
/// memory a burst freed comes back within a couple of seconds, not at the next traffic.
async fn wake_workers_to_collect(workers: usize) {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    loop {
        tick.tick().await;
        for _ in 0..workers {
            tokio::spawn(std::future::ready(()));
        }
    }
}

/// Bowline — a sidecar-less (ambient) service mesh.
#[derive(Debug, Parser)]
#[command(name = "bowline", version, about)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `hbone=debug`.
    #[arg(long, global = true, default_value = "warn", env = "BOWLINE_LOG")]
    log: String,
    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, global = true, env = "BOWLINE_WORKER_THREADS")]
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
    /// Bring up a whole ambient mesh on this host: nodes and pods as network namespaces,
    /// the control plane, a ztunnel and a node agent per node, the pods' processes.
    Up {
        /// YAML files or directories (Nodes, Pods with their commands, Services, policies…).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Lab name (several labs can run side by side).
        #[arg(long, default_value = "lab")]
        name: String,
        /// Return once everything is ready instead of staying in the foreground.
        #[arg(long)]
        detach: bool,
    },
    /// Remove a lab: processes, namespaces, links, rules, state. Harmless twice.
    Down {
        /// Lab name (default: the only running lab).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run a command inside a pod's (`<ns>/<pod>`) or a node's (`node/<name>`) namespace.
    Exec {
        /// `<namespace>/<pod>` or `node/<name>`.
        target: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
        /// Lab name (default: the only running lab).
        #[arg(long)]
        name: Option<String>,
    },
    /// Nodes, pods (address, node, captured), services and component health of a lab.
    Status {
        /// Lab name (default: the only running lab).
        #[arg(long)]
        name: Option<String>,
    },
    /// The demo/test app: HTTP/1.1 + h2c answering with JSON about each request, a raw
    /// TCP echo, optional upstream calls per request.
    Echo {
        /// HTTP port.
        #[arg(long)]
        port: Option<u16>,
        /// Raw TCP echo port.
        #[arg(long)]
        tcp_port: Option<u16>,
        /// URL to call on every request (repeatable); answers are included.
        #[arg(long = "upstream")]
        upstreams: Vec<String>,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// Keep a command running: restart it a second after it exits; SIGTERM stops both
    /// (the lab runs its components this way).
    Supervise {
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// One HTTP GET (for pods without curl): prints the body; fails on a non-2xx status.
    Call {
        /// `http://host[:port][/path]`.
        url: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// The node agent: captures this node's enrolled pods and hands them to ztunnel.
    Cni {
        /// The node it serves.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// The control plane's xDS (`http://HOST:15010` or `https://HOST:15012`).
        #[arg(long)]
        xds_address: String,
        /// Where captured pods are reported: the control plane's TLS port
        /// (`https://HOST:15012`); default: --xds-address when that is https. Pods are
        /// advertised as HBONE only once reported.
        #[arg(long)]
        status_address: Option<String>,
        /// Mesh root certificate (PEM), for https.
        #[arg(long)]
        ca_root: Option<PathBuf>,
        /// This node's token for the reports (`bowline control-plane token --node NODE`).
        #[arg(long)]
        token_file: PathBuf,
        /// The socket ztunnel connects to.
        #[arg(long, default_value = "/var/run/bowline/ztunnel.sock")]
        socket: PathBuf,
        /// Pod namespaces are named `<prefix><namespace>-<pod>` under /run/netns.
        #[arg(long, default_value = "")]
        netns_prefix: String,
        /// Do not capture DNS (port 53) to ztunnel's DNS proxy.
        #[arg(long)]
        no_dns: bool,
    },
    /// The control plane: Kubernetes/Istio YAML in, workload xDS and certificates out.
    ControlPlane(Box<ControlPlaneArgs>),
    /// Create or update the resources in files or directories of YAML.
    Apply(ApplyArgs),
    /// Delete the resources named in files or directories of YAML.
    Delete(ApplyArgs),
    /// Show what a ztunnel holds (its admin `/config_dump`).
    ZtunnelConfig {
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
    },
    /// Benchmarks that report ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Debug, clap::Args)]
struct ZtunnelArgs {
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
enum Output {
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// Files or directories of YAML.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Validate and show what would change, without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// The control plane's management API (without a lab), e.g. `http://127.0.0.1:15015`.
    #[arg(long, env = "BOWLINE_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// With --control-plane: the file holding the operator token (the control plane's
    /// `<state-dir>/operator-token`).
    #[arg(long, group = "credential")]
    token_file: Option<PathBuf>,
    /// With --control-plane: the operator token itself (better from the environment than
    /// on the command line, where other users can see it).
    #[arg(
        long,
        env = "BOWLINE_OPERATOR_TOKEN",
        hide_env_values = true,
        group = "credential"
    )]
    token: Option<String>,
    /// The lab whose control plane to use (default: the only running lab); its token is
    /// found in the lab's state.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ControlPlaneArgs {
    #[command(subcommand)]
    action: Option<ControlPlaneAction>,
    /// CA root, node-token key.
    #[arg(long, default_value = "/var/lib/bowline/control-plane", global = true)]
    state_dir: PathBuf,
    /// Files or directories of YAML to load and watch.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Plaintext xDS (lab and testing only); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15010")]
    xds_plaintext_addr: String,
    /// xDS and CA over TLS.
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_addr: std::net::SocketAddr,
    /// Metrics and readiness (read-only).
    #[arg(long, default_value = "0.0.0.0:15014")]
    http_addr: std::net::SocketAddr,
    /// The management API (debug, apply, delete), behind the operator token in
    /// `<state-dir>/operator-token`; keep it on loopback or a trusted network.
    #[arg(long, default_value = "127.0.0.1:15015")]
    api_addr: std::net::SocketAddr,
    /// More DNS names or IPs for the TLS certificate (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Milliseconds to gather a burst of changes into one push.
    #[arg(long, default_value_t = 20)]
    debounce_ms: u64,
}

#[derive(Debug, Subcommand)]
enum ControlPlaneAction {
    /// Print a token with which a node's ztunnel may ask for its pods' certificates.
    Token {
        /// The node.
        #[arg(long)]
        node: String,
        /// Hours it stays valid.
        #[arg(long, default_value_t = 24 * 365)]
        hours: u64,
    },
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
    /// A control plane with 10,000 workloads, 1,000 services and 500 policies serving 100
    /// simulated ztunnels: full sync time, apply → all clients latency, bytes, RSS.
    ControlPlane {
        /// Also write the results as a flat JSON object to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Changes to measure.
        #[arg(long, default_value_t = 40)]
        updates: usize,
        /// Simulated ztunnels.
        #[arg(long, default_value_t = 100)]
        clients: usize,
    },
    /// Internal to `bench l4`: a plain TCP relay, the floor a two-proxy path can reach.
    #[command(hide = true)]
    Relay {
        /// LISTEN=TARGET, both address:port; repeat for more.
        #[arg(long = "map", value_parser = lab::relay::parse_map, required = true)]
        maps: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
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

/// The glibc tunable that decides from which size `memcpy` uses `rep movsb`.
const REP_MOVSB_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Re-executes this process once (same PID, arguments and descriptors) with glibc told
/// not to copy with `rep movsb`, for the processes that carry TLS traffic.
///
/// glibc before 2.39 copies 2 KiB and more with `rep movsb`; on AMD EPYC that runs at
/// about a twentieth of the speed (3.5 against 66 GB/s, measured) when the destination
/// is not 16-byte aligned — and rustls builds every TLS record by copying the plaintext
/// behind a 5-byte header. glibc reads its tunables only at start, hence the re-exec.
/// An operator's own `GLIBC_TUNABLES` setting of the same tunable is kept;
/// `BOWLINE_NO_REEXEC=1` turns this off.
fn reexec_with_vector_memcpy() {
    use std::os::unix::process::CommandExt;

    if !cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        target_arch = "x86_64"
    )) {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(REP_MOVSB_TUNABLE) || std::env::var_os("BOWLINE_NO_REEXEC").is_some() {
        return;
    }
    // Above any copy a proxy makes; larger copies use non-temporal stores anyway.
    let setting = format!("{REP_MOVSB_TUNABLE}=1073741824");
    let value = if current.is_empty() {
        setting
    } else {
        format!("{current}:{setting}")
    };
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec();
    // `exec` returns only when it failed: carry on untuned.
    eprintln!("bowline: could not re-execute with vector memcpy ({error}); continuing");
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;

    return_freed_memory_promptly();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Ztunnel(_)
            | Command::HboneDemo { .. }
            | Command::Bench {
                which: Bench::Hbone { .. }
            }
    ) {
        reexec_with_vector_memcpy();
    }
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
    runtime
        .enable_all()
        .on_thread_park(collect_freed_memory_when_idle);
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    let workers = cli
        .worker_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    runtime.spawn(wake_workers_to_collect(workers));
    runtime.block_on(dispatch(cli.command, set_level))
}

/// `bowline apply/delete`: to `--control-plane`, or to a lab's control plane.
#[allow(clippy::print_stdout)]
async fn apply(args: ApplyArgs, delete: bool) -> anyhow::Result<()> {
    let (ns, url, token) = match args.control_plane {
        Some(url) => {
            let token = match (args.token, args.token_file) {
                (Some(token), _) => token,
                (None, Some(file)) => lab::cli::read_token(&file).map_err(anyhow::Error::msg)?,
                (None, None) => anyhow::bail!(
                    "--control-plane needs the operator token: --token-file FILE (the control plane's <state-dir>/operator-token) or BOWLINE_OPERATOR_TOKEN"
                ),
            };
            (None, url, token)
        }
        None => {
            let lab = lab::up::pick(args.name)?;
            let token = lab::cli::read_token(&lab::up::operator_token_file(&lab))
                .map_err(anyhow::Error::msg)?;
            (
                Some(lab::up::router(&lab)?),
                format!("http://{}", lab::up::CONTROL_PLANE_API),
                token,
            )
        }
    };
    let out = lab::cli::apply(ns.as_ref(), &url, &token, &args.files, delete, args.dry_run)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{}", out.stdout);
    for warning in &out.warnings {
        eprintln!("{warning}");
    }
    Ok(())
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
            let root_pem = args
                .ca_root
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("--ca-root {}", p.display()))
                })
                .transpose()?;
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
            let config = ztunnel::app::Config {
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
            };
            ztunnel::app::run(config, terminated()).await?;
        }
        Command::ControlPlane(args) => {
            let args = *args;
            if let Some(ControlPlaneAction::Token { node, hours }) = args.action {
                let tokens = control_plane::tokens::NodeTokens::load_or_create(&args.state_dir)?;
                println!(
                    "{}",
                    tokens.issue(&node, Duration::from_secs(hours * 3600))?
                );
                return Ok(());
            }
            let xds_plaintext_addr = match args.xds_plaintext_addr.as_str() {
                "off" => None,
                addr => Some(addr.parse().context("--xds-plaintext-addr")?),
            };
            let config = control_plane::app::Config {
                state_dir: args.state_dir,
                config_paths: args.files,
                xds_plaintext_addr,
                xds_tls_addr: args.xds_addr,
                http_addr: args.http_addr,
                api_addr: args.api_addr,
                tls_names: args.tls_names,
                mesh: control_plane::translate::MeshSettings {
                    trust_domain: args.trust_domain,
                    ..Default::default()
                },
                debounce: Duration::from_millis(args.debounce_ms),
            };
            control_plane::app::run(config, |_| {}, terminated()).await?;
        }
        Command::Apply(args) => apply(args, false).await?,
        Command::Delete(args) => apply(args, true).await?,
        Command::ZtunnelConfig {
            what,
            admin,
            output,
            node,
            name,
        } => {
            let ns = match node {
                Some(node) => Some(lab::up::node_namespace(&lab::up::pick(name)?, &node)?),
                None => None,
            };
            let out = lab::cli::ztunnel_config(
                ns.as_ref(),
                &admin,
                &what,
                matches!(output, Output::Yaml),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            print!("{out}");
        }
        Command::Up {
            files,
            name,
            detach,
        } => {
            let options = lab::up::UpOptions {
                files,
                name: name.clone(),
                binary: std::env::current_exe().context("locating the bowline binary")?,
            };
            let progress = |step: &str| eprintln!("==> {step}");
            match lab::up::up(&options, &progress).await {
                Ok(_) => {
                    println!("{}", lab::up::status(&name).await?);
                }
                Err(error) => {
                    eprintln!("bowline up failed: {error}; removing what was built");
                    let _ = lab::up::down(&name);
                    return Err(error.into());
                }
            }
            if !detach {
                eprintln!("==> lab {name} is up; Ctrl-C tears it down");
                terminated().await;
                println!("{}", lab::up::down(&name)?);
            }
        }
        Command::Down { name } => {
            let name = lab::up::pick(name)?;
            println!("{}", lab::up::down(&name)?);
        }
        Command::Exec {
            target,
            command,
            name,
        } => {
            let code = lab::up::exec(&lab::up::pick(name)?, &target, &command)?;
            std::process::exit(code);
        }
        Command::Status { name } => {
            println!("{}", lab::up::status(&lab::up::pick(name)?).await?);
        }
        Command::Echo {
            port,
            tcp_port,
            upstreams,
            bind,
        } => {
            let config = echo::EchoConfig {
                http_port: port,
                tcp_port,
                upstreams,
                bind,
            };
            echo::run(config, terminated()).await?;
        }
        Command::Supervise { command } => {
            lab::supervise::run(&command, terminated())
                .await
                .map_err(anyhow::Error::msg)?;
        }
        Command::Call { url, timeout } => {
            let timeout = Duration::try_from_secs_f64(timeout).context("--timeout")?;
            let (status, body) = echo::get(&url, timeout).await?;
            print!("{body}");
            if !(200..300).contains(&status) {
                anyhow::bail!("{url} answered {status}");
            }
        }
        Command::Cni {
            node,
            xds_address,
            status_address,
            ca_root,
            token_file,
            socket,
            netns_prefix,
            no_dns,
        } => {
            let status_url = match status_address {
                Some(url) => url,
                None if xds_address.starts_with("https://") => xds_address.clone(),
                None => anyhow::bail!(
                    "--status-address https://HOST:15012 is needed: the node agent reports the pods it captured to the control plane's TLS port (--xds-address {xds_address} is plaintext)"
                ),
            };
            let root_pem = ca_root
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("--ca-root {}", p.display()))
                })
                .transpose()?;
            let config = cni::agent::AgentConfig {
                node_name: node,
                xds_url: xds_address,
                root_pem,
                zds_socket: socket,
                netns_prefix,
                dns_capture: !no_dns,
                status_url,
                token_file,
            };
            tokio::select! {
                result = cni::agent::run(config) => result?,
                () = terminated() => {}
            }
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
            which:
                Bench::ControlPlane {
                    json,
                    updates,
                    clients,
                },
        } => {
            let binary = std::env::current_exe().context("locating the bowline binary")?;
            let scale = lab::bench_cp::Scale {
                updates,
                clients,
                ..Default::default()
            };
            let report = lab::bench_cp::run(&binary, scale)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
        Command::Bench {
            which: Bench::Relay { maps },
        } => {
            tokio::select! {
                result = lab::relay::run(&maps) => result?,
                () = terminated() => {}
            }
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

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn allocator_option_index_is_the_purge_delay() {
        // SAFETY: reads one integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default purge delay is 1000 ms; no neighbouring option has it.
        assert_eq!(
            delay, 1000,
            "mimalloc's option enum changed: fix MI_OPTION_PURGE_DELAY"
        );
    }
}
