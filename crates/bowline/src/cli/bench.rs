//! `bowline bench …` and `bowline hbone-demo`: flags, and the reports printed (and
//! written as JSON with `--json`).
//!
//! Owns: these commands' flags and output. Must not: measure anything itself — that is
//! the `bench` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{terminated, write_json};

#[derive(Debug, clap::Args)]
pub(crate) struct HboneDemoArgs {
    /// Concurrent streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Bytes each stream sends (and gets echoed back).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    bytes: u64,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Bench {
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
    /// HTTP/1.1 direct, through the L4 mesh and through a waypoint, on a lab of its own
    /// (root): request rate with 16 connections, latency, CPU per request and RSS of the
    /// waypoint at 1000 req/s.
    L7 {
        /// Seconds per measure and path, split into alternating rounds.
        #[arg(long, default_value_t = 5.0)]
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
        #[arg(long = "map", value_parser = bench::relay::parse_map, required = true)]
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

/// `bowline hbone-demo`.
#[allow(clippy::print_stdout)]
pub(crate) async fn hbone_demo(args: HboneDemoArgs) -> anyhow::Result<()> {
    let report = bench::demo::run(args.streams, args.bytes).await?;
    println!("{report}");
    Ok(())
}

/// `bowline bench l4|l7|control-plane|relay|hbone`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::L4 { duration, json } => {
            let phase = phase(duration)?;
            let binary = std::env::current_exe().context("locating the bowline binary")?;
            let report = bench::l4::run(&binary, phase).await?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
        Bench::L7 { duration, json } => {
            let phase = phase(duration)?;
            let binary = std::env::current_exe().context("locating the bowline binary")?;
            let progress = |step: &str| eprintln!("==> {step}");
            // Dropping the benchmark on a signal removes its lab.
            let report = tokio::select! {
                report = bench::l7::run(&binary, phase, &progress) => report?,
                () = terminated() => anyhow::bail!("bench l7 interrupted; its lab was removed"),
            };
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
        Bench::ControlPlane {
            json,
            updates,
            clients,
        } => {
            let binary = std::env::current_exe().context("locating the bowline binary")?;
            let scale = bench::control_plane::Scale {
                updates,
                clients,
                ..Default::default()
            };
            let report = bench::control_plane::run(&binary, scale)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
        Bench::Relay { maps } => {
            tokio::select! {
                result = bench::relay::run(&maps) => result?,
                () = terminated() => {}
            }
        }
        Bench::Hbone { duration, json } => {
            let report = bench::hbone::run(phase(duration)?).await?;
            println!("{report}");
            write_json(json.as_deref(), &report)?;
        }
    }
    Ok(())
}

/// `--duration` as the length of each measure.
fn phase(seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds).context("--duration must be a positive number of seconds")
}
