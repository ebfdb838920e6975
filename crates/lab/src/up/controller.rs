//! The lab's controllers, live: `bowline up` starts this (supervised, in the host's
//! namespace, as `lab-controller`) and it plays Kubernetes' workload controllers, the
//! waypoint controller and the kubelet. Every half second it reads what the control plane
//! holds and:
//!
//! - the Service VIPs' rules follow their endpoints ([`super::kube_proxy`]);
//! - a lab pod whose Pod object is gone is stopped (processes, namespace), as the kubelet
//!   stops a deleted pod;
//! - every `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet` and `Job` gets the pods
//!   [`super::workloads::reconcile`] says it wants and loses the ones it no longer does —
//!   live scaling and rollouts — and pods whose controller is gone are removed with it;
//! - every ingress gateway pod has its Gateway's TLS Secrets as files ([`super::secrets`]),
//!   and the host ports published to ingress gateways are forwarded ([`super::publish`]);
//! - a waypoint Gateway without a pod gets the pod and Service it deploys
//!   ([`control_plane::waypoints::deployment`]), and a waypoint pod whose Gateway is gone
//!   is removed with its Service.
//!
//! A pod is started as `up` starts one: placed on its `nodeName` or the node with the
//! fewest pods, a namespace with the next free address of that node's CIDR, its DNS
//! files, the Pod (with that address) applied to the control plane, then its containers.
//! Everything is recorded in the lab's state as it is made, so `bowline down` removes it.
//!
//! Owns: reconciling what the control plane holds with what runs. Must not: decide
//! anything about the mesh — what a Gateway deploys is the control plane's rule, which
//! pods a workload wants is [`super::workloads`]'.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::resources::{self as k8s, MANAGED_LABEL};
use config::{Kind, Resource};
use netns::Namespace;

use super::build::{attach, hosts_file, start_containers, write_dns_files};
use super::plan::ipnet_lite::Cidr;
use super::{CONTROL_PLANE_API, LabError, LabState, pod_prefix, state_root};
use super::{kube_proxy, workloads};

/// How often the controller looks.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs the controller of lab `name` until `stop` completes; `binary` is the `bowline`
/// the waypoints run.
pub async fn run(name: &str, binary: PathBuf, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut memory = Memory::default();
    // The host ports published to ingress gateways, served for the lab's lifetime.
    let _forwarders: Vec<AbortOnDrop> = LabState::load(name)
        .map(|state| state.published)
        .unwrap_or_default()
        .into_iter()
        .map(|p| AbortOnDrop(tokio::spawn(super::publish::serve(name.to_owned(), p))))
        .collect();
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
        if let Err(error) = reconcile(name, &binary, &mut memory).await {
            tracing::warn!(%error, "lab controller: will try again");
        }
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the controller keeps between passes.
#[derive(Debug, Default)]
struct Memory {
    /// The Service rules last installed (none yet: the first pass installs them).
    installed: Option<Vec<String>>,
    /// Pod namespaces seen captured: capture stays until the pod goes, so each is
    /// checked (an `iptables` run) only until it is.
    captured: std::collections::BTreeSet<String>,
}

/// One pass: the Service rules (when they changed since the last pass), then stop pods
/// whose object is gone, then the workload controllers, then the waypoints.
async fn reconcile(name: &str, binary: &Path, memory: &mut Memory) -> Result<(), LabError> {
    let mut state = LabState::load(name)?;
    let Some(objects) = super::status::control_plane_objects(&state).await else {
        return Ok(());
    };
    if let Err(error) = super::secrets::sync(&state_root().join(&state.name), &objects) {
        tracing::warn!(%error, "lab controller: ingress gateways' secret files not written");
    }
    let rules = kube_proxy::rules(&objects);
    if memory.installed.as_ref() != Some(&rules) {
        kube_proxy::install(&Namespace::existing(&state.router), &rules)?;
        tracing::info!(rules = rules.len(), "lab controller: Service rules updated");
        memory.installed = Some(rules);
    }
    let held: Vec<String> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) => Some(format!("{}/{}", p.metadata.namespace(), p.metadata.name)),
            _ => None,
        })
        .collect();
    let gone: Vec<String> = state
        .pods
        .keys()
        .filter(|key| !held.contains(key))
        .cloned()
        .collect();
    for key in gone {
        tracing::info!(pod = %key, "controller: its Pod was deleted; stopping it");
        stop_pod(&mut state, &key).await?;
    }
    memory
        .captured
        .retain(|ns| state.pods.values().any(|(pod_ns, _, _)| pod_ns == ns));
    workloads(&mut state, binary, &objects, &mut memory.captured).await?;
    waypoints(&mut state, binary, &objects).await
}

