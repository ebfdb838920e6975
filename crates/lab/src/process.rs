//! Starting mesh components as processes the way the lab does.

use std::path::Path;
use std::process::Command;

/// The command line of a `bowline ztunnel` in in-pod mode: configuration `config`, node
/// agent socket `socket`, CA root in `ca_dir`, logging at `log`, every operator surface on
/// an ephemeral loopback port (so several can run side by side).
pub fn ztunnel_command(
    binary: &Path,
    config: &Path,
    socket: &Path,
    ca_dir: &Path,
    log: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--log", log, "ztunnel", "--config"])
        .arg(config)
        .arg("--node-agent-socket")
        .arg(socket)
        .arg("--ca-dir")
        .arg(ca_dir)
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--readiness-addr",
            "127.0.0.1:0",
        ]);
    command
}
