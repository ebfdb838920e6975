//! `bowline bench l7`: what a waypoint costs — HTTP/1.1 through ztunnel → waypoint →
//! ztunnel against the L4 mesh (ztunnel → ztunnel) and the direct path, on the one-host
//! lab with a real waypoint.
//!
//! The benchmark brings up its own lab ([`lab::up::up`], two nodes) from [`MANIFEST`]:
//! namespace `plain` (not enrolled: pods `client` and `server`) and namespace `mesh`
//! (ambient: pod `client` on node-1, `bowline echo` pods `l4` and `l7` on node-2, Service
//! `l7` bound to the waypoint Gateway `mesh/waypoint`, which the lab deploys as pod
//! `mesh/waypoint-0`). Three paths, each from its namespace's `client` pod (sockets opened
//! inside the pod's network namespace):
//!
//! - **direct**: `plain/client` → `plain/server` at its *pod address*, port 8080. The lab
//!   has no kube-proxy: service VIPs are served only by ztunnel, so a VIP called from a pod
//!   outside the mesh leads nowhere.
//! - **mesh**: `mesh/client` → VIP of `mesh/l4`:80 (ztunnel → HBONE → ztunnel).
//! - **waypoint**: `mesh/client` → VIP of `mesh/l7`:80 (ztunnel → HBONE → waypoint, which
//!   terminates the tunnel, serves the HTTP request and tunnels it again → ztunnel).
//! - **ingress**: from outside the lab (its router namespace, where the host's traffic
//!   enters) → the ingress gateway `mesh/ingress` (Gateway class `istio`, pod
//!   `mesh/ingress-istio-0`, port 80) → HBONE → `mesh/l4`'s ztunnel; its gateway's CPU
//!   per request is compared with the waypoint's.
//! - **routes**: the same to `mesh/l7-routes`, whose route table holds [`ROUTE_RULES`]
//!   HTTPRoute rules (in routes of 16 rules, the Gateway API's most): a third match exact
//!   paths, a third path prefixes, a third header values — none of which the requests
//!   carry — and all sort before the last, a catch-all that serves the requests. Compared
//!   with the waypoint path (no route table).
//!
//! Each path is first checked: the echo's answer must show the `x-request-id` the waypoint
//! adds on the waypoint path, and must not on the others. Then, with [`CONNECTIONS`] fresh
//! keep-alive connections per measure (each warmed with one request, off the clock):
//!
//! 1. closed-loop request rate on every path, alternating paths over [`ROUNDS`] rounds,
//!    `--duration` per path in all; medians over rounds;
//! 2. an open-loop [`RATE`] req/s through the mesh and through the waypoint (alternating
//!    likewise): latency p50 / p99 (all requests of all rounds); CPU time per request
//!    answered (`/proc/PID/stat` before and after each round) of the waypoint process and
//!    of both ztunnels — the mesh path's ztunnels are the baseline the waypoint path's
//!    cost is compared with; the waypoint's RSS sampled during its rounds, and its
//!    high-water mark.
//!
//! Everything shares the machine: the load generator (this process), the echo apps, two
//! ztunnels and the waypoint (which the lab places on node-1, with the client).
//!
//! Owns: the lab's manifest, the paths and the measurements. Must not: judge the figures
//! (no thresholds), or leave the lab behind — it is removed ([`lab::up::down`]) when the
//! benchmark ends, fails or is cancelled; a lab of that name it did not start is never
//! touched.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use netns::socket::{self, Outgoing};
use netns::{Namespace, NetnsError};
use tokio::net::TcpStream;

use lab::up::{LabError, LabState, UpOptions};

use crate::l4::TempDir;
use crate::load::{self, HttpConnection, Requests};
use crate::procfs::{self, PeakSampler};
use crate::stats::{median, percentile};

mod report;
pub use report::L7BenchReport;

