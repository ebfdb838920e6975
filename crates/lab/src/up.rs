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

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use config::Resource;
use netns::{Namespace, links};
use serde::{Deserialize, Serialize};

use plan::plan;

mod health;
mod plan;
mod status;

pub use status::{operator_token_file, status};

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
}

fn ns_name(lab: &str, kind: &str, rest: &str) -> String {
    format!("bl-{lab}-{kind}{rest}")
}

/// The pod namespace prefix (the node agent finds pods by it).
pub fn pod_prefix(lab: &str) -> String {
    ns_name(lab, "p-", "")
}

/// `bowline up`: builds the lab and returns when everything is ready.
pub async fn up(options: &UpOptions, progress: &dyn Fn(&str)) -> Result<LabState, LabError> {
    let lab = &options.name;
    if lab.is_empty()
        || lab.len() > 12
        || !lab
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return invalid("--name: 1-12 lower-case letters or digits");
    }
    let dir = state_root().join(lab);
    if dir.join("lab.json").exists() {
        return invalid(format!(
            "lab {lab:?} already exists; `bowline down --name {lab}` first, or pick another --name"
        ));
    }
    let plan = plan(&options.files)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::create_dir_all(dir.join("config"))?;
    // Node tokens, configuration snapshots and certificate caches: the lab's secrets.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir.join("nodes"))?;
    let mut state = LabState {
        name: lab.clone(),
        ..Default::default()
    };
    state.save(&dir)?;

    progress("network: router, nodes, pods");
    let router = ns_name(lab, "net", "");
    let router_ns = Namespace::create(&router)?.keep();
    state.namespaces.push(router.clone());
    state.router = router.clone();
    state.save(&dir)?;
    links::sysctl(&router_ns, "net/ipv4/ip_forward", "1")?;
    links::add_address(
        &router_ns,
        "lo",
        &format!("{}/32", crate::topology::GATEWAY),
    )?;
    links::add_address(&router_ns, "lo", &format!("{CONTROL_PLANE_IP}/32"))?;
    let attach = |state: &mut LabState,
                  name: &str,
                  ip: Ipv4Addr,
                  index: usize|
     -> Result<Namespace, LabError> {
        let ns = Namespace::create(name)?.keep();
        state.namespaces.push(name.to_owned());
        state.save(&dir)?;
        let router_if = format!("bl{lab}{index}");
        links::veth(&ns, "eth0", &router_ns, &router_if)?;
        links::add_address(&ns, "eth0", &format!("{ip}/32"))?;
        links::add_route(&ns, crate::topology::GATEWAY, None, Some("eth0"))?;
        links::add_route(&ns, "default", Some(crate::topology::GATEWAY), Some("eth0"))?;
        links::add_route(&router_ns, &format!("{ip}/32"), None, Some(&router_if))?;
        Ok(ns)
    };
    let mut index = 0;
    for (i, (node, _)) in plan.nodes.iter().enumerate() {
        let ip = Ipv4Addr::new(10, 254, 0, u8::try_from(i + 2).unwrap_or(254));
        let name = ns_name(lab, "node-", node);
        attach(&mut state, &name, ip, index)?;
        index += 1;
        state.nodes.insert(node.clone(), (name, ip.to_string()));
    }
    // Names every pod can resolve: the lab's hosts file and, for enrolled pods, the DNS proxy.
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for (key, ip) in &plan.services {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        hosts.push_str(&format!("{ip} {name}.{ns}.svc.cluster.local {name}.{ns}\n"));
    }
    for (pod, node, ip) in &plan.pods {
        let pod_ns = pod.metadata.namespace();
        let name = format!("{}{}-{}", pod_prefix(lab), pod_ns, pod.metadata.name);
        attach(&mut state, &name, *ip, index)?;
        index += 1;
        let etc = Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!(
                "nameserver {POD_NAMESERVER}\nsearch {pod_ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
            ),
        )?;
        let mut pod_hosts = hosts.clone();
        for (key, ip) in &plan.services {
            let (ns, svc) = key.split_once('/').unwrap_or(("default", key));
            if ns == pod_ns {
                pod_hosts.push_str(&format!("{ip} {svc}\n"));
            }
        }
        std::fs::write(etc.join("hosts"), pod_hosts)?;
        state.pods.insert(
            format!("{pod_ns}/{}", pod.metadata.name),
            (name, ip.to_string(), node.clone()),
        );
        state.save(&dir)?;
    }
    state.services = plan.services.iter().cloned().collect();
    state.save(&dir)?;

    progress("control plane");
    let mut config_text = String::new();
    for (pod, _, _) in &plan.pods {
        config_text.push_str("---\n");
        config_text.push_str(
            &serde_json::to_string(&Resource::Pod(pod.clone()).to_json())
                .map_err(std::io::Error::other)?,
        );
        config_text.push('\n');
    }
    for r in &plan.rest {
        config_text.push_str("---\n");
        config_text.push_str(&serde_json::to_string(&r.to_json()).map_err(std::io::Error::other)?);
        config_text.push('\n');
    }
    for (name, cidr) in &plan.nodes {
        config_text.push_str(&format!(
            "---\n{{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {{\"name\": \"{name}\"}}, \"spec\": {{\"podCIDR\": \"{}/{}\"}}}}\n",
            cidr.base,
            32 - cidr.size.trailing_zeros()
        ));
    }
    std::fs::write(dir.join("config/lab.yaml"), config_text)?;
    let cp_state = dir.join("control-plane");
    let pid = spawn_component(
        &router,
        &options.binary,
        &[
            "--log".into(),
            "info".into(),
            "control-plane".into(),
            "--state-dir".into(),
            cp_state.display().to_string(),
            "-f".into(),
            dir.join("config").display().to_string(),
            "--xds-plaintext-addr".into(),
            format!("{CONTROL_PLANE_IP}:15010"),
            "--xds-addr".into(),
            format!("{CONTROL_PLANE_IP}:15012"),
            "--http-addr".into(),
            format!("{CONTROL_PLANE_IP}:15014"),
            "--api-addr".into(),
            CONTROL_PLANE_API.into(),
            "--tls-name".into(),
            CONTROL_PLANE_IP.into(),
        ],
        &dir.join("logs/control-plane.log"),
    )?;
    state
        .processes
        .push(("control-plane".into(), pid, router.clone()));
    state.save(&dir)?;
    wait_http(
        &router_ns,
        &format!("http://{CONTROL_PLANE_IP}:15014/ready"),
        Duration::from_secs(20),
    )
    .await
    .map_err(|e| {
        LabError::Invalid(format!(
            "the control plane did not start: {e}; see {}",
            dir.join("logs/control-plane.log").display()
        ))
    })?;

    for (node, (node_ns, node_ip)) in state.nodes.clone() {
        progress(&format!("node {node}: node agent and ztunnel"));
        let token = Command::new(&options.binary)
            .args(["control-plane", "token", "--node", &node, "--state-dir"])
            .arg(&cp_state)
            .output()?;
        if !token.status.success() {
            return invalid(format!(
                "cannot make a token for node {node}: {}",
                String::from_utf8_lossy(&token.stderr)
            ));
        }
        let token_file = dir.join("nodes").join(format!("{node}.token"));
        write_private(&token_file, &token.stdout)?;
        let socket = dir.join("nodes").join(format!("{node}.sock"));
        let pid = spawn_component(
            &node_ns,
            &options.binary,
            &[
                "--log".into(),
                "info".into(),
                "cni".into(),
                "--node".into(),
                node.clone(),
                "--xds-address".into(),
                format!("http://{CONTROL_PLANE_IP}:15010"),
                "--status-address".into(),
                format!("https://{CONTROL_PLANE_IP}:15012"),
                "--ca-root".into(),
                cp_state.join("ca/root-cert.pem").display().to_string(),
                "--token-file".into(),
                token_file.display().to_string(),
                "--socket".into(),
                socket.display().to_string(),
                "--netns-prefix".into(),
                pod_prefix(lab),
            ],
            &dir.join(format!("logs/cni-{node}.log")),
        )?;
        state
            .processes
            .push((format!("cni {node}"), pid, node_ns.clone()));
        state.save(&dir)?;
        let pid = spawn_component(
            &node_ns,
            &options.binary,
            &[
                "--log".into(),
                "info".into(),
                "ztunnel".into(),
                "--xds-address".into(),
                format!("http://{CONTROL_PLANE_IP}:15010"),
                "--ca-address".into(),
                format!("https://{CONTROL_PLANE_IP}:15012"),
                "--ca-root".into(),
                cp_state.join("ca/root-cert.pem").display().to_string(),
                "--token-file".into(),
                token_file.display().to_string(),
                "--node-name".into(),
                node.clone(),
                "--instance-ip".into(),
                node_ip.clone(),
                "--node-agent-socket".into(),
                socket.display().to_string(),
                "--snapshot-file".into(),
                dir.join("nodes")
                    .join(format!("{node}.snapshot"))
                    .display()
                    .to_string(),
                "--cert-cache-dir".into(),
                dir.join("nodes")
                    .join(format!("{node}-certs"))
                    .display()
                    .to_string(),
                "--drain-seconds".into(),
                "1".into(),
            ],
            &dir.join(format!("logs/ztunnel-{node}.log")),
        )?;
        state
            .processes
            .push((format!("ztunnel {node}"), pid, node_ns.clone()));
        state.save(&dir)?;
    }
    for (node, (node_ns, _)) in &state.nodes {
        let ns = Namespace::existing(node_ns);
        wait_http(
            &ns,
            "http://127.0.0.1:15021/healthz/ready",
            Duration::from_secs(20),
        )
        .await
        .map_err(|e| {
            LabError::Invalid(format!(
                "ztunnel of node {node} is not ready: {e}; see {}",
                dir.join(format!("logs/ztunnel-{node}.log")).display()
            ))
        })?;
    }

    progress("pods");
    for (pod, _, _) in &plan.pods {
        let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        let Some((pod_ns, _, _)) = state.pods.get(&key).cloned() else {
            continue;
        };
        for container in &pod.spec.containers {
            let mut argv: Vec<String> = container
                .command
                .iter()
                .chain(&container.args)
                .cloned()
                .collect();
            if argv.is_empty() {
                continue;
            }
            if argv[0] == "bowline" {
                argv[0] = options.binary.display().to_string();
            }
            let mut env: Vec<(String, String)> = vec![
                ("POD_NAME".into(), pod.metadata.name.clone()),
                ("POD_NAMESPACE".into(), pod.metadata.namespace().to_owned()),
            ];
            env.extend(
                container
                    .env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone())),
            );
            let program = PathBuf::from(&argv[0]);
            let pid = spawn(
                &pod_ns,
                &program,
                &argv[1..],
                &env,
                &dir.join(format!(
                    "logs/pod-{}-{}-{}.log",
                    pod.metadata.namespace(),
                    pod.metadata.name,
                    container.name
                )),
            )?;
            state
                .processes
                .push((format!("pod {key} {}", container.name), pid, pod_ns.clone()));
            state.save(&dir)?;
        }
    }

    progress("waiting for enrolled pods to be captured");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut enrolled_uids = Vec::new();
    for (pod, _, _) in &plan.pods {
        let ns_labels = plan.all.iter().find_map(|r| match r {
            Resource::Namespace(n) if n.metadata.name == pod.metadata.namespace() => {
                Some(&n.metadata.labels)
            }
            _ => None,
        });
        if !control_plane::translate::enrolled(pod, ns_labels) {
            continue;
        }
        let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        let Some((pod_ns, _, _)) = state.pods.get(&key) else {
            continue;
        };
        let ns = Namespace::existing(pod_ns);
        while !netns::capture::is_installed(&ns) {
            if Instant::now() > deadline {
                return invalid(format!(
                    "pod {key} was not captured within 20 s; see the node agent's log in {}",
                    dir.join("logs").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        enrolled_uids.push((key, pod_uid(pod.metadata.namespace(), &pod.metadata.name)));
    }
    // Captured pods are HBONE only once their agent reported them: wait until every
    // ztunnel has them so, or the first calls would still go in plaintext.
    loop {
        let held = advertised(&state).await;
        let missing = enrolled_uids.iter().find_map(|(key, uid)| {
            state
                .nodes
                .keys()
                .find(|node| held.get(*node).and_then(|h| h.get(uid)) != Some(&true))
                .map(|node| (key, node))
        });
        let Some((key, node)) = missing else {
            break;
        };
        if Instant::now() > deadline {
            return invalid(format!(
                "pod {key} is captured but node {node}'s ztunnel was not told within 20 s that it is in the mesh (HBONE): the node agent reports its captures to the control plane; see the logs in {}",
                dir.join("logs").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What `status` checks, every component: certificates of the pods just handed over
    // arrive after their capture.
    progress("waiting for every component to be ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let not_ready = health::check(&state, &dir)
            .await
            .into_iter()
            .find(|h| h.ready.is_err());
        let Some(component) = not_ready else {
            break;
        };
        if Instant::now() > deadline {
            return invalid(format!(
                "{} is not ready after 20 s: {}; see {}",
                component.component,
                component.ready.err().unwrap_or_default(),
                component.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in &plan.rest {
        if let Resource::Gateway(g) = r {
            progress(&format!(
                "Gateway {}/{}: accepted; no waypoint implementation yet, so nothing is redirected to it",
                g.metadata.namespace(),
                g.metadata.name
            ));
        }
    }
    Ok(state)
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
        let Ok((200, body)) = crate::cli::http_in(
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

/// Writes a secret: a new file created with mode 0600 (never readable by others, not even
/// for a moment), replacing any earlier one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    Ok(identity::private_file::write(path, bytes)?)
}

/// Starts a mesh component (`bowline ARGS…`) inside namespace `ns` under
/// `bowline supervise`, so it is restarted if it dies; returns the supervisor's PID.
fn spawn_component(ns: &str, binary: &Path, args: &[String], log: &Path) -> Result<u32, LabError> {
    let mut argv = vec![
        "--log".to_owned(),
        "info".to_owned(),
        "supervise".to_owned(),
        "--".to_owned(),
        binary.display().to_string(),
    ];
    argv.extend(args.iter().cloned());
    spawn(ns, binary, &argv, &[], log)
}

/// Starts `program args` inside namespace `ns` with its output in `log`; returns its PID.
fn spawn(
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<u32, LabError> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Invalid(format!("cannot start {}: {e}", program.display())))?;
    Ok(child.id())
}

async fn wait_http(ns: &Namespace, url: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match crate::cli::http_in(Some(ns), "GET", url, None).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("{status} {}", body.trim()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Whether `pid` is still the process this lab started: alive, and inside the lab
/// namespace it was started in (so a recycled PID is never signalled).
fn ours(pid: u32, ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let alive =
        !std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
    alive
        && inode(&format!("/proc/{pid}/ns/net")).is_some()
        && inode(&format!("/proc/{pid}/ns/net")) == inode(&format!("/run/netns/{ns}"))
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
        if Path::new("/run/netns").join(ns).exists() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
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

/// `bowline exec <ns>/<pod> -- CMD…` or `node/<name>`: runs CMD inside that namespace;
/// returns its exit code.
pub fn exec(name: &str, target: &str, command: &[String]) -> Result<i32, LabError> {
    let state = LabState::load(name)?;
    let Some((program, args)) = command.split_first() else {
        return invalid("give a command after --");
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