/// Every workload controller's pods made or removed as it wants them; pods of a
/// controller that is gone removed.
async fn workloads(
    state: &mut LabState,
    binary: &Path,
    objects: &[Resource],
    captured: &mut std::collections::BTreeSet<String>,
) -> Result<(), LabError> {
    let nodes: Vec<String> = state.nodes.keys().cloned().collect();
    let pods: Vec<&k8s::Pod> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) => Some(p),
            _ => None,
        })
        .collect();
    let controllers: Vec<(Kind, &k8s::Workload)> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Workload(kind, w) => Some((*kind, &**w)),
            _ => None,
        })
        .collect();
    let mut delete = Vec::new();
    for pod in &pods {
        let ns = pod.metadata.namespace();
        let orphan = workloads::owner(pod).is_some_and(|(kind, name)| {
            !controllers
                .iter()
                .any(|(k, w)| *k == kind && w.metadata.name == name && w.metadata.namespace() == ns)
        });
        if orphan {
            delete.push((*pod).clone());
        }
    }
    for (kind, workload) in &controllers {
        let ns = workload.metadata.namespace();
        let owned: Vec<workloads::Owned<'_>> = pods
            .iter()
            .filter(|p| {
                p.metadata.namespace() == ns
                    && workloads::owner(p) == Some((*kind, workload.metadata.name.clone()))
            })
            .map(|pod| workloads::Owned {
                pod,
                ready: ready(state, pod, objects, captured),
            })
            .collect();
        let changes = workloads::reconcile(*kind, workload, &nodes, &owned);
        for pod in changes.create {
            tracing::info!(pod = %pod.metadata.name, %ns, controller = %workload.metadata.name, "controller: making a pod");
            start_pod(state, binary, pod, objects, Vec::new()).await?;
        }
        delete.extend(
            owned
                .iter()
                .filter(|o| changes.delete.contains(&o.pod.metadata.name))
                .map(|o| o.pod.clone()),
        );
    }
    for pod in delete {
        let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        tracing::info!(pod = %key, "controller: removing a pod");
        stop_pod(state, &key).await?;
        api(state, "delete", &[Resource::Pod(pod)]).await?;
    }
    Ok(())
}

/// Whether `pod` runs: in the lab, its processes alive, and captured if it is enrolled.
fn ready(
    state: &LabState,
    pod: &k8s::Pod,
    objects: &[Resource],
    captured: &mut std::collections::BTreeSet<String>,
) -> bool {
    let key = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
    let Some((pod_ns, _, _)) = state.pods.get(&key) else {
        return false;
    };
    let prefix = format!("pod {key} ");
    let alive = state
        .processes
        .iter()
        .filter(|(what, _, _)| what.starts_with(&prefix))
        .all(|(_, pid, ns)| super::ours(*pid, ns));
    let ns_labels = objects.iter().find_map(|r| match r {
        Resource::Namespace(n) if n.metadata.name == pod.metadata.namespace() => {
            Some(&n.metadata.labels)
        }
        _ => None,
    });
    let enrolled = control_plane::translate::enrolled(pod, ns_labels);
    if !alive {
        return false;
    }
    if !enrolled || captured.contains(pod_ns) {
        return true;
    }
    let now = netns::capture::is_installed(&Namespace::existing(pod_ns));
    if now {
        captured.insert(pod_ns.clone());
    }
    now
}

/// Waypoint Gateways without a pod get one; waypoint pods whose Gateway is gone go.
async fn waypoints(
    state: &mut LabState,
    binary: &Path,
    objects: &[Resource],
) -> Result<(), LabError> {
    let gateways: Vec<&k8s::Gateway> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Gateway(g) => Some(g),
            _ => None,
        })
        .collect();
    let waypoint_pods: Vec<&k8s::Pod> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) if control_plane::waypoints::gateway_of(p).is_some() => Some(p),
            _ => None,
        })
        .collect();
    for gateway in &gateways {
        let ns = gateway.metadata.namespace();
        let deployed = waypoint_pods.iter().any(|p| {
            p.metadata.namespace() == ns
                && control_plane::waypoints::gateway_of(p) == Some(gateway.metadata.name.as_str())
        });
        if !deployed {
            deploy(state, binary, gateway, objects).await?;
        }
    }
    for pod in waypoint_pods {
        let ns = pod.metadata.namespace();
        let gateway = control_plane::waypoints::gateway_of(pod).unwrap_or_default();
        let orphan = pod.metadata.labels.contains_key(MANAGED_LABEL)
            && !gateways
                .iter()
                .any(|g| g.metadata.namespace() == ns && g.metadata.name == gateway);
        if orphan {
            remove(state, pod, objects).await?;
        }
    }
    Ok(())
}

