//! `bowline up / down / exec / status`: a whole ambient mesh on one host.
//!
//! Topology: a router namespace is the cluster network (forwarding, the pods' gateway, and
//! the control plane on 10.255.0.1 — its management API on the router's own 127.0.0.1,
//! out of the pods' reach, with the token in `<state>/control-plane/operator-token`);
//! every node and every pod is a namespace joined to it
//! by a veth pair with a /32 address. Pod addresses come from the node's CIDR
//! (`spec.podCIDR`, else 10.<10+i>.0.0/24), node addresses from 10.254.0.0/24, service VIPs
//! from 10.96.0.0/16. Processes, each its own OS process started with `ip netns exec`: the
//! control plane (router namespace), per node a ztunnel and a node agent (node namespace),
//! and every pod's containers (pod namespace, `POD_NAME`/`POD_NAMESPACE` set). Pods resolve
//! `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc.cluster.local` through a per-namespace
//! `/etc/netns/<ns>/{resolv.conf,hosts}` (enrolled pods' DNS goes to ztunnel's proxy).
//!
//! Everything created is recorded in `<state>/lab.json` as it is created, so `bowline down`
//! removes it all — processes (by PID, checked to be ours), namespaces (and with them their
//! links and rules), `/etc/netns` files, state — also after a crash or `kill -9` of `up`.
//!
//! Owns: the lab's state file, naming, teardown and `exec` (building: [`build`]). Must
//! not: print — the `bowline` binary renders what these functions return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netns::Namespace;
use serde::{Deserialize, Serialize};

mod build;
mod containers;
mod controller;
mod health;
mod kube_proxy;
mod plan;
mod publish;
mod secrets;
mod status;
mod workloads;

pub use publish::Published;

pub use build::up;
pub use containers::UPSTREAMS;
pub use controller::{objects, run as run_controller, submit};
pub use status::{
    LabStatus, NodeStatus, PodStatus, Process, RouteStatus, WaypointStatus, operator_token_file,
    status,
};

/// The control plane's address on the router's loopback.
pub const CONTROL_PLANE_IP: &str = "10.255.0.1";
/// The control plane's management API (debug, apply), on the router namespace's
/// 127.0.0.1, which no pod can reach.
pub const CONTROL_PLANE_API: &str = "127.0.0.1:15015";
/// The nameserver pods are given (captured to ztunnel's DNS proxy in enrolled pods).
const POD_NAMESERVER: &str = "10.96.0.10";

/// Why a lab command failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad input, explained.
    #[error("{0}")]
    Invalid(String),
    /// Namespace trouble.
    #[error("{0} (the lab builds network namespaces: run it as root)")]
    Netns(#[from] netns::NetnsError),
    /// File or process trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn invalid<T>(message: impl Into<String>) -> Result<T, LabError> {
    Err(LabError::Invalid(message.into()))
}

/// Where labs keep their state: `$BOWLINE_STATE_DIR` or `/run/bowline`.
pub fn state_root() -> PathBuf {
    std::env::var_os("BOWLINE_STATE_DIR")
        .map_or_else(|| PathBuf::from("/run/bowline"), PathBuf::from)
}

/// What a lab is made of, written as it is built.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    /// Lab name.
    pub name: String,
    /// Namespaces created, in creation order.
    pub namespaces: Vec<String>,
    /// Processes started: (what, pid, namespace it runs in).
    pub processes: Vec<(String, u32, String)>,
    /// Nodes: name → (namespace, address).
    pub nodes: BTreeMap<String, (String, String)>,
    /// Pods: `ns/name` → (namespace, address, node).
    pub pods: BTreeMap<String, (String, String, String)>,
    /// Services: `ns/name` → VIP.
    pub services: BTreeMap<String, String>,
    /// The router namespace.
    pub router: String,
    /// Veth pairs made so far (names the router-side interfaces).
    #[serde(default)]
    pub links: usize,
    /// Host ports forwarded to ingress gateways (`--publish`).
    #[serde(default)]
    pub published: Vec<Published>,
}

impl LabState {
    fn save(&self, dir: &Path) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = dir.join("lab.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, dir.join("lab.json"))?;
        Ok(())
    }

