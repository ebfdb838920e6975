//! The lab's waypoint controller, live: `bowline up` starts it (supervised, in the router
//! namespace, as `lab-controller`) and it plays Kubernetes' deployment controller and
//! kubelet for waypoints. Every half second it reads what the control plane holds: a
//! waypoint Gateway without a pod gets the pod and Service it deploys
//! ([`control_plane::waypoints::deployment`]) — a namespace on the node with the fewest
//! pods, an address from that node's CIDR, a VIP, the pod's process started, Pod and
//! Service applied to the control plane; a waypoint pod whose Gateway is gone is removed
//! (process, namespace, Pod and Service). Everything is recorded in the lab's state as it
//! is made, so `bowline down` removes it too.
//!
//! Owns: reconciling waypoint Gateways with waypoint pods. Must not: decide anything about
//! the mesh — what a Gateway deploys is the control plane's rule.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Resource;
use config::resources::{self as k8s, MANAGED_LABEL};
use netns::Namespace;

use super::build::{attach, hosts_file, spawn_supervised, waypoint_env, write_dns_files};
use super::plan::ipnet_lite::Cidr;
use super::{CONTROL_PLANE_API, LabError, LabState, pod_prefix, state_root};

/// How often the controller looks.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs the controller of lab `name` until `stop` completes; `binary` is the `bowline`
/// the waypoints run.
pub async fn run(name: &str, binary: PathBuf, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
        if let Err(error) = reconcile(name, &binary).await {
            tracing::warn!(%error, "waypoint controller: will try again");
        }
    }
}

/// One pass: deploy what is missing, remove what is orphaned.
async fn reconcile(name: &str, binary: &Path) -> Result<(), LabError> {
    let mut state = LabState::load(name)?;
    let Some(objects) = super::status::control_plane_objects(&state).await else {
        return Ok(());
    };
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
            deploy(&mut state, binary, gateway, &objects).await?;
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
            remove(&mut state, pod, &objects).await?;
        }
    }
    Ok(())
}

/// The node with the fewest pods, its CIDR and a free address in it.
fn place(state: &LabState, objects: &[Resource]) -> Result<(String, Ipv4Addr), LabError> {
    let count = |node: &str| state.pods.values().filter(|(_, _, n)| n == node).count();
    let node = state
        .nodes
        .keys()
        .min_by_key(|n| count(n))
        .cloned()
        .ok_or_else(|| LabError::Invalid("the lab has no node".into()))?;
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
    let dir = state_root().join(&state.name);
    let deployment = control_plane::waypoints::deployment(gateway);
    let (node, ip) = place(state, objects)?;
    let mut pod = deployment.pod;
    pod.spec.node_name = Some(node.clone());
    pod.status.pod_ip = Some(ip.to_string());
    let ns = pod.metadata.namespace().to_owned();
    let key = format!("{ns}/{}", pod.metadata.name);
    let service_key = format!("{ns}/{}", deployment.service.metadata.name);
    let existing_service = objects.iter().any(|r| {
        matches!(r, Resource::Service(s)
            if s.metadata.namespace() == ns && s.metadata.name == deployment.service.metadata.name)
    });
    let mut documents = vec![Resource::Pod(pod.clone())];
    if !existing_service {
        let mut service = deployment.service;
        let vip = free_vip(state, objects)
            .ok_or_else(|| LabError::Invalid("no free service address".into()))?;
        service.spec.cluster_ip = Some(vip.clone());
        state.services.insert(service_key, vip);
        documents.push(Resource::Service(service));
    }
    tracing::info!(pod = %key, %node, %ip, "waypoint controller: deploying");
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
    api(state, "apply", &documents).await?;
    for container in &pod.spec.containers {
        let mut argv: Vec<String> = container.command.clone();
        if argv.first().is_some_and(|a| a == "bowline") {
            argv[0] = binary.display().to_string();
        }
        if argv.is_empty() {
            continue;
        }
        let mut env = vec![
            ("POD_NAME".to_owned(), pod.metadata.name.clone()),
            ("POD_NAMESPACE".to_owned(), ns.clone()),
        ];
        env.extend(waypoint_env(&dir, &pod));
        let log = dir.join("logs").join(format!(
            "pod-{ns}-{}-{}.log",
            pod.metadata.name, container.name
        ));
        let pid = spawn_supervised(&pod_ns, binary, &argv, &env, &log)?;
        state
            .processes
            .push((format!("pod {key} {}", container.name), pid, pod_ns.clone()));
        state.save(&dir)?;
    }
    Ok(())
}

/// Removes a waypoint pod whose Gateway is gone, and its Service.
async fn remove(
    state: &mut LabState,
    pod: &k8s::Pod,
    objects: &[Resource],
) -> Result<(), LabError> {
    let dir = state_root().join(&state.name);
    let ns = pod.metadata.namespace();
    let key = format!("{ns}/{}", pod.metadata.name);
    tracing::info!(pod = %key, "waypoint controller: its Gateway is gone; removing");
    let prefix = format!("pod {key} ");
    for (_, pid, _) in state
        .processes
        .iter()
        .filter(|(what, _, _)| what.starts_with(&prefix))
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    state
        .processes
        .retain(|(what, _, _)| !what.starts_with(&prefix));
    if let Some((pod_ns, _, _)) = state.pods.remove(&key) {
        // The process drains within a second (it was started with the default 5 s; its
        // tunnels are gone with its Gateway anyway).
        tokio::time::sleep(Duration::from_millis(200)).await;
        super::delete_namespace(&pod_ns);
        state.namespaces.retain(|n| *n != pod_ns);
    }
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
    }
    state.save(&dir)?;
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