/// Keep-alive connections per measure.
pub const CONNECTIONS: usize = 16;
/// Requests per second of the fixed-rate measures.
pub const RATE: f64 = 1000.0;
/// Alternating rounds each measure is split into.
pub const ROUNDS: u32 = 2;
/// The port the echo apps listen on.
const APP_PORT: u16 = 8080;
/// The services' port.
const SERVICE_PORT: u16 = 80;
/// HTTPRoute rules of the routes path.
pub const ROUTE_RULES: usize = 1000;
/// Rules per HTTPRoute (the Gateway API allows at most 16).
const RULES_PER_ROUTE: usize = 16;

/// The lab's manifest: [`MANIFEST`] and the routes path's service, pod and
/// [`ROUTE_RULES`] rules.
pub fn manifest() -> String {
    let mut out = format!(
        "{MANIFEST}---
apiVersion: v1
kind: Pod
metadata: {{name: l7-routes, namespace: mesh, labels: {{app: l7-routes}}}}
spec:
  nodeName: node-2
  containers: [{{name: app, command: [bowline, echo, --port, \"8080\"]}}]
---
apiVersion: v1
kind: Service
metadata:
  name: l7-routes
  namespace: mesh
  labels: {{istio.io/use-waypoint: waypoint}}
spec: {{selector: {{app: l7-routes}}, ports: [{{port: 80, targetPort: 8080}}]}}
"
    );
    for (route, first) in (0..ROUTE_RULES).step_by(RULES_PER_ROUTE).enumerate() {
        out.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: bench-{route}, namespace: mesh}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: l7-routes}}]\n  rules:\n"
        ));
        for rule in first..(first + RULES_PER_ROUTE).min(ROUTE_RULES) {
            // A third each: exact paths, path prefixes, header values; the last matches all.
            let matches = match (rule + 1 == ROUTE_RULES, rule % 3) {
                (true, _) => String::new(),
                (false, 0) => {
                    format!("matches: [{{path: {{type: Exact, value: /bench/{rule}}}}}], ")
                }
                (false, 1) => {
                    format!("matches: [{{path: {{type: PathPrefix, value: /bench-{rule}}}}}], ")
                }
                (false, _) => {
                    format!("matches: [{{headers: [{{name: x-bench-rule, value: \"{rule}\"}}]}}], ")
                }
            };
            out.push_str(&format!(
                "    - {{{matches}backendRefs: [{{name: l7-routes, port: 80}}]}}\n"
            ));
        }
    }
    out
}

/// The waypoint pod's process, as the lab names it.
const WAYPOINT_PROCESS: &str = "pod mesh/waypoint-0 waypoint";
/// The ingress gateway pod's process.
const GATEWAY_PROCESS: &str = "pod mesh/ingress-istio-0 istio-proxy";

/// The lab the benchmark brings up.
pub const MANIFEST: &str = r#"# `bowline bench l7`: a namespace outside the mesh (the direct path) and one in it, with
# an L4-only service and a service bound to the waypoint `mesh/waypoint`.
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: plain, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: shell, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: plain, labels: {app: server}}
spec:
  nodeName: node-2
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: plain}
spec: {selector: {app: server}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: shell, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Pod
metadata: {name: l4, namespace: mesh, labels: {app: l4}}
spec:
  nodeName: node-2
  serviceAccountName: l4
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Service
metadata: {name: l4, namespace: mesh}
spec: {selector: {app: l4}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: l7, namespace: mesh, labels: {app: l7}}
spec:
  nodeName: node-2
  serviceAccountName: l7
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Service
metadata:
  name: l7
  namespace: mesh
  labels: {istio.io/use-waypoint: waypoint}
spec: {selector: {app: l7}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mesh}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
# The ingress path: the ingress gateway `mesh/ingress` (pod mesh/ingress-istio-0) in front
# of mesh/l4.
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: mesh}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ingress, namespace: mesh}
spec:
  parentRefs: [{name: ingress}]
  rules: [{backendRefs: [{name: l4, port: 80}]}]
