//! `bowline up / down / exec / status / supervise`: the one-host lab.
//!
//! Owns: these commands' flags and what they print (the status table). Must not: build
//! or inspect a lab itself — that is the `lab` crate.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::terminated;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// YAML files or directories (Nodes, Pods with their commands, Services, policies…).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Lab name (several labs can run side by side).
    #[arg(long, default_value = "lab")]
    name: String,
    /// Return once everything is ready instead of staying in the foreground.
    #[arg(long)]
    detach: bool,
    /// Forward a host port to an ingress gateway's listener:
    /// `[ADDR:]HOSTPORT[=NAMESPACE/GATEWAY:PORT]` (loopback by default; the gateway may be
    /// left out when the manifests hold one ingress Gateway with one port). Repeatable.
    #[arg(long)]
    publish: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LabName {
    /// Lab name (default: the only running lab).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    /// `<namespace>/<pod>`, `<namespace>/deploy/<name>` (a pod of that Deployment; also
    /// `sts`, `ds`, `rs`, `job`) or `node/<name>`.
    target: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
    /// Lab name (default: the only running lab).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SuperviseArgs {
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `bowline up`: builds the lab, prints its status, and (unless `--detach`) tears it
/// down on SIGTERM or Ctrl-C.
#[allow(clippy::print_stdout)]
pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    let UpArgs {
        files,
        name,
        detach,
        publish,
    } = args;
    let options = lab::up::UpOptions {
        files,
        name: name.clone(),
        binary: std::env::current_exe().context("locating the bowline binary")?,
        publish,
    };
    let progress = |step: &str| eprintln!("==> {step}");
    match lab::up::up(&options, &progress).await {
        Ok(_) => {
            println!("{}", render_status(&lab::up::status(&name).await?));
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
    Ok(())
}

/// `bowline down`.
#[allow(clippy::print_stdout)]
pub(crate) fn down(args: LabName) -> anyhow::Result<()> {
    let name = lab::up::pick(args.name)?;
    println!("{}", lab::up::down(&name)?);
    Ok(())
}

/// `bowline exec`: exits with the command's exit code.
pub(crate) fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let code = lab::up::exec(&lab::up::pick(args.name)?, &args.target, &args.command)?;
    std::process::exit(code);
}

/// `bowline status`.
#[allow(clippy::print_stdout)]
pub(crate) async fn status(args: LabName) -> anyhow::Result<()> {
    let status = lab::up::status(&lab::up::pick(args.name)?).await?;
    println!("{}", render_status(&status));
    Ok(())
}

/// `bowline supervise -- CMD…`.
pub(crate) async fn supervise(args: SuperviseArgs) -> anyhow::Result<()> {
    lab::supervise::run(&args.command, terminated())
        .await
        .map_err(anyhow::Error::msg)
}

/// `bowline lab-controller`: until SIGTERM.
pub(crate) async fn controller(args: LabName) -> anyhow::Result<()> {
    let name = lab::up::pick(args.name)?;
    let binary = std::env::current_exe()?;
    lab::up::run_controller(&name, binary, terminated()).await;
    Ok(())
}

/// The `bowline status` table (also printed by `bowline up`): nodes, pods, services,
/// waypoints, processes, and where the control plane's API, token and logs are.
fn render_status(status: &lab::up::LabStatus) -> String {
    use lab::up::{CONTROL_PLANE_API, CONTROL_PLANE_IP, Process};

    let mut out = format!("lab {}\n\nNODES\n", status.name);
    for node in &status.nodes {
        let ready = match &node.ztunnel {
            Ok(note) if note.is_empty() => "ready".to_owned(),
            Ok(note) => format!("ready {note}"),
            Err(why) => format!("NOT READY: {why}"),
        };
        let _ = writeln!(out, "  {:<12} {:<14} ztunnel {ready}", node.name, node.ip);
    }
    out.push_str("\nPODS\n");
    // Grouped by the controller that made them; pods written as Pods first.
    let mut pods: Vec<&lab::up::PodStatus> = status.pods.iter().collect();
    pods.sort_by(|a, b| (&a.owner, &a.key).cmp(&(&b.owner, &b.key)));
    let mut group = None;
    for pod in pods {
        if pod.owner.is_some() && pod.owner != group {
            let count = status.pods.iter().filter(|p| p.owner == pod.owner).count();
            let owner = pod.owner.as_deref().unwrap_or_default();
            let _ = writeln!(out, "  {owner} ({count} pods)");
        }
        group.clone_from(&pod.owner);
        let indent = if pod.owner.is_some() { "  " } else { "" };
        let capture = match (pod.captured, pod.enrolled, pod.hbone) {
            (true, Some(true), Some(true)) => "captured (in mesh)",
            (true, Some(true), Some(false)) => "captured, not yet reported (plaintext)",
            (true, Some(true) | None, None) => "captured (ztunnel not answering)",
            (true, Some(false), _) => "captured, leaving the mesh",
            (true, None, Some(_)) => "captured",
            (false, Some(true), _) => "waiting for capture (plaintext)",
            (false, _, _) => "not captured",
        };
        let enrolled = match pod.enrolled {
            Some(true) => "enrolled",
            Some(false) => "not enrolled",
            None => "?",
        };
        let _ = writeln!(
            out,
            "  {indent}{:<28} {:<14} {:<12} {enrolled:<13} {capture}",
            pod.key, pod.ip, pod.node
        );
        for (container, what) in &pod.stand_ins {
            let _ = writeln!(out, "    {indent}{container}: {what}");
        }
    }
    out.push_str("\nSERVICES\n");
    for (key, vip) in &status.services {
        let _ = writeln!(out, "  {key:<28} {vip}");
    }
    let (ingress, waypoints): (Vec<_>, Vec<_>) =
        status.waypoints.iter().partition(|w| w.listeners.is_some());
    if !ingress.is_empty() {
        out.push_str("\nINGRESS GATEWAYS\n");
        for gateway in &ingress {
            let programmed = if gateway.pods.iter().any(|(_, _, _, r)| r.is_ok()) {
                "programmed"
            } else {
                "NOT PROGRAMMED (no ready pod)"
            };
            let address = gateway.address.as_deref().unwrap_or("no address yet");
            let _ = writeln!(
                out,
                "  {:<28} {address} (in the lab); {programmed}",
                gateway.gateway
            );
            for listener in gateway.listeners.iter().flatten() {
                let (name, port, protocol) = (&listener.name, &listener.port, &listener.protocol);
                let host = listener.hostname.as_deref().unwrap_or("any host");
                let published: Vec<String> = status
                    .published
                    .iter()
                    .filter(|p| p.gateway == gateway.gateway && p.port == *port)
                    .map(|p| {
                        let scheme = if protocol == "HTTPS" { "https" } else { "http" };
                        format!("{scheme}://{}", p.listen)
                    })
                    .collect();
                let published = if published.is_empty() {
                    String::new()
                } else {
                    format!(" — from the host: {}", published.join(", "))
                };
                let _ = writeln!(
                    out,
                    "    {name:<12} :{port:<5} {protocol:<5} {host}{published}"
                );
            }
        }
    }
    if !waypoints.is_empty() {
        out.push_str("\nWAYPOINTS\n");
        for waypoint in waypoints {
            let bound = if waypoint.bound.is_empty() {
                "nothing bound".to_owned()
            } else {
                format!("bound: {}", waypoint.bound.join(", "))
            };
            // Programmed, as the Gateway's status would say: a ready pod serves it.
            let programmed = if waypoint.pods.iter().any(|(_, _, _, r)| r.is_ok()) {
                "programmed"
            } else {
                "NOT PROGRAMMED (no ready pod: what is bound to it is refused)"
            };
            let _ = writeln!(out, "  {:<28} {programmed}; {bound}", waypoint.gateway);
            if waypoint.pods.is_empty() {
                let _ = writeln!(
                    out,
                    "    no pod: not running (traffic bound to it is refused)"
                );
            }
            for (pod, ip, node, ready) in &waypoint.pods {
                let ready = match ready {
                    Ok(()) => "ready".to_owned(),
                    Err(why) => format!("NOT READY: {why}"),
                };
                let _ = writeln!(out, "    {pod:<26} {ip:<14} {node:<12} {ready}");
            }
        }
    }
    if !status.routes.is_empty() {
        out.push_str("\nROUTES\n");
        for route in &status.routes {
            let conditions: Vec<String> = route
                .conditions
                .iter()
                .map(|(kind, holds, reason)| match holds {
                    true => format!("{kind}=True"),
                    false => format!("{kind}=False ({reason})"),
                })
                .collect();
            // Istio's kinds have no Gateway API conditions.
            let conditions = match conditions.join(" ") {
                c if c.is_empty() => String::new(),
                c => format!("{c}; "),
            };
            if route.notes.is_empty() {
                let _ = writeln!(out, "  {:<40} {conditions}in force", route.object);
            } else {
                let _ = writeln!(
                    out,
                    "  {:<40} {conditions}NOT FULLY IN FORCE:",
                    route.object
                );
                for note in &route.notes {
                    let _ = writeln!(out, "    {note}");
                }
            }
        }
    }
    out.push_str("\nPROCESSES\n");
    for (what, pid, process) in &status.processes {
        // A supervised component shows its own PID, then its supervisor's.
        let line = match process {
            Process::Running { child: None } => format!("pid {pid:<8} running"),
            Process::Running { child: Some(child) } => {
                format!("pid {child:<8} (supervisor {pid}) running")
            }
            Process::Restarting => format!("pid -        (supervisor {pid}) EXITED, restarting"),
            Process::Exited => format!("pid {pid:<8} EXITED"),
        };
        let _ = writeln!(out, "  {what:<40} {line}");
    }
    let _ = writeln!(
        out,
        "\ncontrol plane http://{CONTROL_PLANE_IP}:15014 (metrics, readiness), management API http://{CONTROL_PLANE_API} (token {}), both inside {}; logs in {}",
        status.token_file.display(),
        status.router,
        status.logs.display()
    );
    out
}
