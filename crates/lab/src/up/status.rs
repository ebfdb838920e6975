//! `bowline status`: what runs where in a lab, as the control plane and the components
//! see it now (live `apply`s included), and how to reach its control plane's API.

use std::path::PathBuf;

use config::Resource;
use netns::Namespace;

use super::{
    CONTROL_PLANE_API, CONTROL_PLANE_IP, LabError, LabState, advertised, health, pod_uid,
    state_root,
};

/// `bowline status`: nodes, pods, services, component health.
pub async fn status(name: &str) -> Result<String, LabError> {
    let state = LabState::load(name)?;
    let mut out = format!("lab {name}\n\nNODES\n");
    for (node, (ns, ip)) in &state.nodes {
        // The same check `up` waits for.
        let ready = match health::ztunnel(ns).await {
            Ok(note) if note.is_empty() => "ready".to_owned(),
            Ok(note) => format!("ready {note}"),
            Err(why) => format!("NOT READY: {why}"),
        };
        out.push_str(&format!("  {node:<12} {ip:<14} ztunnel {ready}\n"));
    }
    // Enrolment and waypoints as the control plane sees them now (live `apply`s included).
    let resources = control_plane_objects(&state).await;
    let mut namespace_labels = std::collections::BTreeMap::new();
    let mut pods = std::collections::BTreeMap::new();
    let mut gateways = Vec::new();
    for r in resources.iter().flatten() {
        match r {
            Resource::Namespace(n) => {
                namespace_labels.insert(n.metadata.name.clone(), n.metadata.labels.clone());
            }
            Resource::Pod(p) => {
                pods.insert(
                    format!("{}/{}", p.metadata.namespace(), p.metadata.name),
                    p.clone(),
                );
            }
            Resource::Gateway(g) => {
                gateways.push(format!("{}/{}", g.metadata.namespace(), g.metadata.name));
            }
            _ => {}
        }
    }
    out.push_str("\nPODS\n");
    let held = advertised(&state).await;
    for (key, (ns, ip, node)) in &state.pods {
        let captured = netns::capture::is_installed(&Namespace::existing(ns));
        let enrolled = pods.get(key).map(|pod| {
            control_plane::translate::enrolled(pod, namespace_labels.get(pod.metadata.namespace()))
        });
        let (pod_ns, pod_name) = key.split_once('/').unwrap_or(("default", key));
        // Whether the pod's own node's ztunnel holds it as HBONE (the control plane says so
        // once the node agent reported the capture).
        let hbone = held
            .get(node)
            .map(|h| h.get(&pod_uid(pod_ns, pod_name)) == Some(&true));
        let capture = match (captured, enrolled, hbone) {
            (true, Some(true), Some(true)) => "captured (in mesh)",
            (true, Some(true), Some(false)) => "captured, not yet reported (plaintext)",
            (true, Some(true) | None, None) => "captured (ztunnel not answering)",
            (true, Some(false), _) => "captured, leaving the mesh",
            (true, None, Some(_)) => "captured",
            (false, Some(true), _) => "waiting for capture (plaintext)",
            (false, _, _) => "not captured",
        };
        let enrolled = match enrolled {
            Some(true) => "enrolled",
            Some(false) => "not enrolled",
            None => "?",
        };
        out.push_str(&format!(
            "  {key:<28} {ip:<14} {node:<12} {enrolled:<13} {capture}\n"
        ));
    }
    out.push_str("\nSERVICES\n");
    for (key, vip) in &state.services {
        out.push_str(&format!("  {key:<28} {vip}\n"));
    }
    if !gateways.is_empty() {
        out.push_str("\nWAYPOINTS\n");
        for gateway in &gateways {
            out.push_str(&format!(
                "  {gateway:<28} accepted; no waypoint implementation yet, nothing is redirected\n"
            ));
        }
    }
    out.push_str("\nPROCESSES\n");
    for (what, pid, ns) in &state.processes {
        // A supervised component shows its own PID, then its supervisor's.
        let line = match health::process(*pid, ns) {
            health::Process::Running { child: None } => format!("pid {pid:<8} running"),
            health::Process::Running { child: Some(child) } => {
                format!("pid {child:<8} (supervisor {pid}) running")
            }
            health::Process::Restarting => {
                format!("pid -        (supervisor {pid}) EXITED, restarting")
            }
            health::Process::Exited => format!("pid {pid:<8} EXITED"),
        };
        out.push_str(&format!("  {what:<40} {line}\n"));
    }
    out.push_str(&format!(
        "\ncontrol plane http://{CONTROL_PLANE_IP}:15014 (metrics, readiness), management API http://{CONTROL_PLANE_API} (token {}), both inside {}; logs in {}\n",
        operator_token_file(name).display(),
        state.router,
        state_root().join(name).join("logs").display()
    ));
    Ok(out)
}

/// Where lab `name`'s control plane keeps its operator token.
pub fn operator_token_file(name: &str) -> PathBuf {
    state_root()
        .join(name)
        .join("control-plane")
        .join(control_plane::operator_token::FILE)
}

/// The objects the lab's control plane holds now, or `None` when it does not answer.
async fn control_plane_objects(state: &LabState) -> Option<Vec<Resource>> {
    let token = crate::cli::read_token(&operator_token_file(&state.name)).ok()?;
    let url = format!("http://{CONTROL_PLANE_API}/debug/config");
    let (code, body) = crate::cli::request(
        Some(&Namespace::existing(&state.router)),
        "GET",
        &url,
        None,
        Some(&token),
    )
    .await
    .ok()?;
    if code != 200 {
        return None;
    }
    let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut text = String::new();
    for object in dump["objects"].as_array()? {
        text.push_str("---\n");
        text.push_str(&object.to_string());
        text.push('\n');
    }
    config::parse_documents(&text, "control plane").ok()
}
