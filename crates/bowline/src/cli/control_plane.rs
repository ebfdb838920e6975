//! `bowline control-plane` (its flags turned into its configuration) and `bowline
//! control-plane token` (a node's token for the CA service and the node agent's reports).
//!
//! Owns: these commands' flags, the assembly of `control_plane::app::Config`, and where a
//! token goes. Must not: serve anything or make tokens itself — that is the
//! `control-plane` crate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::terminated;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ControlPlaneArgs {
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

#[derive(Debug, clap::Subcommand)]
enum ControlPlaneAction {
    /// Print a token with which a node's ztunnel may ask for its pods' certificates.
    Token {
        /// The node.
        #[arg(long)]
        node: String,
        /// Hours it stays valid.
        #[arg(long, default_value_t = 24 * 365)]
        hours: u64,
        /// Write the token to this file (mode 0600, replaced whole) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `bowline control-plane`: serves until SIGTERM or Ctrl-C; or `token`.
pub(crate) async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    if let Some(ControlPlaneAction::Token {
        node,
        hours,
        output,
    }) = args.action
    {
        return token(&args.state_dir, &node, hours, output.as_deref());
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
    Ok(())
}

/// `bowline control-plane token`: the token alone, without a trailing newline (it is sent
/// verbatim as an `authorization` header by whoever reads the file), on stdout or into
/// `output`.
fn token(state_dir: &Path, node: &str, hours: u64, output: Option<&Path>) -> anyhow::Result<()> {
    let tokens = control_plane::tokens::NodeTokens::load_or_create(state_dir)?;
    let token = tokens.issue(node, Duration::from_secs(hours * 3600))?;
    match output {
        Some(file) => {
            identity::private_file::write(file, token.as_bytes())
                .with_context(|| format!("--output {}", file.display()))?;
            eprintln!("wrote the token of node {node} to {}", file.display());
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(token.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}
