//! `bowline bench control-plane`: a `bowline control-plane` process loaded with 10,000
//! workloads, 1,000 services and 500 policies, and 100 simulated ztunnels on delta ADS.
//!
//! Measured: time until every client holds the full state (both types answered and
//! ACKed), then for a series of single-object changes applied through the API the time
//! until every client has the change (p50/p99 over changes), the bytes one client is sent
//! per change, and the control plane's peak RSS.
//!
//! Owns: the generated mesh, the simulated clients and the measurements. Must not: reach
//! into the control plane's internals — it talks to the process over its API and ADS.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use xds::ads_client::AdsStream;

use crate::stats::{median, percentile};

/// The scale.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Namespaces (each has workloads/namespaces pods, services/namespaces services…).
    pub namespaces: usize,
    /// Workloads.
    pub workloads: usize,
    /// Services.
    pub services: usize,
    /// Policies.
    pub policies: usize,
    /// Simulated ztunnels.
    pub clients: usize,
    /// Changes measured.
    pub updates: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            namespaces: 100,
            workloads: 10_000,
            services: 1_000,
            policies: 500,
            clients: 100,
            updates: 40,
        }
    }
}

/// The results; field names are the `--json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneBenchReport {
    /// Workloads.
    pub workloads: usize,
    /// Services.
    pub services: usize,
    /// Policies.
    pub policies: usize,
    /// Simulated clients.
    pub clients: usize,
    /// Control plane start (load + translate) until serving, ms.
    pub startup_ms: f64,
    /// All clients connect → all hold both types.
    pub full_sync_ms: f64,
    /// Bytes of the first full push to one client.
    pub full_sync_bytes_per_client: u64,
    /// Apply → every client has the change, median, ms.
    pub update_p50_ms: f64,
    /// The same, 99th percentile.
    pub update_p99_ms: f64,
    /// Resource bytes one client is sent per change (mean).
    pub bytes_per_update: f64,
    /// Peak RSS of the control plane, KiB.
    pub control_plane_peak_rss_kb: u64,
}

impl std::fmt::Display for ControlPlaneBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "control plane with {} workloads, {} services, {} policies; {} delta ADS clients",
            self.workloads, self.services, self.policies, self.clients
        )?;
        writeln!(
            f,
            "{:<44}{:>12.1}",
            "start (load, translate) ms", self.startup_ms
        )?;
        writeln!(
            f,
            "{:<44}{:>12.1}",
            "full sync of all clients ms", self.full_sync_ms
        )?;
        writeln!(
            f,
            "{:<44}{:>12}",
            "full sync bytes per client", self.full_sync_bytes_per_client
        )?;
        writeln!(
            f,
            "{:<44}{:>12.1}",
            "apply → all clients p50 ms", self.update_p50_ms
        )?;
        writeln!(
            f,
            "{:<44}{:>12.1}",
            "apply → all clients p99 ms", self.update_p99_ms
        )?;
        writeln!(
            f,
            "{:<44}{:>12.0}",
            "bytes per update per client", self.bytes_per_update
        )?;
        write!(
            f,
            "{:<44}{:>12}",
            "control plane peak RSS KiB", self.control_plane_peak_rss_kb
        )
    }
}

/// The mesh as YAML: namespaces, pods (`app=svc-<k>` labels), services selecting them,
/// selector policies.
pub fn generate(scale: &Scale) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pods_per_ns = scale.workloads / scale.namespaces;
    let services_per_ns = (scale.services / scale.namespaces).max(1);
    let policies_per_ns = (scale.policies / scale.namespaces).max(1);
    for n in 0..scale.namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{istio.io/dataplane-mode: ambient}}}}\n"
        );
        for p in 0..pods_per_ns {
            let ip = format!("10.{}.{}.{}", 1 + n / 250, n % 250, 1 + p % 250);
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: ns-{n}, labels: {{app: svc-{}, version: v1}}}}\nspec: {{nodeName: node-{}, serviceAccountName: sa-{}}}\nstatus: {{podIP: {ip}}}\n",
                p % services_per_ns,
                (n * pods_per_ns + p) % scale.clients,
                p % services_per_ns
            );
        }
        for s in 0..services_per_ns {
            let vip = n * services_per_ns + s;
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{n}}}\nspec: {{selector: {{app: svc-{s}}}, clusterIP: 10.96.{}.{}, ports: [{{port: 80, targetPort: 8080}}]}}\n",
                vip / 250,
                1 + vip % 250
            );
        }
        for k in 0..policies_per_ns {
            out.push_str(&policy(n, k, 0));
        }
    }
    out
}

fn policy(namespace: usize, k: usize, generation: usize) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{k}, namespace: ns-{namespace}}}\nspec: {{selector: {{matchLabels: {{app: svc-{k}}}}}, action: ALLOW, rules: [{{from: [{{source: {{principals: [cluster.local/ns/ns-{namespace}/sa/caller-{generation}]}}}}]}}]}}\n"
    )
}

/// What one simulated client saw: (type, resource names, resource bytes, when).
type Seen = (String, Vec<String>, u64, Instant);

