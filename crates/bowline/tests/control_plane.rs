//! The control plane end to end: a `bowline control-plane` process, a ztunnel that takes
//! its state over TLS xDS and its certificates from the CA service, pods in namespaces.
//! A policy applied with `bowline apply` is enforced without restarting anything; while
//! the control plane restarts, the ztunnel keeps serving, then resyncs. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ztunnel/tests/support/mesh.rs"]
mod mesh;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mesh::{Mesh, call, closes_soon, greeted, refused};
use test_support::root_or_skip;

const BOWLINE: &str = env!("CARGO_BIN_EXE_bowline");

/// The shop on `node-a`: `frontend-0`, `ratings-0`, `reviews-0` (named port `http`) and
/// the `reviews` service.
fn shop() -> String {
    use test_support::fixtures::{self, Container, Pod, Port};
    fixtures::documents(&[
        &fixtures::shop_namespace(),
        &Pod::new("frontend-0", "shop")
            .label("app", "frontend")
            .node("node-a")
            .service_account("frontend")
            .ip("10.1.0.2"),
        &fixtures::ratings_pod()
            .label("app", "ratings")
            .node("node-a")
            .ip("10.3.0.2"),
        &fixtures::reviews_pod()
            .container(Container::new("app").port("http", 8080))
            .ip("10.2.0.2"),
        &fixtures::reviews_service().ports([Port::new(9080).name("http").target("http")]),
    ])
}

const DENY_FRONTEND: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
"#;

/// A child process killed (by its PID) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that is free now and stays out of the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default), so that no outgoing
/// connection of a test running in parallel can take it before the control plane binds
/// it — or rebinds it after the restart.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let (low, high) = (20000u32, 32000u32);
    for _ in 0..1000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = (low + (hasher.finish() % u64::from(high - low)) as u32) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

struct Ports {
    plaintext: u16,
    tls: u16,
    http: u16,
    api: u16,
}

impl Ports {
    /// A free port for each of the control plane's listeners.
    fn free() -> Self {
        Self {
            plaintext: free_port(),
            tls: free_port(),
            http: free_port(),
            api: free_port(),
        }
    }
}

/// The operator token the control plane in `dir` made (`<state-dir>/operator-token`).
fn operator_token_file(dir: &Path) -> String {
    dir.join("state/operator-token").display().to_string()
}

/// A GET to the management API with the operator token.
async fn api_get(dir: &Path, url: &str) -> Result<(u16, String), String> {
    let token = lab::client::read_token(Path::new(&operator_token_file(dir)))?;
    lab::client::request(None, "GET", url, None, Some(&token)).await
}

