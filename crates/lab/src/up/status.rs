//! What `bowline status` shows of a lab: what runs where, as the control plane and the
//! components see it now (live `apply`s included), and how to reach its control plane's
//! API.
//!
//! Owns: gathering that into a [`LabStatus`]. Must not: render it — the `bowline` binary
//! prints it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use config::Resource;
use netns::Namespace;

pub use super::health::Process;
use super::{CONTROL_PLANE_API, LabError, LabState, advertised, health, pod_uid, state_root};

/// A lab as it is now.
#[derive(Debug, Clone)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// Nodes, by name.
    pub nodes: Vec<NodeStatus>,
    /// Pods, by `ns/name`.
    pub pods: Vec<PodStatus>,
    /// Services: `ns/name` → VIP.
    pub services: BTreeMap<String, String>,
    /// Waypoints: the Gateways the control plane holds, their pods and what is bound.
    pub waypoints: Vec<WaypointStatus>,
    /// HTTP and gRPC routes and what the control plane said of them.
    pub routes: Vec<RouteStatus>,
    /// Processes started: (what, pid, how it is now).
    pub processes: Vec<(String, u32, Process)>,
    /// The router namespace, where the control plane's API is reachable.
    pub router: String,
    /// Host ports forwarded to ingress gateways.
    pub published: Vec<super::Published>,
    /// The control plane's operator token.
    pub token_file: PathBuf,
    /// Where the components' logs are.
    pub logs: PathBuf,
}

/// A route as the control plane sees it.
#[derive(Debug, Clone)]
pub struct RouteStatus {
    /// `Kind ns/name`.
    pub object: String,
    /// Its Gateway API conditions: (type, holds, reason), e.g. `("Accepted", true,
    /// "Accepted")`.
    pub conditions: Vec<(String, bool, String)>,
    /// What it could not apply (nothing: in force as written).
    pub notes: Vec<String>,
}

/// A node and its ztunnel's readiness.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Its address.
    pub ip: String,
    /// Ready (with the ztunnel's note, e.g. `stale…`), or why not.
    pub ztunnel: Result<String, String>,
}

/// A waypoint: its pods (with their readiness probe's answer) and what asks for it.
#[derive(Debug, Clone)]
pub struct WaypointStatus {
    /// `ns/name` of the Gateway.
    pub gateway: String,
    /// Its pods: (`ns/name`, address, node, ready or why not).
    pub pods: Vec<(String, String, String, Result<(), String>)>,
    /// Services and pods (`Kind ns/name`) that ask for it (`istio.io/use-waypoint`).
    pub bound: Vec<String>,
    /// Its address: the VIP of its Service (`<name>`, port 15008; an ingress gateway's
    /// `<name>-istio`, its listener ports), once it has one.
    pub address: Option<String>,
    /// An ingress gateway's listeners (class `istio`); `None` for a waypoint.
    pub listeners: Option<Vec<ListenerStatus>>,
}

/// An ingress gateway's listener, as its Gateway says.
#[derive(Debug, Clone)]
pub struct ListenerStatus {
    /// Its name.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    /// The host names it serves (`None`: any).
    pub hostname: Option<String>,
}

impl WaypointStatus {
    /// The Gateway's status conditions, as the Gateway API names them: `Accepted` (the
    /// control plane took the Gateway: its listeners were checked at `apply`) and
    /// `Programmed` (a ready pod serves it); each as (type, holds, reason).
    pub fn conditions(&self) -> [(&'static str, bool, &'static str); 2] {
        let ready = self.pods.iter().any(|(_, _, _, r)| r.is_ok());
        let programmed = match (ready, self.pods.is_empty()) {
            (true, _) => (true, "Programmed"),
            (false, true) => (false, "NoPod"),
            (false, false) => (false, "NoReadyPod"),
        };
        [
            ("Accepted", true, "Accepted"),
            ("Programmed", programmed.0, programmed.1),
        ]
    }
}

/// A pod, where it runs, and whether it is in the mesh.
#[derive(Debug, Clone)]
pub struct PodStatus {
    /// `ns/name`.
    pub key: String,
    /// Its address.
    pub ip: String,
    /// Its node.
    pub node: String,
    /// Whether the control plane enrols it; `None` when the control plane does not answer
    /// or does not know the pod.
    pub enrolled: Option<bool>,
    /// Whether its capture rules are installed.
    pub captured: bool,
    /// Whether its own node's ztunnel holds it as HBONE (the control plane says so once
    /// the node agent reported the capture); `None` when that ztunnel does not answer.
    pub hbone: Option<bool>,
    /// The workload controller that made it (`Deployment shop/reviews-v1`), if any.
    pub owner: Option<String>,
    /// Its containers that do not run their own command: (container, what runs instead —
    /// `stand-in for image …: HTTP 9080`, or why nothing does).
    pub stand_ins: Vec<(String, String)>,
}

