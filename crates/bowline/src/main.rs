//! The `bowline` binary: parses the command line and dispatches to the crates that do
//! the work. No logic lives here.
//!
//! Owns: the order of start-up (memory tuning, parsing, logging, TLS provider, runtime).
//! Must not: hold flags ([`cli`]) or tuning details ([`tuning`]).

#![deny(unsafe_code)] // one exception: the allocator options in `tuning`

use anyhow::Context;
use clap::Parser;

mod cli;
mod tuning;

fn main() -> anyhow::Result<()> {
    tuning::return_freed_memory_promptly();
    let cli = cli::Cli::parse();
    if cli.command.carries_tls() {
        tuning::reexec_with_vector_memcpy();
    }
    let set_level = init_logging(&cli.log)?;
    identity::install_default_provider();
    let workers = cli
        .worker_threads
        .or_else(|| cli.command.default_worker_threads());
    let runtime = tuning::runtime(workers)?;
    runtime.block_on(cli::dispatch(cli.command, set_level))
}

/// Logs to stderr with filter `log` (colours only on a terminal: a component's log file
/// gets plain lines, and the per-request access log skips the escape codes); returns what
/// changes the filter later (ztunnel's admin `/logging`).
fn init_logging(log: &str) -> anyhow::Result<ztunnel::admin::LogLevelSetter> {
    use tracing_subscriber::prelude::*;

    let filter = tracing_subscriber::EnvFilter::try_new(log).context("--log")?;
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .init();
    Ok(std::sync::Arc::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        reload.reload(filter).map_err(|e| e.to_string())
    }))
}