"#;

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum L7BenchError {
    /// The lab did not come up (or could not be removed).
    #[error("the benchmark's lab: {0}")]
    Lab(#[from] LabError),
    /// Namespace trouble (are you root?).
    #[error("{0} (the benchmark enters the lab's network namespaces: run it as root)")]
    Netns(#[from] NetnsError),
    /// Files.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A lab of the benchmark's name exists already; it is not ours to remove.
    #[error(
        "lab {0:?} already exists (left by an earlier run?); remove it with `bowline down --name {0}` and run again"
    )]
    NameTaken(String),
    /// A measured process could not be read (it exited?).
    #[error(
        "cannot read the CPU time or memory of {what} (pid {pid}): {error}; did it exit? Its log is in the lab's logs directory"
    )]
    Process {
        /// Which component.
        what: &'static str,
        /// Its PID.
        pid: u32,
        /// The /proc error.
        error: io::Error,
    },
    /// The lab came up without something the manifest asks for.
    #[error("the lab has no {0}; it should come from the benchmark's manifest")]
    Missing(String),
    /// Traffic on a path failed.
    #[error("{path} path ({target}): {error}")]
    Load {
        /// Which path.
        path: &'static str,
        /// Where it was going.
        target: SocketAddr,
        /// What went wrong.
        error: io::Error,
    },
    /// A path did not go the way it should (through the waypoint, or not).
    #[error("{path} path ({target}): {detail}")]
    WrongPath {
        /// Which path.
        path: &'static str,
        /// Where it was going.
        target: SocketAddr,
        /// What the answer showed.
        detail: &'static str,
    },
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A lab this benchmark started: removed when dropped — at the end, on an error, or when
/// the benchmark's future is dropped (Ctrl-C).
struct LabGuard {
    name: String,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        match lab::up::down(&self.name) {
            Ok(report) => tracing::debug!(lab = %self.name, %report, "bench lab removed"),
            Err(error) => tracing::warn!(
                lab = %self.name,
                %error,
                "could not remove the bench lab; run `bowline down --name {}`",
                self.name
            ),
        }
    }
}

/// The benchmark's lab name: short (it is part of interface names) and this process's.
fn lab_name() -> String {
    format!("bl7{}", std::process::id())
}

/// Whether anything of lab `name` exists: its state or any of its namespaces.
fn lab_exists(name: &str) -> bool {
    let prefix = format!("bl-{name}-");
    lab::up::state_root().join(name).exists()
        || std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
}

/// One way from a client pod to an echo app.
struct Route {
    name: &'static str,
    /// The client pod's network namespace.
    client: String,
    target: SocketAddr,
    /// Whether the waypoint must be on the way.
    via_waypoint: bool,
}

impl Route {
    fn new(
        state: &LabState,
        name: &'static str,
        client: &str,
        target: SocketAddr,
        via_waypoint: bool,
    ) -> Result<Self, L7BenchError> {
        let (client, _, _) = state
            .pods
            .get(client)
            .ok_or_else(|| L7BenchError::Missing(format!("pod {client}")))?;
        Ok(Self {
            name,
            client: client.clone(),
            target,
            via_waypoint,
        })
    }

    /// A path from outside the lab: its router namespace, where traffic from the host
    /// enters.
    fn outside(
        state: &LabState,
        name: &'static str,
        target: SocketAddr,
        via_waypoint: bool,
    ) -> Self {
        Self {
            name,
            client: state.router.clone(),
            target,
            via_waypoint,
        }
    }

    fn load_error(&self, error: io::Error) -> L7BenchError {
        L7BenchError::Load {
            path: self.name,
            target: self.target,
            error,
        }
    }

    fn wrong(&self, detail: &'static str) -> L7BenchError {
        L7BenchError::WrongPath {
            path: self.name,
            target: self.target,
            detail,
        }
    }

    /// A connection from inside the client pod.
    async fn dial(&self) -> Result<TcpStream, L7BenchError> {
        let target = self.target;
        let socket = Namespace::existing(&self.client)
            .run(move || socket::outgoing_socket(target, Outgoing::default()))
            .await?
            .map_err(|e| self.load_error(e))?;
        socket.connect(target).await.map_err(|e| self.load_error(e))
    }