/// `wanted` (a pod's `nodeName`) or the node with the fewest pods, and a free address in
/// its CIDR.
fn place(
    state: &LabState,
    objects: &[Resource],
    wanted: Option<&str>,
) -> Result<(String, Ipv4Addr), LabError> {
    let count = |node: &str| state.pods.values().filter(|(_, _, n)| n == node).count();
    let node = match wanted {
        Some(node) if state.nodes.contains_key(node) => node.to_owned(),
        Some(node) => {
            return Err(LabError::Invalid(format!(
                "spec.nodeName {node:?} is not a node of this lab"
            )));
        }
        None => state
            .nodes
            .keys()
            .min_by_key(|n| count(n))
            .cloned()
            .ok_or_else(|| LabError::Invalid("the lab has no node".into()))?,
    };
    let cidr = objects
        .iter()
        .find_map(|r| match r {
            Resource::Node(n) if n.metadata.name == node => n.spec.pod_cidr.clone(),
            _ => None,
        })
        .and_then(|text| Cidr::parse(&text))
        .ok_or_else(|| LabError::Invalid(format!("node {node} has no pod CIDR")))?;
    let used: Vec<&str> = state.pods.values().map(|(_, ip, _)| ip.as_str()).collect();
    let mut cidr = cidr;
    while let Some(ip) = cidr.allocate() {
        if !used.contains(&ip.to_string().as_str()) {
            return Ok((node, ip));
        }
    }
    Err(LabError::Invalid(format!("node {node}: pod CIDR is full")))
}

/// A free VIP in 10.96.0.0/16.
fn free_vip(state: &LabState, objects: &[Resource]) -> Option<String> {
    let taken = |ip: &str| {
        state.services.values().any(|v| v == ip)
            || objects.iter().any(
                |r| matches!(r, Resource::Service(s) if s.spec.cluster_ip.as_deref() == Some(ip)),
            )
    };
    (101u32..65_000)
        .map(|n| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n).to_string())
        .find(|ip| !taken(ip))
}

/// Deploys `gateway`'s pod and Service.
async fn deploy(
    state: &mut LabState,
    binary: &Path,
    gateway: &k8s::Gateway,
    objects: &[Resource],
) -> Result<(), LabError> {
    let deployment = control_plane::waypoints::deployment(gateway);
    let ns = gateway.metadata.namespace().to_owned();
    let service_key = format!("{ns}/{}", deployment.service.metadata.name);
    let existing_service = objects.iter().any(|r| {
        matches!(r, Resource::Service(s)
            if s.metadata.namespace() == ns && s.metadata.name == deployment.service.metadata.name)
    });
    let mut extra = Vec::new();
    if !existing_service {
        let mut service = deployment.service;
        let vip = free_vip(state, objects)
            .ok_or_else(|| LabError::Invalid("no free service address".into()))?;
        service.spec.cluster_ip = Some(vip.clone());
        state.services.insert(service_key, vip);
        extra.push(Resource::Service(service));
    }
    tracing::info!(pod = %deployment.pod.metadata.name, %ns, "waypoint controller: deploying");
    start_pod(state, binary, deployment.pod, objects, extra).await
}