/// Runs the benchmark with the `bowline` binary at `binary`.
pub async fn run(binary: &Path, scale: Scale) -> Result<ControlPlaneBenchReport, String> {
    let dir = tempfile_dir()?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config).map_err(|e| e.to_string())?;
    std::fs::write(config.join("mesh.yaml"), generate(&scale)).map_err(|e| e.to_string())?;
    let port = |_: ()| -> Result<u16, String> {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    };
    let (xds_port, tls_port, http_port, api_port) = (port(())?, port(())?, port(())?, port(())?);
    let started = Instant::now();
    // The control plane logs what BOWLINE_LOG asks (warnings by default).
    let log = std::env::var("BOWLINE_LOG").unwrap_or_else(|_| "warn".into());
    let child = std::process::Command::new(binary)
        .args(["--log", &log, "control-plane", "--state-dir"])
        .arg(dir.join("state"))
        .arg("-f")
        .arg(&config)
        .args(["--xds-plaintext-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--xds-addr", &format!("127.0.0.1:{tls_port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
        .args(["--debounce-ms", "5"])
        .spawn()
        .map_err(|e| format!("starting the control plane: {e}"))?;
    let guard = KillOnDrop(child, dir.clone());
    let http = format!("http://127.0.0.1:{http_port}");
    loop {
        if matches!(
            lab::client::http("GET", &format!("{http}/ready"), None).await,
            Ok((200, _))
        ) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the control plane did not start within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let token =
        lab::client::read_token(&dir.join("state").join(control_plane::operator_token::FILE))?;
    let api = format!("http://127.0.0.1:{api_port}");

    // All clients at once.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, Seen)>();
    let url = format!("http://127.0.0.1:{xds_port}");
    let sync_start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..scale.clients {
        tasks.push(tokio::spawn(client(id, url.clone(), seen_tx.clone())));
    }
    let mut synced = vec![0u8; scale.clients];
    let mut full_bytes = vec![0u64; scale.clients];
    let mut done = 0;
    while done < scale.clients {
        let (id, (_, _, bytes, _)) = tokio::time::timeout(Duration::from_secs(120), seen_rx.recv())
            .await
            .map_err(|_| "clients did not sync within 120 s".to_owned())?
            .ok_or("clients stopped")?;
        synced[id] += 1;
        full_bytes[id] += bytes;
        if synced[id] == 2 {
            done += 1;
        }
    }
    let full_sync_ms = sync_start.elapsed().as_secs_f64() * 1e3;

    // Changes, one at a time: a policy's principals, or a pod's version label.
    let mut latencies = Vec::new();
    let mut bytes = Vec::new();
    for u in 0..scale.updates {
        let ns = u % scale.namespaces;
        let (doc, name) = if u % 2 == 0 {
            (policy(ns, 0, u + 1), format!("ns-{ns}/allow-0"))
        } else {
            (
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-0, namespace: ns-{ns}, labels: {{app: svc-0, version: v{}}}}}\nspec: {{nodeName: node-{}, serviceAccountName: sa-0}}\nstatus: {{podIP: 10.{}.{}.1}}\n",
                    u + 2,
                    (ns * (scale.workloads / scale.namespaces)) % scale.clients,
                    1 + ns / 250,
                    ns % 250
                ),
                format!("Kubernetes//Pod/ns-{ns}/pod-0"),
            )
        };
        let start = Instant::now();
        let (status, answer) = lab::client::request(
            None,
            "POST",
            &format!("{api}/api/apply"),
            Some(doc),
            Some(&token),
        )
        .await?;
        if status != 200 {
            return Err(format!("apply refused: {answer}"));
        }
        let mut have = vec![false; scale.clients];
        let mut count = 0;
        let mut last = start;
        while count < scale.clients {
            let (id, (_, names, size, at)) =
                tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
                    .await
                    .map_err(|_| format!("update {u} did not reach every client within 30 s"))?
                    .ok_or("clients stopped")?;
            if names.contains(&name) && !have[id] {
                have[id] = true;
                count += 1;
                last = last.max(at);
                bytes.push(size as f64);
            }
        }
        latencies.push((last - start).as_secs_f64() * 1e3);
    }
    let (rss, _) = crate::procfs::usage(guard.0.id()).map_err(|e| e.to_string())?;
    for task in tasks {
        task.abort();
    }
    drop(guard);
    Ok(ControlPlaneBenchReport {
        workloads: scale.workloads,
        services: scale.services,
        policies: scale.policies,
        clients: scale.clients,
        startup_ms,
        full_sync_ms,
        full_sync_bytes_per_client: full_bytes.iter().sum::<u64>() / scale.clients as u64,
        update_p50_ms: median(&mut latencies.clone()),
        update_p99_ms: percentile(&mut latencies, 0.99),
        bytes_per_update: bytes.iter().sum::<f64>() / bytes.len().max(1) as f64,
        control_plane_peak_rss_kb: rss,
    })
}

/// One simulated ztunnel: wildcard on both types, ACKs everything, reports what it got.
async fn client(id: usize, url: String, seen: mpsc::UnboundedSender<(usize, Seen)>) {
    let node = xds::core::Node {
        id: format!("ztunnel~127.0.0.1~ztunnel-{id}.istio-system~istio-system.svc.cluster.local"),
        ..Default::default()
    };
    let types = [xds::ADDRESS_TYPE_URL, xds::AUTHORIZATION_TYPE_URL]
        .map(|t| (t.to_owned(), Default::default()))
        .to_vec();
    let Ok(mut stream) = AdsStream::open(&url, None, node, types).await else {
        return;
    };
    while let Ok(Some(response)) = stream.next().await {
        let at = Instant::now();
        let bytes = response
            .resources
            .iter()
            .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len() as u64))
            .sum();
        let names = response.resources.iter().map(|r| r.name.clone()).collect();
        let _ = stream.answer(&response, None).await;
        let _ = seen.send((id, (response.type_url, names, bytes, at)));
    }
}

struct KillOnDrop(std::process::Child, std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("bowline-bench-cp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