    /// [`CONNECTIONS`] connections, each having answered one request that went the
    /// way this path should.
    async fn connections(&self) -> Result<Vec<HttpConnection<TcpStream>>, L7BenchError> {
        let host = self.target.to_string();
        let mut out = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let mut connection = HttpConnection::new(self.dial().await?, &host, "/");
            connection.get().await.map_err(|e| self.load_error(e))?;
            self.check(connection.body())?;
            out.push(connection);
        }
        Ok(out)
    }

    /// The echo lists the request's headers: the waypoint adds `x-request-id` to every
    /// request it forwards, nothing else on these paths does.
    fn check(&self, answer: &[u8]) -> Result<(), L7BenchError> {
        let through_waypoint = String::from_utf8_lossy(answer).contains("\"x-request-id\"");
        match (self.via_waypoint, through_waypoint) {
            (true, false) => Err(self.wrong(
                "the request did not go through the waypoint (no x-request-id reached the app): is Service mesh/l7 bound (istio.io/use-waypoint) and its waypoint ready?",
            )),
            (false, true) => Err(self.wrong(
                "the request went through a waypoint, but this path must not",
            )),
            _ => Ok(()),
        }
    }

    /// Closed-loop request rate for `slice`.
    async fn closed_loop(&self, slice: Duration) -> Result<f64, L7BenchError> {
        let connections = self.connections().await?;
        let done = load::http_closed_loop(connections, slice)
            .await
            .map_err(|e| self.load_error(e))?;
        Ok(done.rate())
    }

    /// [`RATE`] req/s for `slice`.
    async fn fixed_rate(&self, slice: Duration) -> Result<Requests, L7BenchError> {
        let connections = self.connections().await?;
        load::http_fixed_rate(connections, RATE, slice)
            .await
            .map_err(|e| self.load_error(e))
    }
}

/// CPU time used so far (µs): the waypoint, and both ztunnels together.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    waypoint: u64,
    ztunnels: u64,
    gateway: u64,
}

/// The processes whose CPU time is measured.
struct Costed {
    waypoint: u32,
    ztunnels: Vec<u32>,
    gateway: u32,
}

impl Costed {
    fn now(&self) -> Result<Cpu, L7BenchError> {
        let read = |what, pid| {
            procfs::cpu_us(pid).map_err(|error| L7BenchError::Process { what, pid, error })
        };
        let mut ztunnels = 0;
        for pid in &self.ztunnels {
            ztunnels += read("a ztunnel", *pid)?;
        }
        Ok(Cpu {
            waypoint: read("the waypoint", self.waypoint)?,
            ztunnels,
            gateway: read("the ingress gateway", self.gateway)?,
        })
    }

    /// The waypoint's /proc/PID/status.
    fn waypoint_status(&self) -> Result<String, L7BenchError> {
        procfs::status(self.waypoint).map_err(|error| L7BenchError::Process {
            what: "the waypoint",
            pid: self.waypoint,
            error,
        })
    }
}

/// The waypoint's process and both ztunnels' (the components under their supervisors).
async fn costed(lab: &str) -> Result<Costed, L7BenchError> {
    let status = lab::up::status(lab).await?;
    let running = |what: &str| {
        status.processes.iter().find_map(|(name, pid, process)| {
            if name != what {
                return None;
            }
            match process {
                lab::up::Process::Running { child: Some(child) } => Some(*child),
                lab::up::Process::Running { child: None } => Some(*pid),
                _ => None,
            }
        })
    };
    let missing = |what: &str| L7BenchError::Missing(format!("running process {what:?}"));
    let waypoint = running(WAYPOINT_PROCESS).ok_or_else(|| missing(WAYPOINT_PROCESS))?;
    let mut ztunnels = Vec::new();
    for node in ["node-1", "node-2"] {
        let what = format!("ztunnel {node}");
        ztunnels.push(running(&what).ok_or_else(|| missing(&what))?);
    }
    let gateway = running(GATEWAY_PROCESS).ok_or_else(|| missing(GATEWAY_PROCESS))?;
    Ok(Costed {
        waypoint,
        ztunnels,
        gateway,
    })
}

/// What the fixed-rate rounds of one path gave, summed.
#[derive(Default)]
struct FixedRate {
    done: u64,
    elapsed: Duration,
    latencies_us: Vec<f64>,
    /// CPU time used during these rounds.
    cpu: Cpu,
}

