//! Whether a lab's components are up, asked the same way by `bowline up` (which returns
//! only once every one is) and `bowline status` (which shows them): the control plane's
//! `/ready`, every ztunnel's `/healthz/ready` (configuration, the node agent's pods,
//! every served pod's certificate), and every supervised component's own process — the
//! child of its `bowline supervise`, whose PID is shown beside the supervisor's.

use std::path::{Path, PathBuf};

use netns::Namespace;

use super::{CONTROL_PLANE_IP, LabState, ours};

/// One component and whether it is ready.
#[derive(Debug, Clone)]
pub(super) struct Health {
    /// `control plane`, `ztunnel node-1`, `cni node-1`…
    pub(super) component: String,
    /// Ready (with a note), or why not.
    pub(super) ready: Result<String, String>,
    /// Its log.
    pub(super) log: PathBuf,
}

/// The readiness of the ztunnel in node namespace `ns`: the note of a 200 (`stale…`),
/// or why it is not ready.
pub(super) async fn ztunnel(ns: &str) -> Result<String, String> {
    ready(ns, "http://127.0.0.1:15021/healthz/ready").await
}

/// A waypoint's readiness probe (15021) in its pod's namespace `ns`.
pub(super) async fn waypoint(ns: &str) -> Result<(), String> {
    ready(ns, "http://127.0.0.1:15021/healthz/ready")
        .await
        .map(|_| ())
}

async fn ready(ns: &str, url: &str) -> Result<String, String> {
    let answer = crate::client::http_in(Some(&Namespace::existing(ns)), "GET", url, None).await;
    let tidy = |body: &str| {
        let body = body.trim();
        let body = body.strip_prefix("not ready: ").unwrap_or(body);
        body.strip_prefix("ready").unwrap_or(body).trim().to_owned()
    };
    match answer {
        Ok((200, body)) => Ok(tidy(&body)),
        Ok((code, body)) => Err(format!("{code} {}", tidy(&body))),
        Err(e) => Err(format!("not answering ({e})")),
    }
}

/// Every component of the lab, in start order.
pub(super) async fn check(state: &LabState, dir: &Path) -> Vec<Health> {
    let logs = dir.join("logs");
    let mut out = vec![Health {
        component: "control plane".into(),
        ready: ready(
            &state.router,
            &format!("http://{CONTROL_PLANE_IP}:15014/ready"),
        )
        .await,
        log: logs.join("control-plane.log"),
    }];
    for (node, (ns, _)) in &state.nodes {
        out.push(Health {
            component: format!("ztunnel {node}"),
            ready: ztunnel(ns).await,
            log: logs.join(format!("ztunnel-{node}.log")),
        });
    }
    for (what, pid, ns) in &state.processes {
        let Some(log) = component_log(what) else {
            continue;
        };
        let ready = match process(*pid, ns) {
            Process::Running { .. } => Ok(String::new()),
            Process::Restarting => Err("exited; its supervisor restarts it".into()),
            Process::Exited => Err("exited (and its supervisor too)".into()),
        };
        out.push(Health {
            component: what.clone(),
            ready,
            log: logs.join(log),
        });
    }
    out
}

/// The log of a supervised component (`control-plane`, `lab-controller`, `cni N`,
/// `ztunnel N`).
pub(super) fn component_log(what: &str) -> Option<String> {
    if what == "control-plane" || what == super::CONTROLLER {
        return Some(format!("{what}.log"));
    }
    let (kind, node) = what.split_once(' ')?;
    matches!(kind, "cni" | "ztunnel").then(|| format!("{kind}-{node}.log"))
}

/// What runs under a PID the lab recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Alive; for a supervised component, `child` is the component itself.
    Running {
        /// The component under the supervisor, when `pid` is a supervisor.
        child: Option<u32>,
    },
    /// A supervisor whose component has exited (it is started again after a second).
    Restarting,
    /// Gone.
    Exited,
}

/// The process recorded as `pid` in namespace `ns`.
pub(super) fn process(pid: u32, ns: &str) -> Process {
    if !ours(pid, ns) {
        return Process::Exited;
    }
    if !is_supervisor(pid) {
        return Process::Running { child: None };
    }
    match children(pid).into_iter().find(|child| ours(*child, ns)) {
        Some(child) => Process::Running { child: Some(child) },
        None => Process::Restarting,
    }
}

fn is_supervisor(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|arg| arg == b"supervise"))
        .unwrap_or(false)
}

/// The PIDs whose parent is `parent` (from `/proc/*/stat`; `/proc/PID/task/*/children`
/// needs a kernel option not every host has).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_child_is_found_under_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert_eq!(parent_of(child.id()), Some(me));
        assert!(children(me).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn supervised_components_have_their_logs() {
        assert_eq!(component_log("control-plane").unwrap(), "control-plane.log");
        assert_eq!(
            component_log("ztunnel node-1").unwrap(),
            "ztunnel-node-1.log"
        );
        assert_eq!(component_log("cni node-2").unwrap(), "cni-node-2.log");
        assert_eq!(component_log("pod shop/client shell"), None);
    }
}
