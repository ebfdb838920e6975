//! The command line: the top-level [`Cli`], one [`Command`] per subcommand, and
//! [`dispatch`], which hands each to its area module.
//!
//! Owns: flags, their names, defaults and help text, and turning them into the
//! configuration of the crate that does the work. Must not: do that work — each area
//! module calls into `ztunnel`, `waypoint`, `control-plane`, `cni`, `lab`, `echo` or
//! `bench`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod apply;
mod bench;
mod cni;
mod control_plane;
mod echo;
mod lab;
mod waypoint;
mod ztunnel;

/// Bowline — a sidecar-less (ambient) service mesh.
#[derive(Debug, Parser)]
#[command(name = "bowline", version, about)]
pub(crate) struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `hbone=debug`.
    #[arg(long, global = true, default_value = "warn", env = "BOWLINE_LOG")]
    pub(crate) log: String,
    /// Worker threads of the async runtime (default: one per core; one for `waypoint run`).
    #[arg(long, global = true, env = "BOWLINE_WORKER_THREADS")]
    pub(crate) worker_threads: Option<usize>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a CA, an HBONE server in front of an echo target and a client; push data
    /// through mutual-TLS tunnels and report what happened.
    HboneDemo(bench::HboneDemoArgs),
    /// The per-node L4 proxy: mTLS, identity, L4 policy and telemetry for the pods of
    /// this node.
    Ztunnel(Box<ztunnel::ZtunnelArgs>),
    /// Waypoints, the L7 proxies: apply, list, status, delete (in a lab), run one.
    Waypoint {
        #[command(subcommand)]
        command: waypoint::WaypointCommand,
    },
    /// Bring up a whole ambient mesh on this host: nodes and pods as network namespaces,
    /// the control plane, a ztunnel and a node agent per node, the pods' processes.
    Up(lab::UpArgs),
    /// Remove a lab: processes, namespaces, links, rules, state. Harmless twice.
    Down(lab::LabName),
    /// Run a command inside a pod's (`<ns>/<pod>`) or a node's (`node/<name>`) namespace.
    Exec(lab::ExecArgs),
    /// Nodes, pods (address, node, captured), services and component health of a lab.
    Status(lab::LabName),
    /// The demo/test app: HTTP/1.1 + h2c answering with JSON about each request, a raw
    /// TCP echo, optional upstream calls per request.
    Echo(echo::EchoArgs),
    /// Keep a command running: restart it a second after it exits; SIGTERM stops both
    /// (the lab runs its components this way).
    Supervise(lab::SuperviseArgs),
    /// The lab's waypoint controller (started by `up`): deploys the pods of waypoint
    /// Gateways applied later and removes those whose Gateway is deleted.
    LabController(lab::LabName),
    /// One HTTP request (GET unless -X; for pods without curl): prints the body; fails on a
    /// non-2xx status.
    Call(echo::CallArgs),
    /// The node agent: captures this node's enrolled pods and hands them to ztunnel.
    Cni(cni::CniArgs),
    /// The control plane: Kubernetes/Istio YAML in, workload xDS and certificates out.
    ControlPlane(Box<control_plane::ControlPlaneArgs>),
    /// Create or update the resources in files or directories of YAML.
    Apply(apply::ApplyArgs),
    /// Delete the resources named in files or directories of YAML.
    Delete(apply::ApplyArgs),
    /// Show what a ztunnel holds (its admin `/config_dump`).
    ZtunnelConfig(ztunnel::ZtunnelConfigArgs),
    /// Benchmarks that report ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

impl Command {
    /// The runtime's worker threads when `--worker-threads` is not given: one for a
    /// waypoint (measured in docs/benchmarks.md: a single worker spends less CPU per
    /// request than two waking each other; scale a waypoint by its replicas), one per
    /// core for everything else.
    pub(crate) fn default_worker_threads(&self) -> Option<usize> {
        matches!(
            self,
            Command::Waypoint {
                command: waypoint::WaypointCommand::Run(_)
            }
        )
        .then_some(1)
    }

    /// Whether this command carries TLS traffic in bulk (and so wants glibc's vector
    /// `memcpy`, see [`crate::tuning::reexec_with_vector_memcpy`]).
    pub(crate) fn carries_tls(&self) -> bool {
        matches!(
            self,
            Command::Ztunnel(_)
                | Command::Waypoint { .. }
                | Command::HboneDemo(_)
                | Command::Bench {
                    which: bench::Bench::Hbone { .. }
                }
        )
    }
}

/// Runs `command`; `set_level` lets ztunnel's admin change the log filter.
pub(crate) async fn dispatch(
    command: Command,
    set_level: ::ztunnel::admin::LogLevelSetter,
) -> anyhow::Result<()> {
    match command {
        Command::Ztunnel(args) => ztunnel::run(*args, set_level).await,
        Command::ControlPlane(args) => control_plane::run(*args).await,
        Command::Waypoint { command } => waypoint::run(command).await,
        Command::Apply(args) => apply::run(args, false).await,
        Command::Delete(args) => apply::run(args, true).await,
        Command::ZtunnelConfig(args) => ztunnel::config(args).await,
        Command::Up(args) => lab::up(args).await,
        Command::Down(args) => lab::down(args),
        Command::Exec(args) => lab::exec(args),
        Command::Status(args) => lab::status(args).await,
        Command::Echo(args) => echo::echo(args).await,
        Command::Supervise(args) => lab::supervise(args).await,
        Command::LabController(args) => lab::controller(args).await,
        Command::Call(args) => echo::call(args).await,
        Command::Cni(args) => cni::run(args).await,
        Command::HboneDemo(args) => bench::hbone_demo(args).await,
        Command::Bench { which } => bench::run(which).await,
    }
}

/// Writes `report` as pretty JSON to `path`, if given.
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context;

    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Reads the PEM file given as `--ca-root`, if any.
fn read_ca_root(path: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;

    path.map(|p| std::fs::read_to_string(p).with_context(|| format!("--ca-root {}", p.display())))
        .transpose()
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