/// `bowline status`: nodes, pods, services, component health.
pub async fn status(name: &str) -> Result<LabStatus, LabError> {
    let state = LabState::load(name)?;
    let mut nodes = Vec::new();
    for (node, (ns, ip)) in &state.nodes {
        nodes.push(NodeStatus {
            name: node.clone(),
            ip: ip.clone(),
            // The same check `up` waits for.
            ztunnel: health::ztunnel(ns).await,
        });
    }
    // Enrolment and waypoints as the control plane sees them now (live `apply`s included).
    let view = control_plane_view(&state).await;
    let (notes, conditions) = view
        .as_ref()
        .map(|v| (v.notes.clone(), v.conditions.clone()))
        .unwrap_or_default();
    let resources = view.map(|v| v.objects);
    let mut namespace_labels = BTreeMap::new();
    let mut pods = BTreeMap::new();
    let mut gateways = Vec::new();
    let mut routes = Vec::new();
    for r in resources.iter().flatten() {
        match r {
            Resource::HttpRoute(route) => routes.push(route_status(
                "HTTPRoute",
                &route.metadata,
                &notes,
                &conditions,
            )),
            Resource::GrpcRoute(route) => routes.push(route_status(
                "GRPCRoute",
                &route.metadata,
                &notes,
                &conditions,
            )),
            Resource::VirtualService(service) => routes.push(route_status(
                "VirtualService",
                &service.metadata,
                &notes,
                &conditions,
            )),
            Resource::DestinationRule(rule) => routes.push(route_status(
                "DestinationRule",
                &rule.metadata,
                &notes,
                &conditions,
            )),
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
                // An ingress gateway handles what comes from outside: nothing binds to it.
                let handles = if g.spec.gateway_class_name == config::resources::INGRESS_CLASS {
                    INGRESS.to_owned()
                } else {
                    g.metadata
                        .labels
                        .get(config::resources::WAYPOINT_FOR)
                        .cloned()
                        .unwrap_or_else(|| "service".into())
                };
                gateways.push((
                    g.metadata.namespace().to_owned(),
                    g.metadata.name.clone(),
                    handles,
                ));
            }
            _ => {}
        }
    }
    let waypoints = waypoints(
        &state,
        &gateways,
        resources.as_deref().unwrap_or_default(),
        &namespace_labels,
    )
    .await;
    let held = advertised(&state).await;
    let pods = state
        .pods
        .iter()
        .map(|(key, (ns, ip, node))| {
            let enrolled = pods.get(key).map(|pod| {
                control_plane::translate::enrolled(
                    pod,
                    namespace_labels.get(pod.metadata.namespace()),
                )
            });
            let (pod_ns, pod_name) = key.split_once('/').unwrap_or(("default", key));
            PodStatus {
                key: key.clone(),
                ip: ip.clone(),
                node: node.clone(),
                enrolled,
                captured: netns::capture::is_installed(&Namespace::existing(ns)),
                hbone: held
                    .get(node)
                    .map(|h| h.get(&pod_uid(pod_ns, pod_name)) == Some(&true)),
                owner: pods.get(key).and_then(|pod| {
                    let (kind, name) = super::workloads::owner(pod)?;
                    Some(format!("{kind} {pod_ns}/{name}"))
                }),
                stand_ins: pods
                    .get(key)
                    .map(|pod| stand_ins(pod, resources.as_deref().unwrap_or_default()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let processes = state
        .processes
        .iter()
        .map(|(what, pid, ns)| (what.clone(), *pid, health::process(*pid, ns)))
        .collect();
    Ok(LabStatus {
        name: name.to_owned(),
        nodes,
        pods,
        services: state.services.clone(),
        waypoints,
        routes,
        processes,
        router: state.router.clone(),
        published: state.published.clone(),
        token_file: operator_token_file(name),
        logs: state_root().join(name).join("logs"),
    })
}

/// The containers of `pod` that run a stand-in (or nothing), and what.
fn stand_ins(pod: &config::resources::Pod, objects: &[Resource]) -> Vec<(String, String)> {
    let binary = std::path::Path::new("bowline");
    pod.spec
        .containers
        .iter()
        .filter_map(|c| {
            let what = match super::containers::launch(pod, c, objects, binary) {
                Ok(launch) => launch.stand_in?,
                Err(why) => why,
            };
            Some((c.name.clone(), what))
        })
        .collect()
}

/// Where lab `name`'s control plane keeps its operator token.
pub fn operator_token_file(name: &str) -> PathBuf {
    state_root()
        .join(name)
        .join("control-plane")
        .join(control_plane::operator_token::FILE)
}

/// The objects the lab's control plane holds now, or `None` when it does not answer.
pub(super) async fn control_plane_objects(state: &LabState) -> Option<Vec<Resource>> {
    control_plane_view(state).await.map(|v| v.objects)
}

/// What the control plane's `/debug/config` says.
struct View {
    objects: Vec<Resource>,
    /// Translation notes by object (`Kind ns/name` → messages).
    notes: BTreeMap<String, Vec<String>>,
    /// Route conditions by object.
    conditions: Conditions,
}

/// `Kind ns/name` → (type, holds, reason) per condition.
type Conditions = BTreeMap<String, Vec<(String, bool, String)>>;

/// The objects the lab's control plane holds now, its translation notes and route
/// conditions, or `None` when it does not answer.
async fn control_plane_view(state: &LabState) -> Option<View> {
    let token = crate::client::read_token(&operator_token_file(&state.name)).ok()?;
    let url = format!("http://{CONTROL_PLANE_API}/debug/config");
    let (code, body) = crate::client::request(
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
    let notes = dump["status"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(object, messages)| {
            let messages = messages
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect();
            (object.clone(), messages)
        })
        .collect();
    let conditions = dump["conditions"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(object, list)| {
            let list = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let field = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
                    (field("type"), c["status"] == "True", field("reason"))
                })
                .collect();
            (object.clone(), list)
        })
        .collect();
    Some(View {
        objects: config::parse_documents(&text, "control plane").ok()?,
        notes,
        conditions,
    })
}

/// A route's object name and what the control plane said of it.
fn route_status(
    kind: &str,
    meta: &config::resources::ObjectMeta,
    notes: &BTreeMap<String, Vec<String>>,
    conditions: &Conditions,
) -> RouteStatus {
    let object = format!("{kind} {}/{}", meta.namespace(), meta.name);
    RouteStatus {
        notes: notes.get(&object).cloned().unwrap_or_default(),
        conditions: conditions.get(&object).cloned().unwrap_or_default(),
        object,
    }
}

/// What an ingress gateway "handles", among the waypoints' `istio.io/waypoint-for` values.
const INGRESS: &str = "ingress";

/// Each Gateway's pods (asked for readiness) and what is bound to it; `gateways` are
/// (namespace, name, what it handles).
async fn waypoints(
    state: &LabState,
    gateways: &[(String, String, String)],
    resources: &[Resource],
    namespace_labels: &BTreeMap<String, config::resources::Labels>,
) -> Vec<WaypointStatus> {
    let mut out = Vec::new();
    for (namespace, name, handles) in gateways {
        let mut pods = Vec::new();
        for r in resources {
            let Resource::Pod(pod) = r else { continue };
            if pod.metadata.namespace() != namespace
                || control_plane::waypoints::gateway_of(pod) != Some(name.as_str())
            {
                continue;
            }
            let key = format!("{namespace}/{}", pod.metadata.name);
            let Some((ns, ip, node)) = state.pods.get(&key) else {
                pods.push((
                    key,
                    "-".into(),
                    "-".into(),
                    Err("not running in this lab".into()),
                ));
                continue;
            };
            let ready = health::waypoint(ns).await;
            pods.push((key, ip.clone(), node.clone(), ready));
        }
        let bound = resources
            .iter()
            .filter_map(|r| {
                // What the Gateway handles (`istio.io/waypoint-for`) is what can bind.
                let (kind, meta) = match (r, handles.as_str()) {
                    (Resource::Service(s), "service" | "all") => ("Service", &s.metadata),
                    (Resource::Pod(p), "workload" | "all") => ("Pod", &p.metadata),
                    _ => return None,
                };
                let wanted = control_plane::translate::waypoint_requested(
                    meta,
                    namespace_labels.get(meta.namespace()),
                )?;
                (wanted == (namespace.clone(), name.clone())
                    && meta.name != *name
                    && !meta
                        .labels
                        .contains_key(config::resources::GATEWAY_NAME_LABEL))
                .then(|| format!("{kind} {}/{}", meta.namespace(), meta.name))
            })
            .collect();
        let ingress = handles == INGRESS;
        let listeners = ingress.then(|| {
            resources
                .iter()
                .find_map(|r| match r {
                    Resource::Gateway(g)
                        if g.metadata.namespace() == namespace && g.metadata.name == *name =>
                    {
                        Some(
                            g.spec
                                .listeners
                                .iter()
                                .map(|l| ListenerStatus {
                                    name: l.name.clone(),
                                    port: l.port,
                                    protocol: l.protocol.clone(),
                                    hostname: l.hostname.clone(),
                                })
                                .collect(),
                        )
                    }
                    _ => None,
                })
                .unwrap_or_default()
        });
        let service = if ingress {
            format!("{namespace}/{name}-istio")
        } else {
            format!("{namespace}/{name}")
        };
        out.push(WaypointStatus {
            gateway: format!("{namespace}/{name}"),
            pods,
            bound,
            address: state.services.get(&service).cloned(),
            listeners,
        });
    }
    out
}