async fn control_plane(dir: &Path, ports: &Ports, log: &str) -> Process {
    let child = Command::new(BOWLINE)
        .args(["--log", "info", "control-plane", "--state-dir"])
        .arg(dir.join("state"))
        .arg("-f")
        .arg(dir.join("config"))
        .args([
            "--xds-plaintext-addr",
            &format!("127.0.0.1:{}", ports.plaintext),
        ])
        .args(["--xds-addr", &format!("127.0.0.1:{}", ports.tls)])
        .args(["--http-addr", &format!("127.0.0.1:{}", ports.http)])
        .args(["--api-addr", &format!("127.0.0.1:{}", ports.api)])
        .args(["--tls-name", "127.0.0.1"])
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let process = Process(child);
    let ready = format!("http://127.0.0.1:{}/ready", ports.http);
    for _ in 0..100 {
        if matches!(lab::client::http("GET", &ready, None).await, Ok((200, _))) {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "control plane did not start: {}",
        std::fs::read_to_string(dir.join(log)).unwrap_or_default()
    );
}

fn bowline(args: &[&str], files: &[&Path]) -> String {
    let mut command = Command::new(BOWLINE);
    command.args(args);
    for f in files {
        command.arg("-f").arg(f);
    }
    let out = command.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "bowline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_policy_is_enforced_live_and_ztunnel_rides_out_a_control_plane_restart() {
    if !root_or_skip(
        "applied_policy_is_enforced_live_and_ztunnel_rides_out_a_control_plane_restart",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/shop.yaml"), shop()).unwrap();
    let ports = Ports::free();
    let cp = control_plane(dir.path(), &ports, "cp.log").await;
    let state = dir.path().join("state");
    let token = bowline(
        &[
            "control-plane",
            "token",
            "--node",
            "node-a",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    let token_file = dir.path().join("node-a.token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let root = std::fs::read_to_string(state.join("ca/root-cert.pem")).unwrap();
    let url = format!("https://127.0.0.1:{}", ports.tls);
    // The test plays the node agent, so it also reports what it captured, as the agent
    // does: only then does the control plane advertise the pods as HBONE.
    let reporter = cni::report::Reporter::new(cni::report::ReportConfig {
        node_name: "node-a".into(),
        url: url.clone(),
        root_pem: Some(root.clone()),
        token_file: token_file.clone(),
    })
    .unwrap();

    let ca = ztunnel::ca_client::CaClient::new(&url, &root, token_file).unwrap();
    let manager =
        identity::CertificateManager::new(Arc::new(ca), identity::ManagerConfig::default());
    let xds = ztunnel::state::xds_client::XdsConfig {
        url: url.clone(),
        root_pem: Some(root),
        node_name: "node-a".into(),
        instance_ip: "127.0.0.1".into(),
    };
    let mut mesh = Mesh::start_with_control_plane(xds, manager).await;
    let frontend = mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    let reviews = mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    let ratings = mesh.pod("shop", "ratings-0", "ratings", "10.3.0.2");
    mesh.app(reviews, 8080).await;
    for pod in [frontend, reviews, ratings] {
        mesh.enrol(pod).await.unwrap();
    }
    mesh.agent.snapshot_sent().await.unwrap();
    let captured = ["frontend-0", "reviews-0", "ratings-0"]
        .map(|pod| format!("Kubernetes//Pod/shop/{pod}"))
        .into();
    assert_eq!(reporter.report(&captured).await.unwrap(), 3);
    let vip: SocketAddr = "10.96.0.10:9080".parse().unwrap();

    // Config from xDS, certificates from the CA service: the call is mutual TLS.
    eventually_async("a first call through the mesh", || async {
        match mesh.dial(Some(frontend), vip).await {
            Ok(tcp) => call(tcp, 10_000).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    let tcp = mesh.dial(Some(frontend), vip).await.unwrap();
    assert_eq!(call(tcp, 100_000).await.unwrap().to_string(), "10.1.0.2");
    let dump_url = format!(
        "http://127.0.0.1:{}/debug/config_dump?proxy=node-a",
        ports.api
    );
    let dump = api_get(dir.path(), &dump_url).await.unwrap();
    assert_eq!(dump.0, 200);
    assert!(
        dump.1.contains("Kubernetes//Pod/shop/reviews-0") && dump.1.contains("10.96.0.10"),
        "{}",
        dump.1
    );
    // Every pod reported captured has been sent to ztunnel as HBONE.
    eventually_async("the captured pods sent as HBONE", || async {
        let Ok((200, body)) = api_get(dir.path(), &dump_url).await else {
            return false;
        };
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        let workloads = dump["clients"][0]["workloads"].as_array().cloned();
        workloads.is_some_and(|w| {
            // 1 = TunnelProtocol::Hbone.
            w.len() == 3 && w.iter().all(|w| w["tunnel_protocol"] == 1)
        })
    })
    .await;

    // `bowline apply`: enforced without restarting anything, also on a live connection.
    let (mut live, _) = greeted(&mesh, frontend, vip).await;
    let policy = dir.path().join("deny.yaml");
    std::fs::write(&policy, DENY_FRONTEND).unwrap();
    let control = format!("http://127.0.0.1:{}", ports.api);
    let operator_token = operator_token_file(dir.path());
    let dry = bowline(
        &[
            "apply",
            "--dry-run",
            "--control-plane",
            &control,
            "--token-file",
            &operator_token,
        ],
        &[&policy],
    );
    assert_eq!(
        dry.trim(),
        "AuthorizationPolicy shop/deny-frontend created (dry run)"
    );
    let out = bowline(
        &[
            "apply",
            "--control-plane",
            &control,
            "--token-file",
            &operator_token,
        ],
        &[&policy],
    );
    assert_eq!(out.trim(), "AuthorizationPolicy shop/deny-frontend created");
    assert!(
        closes_soon(&mut live).await,
        "the live connection became forbidden"
    );
    eventually_async("frontend refused", || refused(&mesh, frontend, vip)).await;
    let tcp = mesh.dial(Some(ratings), vip).await.unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap().to_string(), "10.3.0.2");

    // The control plane goes away: ztunnel keeps serving the last good state.
    let mut cp = cp;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(cp.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    cp.0.wait().unwrap();
    let tcp = mesh.dial(Some(ratings), vip).await.unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap().to_string(), "10.3.0.2");
    assert!(
        refused(&mesh, frontend, vip).await,
        "the policy stays in force"
    );

    // It comes back with what was applied; ztunnel resyncs and follows new changes.
    let _cp = control_plane(dir.path(), &ports, "cp-2.log").await;
    let out = bowline(
        &[
            "delete",
            "--control-plane",
            &control,
            "--token-file",
            &operator_token,
        ],
        &[&policy],
    );
    assert_eq!(out.trim(), "AuthorizationPolicy shop/deny-frontend deleted");
    eventually_async("frontend allowed again after the restart", || async {
        match mesh.dial(Some(frontend), vip).await {
            Ok(tcp) => call(tcp, 1000).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn apply_refuses_a_bad_document_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/shop.yaml"), shop()).unwrap();
    let ports = Ports::free();
    let _cp = control_plane(dir.path(), &ports, "cp.log").await;
    let control = format!("http://127.0.0.1:{}", ports.api);
    let operator_token = operator_token_file(dir.path());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "{DENY_FRONTEND}---\n{}",
            DENY_FRONTEND
                .replace("deny-frontend", "other")
                .replace("action: DENY", "action: AUDIT")
        ),
    )
    .unwrap();
    let out = Command::new(BOWLINE)
        .args([
            "apply",
            "--control-plane",
            &control,
            "--token-file",
            &operator_token,
            "-f",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "document 2 (AuthorizationPolicy shop/other): spec.action: AUDIT is not supported"
        ),
        "{stderr}"
    );
    let config = api_get(dir.path(), &format!("{control}/debug/config"))
        .await
        .unwrap()
        .1;
    assert!(
        !config.contains("deny-frontend"),
        "the good document was not applied either"
    );
}

#[tokio::test]
async fn a_config_file_logs_what_it_holds_that_is_not_in_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let extra = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {mode: fast}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky, namespace: shop}\nspec: {selector: {app: reviews}, ports: [{port: 80}], sessionAffinity: ClientIP}\n";
    std::fs::write(
        dir.path().join("config/shop.yaml"),
        format!("{}{extra}", shop()),
    )
    .unwrap();
    let ports = Ports::free();
    let _cp = control_plane(dir.path(), &ports, "cp.log").await;
    let log = || std::fs::read_to_string(dir.path().join("cp.log")).unwrap_or_default();
    eventually_async("the notes in the log", || async {
        let log = log();
        log.contains("not used by the mesh (accepted, not kept): ConfigMap shop/settings")
            && log.contains("accepted without effect: sessionAffinity ClientIP")
    })
    .await;
    assert!(
        log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("sessionAffinity")),
        "{}",
        log()
    );
}