/// Runs `pod` in the lab (see the module's docs), applying it — and `extra` — to the
/// control plane once its namespace and address exist.
async fn start_pod(
    state: &mut LabState,
    binary: &Path,
    mut pod: k8s::Pod,
    objects: &[Resource],
    extra: Vec<Resource>,
) -> Result<(), LabError> {
    let dir = state_root().join(&state.name);
    let (node, ip) = place(state, objects, pod.spec.node_name.as_deref())?;
    pod.spec.node_name = Some(node.clone());
    pod.status.pod_ip = Some(ip.to_string());
    let ns = pod.metadata.namespace().to_owned();
    let key = format!("{ns}/{}", pod.metadata.name);
    let pod_ns = format!("{}{ns}-{}", pod_prefix(&state.name), pod.metadata.name);
    let router = Namespace::existing(&state.router);
    attach(state, &dir, &router, &pod_ns, ip)?;
    let services: Vec<(String, String)> = state
        .services
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    write_dns_files(&pod_ns, &ns, &hosts_file(&services), &services)?;
    state
        .pods
        .insert(key.clone(), (pod_ns.clone(), ip.to_string(), node));
    state.save(&dir)?;
    let mut documents = vec![Resource::Pod(pod.clone())];
    documents.extend(extra);
    api(state, "apply", &documents).await?;
    start_containers(state, &dir, binary, &pod, &pod_ns, objects)
}

/// Stops lab pod `key` (`ns/name`): its processes (SIGTERM), then its namespace.
async fn stop_pod(state: &mut LabState, key: &str) -> Result<(), LabError> {
    let dir = state_root().join(&state.name);
    let prefix = format!("pod {key} ");
    for (_, pid, ns) in state
        .processes
        .iter()
        .filter(|(what, _, _)| what.starts_with(&prefix))
    {
        if super::ours(*pid, ns) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    state
        .processes
        .retain(|(what, _, _)| !what.starts_with(&prefix));
    if let Some((pod_ns, _, _)) = state.pods.remove(key) {
        // Its processes get a moment to close their connections; whatever is left in
        // the namespace goes with it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for pid in super::pids_in(&pod_ns) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        super::delete_namespace(&pod_ns);
        state.namespaces.retain(|n| *n != pod_ns);
    }
    state.save(&dir)
}

/// Removes a waypoint pod whose Gateway is gone, and its Service.
async fn remove(
    state: &mut LabState,
    pod: &k8s::Pod,
    objects: &[Resource],
) -> Result<(), LabError> {
    let ns = pod.metadata.namespace();
    let key = format!("{ns}/{}", pod.metadata.name);
    tracing::info!(pod = %key, "waypoint controller: its Gateway is gone; removing");
    stop_pod(state, &key).await?;
    let gateway = control_plane::waypoints::gateway_of(pod).unwrap_or_default();
    let mut documents = vec![Resource::Pod(pod.clone())];
    let service = objects.iter().find_map(|r| match r {
        Resource::Service(s)
            if s.metadata.namespace() == ns
                && s.metadata.name == gateway
                && s.metadata.labels.contains_key(MANAGED_LABEL) =>
        {
            Some(s.clone())
        }
        _ => None,
    });
    if let Some(service) = service {
        state
            .services
            .remove(&format!("{ns}/{}", service.metadata.name));
        documents.push(Resource::Service(service));
        state.save(&state_root().join(&state.name))?;
    }
    api(state, "delete", &documents).await
}

/// `POST /api/<verb>` (`apply` or `delete`) of lab `name`'s control plane with
/// `documents`, as the operator.
pub async fn submit(name: &str, verb: &str, documents: &[Resource]) -> Result<(), LabError> {
    api(&LabState::load(name)?, verb, documents).await
}

/// The objects lab `name`'s control plane holds now.
pub async fn objects(name: &str) -> Result<Vec<Resource>, LabError> {
    let state = LabState::load(name)?;
    super::status::control_plane_objects(&state)
        .await
        .ok_or_else(|| {
            LabError::Invalid(format!("the control plane of lab {name} does not answer"))
        })
}

/// `POST /api/<verb>` of the lab's control plane with `documents`.
async fn api(state: &LabState, verb: &str, documents: &[Resource]) -> Result<(), LabError> {
    let token = crate::client::read_token(&super::operator_token_file(&state.name))
        .map_err(LabError::Invalid)?;
    let mut body = String::new();
    for r in documents {
        body.push_str("---\n");
        body.push_str(&serde_json::to_string(&r.to_json()).map_err(std::io::Error::other)?);
        body.push('\n');
    }
    let url = format!("http://{CONTROL_PLANE_API}/api/{verb}");
    let (code, answer) = crate::client::request(
        Some(&Namespace::existing(&state.router)),
        "POST",
        &url,
        Some(body),
        Some(&token),
    )
    .await
    .map_err(LabError::Invalid)?;
    if code != 200 {
        return Err(LabError::Invalid(format!("{url}: {code} {answer}")));
    }
    Ok(())
}
