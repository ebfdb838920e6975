//! `bowline cni`: the node agent's flags turned into its configuration.
//!
//! Owns: the flags and the assembly of `cni::agent::AgentConfig`. Must not: capture or
//! report anything — that is the `cni` crate.

use std::path::PathBuf;

use super::{read_ca_root, terminated};

#[derive(Debug, clap::Args)]
pub(crate) struct CniArgs {
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
}

/// `bowline cni`: runs until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: CniArgs) -> anyhow::Result<()> {
    let CniArgs {
        node,
        xds_address,
        status_address,
        ca_root,
        token_file,
        socket,
        netns_prefix,
        no_dns,
    } = args;
    let status_url = match status_address {
        Some(url) => url,
        None if xds_address.starts_with("https://") => xds_address.clone(),
        None => anyhow::bail!(
            "--status-address https://HOST:15012 is needed: the node agent reports the pods it captured to the control plane's TLS port (--xds-address {xds_address} is plaintext)"
        ),
    };
    let root_pem = read_ca_root(ca_root.as_ref())?;
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
    Ok(())
}