impl FixedRate {
    fn add(&mut self, requests: Requests, before: Cpu, after: Cpu) {
        self.done += requests.done;
        self.elapsed += requests.elapsed;
        self.latencies_us.extend(requests.latencies_us);
        self.cpu.waypoint += after.waypoint.saturating_sub(before.waypoint);
        self.cpu.ztunnels += after.ztunnels.saturating_sub(before.ztunnels);
        self.cpu.gateway += after.gateway.saturating_sub(before.gateway);
    }

    fn rate(&self) -> f64 {
        ratio(self.done as f64, self.elapsed.as_secs_f64())
    }

    /// CPU µs per request answered.
    fn per_request(&self, cpu_us: u64) -> f64 {
        ratio(cpu_us as f64, self.done as f64)
    }
}

/// Runs the benchmark with `binary` (the `bowline` executable) as every component;
/// `phase` per measure and path. `progress` is told each step.
pub async fn run(
    binary: &Path,
    phase: Duration,
    progress: &dyn Fn(&str),
) -> Result<L7BenchReport, L7BenchError> {
    let name = lab_name();
    if lab_exists(&name) {
        return Err(L7BenchError::NameTaken(name));
    }
    let dir = TempDir::new("l7")?;
    let manifest = dir.path().join("bench-l7.yaml");
    std::fs::write(&manifest, self::manifest())?;
    let _lab = LabGuard { name: name.clone() };
    progress(&format!("lab {name}: bringing it up"));
    let options = UpOptions {
        files: vec![manifest],
        name: name.clone(),
        binary: binary.to_owned(),
        publish: Vec::new(),
    };
    let state = lab::up::up(&options, progress).await?;

    let vip = |service: &str| -> Result<SocketAddr, L7BenchError> {
        let ip = state
            .services
            .get(service)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| L7BenchError::Missing(format!("service {service} with a VIP")))?;
        Ok(SocketAddr::new(ip, SERVICE_PORT))
    };
    let pod_ip = |pod: &str, port: u16| -> Result<SocketAddr, L7BenchError> {
        let ip = state
            .pods
            .get(pod)
            .and_then(|(_, ip, _)| ip.parse().ok())
            .ok_or_else(|| L7BenchError::Missing(format!("pod {pod} with an address")))?;
        Ok(SocketAddr::new(ip, port))
    };
    let direct = Route::new(
        &state,
        "direct",
        "plain/client",
        pod_ip("plain/server", APP_PORT)?,
        false,
    )?;
    let mesh = Route::new(&state, "mesh", "mesh/client", vip("mesh/l4")?, false)?;
    let waypoint = Route::new(&state, "waypoint", "mesh/client", vip("mesh/l7")?, true)?;
    let routes = Route::new(
        &state,
        "routes",
        "mesh/client",
        vip("mesh/l7-routes")?,
        true,
    )?;
    // The gateway adds x-request-id too, as the waypoint does.
    let ingress = Route::outside(
        &state,
        "ingress",
        pod_ip("mesh/ingress-istio-0", SERVICE_PORT)?,
        true,
    );
    // The lab records the VIP of every service; the plain one is unused (see the module
    // docs), but it must exist as the manifest says.
    vip("plain/server")?;
    let costed = costed(&name).await?;
    let waypoint_node = state
        .pods
        .get("mesh/waypoint-0")
        .map(|(_, _, node)| node.clone())
        .unwrap_or_default();

    let slice = phase / ROUNDS;
    let (mut direct_rps, mut mesh_rps, mut waypoint_rps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut routes_rps, mut ingress_rps) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        progress(&format!(
            "round {round}/{ROUNDS}: closed loop, {CONNECTIONS} connections, {:.1} s per path",
            slice.as_secs_f64()
        ));
        direct_rps.push(direct.closed_loop(slice).await?);
        mesh_rps.push(mesh.closed_loop(slice).await?);
        waypoint_rps.push(waypoint.closed_loop(slice).await?);
        routes_rps.push(routes.closed_loop(slice).await?);
        ingress_rps.push(ingress.closed_loop(slice).await?);
    }

    let (mut at_rate_mesh, mut at_rate_waypoint) = (FixedRate::default(), FixedRate::default());
    let (mut at_rate_routes, mut at_rate_ingress) = (FixedRate::default(), FixedRate::default());
    let (mut rss, mut rss_anon) = (0u64, 0u64);
    for round in 1..=ROUNDS {
        progress(&format!(
            "round {round}/{ROUNDS}: {RATE:.0} req/s, {:.1} s per path",
            slice.as_secs_f64()
        ));
        let before = costed.now()?;
        let requests = mesh.fixed_rate(slice).await?;
        at_rate_mesh.add(requests, before, costed.now()?);

        let sampler = PeakSampler::start(vec![costed.waypoint], &["VmRSS:", "RssAnon:"]);
        let before = costed.now()?;
        let requests = waypoint.fixed_rate(slice).await;
        let after = costed.now()?;
        let peaks = sampler.finish();
        at_rate_waypoint.add(requests?, before, after);
        rss = rss.max(peaks.first().copied().unwrap_or(0));
        rss_anon = rss_anon.max(peaks.get(1).copied().unwrap_or(0));

        let before = costed.now()?;
        let requests = routes.fixed_rate(slice).await?;
        at_rate_routes.add(requests, before, costed.now()?);

        let before = costed.now()?;
        let requests = ingress.fixed_rate(slice).await?;
        at_rate_ingress.add(requests, before, costed.now()?);
    }
    // The kernel updates VmHWM lazily; a sampled VmRSS can be a little above it.
    let peak_rss = procfs::status_kb(&costed.waypoint_status()?, "VmHWM:").max(rss);

    let direct_http_rps = median(&mut direct_rps);
    let mesh_http_rps = median(&mut mesh_rps);
    let waypoint_http_rps = median(&mut waypoint_rps);
    let routes_http_rps = median(&mut routes_rps);
    let ingress_http_rps = median(&mut ingress_rps);
    let ingress_cpu_us_per_request = at_rate_ingress.per_request(at_rate_ingress.cpu.gateway);
    let routes_cpu_us_per_request = at_rate_routes.per_request(at_rate_routes.cpu.waypoint);
    let waypoint_cpu_us_per_request = at_rate_waypoint.per_request(at_rate_waypoint.cpu.waypoint);
    let mesh_latency_p50_us = percentile(&mut at_rate_mesh.latencies_us, 0.5);
    let waypoint_latency_p50_us = percentile(&mut at_rate_waypoint.latencies_us, 0.5);
    progress(&format!("lab {name}: removing it"));
    Ok(L7BenchReport {
        duration_s: phase.as_secs_f64(),
        connections: CONNECTIONS,
        rate: RATE,
        direct_target: direct.target.to_string(),
        waypoint_node,
        direct_http_rps,
        mesh_http_rps,
        waypoint_http_rps,
        mesh_vs_direct_rps_ratio: ratio(mesh_http_rps, direct_http_rps),
        waypoint_vs_mesh_rps_ratio: ratio(waypoint_http_rps, mesh_http_rps),
        mesh_fixed_rate_rps: at_rate_mesh.rate(),
        waypoint_fixed_rate_rps: at_rate_waypoint.rate(),
        mesh_latency_p50_us,
        mesh_latency_p99_us: percentile(&mut at_rate_mesh.latencies_us, 0.99),
        waypoint_latency_p50_us,
        waypoint_latency_p99_us: percentile(&mut at_rate_waypoint.latencies_us, 0.99),
        waypoint_added_p50_us: waypoint_latency_p50_us - mesh_latency_p50_us,
        waypoint_requests: at_rate_waypoint.done,
        waypoint_cpu_us_per_request,
        route_rules: ROUTE_RULES,
        routes_http_rps,
        routes_vs_waypoint_rps_ratio: ratio(routes_http_rps, waypoint_http_rps),
        routes_latency_p50_us: percentile(&mut at_rate_routes.latencies_us, 0.5),
        routes_cpu_us_per_request,
        routes_vs_waypoint_cpu_ratio: ratio(routes_cpu_us_per_request, waypoint_cpu_us_per_request),
        waypoint_idle_cpu_us_per_s: ratio(
            at_rate_mesh.cpu.waypoint as f64,
            at_rate_mesh.elapsed.as_secs_f64(),
        ),
        mesh_ztunnel_cpu_us_per_request: at_rate_mesh.per_request(at_rate_mesh.cpu.ztunnels),
        waypoint_path_ztunnel_cpu_us_per_request: at_rate_waypoint
            .per_request(at_rate_waypoint.cpu.ztunnels),
        waypoint_path_vs_mesh_cpu_ratio: ratio(
            at_rate_waypoint
                .per_request(at_rate_waypoint.cpu.waypoint + at_rate_waypoint.cpu.ztunnels),
            at_rate_mesh.per_request(at_rate_mesh.cpu.ztunnels),
        ),
        waypoint_rss_kb: rss,
        waypoint_rss_anon_kb: rss_anon,
        waypoint_peak_rss_kb: peak_rss,
        ingress_http_rps,
        ingress_vs_direct_rps_ratio: ratio(ingress_http_rps, direct_http_rps),
        ingress_vs_waypoint_rps_ratio: ratio(ingress_http_rps, waypoint_http_rps),
        ingress_latency_p50_us: percentile(&mut at_rate_ingress.latencies_us, 0.5),
        ingress_cpu_us_per_request,
        ingress_vs_waypoint_cpu_ratio: ratio(
            ingress_cpu_us_per_request,
            waypoint_cpu_us_per_request,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_path_has_its_rules_in_routes_the_gateway_api_accepts() {
        let docs = config::parse_documents(&manifest(), "bench-l7.yaml").unwrap();
        let rules: usize = docs
            .iter()
            .filter_map(|d| match d {
                // The routes path's (the ingress path has one route of its own).
                config::Resource::HttpRoute(r) if r.metadata.name.starts_with("bench-") => {
                    Some(r.spec.rules.len())
                }
                _ => None,
            })
            .inspect(|n| assert!(*n <= RULES_PER_ROUTE))
            .sum();
        assert_eq!(rules, ROUTE_RULES);
    }

    #[test]
    fn ratios_of_nothing_are_zero() {
        assert_eq!(ratio(3.0, 4.0), 0.75);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        let mut at_rate = FixedRate::default();
        assert_eq!(at_rate.rate(), 0.0);
        let cpu = |waypoint, ztunnels| Cpu {
            waypoint,
            ztunnels,
            gateway: 0,
        };
        at_rate.add(
            Requests {
                done: 1000,
                elapsed: Duration::from_millis(500),
                latencies_us: vec![100.0; 1000],
            },
            cpu(10_000, 1_000_000),
            cpu(50_000, 1_100_000),
        );
        at_rate.add(
            Requests {
                done: 1000,
                elapsed: Duration::from_millis(1500),
                latencies_us: vec![200.0; 1000],
            },
            cpu(60_000, 1_200_000),
            cpu(80_000, 1_300_000),
        );
        assert_eq!(at_rate.rate(), 1000.0);
        assert_eq!(at_rate.per_request(at_rate.cpu.waypoint), 30.0);
        assert_eq!(at_rate.per_request(at_rate.cpu.ztunnels), 100.0);
        assert_eq!(at_rate.latencies_us.len(), 2000);
    }

    #[test]
    fn the_lab_name_fits_interface_names() {
        let name = lab_name();
        assert!(name.len() <= 12, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn only_the_waypoint_path_may_show_the_waypoint_header() {
        let route = |via_waypoint| Route {
            name: "test",
            client: "none".into(),
            target: SocketAddr::from(([10, 96, 0, 1], 80)),
            via_waypoint,
        };
        let with = br#"{"headers":{"host":"x","x-request-id":"1"}}"#;
        let without = br#"{"headers":{"host":"x"}}"#;
        assert!(route(true).check(with).is_ok());
        assert!(route(true).check(without).is_err());
        assert!(route(false).check(without).is_ok());
        assert!(route(false).check(with).is_err());
    }
}
