//! `bowline up`, step by step: check the name and the plan, build the network (router,
//! nodes, pods with their DNS files), start the control plane, then per node its token,
//! node agent and ztunnel, then the pods' containers; and wait until enrolled pods are
//! captured and in the mesh and every component is ready.
//!
//! Owns: the order of the steps and recording each thing in the state file as soon as it
//! exists (so `down` finds it after a crash). Must not: tear anything down — on failure
//! the caller runs `down`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use config::Resource;
use config::resources as k8s;
use netns::{Namespace, links};

use super::plan::{Plan, plan};
use super::{
    CONTROL_PLANE_API, CONTROL_PLANE_IP, LabError, LabState, POD_NAMESERVER, UpOptions, advertised,
    health, invalid, ns_name, pod_prefix, pod_uid, state_root,
};

/// How long `up` waits for each component, capture and hand-over.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// `bowline up`: builds the lab and returns when everything is ready.
pub async fn up(options: &UpOptions, progress: &dyn Fn(&str)) -> Result<LabState, LabError> {
    let lab = &options.name;
    check_name(lab)?;
    let dir = state_root().join(lab);
    if dir.join("lab.json").exists() {
        return invalid(format!(
            "lab {lab:?} already exists; `bowline down --name {lab}` first, or pick another --name"
        ));
    }
    let plan = plan(&options.files)?;
    for note in &plan.notes {
        progress(note);
    }
    let published = options
        .publish
        .iter()
        .map(|spec| super::publish::parse(spec, &plan.all))
        .collect::<Result<Vec<_>, _>>()?;
    let mut build = Build::start(options, dir)?;
    build.state.published = published;
    build.save()?;

    progress("network: router, nodes, pods");
    let router_ns = build.network(&plan)?;
    // The lab's kube-proxy: Service VIPs reachable from pods outside the mesh too.
    let mut objects: Vec<Resource> = plan
        .pods
        .iter()
        .map(|(p, _, _)| Resource::Pod(p.clone()))
        .collect();
    objects.extend(plan.rest.iter().cloned());
    super::kube_proxy::install(&router_ns, &super::kube_proxy::rules(&objects))?;

    progress("control plane");
    build.control_plane(&plan, &router_ns).await?;

    for (node, (node_ns, node_ip)) in build.state.nodes.clone() {
        progress(&format!("node {node}: node agent and ztunnel"));
        build.node(&node, &node_ns, &node_ip)?;
    }
    build.wait_for_ztunnels().await?;

    progress("pods");
    build.pods(&plan)?;

    progress("waiting for enrolled pods to be captured");
    build.wait_for_capture(&plan).await?;
    // What `status` checks, every component: certificates of the pods just handed over
    // arrive after their capture.
    progress("waiting for every component to be ready");
    build.wait_for_components().await?;
    if plan
        .pods
        .iter()
        .any(|(p, _, _)| control_plane::waypoints::gateway_of(p).is_some())
    {
        progress("waiting for waypoints to be ready");
        build.wait_for_waypoints(&plan).await?;
    }
    // Last: from here on only the controller changes the state.
    progress("waypoint controller");
    build.controller()?;
    Ok(build.state)
}

/// A lab name is also part of namespace and interface names: short and plain.
fn check_name(lab: &str) -> Result<(), LabError> {
    if lab.is_empty()
        || lab.len() > 12
        || !lab
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return invalid("--name: 1-12 lower-case letters or digits");
    }
    Ok(())
}

/// A lab being built: its options, state directory and what exists so far.
struct Build<'a> {
    options: &'a UpOptions,
    dir: PathBuf,
    state: LabState,
}