    /// Loads lab `name`.
    pub fn load(name: &str) -> Result<Self, LabError> {
        let path = state_root().join(name).join("lab.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LabError::Invalid(format!("lab {name:?}: {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| LabError::Invalid(format!("lab {name:?}: {}: {e}", path.display())))
    }
}

/// The labs that exist.
pub fn labs() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(state_root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("lab.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// `--name`, or the only lab; otherwise a message listing them.
pub fn pick(name: Option<String>) -> Result<String, LabError> {
    if let Some(name) = name {
        return Ok(name);
    }
    let all = labs();
    match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => invalid("no lab is running; start one with `bowline up -f DIR`"),
        many => invalid(format!(
            "several labs are running ({}); choose one with --name",
            many.join(", ")
        )),
    }
}

/// Options of `bowline up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// YAML files or directories.
    pub files: Vec<PathBuf>,
    /// Lab name.
    pub name: String,
    /// The `bowline` binary to run components with.
    pub binary: PathBuf,
    /// `--publish` specs: `[ADDR:]HOSTPORT[=NS/GATEWAY:PORT]`.
    pub publish: Vec<String>,
}

fn ns_name(lab: &str, kind: &str, rest: &str) -> String {
    format!("bl-{lab}-{kind}{rest}")
}

/// The pod namespace prefix (the node agent finds pods by it).
pub fn pod_prefix(lab: &str) -> String {
    ns_name(lab, "p-", "")
}

/// The workload uid the control plane gives pod `namespace/name`.
fn pod_uid(namespace: &str, name: &str) -> String {
    control_plane::translate::pod_uid(
        &control_plane::translate::MeshSettings::default().cluster_id,
        namespace,
        name,
    )
}

/// For each node whose ztunnel answers: workload uid → whether that ztunnel holds it as
/// HBONE (in the mesh) rather than plaintext, from its admin `/config_dump`.
async fn advertised(state: &LabState) -> BTreeMap<String, BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    for (node, (ns, _)) in &state.nodes {
        let Ok((200, body)) = crate::client::http_in(
            Some(&Namespace::existing(ns)),
            "GET",
            "http://127.0.0.1:15000/config_dump",
            None,
        )
        .await
        else {
            continue;
        };
        let Ok(dump) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        let workloads = dump["workloads"].as_array().into_iter().flatten();
        let held = workloads
            .filter_map(|w| Some((w["uid"].as_str()?.to_owned(), w["protocol"] == "Hbone")))
            .collect();
        out.insert(node.clone(), held);
    }
    out
}

/// Whether `pid` is still the process this lab started: alive, and inside the lab
/// namespace it was started in (so a recycled PID is never signalled).
/// An empty `ns` is the host's namespace, where only the lab controller runs (it makes
/// namespaces, which must be visible to the host); there the command line must name it.
fn ours(pid: u32, ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let alive =
        !std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
    let netns = if ns.is_empty() {
        let controller = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == CONTROLLER.as_bytes()));
        if !controller {
            return false;
        }
        "/proc/self/ns/net".to_owned()
    } else {
        format!("/run/netns/{ns}")
    };
    alive
        && inode(&format!("/proc/{pid}/ns/net")).is_some()
        && inode(&format!("/proc/{pid}/ns/net")) == inode(&netns)
}

/// The lab controller's subcommand (and its name among the lab's processes).
pub const CONTROLLER: &str = "lab-controller";

