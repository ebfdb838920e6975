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
    /// Benchmarks that report ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
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
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    identity::install_default_provider();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(dispatch(cli.command))
}

#[allow(clippy::print_stdout)]
async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::HboneDemo { streams, bytes } => {
            let report = hbone::demo::run(streams, bytes).await?;
            println!("{report}");
        }
        Command::Bench {
            which: Bench::Hbone { duration, json },
        } => {
            let phase = Duration::try_from_secs_f64(duration)
                .context("--duration must be a positive number of seconds")?;
            let report = hbone::bench::run(phase).await?;
            println!("{report}");
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