impl<'a> Build<'a> {
    /// Creates the state directory (secrets in a 0700 `nodes/`) and the empty state file.
    fn start(options: &'a UpOptions, dir: PathBuf) -> Result<Self, LabError> {
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("config"))?;
        // Node tokens, configuration snapshots and certificate caches: the lab's secrets.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir.join("nodes"))?;
        let build = Self {
            options,
            dir,
            state: LabState {
                name: options.name.clone(),
                ..Default::default()
            },
        };
        build.save()?;
        Ok(build)
    }

    fn lab(&self) -> &str {
        &self.options.name
    }

    fn save(&self) -> Result<(), LabError> {
        self.state.save(&self.dir)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(name)
    }

    /// The router namespace, then a namespace per node and per pod joined to it.
    fn network(&mut self, plan: &Plan) -> Result<Namespace, LabError> {
        let router = ns_name(self.lab(), "net", "");
        let router_ns = Namespace::create(&router)?.keep();
        self.state.namespaces.push(router.clone());
        self.state.router = router;
        self.save()?;
        links::sysctl(&router_ns, "net/ipv4/ip_forward", "1")?;
        links::add_address(
            &router_ns,
            "lo",
            &format!("{}/32", crate::topology::GATEWAY),
        )?;
        links::add_address(&router_ns, "lo", &format!("{CONTROL_PLANE_IP}/32"))?;
        for (i, (node, _)) in plan.nodes.iter().enumerate() {
            let ip = Ipv4Addr::new(10, 254, 0, u8::try_from(i + 2).unwrap_or(254));
            let name = ns_name(self.lab(), "node-", node);
            self.attach(&router_ns, &name, ip)?;
            self.state
                .nodes
                .insert(node.clone(), (name, ip.to_string()));
        }
        // Names every pod can resolve: the lab's hosts file and, for enrolled pods, the
        // DNS proxy.
        let hosts = hosts_file(&plan.services);
        // The nodes resolve the lab's service names too (ztunnel resolves ServiceEntry
        // endpoints given by host name from its node's namespace).
        for (node_ns, _) in self.state.nodes.values() {
            let etc = Path::new("/etc/netns").join(node_ns);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(etc.join("hosts"), &hosts)?;
        }
        for (pod, node, ip) in &plan.pods {
            let name = format!(
                "{}{}-{}",
                pod_prefix(self.lab()),
                pod.metadata.namespace(),
                pod.metadata.name
            );
            self.attach(&router_ns, &name, *ip)?;
            write_dns_files(&name, pod.metadata.namespace(), &hosts, &plan.services)?;
            self.state.pods.insert(
                format!("{}/{}", pod.metadata.namespace(), pod.metadata.name),
                (name, ip.to_string(), node.clone()),
            );
            self.save()?;
        }
        self.state.services = plan.services.iter().cloned().collect();
        self.save()?;
        Ok(router_ns)
    }

    /// Creates namespace `name` with address `ip`, joined to the router by a veth pair.
    fn attach(&mut self, router_ns: &Namespace, name: &str, ip: Ipv4Addr) -> Result<(), LabError> {
        attach(&mut self.state, &self.dir, router_ns, name, ip)
    }

    fn control_plane_state(&self) -> PathBuf {
        self.dir.join("control-plane")
    }

    /// Writes the control plane's configuration, starts it in the router namespace and
    /// waits for its `/ready`.
    async fn control_plane(&mut self, plan: &Plan, router_ns: &Namespace) -> Result<(), LabError> {
        std::fs::write(
            self.dir.join("config/lab.yaml"),
            control_plane_config(plan)?,
        )?;
        let router = self.state.router.clone();
        let args = [
            "--log",
            "info",
            "control-plane",
            "--state-dir",
            &self.control_plane_state().display().to_string(),
            "-f",
            &self.dir.join("config").display().to_string(),
            "--xds-plaintext-addr",
            &format!("{CONTROL_PLANE_IP}:15010"),
            "--xds-addr",
            &format!("{CONTROL_PLANE_IP}:15012"),
            "--http-addr",
            &format!("{CONTROL_PLANE_IP}:15014"),
            "--api-addr",
            CONTROL_PLANE_API,
            "--tls-name",
            CONTROL_PLANE_IP,
        ]
        .map(String::from);
        self.component("control-plane", &router, &args)?;
        let ready = format!("http://{CONTROL_PLANE_IP}:15014/ready");
        wait_http(router_ns, &ready, READY_WITHIN)
            .await
            .map_err(|e| {
                LabError::Invalid(format!(
                    "the control plane did not start: {e}; see {}",
                    self.log("control-plane.log").display()
                ))
            })
    }

    /// Node `node`: its token (from the control plane's key), then its node agent and its
    /// ztunnel, both supervised, in its namespace.
    fn node(&mut self, node: &str, node_ns: &str, node_ip: &str) -> Result<(), LabError> {
        let nodes = self.dir.join("nodes");
        let token_file = nodes.join(format!("{node}.token"));
        let token = Command::new(&self.options.binary)
            .args(["control-plane", "token", "--node", node, "--state-dir"])
            .arg(self.control_plane_state())
            .arg("--output")
            .arg(&token_file)
            .output()?;
        if !token.status.success() {
            return invalid(format!(
                "cannot make a token for node {node}: {}",
                String::from_utf8_lossy(&token.stderr)
            ));
        }
        let root = self.control_plane_state().join("ca/root-cert.pem");
        let [root, token_file, socket] = [root, token_file, nodes.join(format!("{node}.sock"))]
            .map(|path| path.display().to_string());
        let cni = [
            "--log",
            "info",
            "cni",
            "--node",
            node,
            "--xds-address",
            &format!("http://{CONTROL_PLANE_IP}:15010"),
            "--status-address",
            &format!("https://{CONTROL_PLANE_IP}:15012"),
            "--ca-root",
            &root,
            "--token-file",
            &token_file,
            "--socket",
            &socket,
            "--netns-prefix",
            &pod_prefix(self.lab()),
        ];
        self.component(&format!("cni {node}"), node_ns, &cni.map(String::from))?;
        let snapshot = nodes.join(format!("{node}.snapshot")).display().to_string();
        let certs = nodes.join(format!("{node}-certs")).display().to_string();
        let ztunnel = [
            "--log",
            "info",
            "ztunnel",
            "--xds-address",
            &format!("http://{CONTROL_PLANE_IP}:15010"),
            "--ca-address",
            &format!("https://{CONTROL_PLANE_IP}:15012"),
            "--ca-root",
            &root,
            "--token-file",
            &token_file,
            "--node-name",
            node,
            "--instance-ip",
            node_ip,
            "--node-agent-socket",
            &socket,
            "--snapshot-file",
            &snapshot,
            "--cert-cache-dir",
            &certs,
            "--drain-seconds",
            "1",
        ];
        self.component(
            &format!("ztunnel {node}"),
            node_ns,
            &ztunnel.map(String::from),
        )
    }

    /// Starts `bowline ARGS…` supervised in namespace `ns` as `what` (`control-plane`,
    /// `cni node-1`…), with its log where `status` looks for it, and records it.
    fn component(&mut self, what: &str, ns: &str, args: &[String]) -> Result<(), LabError> {
        let log = health::component_log(what)
            .ok_or_else(|| LabError::Invalid(format!("{what}: not a mesh component")))?;
        let log = self.log(&log);
        let pid = spawn_component(ns, &self.options.binary, args, &log)?;
        self.state
            .processes
            .push((what.to_owned(), pid, ns.to_owned()));
        self.save()
    }

    /// The lab controller (waypoints for Gateways applied later), supervised, in the
    /// host's namespace: the namespaces it makes must be visible to the host.
    fn controller(&mut self) -> Result<(), LabError> {
        let what = super::CONTROLLER;
        let log = self.log(&format!("{what}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let binary = self.options.binary.display().to_string();
        let child = Command::new(&self.options.binary)
            .args(["--log", "info", "supervise", "--", &binary])
            .args(["--log", "info", what, "--name", self.lab()])
            .env("BOWLINE_STATE_DIR", state_root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| LabError::Invalid(format!("cannot start the lab controller: {e}")))?;
        self.state
            .processes
            .push((what.to_owned(), child.id(), String::new()));
        self.save()
    }

    /// Every node's ztunnel answers its readiness probe.
    async fn wait_for_ztunnels(&self) -> Result<(), LabError> {
        for (node, (node_ns, _)) in &self.state.nodes {
            let ns = Namespace::existing(node_ns);
            wait_http(&ns, "http://127.0.0.1:15021/healthz/ready", READY_WITHIN)
                .await
                .map_err(|e| {
                    LabError::Invalid(format!(
                        "ztunnel of node {node} is not ready: {e}; see {}",
                        self.log(&format!("ztunnel-{node}.log")).display()
                    ))
                })?;
        }
        Ok(())
    }

    /// Every pod's containers (or their stand-ins), each in its pod's namespace.
    fn pods(&mut self, plan: &Plan) -> Result<(), LabError> {
        for (pod, _, _) in &plan.pods {
            let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
            let Some((pod_ns, _, _)) = self.state.pods.get(&key).cloned() else {
                continue;
            };
            start_containers(
                &mut self.state,
                &self.dir,
                &self.options.binary,
                pod,
                &pod_ns,
                &plan.all,
            )?;
        }
        Ok(())
    }

    /// Every waypoint's pod answers its readiness probe.
    async fn wait_for_waypoints(&self, plan: &Plan) -> Result<(), LabError> {
        for (pod, _, _) in &plan.pods {
            if control_plane::waypoints::gateway_of(pod).is_none() {
                continue;
            }
            let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
            let Some((pod_ns, _, _)) = self.state.pods.get(&key) else {
                continue;
            };
            let ns = Namespace::existing(pod_ns);
            wait_http(&ns, "http://127.0.0.1:15021/healthz/ready", READY_WITHIN)
                .await
                .map_err(|e| {
                    LabError::Invalid(format!(
                        "waypoint pod {key} is not ready: {e}; see {}",
                        self.log(&format!(
                            "pod-{}-{}-waypoint.log",
                            pod.metadata.namespace(),
                            pod.metadata.name
                        ))
                        .display()
                    ))
                })?;
        }
        Ok(())
    }

    /// Every enrolled pod has its capture rules, and every ztunnel holds it as HBONE.
    async fn wait_for_capture(&self, plan: &Plan) -> Result<(), LabError> {
        let deadline = Instant::now() + READY_WITHIN;
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
            let Some((pod_ns, _, _)) = self.state.pods.get(&key) else {
                continue;
            };
            let ns = Namespace::existing(pod_ns);
            while !netns::capture::is_installed(&ns) {
                if Instant::now() > deadline {
                    return invalid(format!(
                        "pod {key} was not captured within 20 s; see the node agent's log in {}",
                        self.dir.join("logs").display()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            enrolled_uids.push((key, pod_uid(pod.metadata.namespace(), &pod.metadata.name)));
        }
        self.wait_for_hbone(&enrolled_uids, deadline).await
    }

    /// Captured pods are HBONE only once their agent reported them: waits until every
    /// ztunnel has them so, or the first calls would still go in plaintext.
    async fn wait_for_hbone(
        &self,
        enrolled_uids: &[(String, String)],
        deadline: Instant,
    ) -> Result<(), LabError> {
        loop {
            let held = advertised(&self.state).await;
            let missing = enrolled_uids.iter().find_map(|(key, uid)| {
                self.state
                    .nodes
                    .keys()
                    .find(|node| held.get(*node).and_then(|h| h.get(uid)) != Some(&true))
                    .map(|node| (key, node))
            });
            let Some((key, node)) = missing else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return invalid(format!(
                    "pod {key} is captured but node {node}'s ztunnel was not told within 20 s that it is in the mesh (HBONE): the node agent reports its captures to the control plane; see the logs in {}",
                    self.dir.join("logs").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every component passes the checks `status` shows.
    async fn wait_for_components(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let not_ready = health::check(&self.state, &self.dir)
                .await
                .into_iter()
                .find(|h| h.ready.is_err());
            let Some(component) = not_ready else {
                return Ok(());
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
    }
}

/// Starts the containers of `pod` in namespace `pod_ns` — each its command, or its
/// stand-in ([`super::containers`]; `objects` hold the Services that say which ports speak
/// HTTP) — with `POD_NAME`/`POD_NAMESPACE` and its `env` set, recording each process in
/// `state` (saved in `dir`). Waypoints and the pods of Deployments, ReplicaSets,
/// StatefulSets and DaemonSets run under `bowline supervise`, started again when they
/// exit; a Job's pods and bare Pods run once.
pub(super) fn start_containers(
    state: &mut LabState,
    dir: &Path,
    binary: &Path,
    pod: &k8s::Pod,
    pod_ns: &str,
    objects: &[Resource],
) -> Result<(), LabError> {
    let ns = pod.metadata.namespace();
    let key = format!("{ns}/{}", pod.metadata.name);
    let waypoint = control_plane::waypoints::gateway_of(pod).is_some();
    let restarted =
        waypoint || super::workloads::owner(pod).is_some_and(|(kind, _)| kind != config::Kind::Job);
    for container in &pod.spec.containers {
        let launch = match super::containers::launch(pod, container, objects, binary) {
            Ok(launch) => launch,
            Err(why) => {
                tracing::info!(pod = %key, container = %container.name, "{why}");
                continue;
            }
        };
        let mut env: Vec<(String, String)> = vec![
            ("POD_NAME".into(), pod.metadata.name.clone()),
            ("POD_NAMESPACE".into(), ns.to_owned()),
        ];
        if waypoint {
            env.extend(waypoint_env(dir, pod));
        }
        env.extend(launch.env);
        let log = dir.join("logs").join(format!(
            "pod-{ns}-{}-{}.log",
            pod.metadata.name, container.name
        ));
        let pid = if restarted {
            spawn_supervised(pod_ns, binary, &launch.argv, &env, &log)?
        } else {
            let (program, args) = launch
                .argv
                .split_first()
                .ok_or_else(|| LabError::Invalid(format!("pod {key}: empty command")))?;
            spawn(pod_ns, Path::new(program), args, &env, &log)?
        };
        state.processes.push((
            format!("pod {key} {}", container.name),
            pid,
            pod_ns.to_owned(),
        ));
        state.save(dir)?;
    }
    Ok(())
}

/// What a waypoint's pod is given to reach the control plane: its addresses, the mesh
/// root and its node's token (the CA grants it the identities of that node's pods, the
/// waypoint's among them).
pub(super) fn waypoint_env(dir: &Path, pod: &k8s::Pod) -> Vec<(String, String)> {
    let node = pod.spec.node_name.clone().unwrap_or_default();
    let token = dir.join("nodes").join(format!("{node}.token"));
    let root = dir.join("control-plane/ca/root-cert.pem");
    vec![
        ("BOWLINE_LOG".into(), "info".into()),
        (
            "BOWLINE_XDS_ADDRESS".into(),
            format!("http://{CONTROL_PLANE_IP}:15010"),
        ),
        (
            "BOWLINE_CA_ADDRESS".into(),
            format!("https://{CONTROL_PLANE_IP}:15012"),
        ),
        ("BOWLINE_CA_ROOT".into(), root.display().to_string()),
        ("BOWLINE_TOKEN_FILE".into(), token.display().to_string()),
        (
            "BOWLINE_SNAPSHOT_DIR".into(),
            dir.join("nodes")
                .join(format!(
                    "waypoint-{}-{}",
                    pod.metadata.namespace(),
                    pod.metadata.name
                ))
                .display()
                .to_string(),
        ),
        (
            "INSTANCE_IP".into(),
            pod.status.pod_ip.clone().unwrap_or_default(),
        ),
        // An ingress gateway's certificates (the lab controller keeps them there).
        (
            "BOWLINE_SECRETS_DIR".into(),
            super::secrets::dir_of(dir, pod.metadata.namespace(), &pod.metadata.name)
                .display()
                .to_string(),
        ),
    ]
}

/// Creates namespace `name` with address `ip`, joined to the router by a veth pair; the
/// namespace is in `state` (saved in `dir`) before anything is made in it.
pub(super) fn attach(
    state: &mut LabState,
    dir: &Path,
    router_ns: &Namespace,
    name: &str,
    ip: Ipv4Addr,
) -> Result<(), LabError> {
    let ns = Namespace::create(name)?.keep();
    state.namespaces.push(name.to_owned());
    let router_if = format!("bl{}{}", state.name, state.links);
    state.links += 1;
    state.save(dir)?;
    links::veth(&ns, "eth0", router_ns, &router_if)?;
    links::add_address(&ns, "eth0", &format!("{ip}/32"))?;
    links::add_route(&ns, crate::topology::GATEWAY, None, Some("eth0"))?;
    links::add_route(&ns, "default", Some(crate::topology::GATEWAY), Some("eth0"))?;
    links::add_route(router_ns, &format!("{ip}/32"), None, Some(&router_if))?;
    Ok(())
}

/// The lab's hosts file: every service's names.
pub(super) fn hosts_file(services: &[(String, String)]) -> String {
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for (key, ip) in services {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        hosts.push_str(&format!("{ip} {name}.{ns}.svc.cluster.local {name}.{ns}\n"));
    }
    hosts
}

/// `/etc/netns/<name>/{resolv.conf,hosts}` of a pod in namespace `pod_ns`: the lab's
/// `hosts`, plus the short names of the services of its own namespace.
pub(super) fn write_dns_files(
    name: &str,
    pod_ns: &str,
    hosts: &str,
    services: &[(String, String)],
) -> Result<(), LabError> {
    let etc = Path::new("/etc/netns").join(name);
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("resolv.conf"),
        format!(
            "nameserver {POD_NAMESERVER}\nsearch {pod_ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ),
    )?;
    let mut pod_hosts = hosts.to_owned();
    for (key, ip) in services {
        let (ns, svc) = key.split_once('/').unwrap_or(("default", key));
        if ns == pod_ns {
            pod_hosts.push_str(&format!("{ip} {svc}\n"));
        }
    }
    std::fs::write(etc.join("hosts"), pod_hosts)?;
    Ok(())
}

/// What the control plane is started with: the placed pods, everything else of the plan,
/// and the nodes with their pod CIDRs.
fn control_plane_config(plan: &Plan) -> Result<String, LabError> {
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
    Ok(config_text)
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

/// Starts `argv` inside namespace `ns` under `bowline supervise` (`binary`), restarted
/// when it exits as a Deployment's pod would be — how the lab runs waypoints; returns the
/// supervisor's PID.
pub(super) fn spawn_supervised(
    ns: &str,
    binary: &Path,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<u32, LabError> {
    let mut args: Vec<String> = ["--log", "info", "supervise", "--"]
        .map(String::from)
        .to_vec();
    args.extend(argv.iter().cloned());
    spawn(ns, binary, &args, env, log)
}

/// Starts `program args` inside namespace `ns` with its output in `log`; returns its PID.
pub(super) fn spawn(
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
        match crate::client::http_in(Some(ns), "GET", url, None).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => last = format!("{status} {}", body.trim()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}