/// Deletes namespace `ns` (and with it its links) and its `/etc/netns` files.
fn delete_namespace(ns: &str) {
    if Path::new("/run/netns").join(ns).exists() {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// The namespaces of lab `name` that exist now (whatever the state file says).
fn lab_namespaces(name: &str) -> Vec<String> {
    let prefix = format!("bl-{name}-");
    let mut out: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    out.sort();
    out
}

/// PIDs of the processes inside namespace `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `bowline down`: removes everything of lab `name` — every process inside its
/// namespaces, the namespaces (and with them links and rules), `/etc/netns` files and the
/// state. Works from the namespaces themselves, so it also cleans up after a crash or a
/// `kill -9` of `up`; harmless when run twice.
pub fn down(name: &str) -> Result<String, LabError> {
    let dir = state_root().join(name);
    let mut namespaces = lab_namespaces(name);
    if dir.join("lab.json").exists() {
        let state = LabState::load(name)?;
        // The controller first: it would make namespaces again.
        for (_, pid, ns) in &state.processes {
            if ns.is_empty() && ours(*pid, ns) {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(i32::MAX));
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for ns in state.namespaces {
            if !namespaces.contains(&ns) {
                namespaces.push(ns);
            }
        }
    }
    if namespaces.is_empty() && !dir.exists() {
        return Ok(format!("lab {name:?} is not running; nothing to do"));
    }
    let mut report = Vec::new();
    let signal = |sig| {
        let mut count = 0;
        for ns in &namespaces {
            for pid in pids_in(ns) {
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok() {
                    count += 1;
                }
            }
        }
        count
    };
    let stopped = signal(nix::sys::signal::Signal::SIGTERM);
    if stopped > 0 {
        report.push(format!("stopped {stopped} processes"));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && namespaces.iter().any(|ns| !pids_in(ns).is_empty()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = signal(nix::sys::signal::Signal::SIGKILL);
    if killed > 0 {
        report.push(format!(
            "killed {killed} processes that did not stop in 3 s"
        ));
    }
    for ns in namespaces.iter().rev() {
        delete_namespace(ns);
    }
    if !namespaces.is_empty() {
        report.push(format!(
            "deleted {} namespaces (with their links and rules)",
            namespaces.len()
        ));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    report.push(format!("lab {name:?} removed"));
    Ok(report.join("\n"))
}

/// The pod of lab `state` that `<ns>/<kind>/<name>` names (`deploy`, `sts`, `ds`, `rs`,
/// `job`, or their long names): the first, by name, of those its controller made —
/// recognised by how the lab names them ([`workloads`]).
fn pod_of_controller(state: &LabState, target: &str) -> Option<String> {
    let mut parts = target.splitn(3, '/');
    let (ns, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if !matches!(
        kind,
        "deploy"
            | "deployment"
            | "sts"
            | "statefulset"
            | "ds"
            | "daemonset"
            | "rs"
            | "replicaset"
            | "job"
    ) {
        return None;
    }
    let is_suffix = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let shape = |rest: &str| match kind {
        "deploy" | "deployment" => rest
            .split_once('-')
            .is_some_and(|(hash, suffix)| !hash.is_empty() && is_suffix(suffix)),
        "sts" | "statefulset" => rest.parse::<u32>().is_ok(),
        _ => is_suffix(rest),
    };
    let prefix = format!("{ns}/{name}-");
    let mut pods: Vec<&String> = state
        .pods
        .keys()
        .filter(|key| key.strip_prefix(&prefix).is_some_and(shape))
        .collect();
    pods.sort_by_key(|key| (key.len(), key.as_str()));
    pods.first().map(|key| (*key).clone())
}

/// `bowline exec <ns>/<pod> -- CMD…`, `<ns>/deploy/<name>` (a pod of that Deployment;
/// also `sts`, `ds`, `rs`, `job`) or `node/<name>`: runs CMD inside that namespace;
/// returns its exit code.
pub fn exec(name: &str, target: &str, command: &[String]) -> Result<i32, LabError> {
    let state = LabState::load(name)?;
    let Some((program, args)) = command.split_first() else {
        return invalid("give a command after --");
    };
    let resolved;
    let target = if target.matches('/').count() == 2 {
        resolved = pod_of_controller(&state, target).ok_or_else(|| {
            LabError::Invalid(format!(
                "{target:?}: no pod of that controller in lab {name} (write <ns>/deploy/<name>, sts, ds, rs or job)"
            ))
        })?;
        resolved.as_str()
    } else {
        target
    };
    let (ns, env): (String, Vec<(String, String)>) = match target.split_once('/') {
        Some(("node", node)) => match state.nodes.get(node) {
            Some((ns, _)) => (ns.clone(), vec![]),
            None => {
                return invalid(format!(
                    "no node {node:?} in lab {name}; nodes: {}",
                    state.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        },
        Some((pod_ns, pod)) => match state.pods.get(target) {
            Some((ns, _, _)) => (
                ns.clone(),
                vec![
                    ("POD_NAME".into(), pod.into()),
                    ("POD_NAMESPACE".into(), pod_ns.into()),
                ],
            ),
            None => {
                return invalid(format!(
                    "no pod {target:?} in lab {name}; pods: {}",
                    state.pods.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        },
        None => {
            return invalid(format!(
                "{target:?}: write <namespace>/<pod> or node/<name>"
            ));
        }
    };
    let program = if program == "bowline" {
        std::env::current_exe()?.display().to_string()
    } else {
        program.clone()
    };
    let status = Command::new("ip")
        .args(["netns", "exec", &ns, &program])
        .args(args)
        .envs(env)
        .status()?;
    Ok(status.code().unwrap_or(1))
}

/// The router namespace of lab `name`, where the control plane's API is reachable.
pub fn router(name: &str) -> Result<Namespace, LabError> {
    Ok(Namespace::existing(&LabState::load(name)?.router))
}

/// The namespace of `node`'s ztunnel.
pub fn node_namespace(name: &str, node: &str) -> Result<Namespace, LabError> {
    let state = LabState::load(name)?;
    state
        .nodes
        .get(node)
        .map(|(ns, _)| Namespace::existing(ns))
        .ok_or_else(|| LabError::Invalid(format!("no node {node:?} in lab {name}")))
}
