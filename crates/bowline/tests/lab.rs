//! The one-host lab end to end, through the `bowline` binary: `up`, `exec`, `apply`,
//! `status`, `down`. Each test has its own lab name and state directory, and removes its
//! lab even when it fails — except the tests that only look at the demo lab, which share
//! one ([`shared_demo_lab`]). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::root_or_skip;

#[path = "lab/ingress.rs"]
mod ingress;
#[path = "lab/services.rs"]
mod services;
#[path = "lab/traffic.rs"]
mod traffic;
#[path = "lab/workloads.rs"]
mod workloads;

const BOWLINE: &str = env!("CARGO_BIN_EXE_bowline");

/// Namespaces `shop` (enrolled) and `plain`; `shop/client` (a shell) and
/// `shop/neighbour` on node-1, `shop/server` and `plain/outsider` on `node_2`, each
/// app an echo server on 8080 behind a service on port 80.
fn mesh_with(node_2: &str) -> String {
    use test_support::fixtures::{self, Container, Namespace, Pod, Port, Service};
    let app = |name: &str, namespace: &str, node: &str| {
        Pod::new(name, namespace)
            .label("app", name)
            .node(node)
            .container(Container::echo(8080))
    };
    let service = |name: &str, namespace: &str| {
        Service::new(name, namespace)
            .selector("app", name)
            .port(Port::new(80).target("8080"))
    };
    fixtures::documents(&[
        &fixtures::shop_namespace(),
        &Namespace::new("plain"),
        &Pod::new("client", "shop")
            .node("node-1")
            .container(Container::new("shell").command(&["sleep", "infinity"])),
        &app("server", "shop", node_2),
        &app("neighbour", "shop", "node-1"),
        &app("outsider", "plain", node_2),
        &service("server", "shop"),
        &service("neighbour", "shop"),
        &service("outsider", "plain"),
    ])
}

/// [`mesh_with`] its second node `node-2`.
fn mesh() -> String {
    mesh_with("node-2")
}

/// A lab in its own state directory, removed (`bowline down`) when dropped.
struct Lab {
    name: String,
    state: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.bowline(&["down", "--name", &self.name]);
    }
}

/// Enrols namespace `plain` in the ambient mesh.
const ENROL_PLAIN: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain, labels: {istio.io/dataplane-mode: ambient}}\n";

impl Lab {
    fn new(name: &str, manifest: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), manifest).unwrap();
        Self {
            name: name.into(),
            state: tempfile::tempdir().unwrap(),
            dir,
        }
    }

    /// A lab of `manifest`, up (asserted), and its `bowline status` right after.
    fn started(name: &str, manifest: &str) -> (Self, String) {
        let lab = Self::new(name, manifest);
        let out = lab.up();
        assert!(out.status.success(), "bowline up: {}", text(&out));
        let status = text(&lab.bowline(&["status", "--name", &lab.name]));
        (lab, status)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BOWLINE);
        command
            .args(args)
            .env("BOWLINE_STATE_DIR", self.state.path())
            .env("RUST_BACKTRACE", "0");
        command
    }

    fn bowline(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn up(&self) -> Output {
        self.up_with(&[])
    }

    /// `bowline up --detach` with `extra` arguments.
    fn up_with(&self, extra: &[&str]) -> Output {
        let manifests = self.dir.path().to_str().unwrap().to_owned();
        let mut args = vec!["up", "-f", &manifests, "--name", &self.name, "--detach"];
        args.extend_from_slice(extra);
        self.bowline(&args)
    }

    /// `bowline VERB --name LAB -f FILE` (`apply` or `delete`) on `FILE` in the lab's
    /// directory, writing `yaml` to it first when given.
    fn config(&self, verb: &str, file: &str, yaml: Option<&str>) -> Output {
        let path = self.dir.path().join(file);
        if let Some(yaml) = yaml {
            std::fs::write(&path, yaml).unwrap();
        }
        self.bowline(&[verb, "--name", &self.name, "-f", path.to_str().unwrap()])
    }

    /// Runs `bowline call URL` inside pod `pod`; returns (success, stdout).
    fn call(&self, pod: &str, url: &str) -> (bool, String) {
        let out = self.bowline(&[
            "exec", "--name", &self.name, pod, "--", "bowline", "call", url,
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn namespace(&self, kind: &str) -> String {
        format!("bl-{}-{kind}", self.name)
    }

    /// The operator token the lab's control plane made.
    fn operator_token(&self) -> String {
        let file = self
            .state
            .path()
            .join(&self.name)
            .join("control-plane/operator-token");
        std::fs::read_to_string(file).unwrap().trim().to_owned()
    }

    /// One HTTP request from inside namespace `ns` of the lab (`net` is the router, where
    /// the control plane runs); `Err` when the connection itself fails.
    fn request_from(
        &self,
        ns: &str,
        method: &str,
        url: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Result<(u16, String), String> {
        let namespace = netns::Namespace::existing(&self.namespace(ns));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(lab::client::request(
                Some(&namespace),
                method,
                url,
                body.map(str::to_owned),
                token,
            ))
    }

    /// A GET of the control plane's management API, as an operator.
    fn debug(&self, path: &str) -> serde_json::Value {
        let token = self.operator_token();
        let url = format!("http://127.0.0.1:15015{path}");
        let (status, body) = self
            .request_from("net", "GET", &url, None, Some(&token))
            .unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// The demo's own files (`examples/demo`, what `bowline up -f examples/demo` reads).
fn demo_files() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo")
}

/// A lab of the demo files, shared by the tests that leave it as they found it (named
/// `the_demo_lab_…`, so the harness runs them side by side); the last one to drop it
/// removes it.
fn shared_demo_lab() -> std::sync::Arc<Lab> {
    use std::sync::{Arc, Mutex, Weak};
    static SHARED: Mutex<Weak<Lab>> = Mutex::new(Weak::new());
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lab) = shared.upgrade() {
        return lab;
    }
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Unique to this process too: another run of these tests may share the host.
    let lab = Lab::new(&format!("demo{}{n}", std::process::id() % 100_000), "");
    std::fs::remove_file(lab.dir.path().join("mesh.yaml")).unwrap();
    for entry in std::fs::read_dir(demo_files()).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(entry.path(), lab.dir.path().join(entry.file_name())).unwrap();
        }
    }
    let lab = Arc::new(lab);
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    *shared = Arc::downgrade(&lab);
    lab
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A capture of every frame on any interface of a namespace, from [`sniff`] to
/// [`Sniffer::finish`].
struct Sniffer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Sniffer {
    /// Stops the capture and gives every frame seen, concatenated — also the ones still
    /// queued on the socket, so nothing sent before this call is missed.
    fn finish(self) -> Vec<u8> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Starts capturing every frame on any interface of namespace `ns`; returns once the
/// capture socket is open, so every frame sent after this call is seen.
fn sniff(ns: &str) -> Sniffer {
    use std::sync::atomic::{AtomicBool, Ordering};
    let ns = ns.to_owned();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (opened, open) = std::sync::mpsc::channel();
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(Path::new("/run/netns").join(&ns)).unwrap();
        netns::in_netns_blocking(std::os::fd::AsFd::as_fd(&file), "sniffer", move || {
            use std::io::Read;
            // ETH_P_ALL in network byte order.
            let socket = socket2::Socket::new(
                socket2::Domain::PACKET,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(0x0003u16.to_be() as i32)),
            )
            .unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            opened.send(()).unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            // Once told to stop, read what is queued (without waiting) and end.
            let mut draining = false;
            loop {
                match (&socket).read(&mut buf) {
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(_) if draining => break,
                    Err(_) => {}
                }
                if !draining && stopping.load(Ordering::SeqCst) {
                    draining = true;
                    socket.set_nonblocking(true).unwrap();
                }
            }
            seen
        })
        .unwrap()
    });
    open.recv().expect("the sniffer opened its socket");
    Sniffer { stop, thread }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plaintext_never_leaves_an_enrolled_pod_and_callers_keep_their_address() {
    if !root_or_skip("plaintext_never_leaves_an_enrolled_pod_and_callers_keep_their_address") {
        return;
    }
    let (lab, status) = Lab::started("t5wire", &mesh());
    assert!(
        status.contains("shop/client") && status.contains("captured (in mesh)"),
        "{status}"
    );
    assert!(
        status.contains("plain/outsider") && status.contains("not captured"),
        "{status}"
    );

    // Cross-node, by service name through the DNS proxy: the server sees the client's
    // own address, and on the wire between them there are TLS records, never the token.
    let wire = sniff(&lab.namespace("net"));
    let token = "secret-token-5f1d";
    let (ok, body) = lab.call("shop/client", &format!("http://server.shop/{token}"));
    assert!(ok, "{body}");
    let seen = wire.finish();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let client_ip = answer["peer"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        client_ip.starts_with("10.10.0."),
        "the server saw {client_ip}"
    );
    assert_eq!(answer["path"], format!("/{token}"));
    assert!(
        !contains(&seen, token.as_bytes()),
        "the token crossed the wire in plaintext"
    );
    assert!(
        contains(&seen, &[0x17, 0x03, 0x03]),
        "TLS application data records on the wire"
    );

    // Control: to a pod outside the mesh the same call is plaintext on the wire.
    let wire = sniff(&lab.namespace("net"));
    let (ok, body) = lab.call("shop/client", &format!("http://outsider.plain/{token}"));
    assert!(ok, "{body}");
    assert!(
        contains(&wire.finish(), token.as_bytes()),
        "control: plaintext to a non-enrolled pod"
    );

    // Same node, by short name and by VIP-backed name.
    let (ok, body) = lab.call("shop/client", "http://neighbour/");
    assert!(ok, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["pod"], "neighbour");
    assert!(answer["peer"].as_str().unwrap().starts_with(&client_ip));

    // ztunnel's metrics report it as mutual TLS.
    let metrics = lab.bowline(&[
        "exec",
        "--name",
        &lab.name,
        "node/node-2",
        "--",
        "bowline",
        "call",
        "http://127.0.0.1:15020/metrics",
    ]);
    assert!(
        String::from_utf8_lossy(&metrics.stdout)
            .contains("connection_security_policy=\"mutual_tls\""),
        "{}",
        text(&metrics)
    );
}

#[test]
fn a_namespace_is_enrolled_live_and_policies_apply_without_restarts_l7_ones_failing_closed() {
    if !root_or_skip(
        "a_namespace_is_enrolled_live_and_policies_apply_without_restarts_l7_ones_failing_closed",
    ) {
        return;
    }
    let lab = Lab::new("t5live", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let pid_of = |status: &str| -> String {
        status
            .lines()
            .find(|l| l.contains("pod plain/outsider"))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap()
            .to_owned()
    };
    let before = text(&lab.bowline(&["status", "--name", &lab.name]));
    let out = lab.config("apply", "enrol.yaml", Some(ENROL_PLAIN));
    assert_eq!(text(&out).trim(), "Namespace plain configured");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let status = text(&lab.bowline(&["status", "--name", &lab.name]));
        if status
            .lines()
            .any(|l| l.contains("plain/outsider") && l.contains("captured (in mesh)"))
        {
            break status;
        }
        assert!(Instant::now() < deadline, "never captured: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        pid_of(&before),
        pid_of(&after),
        "the pod's process kept running"
    );
    let (ok, body) = lab.call("shop/client", "http://outsider.plain/");
    assert!(ok, "{body}");

    // A DENY for the client's identity, applied live.
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-default, namespace: shop}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/default]}}]}]\n";
    let out = lab.config("apply", "deny.yaml", Some(deny));
    assert!(out.status.success(), "{}", text(&out));
    let reachable = |want: bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lab.call("shop/client", "http://server.shop/").0 != want {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    reachable(false, "the policy was never enforced");
    let out = lab.config("delete", "deny.yaml", None);
    assert!(out.status.success(), "{}", text(&out));
    reachable(true, "the deleted policy still applies");

    // An L7 policy attached through a waypoint ("GET only" on the service): no waypoint
    // enforces it, so the service's traffic is refused rather than allowed, and apply
    // says why; deleting the policy lets the traffic through again.
    let l7 = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: get-only, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: server}]\n  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n";
    let out = lab.config("apply", "get-only.yaml", Some(l7));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("fail closed"),
        "apply says why: {}",
        text(&out)
    );
    reachable(
        false,
        "an L7 policy no waypoint enforces must not allow everything",
    );
    let out = lab.config("delete", "get-only.yaml", None);
    assert!(out.status.success(), "{}", text(&out));
    reachable(true, "the deleted L7 policy still refuses");
}

#[test]
fn down_after_a_killed_up_leaves_nothing_behind() {
    if !root_or_skip("down_after_a_killed_up_leaves_nothing_behind") {
        return;
    }
    let lab = Lab::new("t5kill", &mesh());
    let manifests = lab.dir.path().to_str().unwrap().to_owned();
    let mut up = lab
        .command(&["up", "-f", &manifests, "--name", &lab.name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = text(&lab.bowline(&["status", "--name", &lab.name]));
        if status.matches("running").count() >= 9 && status.contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "the lab never came up: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    let out = lab.bowline(&["down", "--name", &lab.name]);
    assert!(out.status.success(), "{}", text(&out));
    let prefix = format!("bl-{}-", lab.name);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !Path::new("/etc/netns")
            .join(format!("{prefix}p-shop-client"))
            .exists()
    );
    assert!(!lab.state.path().join(&lab.name).exists());
    let again = lab.bowline(&["down", "--name", &lab.name]);
    assert!(
        again.status.success() && text(&again).contains("nothing to do"),
        "{}",
        text(&again)
    );
}

#[test]
fn bad_manifests_are_refused_naming_the_problem_and_nothing_is_left() {
    if !root_or_skip("bad_manifests_are_refused_naming_the_problem_and_nothing_is_left") {
        return;
    }
    let mesh = mesh();
    let cases: [(&str, String, &str); 4] = [
        (
            "t5node",
            mesh_with("node-9"),
            "spec.nodeName \"node-9\" is not a node of this lab",
        ),
        (
            "t5dup",
            format!(
                "{mesh}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: shop}}\n"
            ),
            "Pod shop/client is defined twice",
        ),
        (
            "t5svc",
            format!(
                "{mesh}---\napiVersion: v1\nkind: Service\nmetadata: {{name: ghost, namespace: shop}}\nspec: {{selector: {{app: ghost}}, ports: [{{port: 80}}]}}\n"
            ),
            "Service shop/ghost selects no pod",
        ),
        (
            "t5yaml",
            format!(
                "{mesh}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: x, namespace: shop, labels: [oops}}\n"
            ),
            "document 10",
        ),
    ];
    for (name, manifest, expected) in cases {
        let lab = Lab::new(name, &manifest);
        let out = lab.up();
        assert!(!out.status.success(), "{name} should fail");
        assert!(text(&out).contains(expected), "{name}: {}", text(&out));
        let left = std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .any(|n| n.starts_with(&format!("bl-{name}-")));
        assert!(!left, "{name}: namespaces were left behind");
    }
}

/// The PID of the `bowline ztunnel` process (not its supervisor) in node `node`.
fn ztunnel_pid(lab: &Lab, node: &str) -> Option<i32> {
    component_pid(lab, node, "ztunnel", false)
}

/// The PID of component `component` (`ztunnel`, `cni`) of node `node`, or with
/// `supervisor` of the `bowline supervise` that keeps it running.
fn component_pid(lab: &Lab, node: &str, component: &str, supervisor: bool) -> Option<i32> {
    pid_in(
        &lab.namespace(&format!("node-{node}")),
        component,
        supervisor,
    )
}

/// The PID of the process in namespace `ns` whose command line holds `component`, the
/// `bowline supervise` keeping it running with `supervisor`, else the component itself.
fn pid_in(ns: &str, component: &str, supervisor: bool) -> Option<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&component.as_bytes())
                && args.iter().any(|a| *a == b"supervise") == supervisor
        })
}

/// A process stopped with SIGSTOP, continued when dropped.
struct Paused(i32);

impl Paused {
    fn new(pid: i32) -> Self {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Waits until `node`'s ztunnel runs under a PID other than `old` and says it is ready
/// (its configuration, its node agent's pods and their certificates in place).
fn wait_until_restarted_and_ready(lab: &Lab, node: &str, old: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let restarted = ztunnel_pid(lab, node).is_some_and(|p| p != old);
        if restarted && node_get(lab, node, "http://127.0.0.1:15021/healthz/ready").0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the ztunnel of {node} did not come back ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

#[test]
fn a_killed_ztunnel_comes_back_and_serves_its_pods_without_restarting_them() {
    if !root_or_skip("a_killed_ztunnel_comes_back_and_serves_its_pods_without_restarting_them") {
        return;
    }
    let lab = Lab::new("t5zt", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let (ok, body) = lab.call("shop/client", "http://server.shop/");
    assert!(ok, "{body}");
    let client_pid = |status: &str| -> String {
        status
            .lines()
            .find(|l| l.contains("pod shop/client"))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap()
            .to_owned()
    };
    let before = client_pid(&text(&lab.bowline(&["status", "--name", &lab.name])));

    let old = ztunnel_pid(&lab, "node-1").expect("ztunnel of node-1 runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until_restarted_and_ready(&lab, "node-1", old);
    // Ready means serving: the first call after it works.
    let (ok, body) = lab.call("shop/client", "http://server.shop/");
    assert!(
        ok,
        "a call right after ztunnel was ready again failed: {body}"
    );
    let after = client_pid(&text(&lab.bowline(&["status", "--name", &lab.name])));
    assert_eq!(before, after, "the pod was not restarted");
    let agent_log =
        std::fs::read_to_string(lab.state.path().join(&lab.name).join("logs/cni-node-1.log"))
            .unwrap();
    assert!(
        agent_log.matches("ztunnel connected; replaying").count() >= 2,
        "the agent replayed its pods to the new ztunnel: {agent_log}"
    );
}

#[test]
fn a_pod_enrolled_while_its_node_agent_is_down_stays_reachable_and_joins_the_mesh_when_it_is_back()
{
    if !root_or_skip(
        "a_pod_enrolled_while_its_node_agent_is_down_stays_reachable_and_joins_the_mesh_when_it_is_back",
    ) {
        return;
    }
    let lab = Lab::new("t10cap", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));

    // node-2's agent goes down, and its supervisor is held so it does not bring it back.
    let supervisor = component_pid(&lab, "node-2", "cni", true).expect("node-2's agent supervisor");
    let paused = Paused::new(supervisor);
    let agent = component_pid(&lab, "node-2", "cni", false).expect("node-2's agent");
    signal(agent, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while component_pid(&lab, "node-2", "cni", false).is_some() {
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    // plain/outsider (on node-2) is enrolled live; the control plane tells the other
    // node's ztunnel so, but keeps it plaintext: nobody has captured it.
    let out = lab.config("apply", "enrol.yaml", Some(ENROL_PLAIN));
    assert_eq!(text(&out).trim(), "Namespace plain configured");
    let sent = || {
        let dump = lab.debug("/debug/config_dump?proxy=node-1");
        dump["clients"][0]["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == "outsider")
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outsider = sent();
        let enrolled = outsider["extensions"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "bowline.io/capture"));
        if enrolled {
            assert_eq!(
                outsider["tunnel_protocol"], 0,
                "NONE until captured: {outsider}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never sent as enrolled: {outsider}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(
        status.lines().any(|l| l.contains("plain/outsider")
            && l.contains(" enrolled ")
            && l.contains("waiting for capture")),
        "{status}"
    );
    // Mesh clients keep reaching it (in plaintext, as before the enrolment).
    for _ in 0..10 {
        let (ok, body) = lab.call("shop/client", "http://outsider.plain/");
        assert!(ok, "a call to the pod waiting for capture failed: {body}");
    }

    // The agent is back: it captures the pod, reports it, and the calls become mutual TLS.
    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = text(&lab.bowline(&["status", "--name", &lab.name]));
        if status
            .lines()
            .any(|l| l.contains("plain/outsider") && l.contains("captured (in mesh)"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never captured: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, body) = lab.call("shop/client", "http://outsider.plain/");
        assert!(ok, "a call after the capture failed: {body}");
        let metrics = lab.bowline(&[
            "exec",
            "--name",
            &lab.name,
            "node/node-2",
            "--",
            "bowline",
            "call",
            "http://127.0.0.1:15020/metrics",
        ]);
        let mtls = String::from_utf8_lossy(&metrics.stdout).lines().any(|l| {
            l.contains("destination_workload=\"outsider\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
        });
        if mtls {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls to the captured pod never arrived over mutual TLS: {}",
            text(&metrics)
        );
    }
}

/// `bowline ztunnel-config workloads` of `node`, by uid.
fn ztunnel_workloads(lab: &Lab, node: &str) -> serde_json::Value {
    let out = lab.bowline(&[
        "ztunnel-config",
        "workloads",
        "--node",
        node,
        "--name",
        &lab.name,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_demo_lab_is_unchanged_when_its_files_are_applied_again() {
    if !root_or_skip("the_demo_lab_is_unchanged_when_its_files_are_applied_again") {
        return;
    }
    let lab = shared_demo_lab();
    let before: Vec<serde_json::Value> = ["node-1", "node-2"]
        .iter()
        .map(|n| ztunnel_workloads(&lab, n))
        .collect();
    let version = || lab.debug("/debug/config")["version"].clone();
    let published = version();
    let demo = demo_files();
    let out = lab.bowline(&["apply", "--name", &lab.name, "-f", demo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 13, "every demo object: {stdout}");
    assert!(lines.iter().all(|l| l.ends_with(" unchanged")), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARNING"),
        "{}",
        text(&out)
    );

    // The apply published no new version, so nothing is on its way to the ztunnels: what
    // they hold can be compared at once.
    assert_eq!(
        version(),
        published,
        "an apply of nothing new published a version"
    );
    // The pods stay in the mesh: workloads, capture, mutual TLS on the wire.
    let after: Vec<serde_json::Value> = ["node-1", "node-2"]
        .iter()
        .map(|n| ztunnel_workloads(&lab, n))
        .collect();
    assert_eq!(before, after, "what the ztunnels hold");
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    for pod in [
        "shop/client",
        "shop/frontend-0",
        "shop/reviews-0",
        "shop/db-0",
    ] {
        assert!(
            status
                .lines()
                .any(|l| l.contains(pod) && l.contains("captured (in mesh)")),
            "{pod}: {status}"
        );
    }
    let wire = sniff(&lab.namespace("net"));
    let token = "still-secret-4c2e";
    let (ok, body) = lab.call("shop/client", &format!("http://reviews:9080/{token}"));
    assert!(ok, "{body}");
    let seen = wire.finish();
    assert!(!contains(&seen, token.as_bytes()), "plaintext on the wire");
    assert!(
        contains(&seen, &[0x17, 0x03, 0x03]),
        "TLS records on the wire"
    );
}

#[test]
fn the_demo_lab_warns_before_an_apply_takes_pods_out_of_the_mesh() {
    if !root_or_skip("the_demo_lab_warns_before_an_apply_takes_pods_out_of_the_mesh") {
        return;
    }
    let lab = shared_demo_lab();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unenrol-shop.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .unwrap();
    let out = lab.bowline(&[
        "apply",
        "--dry-run",
        "--name",
        &lab.name,
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Namespace shop configured (dry run)"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for pod in [
        "shop/client",
        "shop/db-0",
        "shop/frontend-0",
        "shop/reviews-0",
    ] {
        let line = format!(
            "WARNING: pod {pod} leaves the mesh: traffic to and from it will be plaintext (dry run)"
        );
        assert!(stderr.lines().any(|l| l == line), "{line}: {stderr}");
    }
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(
        status
            .lines()
            .any(|l| l.contains("shop/client") && l.contains("captured (in mesh)")),
        "a dry run changes nothing: {status}"
    );
}

#[test]
fn the_demo_lab_refuses_config_from_its_pods() {
    if !root_or_skip("the_demo_lab_refuses_config_from_its_pods") {
        return;
    }
    let lab = shared_demo_lab();
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: from-a-pod, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n";
    let pod = "p-shop-client";
    // The public port answers metrics and readiness only.
    let (status, body) = lab
        .request_from(pod, "GET", "http://10.255.0.1:15014/ready", None, None)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = lab
        .request_from(
            pod,
            "POST",
            "http://10.255.0.1:15014/api/apply",
            Some(policy),
            None,
        )
        .unwrap();
    assert_eq!(status, 404, "{body}");
    // The management port is on the router's loopback: a pod cannot reach it.
    for url in [
        "http://10.255.0.1:15015/api/apply",
        "http://127.0.0.1:15015/api/apply",
    ] {
        let answer = lab.request_from(pod, "POST", url, Some(policy), None);
        assert!(answer.is_err(), "{url}: {answer:?}");
    }
    // And whoever reaches it without the operator token is refused.
    let (status, body) = lab
        .request_from(
            "net",
            "POST",
            "http://127.0.0.1:15015/api/apply",
            Some(policy),
            None,
        )
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let config = lab.debug("/debug/config");
    assert!(
        !config.to_string().contains("from-a-pod"),
        "nothing was applied"
    );
}

/// GET `url` from inside node `node`'s namespace: (success, body).
fn node_get(lab: &Lab, node: &str, url: &str) -> (bool, String) {
    let out = lab.bowline(&[
        "exec",
        "--name",
        &lab.name,
        &format!("node/{node}"),
        "--",
        "bowline",
        "call",
        url,
    ]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn status_right_after_up_shows_every_component_ready_under_its_own_pid_and_secrets_are_private() {
    if !root_or_skip(
        "status_right_after_up_shows_every_component_ready_under_its_own_pid_and_secrets_are_private",
    ) {
        return;
    }
    let lab = Lab::new("t10stat", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    // What `up --detach` waited for is what `status` shows at once.
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    for node in ["node-1", "node-2"] {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(node) && l.contains("ztunnel"))
            .unwrap_or_else(|| panic!("no line for {node}: {status}"));
        assert!(line.ends_with("ztunnel ready"), "{status}");
    }
    assert!(
        !status.contains("NOT READY") && !status.contains("EXITED"),
        "{status}"
    );

    // A supervised component is shown under its own PID, with its supervisor's beside it.
    for (what, ns, component) in [
        ("ztunnel node-1", lab.namespace("node-node-1"), "ztunnel"),
        ("cni node-2", lab.namespace("node-node-2"), "cni"),
        ("control-plane", lab.namespace("net"), "control-plane"),
    ] {
        let own = pid_in(&ns, component, false).unwrap();
        let supervisor = pid_in(&ns, component, true).unwrap();
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no line for {what}: {status}"));
        let shown: Vec<&str> = line.split_whitespace().collect();
        let at = shown.iter().position(|w| *w == "pid").unwrap();
        assert_eq!(shown[at + 1], own.to_string(), "{line}");
        assert_eq!(shown[at + 3], format!("{supervisor})"), "{line}");
        assert!(line.ends_with("running"), "{line}");
    }

    // Node tokens, configuration snapshots and cached certificates are the owner's only.
    let nodes = lab.state.path().join(&lab.name).join("nodes");
    assert_eq!(mode(&nodes), 0o700);
    for node in ["node-1", "node-2"] {
        assert_eq!(
            mode(&nodes.join(format!("{node}.token"))),
            0o600,
            "{node} token"
        );
        let snapshot = nodes.join(format!("{node}.snapshot"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !snapshot.exists() {
            assert!(Instant::now() < deadline, "no snapshot file for {node}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(mode(&snapshot), 0o600, "{node} snapshot");
        let certs = nodes.join(format!("{node}-certs"));
        assert_eq!(mode(&certs), 0o700, "{node} certificate cache");
        let cached: Vec<_> = std::fs::read_dir(&certs).unwrap().flatten().collect();
        assert!(!cached.is_empty(), "{node} cached its pods' certificates");
        for file in cached {
            assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
        }
    }
    let cp = lab.state.path().join(&lab.name).join("control-plane");
    assert_eq!(mode(&cp.join("ca/root-key.pem")), 0o600, "CA key");
    assert_eq!(mode(&cp.join("node-token-key")), 0o600, "node token key");
}

#[test]
fn a_ztunnel_restarted_while_the_control_plane_is_away_serves_its_pods_from_its_snapshot() {
    if !root_or_skip(
        "a_ztunnel_restarted_while_the_control_plane_is_away_serves_its_pods_from_its_snapshot",
    ) {
        return;
    }
    let lab = Lab::new("t10snap", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let (ok, body) = lab.call("shop/client", "http://server.shop/");
    assert!(ok, "{body}");
    let snapshot = lab
        .state
        .path()
        .join(&lab.name)
        .join("nodes/node-1.snapshot");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "no snapshot file");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The control plane dies and stays away: its supervisor is held.
    let router = lab.namespace("net");
    let supervisor = pid_in(&router, "control-plane", true).expect("control plane supervisor");
    let paused = Paused::new(supervisor);
    let cp = pid_in(&router, "control-plane", false).expect("control plane");
    signal(cp, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_in(&router, "control-plane", false).is_some() {
        assert!(Instant::now() < deadline, "the control plane did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    // node-1's ztunnel is killed; its supervisor starts it again after a second.
    let old = ztunnel_pid(&lab, "node-1").expect("ztunnel of node-1 runs");
    signal(old, nix::sys::signal::Signal::SIGKILL);
    wait_until_restarted_and_ready(&lab, "node-1", old);
    // Ready without the control plane, from the snapshot: its pods are reachable through
    // the mesh at once, both ways — the client (node-1) calls out, the server (node-2)
    // calls in to neighbour (node-1).
    let log = || {
        std::fs::read_to_string(
            lab.state
                .path()
                .join(&lab.name)
                .join("logs/ztunnel-node-1.log"),
        )
        .unwrap_or_default()
    };
    let (ok, body) = lab.call("shop/client", "http://server.shop/");
    assert!(
        ok,
        "node-1's pods unreachable once its ztunnel was ready again: {body}\n{}",
        log()
    );
    let (ok, body) = lab.call("shop/server", "http://neighbour.shop/");
    assert!(
        ok,
        "neighbour unreachable once its ztunnel was ready again: {body}\n{}",
        log()
    );
    let (_, metrics) = node_get(&lab, "node-1", "http://127.0.0.1:15020/metrics");
    assert!(
        metrics.contains("connection_security_policy=\"mutual_tls\""),
        "mutual TLS after the restart: {metrics}"
    );
    assert!(metrics.contains("ztunnel_config_stale 1"), "{metrics}");
    let (ok, ready) = node_get(&lab, "node-1", "http://127.0.0.1:15021/healthz/ready");
    assert!(ok && ready.contains("stale"), "{ready}");
    let (_, dump) = node_get(&lab, "node-1", "http://127.0.0.1:15000/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["stale"], true);
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(status.contains("ztunnel ready (stale"), "{status}");

    // The control plane comes back: its answer replaces the snapshot, stale no more.
    drop(paused);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, dump) = node_get(&lab, "node-1", "http://127.0.0.1:15000/config_dump");
        let stale = serde_json::from_str::<serde_json::Value>(&dump)
            .map(|d| d["stale"].clone())
            .unwrap_or_default();
        if stale == false {
            break;
        }
        assert!(Instant::now() < deadline, "still stale: {dump}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = node_get(&lab, "node-1", "http://127.0.0.1:15020/metrics");
    assert!(metrics.contains("ztunnel_config_stale 0"), "{metrics}");
    let (ok, body) = lab.call("shop/client", "http://server.shop/");
    assert!(ok, "{body}");
}

/// [`mesh`] with waypoint `shop/waypoint` (a Gateway: the lab deploys it), bound to
/// service `server`; `neighbour` is not bound.
fn mesh_with_waypoint() -> String {
    use test_support::fixtures::{Port, Service};
    let bound = Service::new("server", "shop")
        .label("istio.io/use-waypoint", "waypoint")
        .selector("app", "server")
        .port(Port::new(80).target("8080"));
    mesh().replace(
        &Service::new("server", "shop")
            .selector("app", "server")
            .port(Port::new(80).target("8080"))
            .to_string(),
        &bound.to_string(),
    ) + "\n---\n"
        + WAYPOINT_GATEWAY
        + "\n"
}

/// The address `bowline status` shows for pod `object` (`vip`: false) or service `object`
/// (`vip`: true; services have VIPs of 10.96.0.0/16, and a pod and its service may share
/// a name).
fn address_in(status: &str, object: &str, vip: bool) -> String {
    status
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(object))
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|ip| ip.starts_with("10.96.") == vip)
        .unwrap_or_else(|| panic!("{object} in {status}"))
        .to_owned()
}

/// The waypoint Gateway of [`mesh_with_waypoint`].
const WAYPOINT_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]";

/// `istio_requests_total` of the waypoint (reporter `waypoint`) for `response_code`.
fn waypoint_requests(lab: &Lab, response_code: &str) -> u64 {
    waypoint_requests_with(
        lab,
        &[
            "destination_service_name=\"server\"",
            &format!("response_code=\"{response_code}\""),
        ],
    )
}

/// `istio_requests_total` of the waypoint (reporter `waypoint`) on lines with all of
/// `labels`.
fn waypoint_requests_with(lab: &Lab, labels: &[&str]) -> u64 {
    let (status, body) = lab
        .request_from(
            "p-shop-waypoint-0",
            "GET",
            "http://127.0.0.1:15020/stats/prometheus",
            None,
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| l.contains("reporter=\"waypoint\""))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_waypoint_from_a_gateway_enforces_l7_policy_and_is_the_only_way_to_the_targeted_pods() {
    if !root_or_skip(
        "a_waypoint_from_a_gateway_enforces_l7_policy_and_is_the_only_way_to_the_targeted_pods",
    ) {
        return;
    }
    let (lab, status) = Lab::started("t5wp", &mesh_with_waypoint());
    let address = |object: &str, vip: bool| address_in(&status, object, vip);
    let (waypoint_ip, server_ip) = (
        address("shop/waypoint-0", false),
        address("shop/server", false),
    );
    let (server, neighbour) = (
        address("shop/server", true),
        address("shop/neighbour", true),
    );
    let client = "p-shop-client";
    let call = |method: &str, url: &str| lab.request_from(client, method, url, None, None);

    // The bound service's traffic passes the waypoint (the server sees it as the peer, and
    // its request metrics move); the unbound one's does not.
    let before = waypoint_requests(&lab, "200");
    let (code, body) = call("GET", &format!("http://{server}:80/")).unwrap();
    assert_eq!(code, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        echoed["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{waypoint_ip}:")),
        "the server is called by the waypoint: {body}"
    );
    assert!(
        waypoint_requests(&lab, "200") > before,
        "waypoint metrics moved"
    );
    let (code, body) = call("GET", &format!("http://{neighbour}:80/")).unwrap();
    assert_eq!(code, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        !echoed["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{waypoint_ip}:")),
        "an unbound service is called directly: {body}"
    );

    // L7 policy through the waypoint: GET only, and never /admin.
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: get-only, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: server}]\n  action: ALLOW\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: shop}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]\n";
    let out = lab.config("apply", "l7.yaml", Some(policy));
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = call("POST", &format!("http://{server}:80/")).unwrap();
        if code == 403 {
            assert_eq!(body, "RBAC: access denied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "POST still answered {code}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call("GET", &format!("http://{server}:80/")).unwrap().0, 200);
    let (code, body) = call("GET", &format!("http://{server}:80/admin/users")).unwrap();
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert!(waypoint_requests(&lab, "403") >= 2);
    // Around the waypoint, straight to the pod: refused, whatever the method.
    assert!(
        call("GET", &format!("http://{server_ip}:8080/")).is_err(),
        "a targeted pod accepts only its waypoint"
    );

    // The Gateway deleted: nothing enforces the policy, so the service is refused (fail
    // closed) rather than opened, and apply says why.
    let gateway = lab.config("delete", "gateway.yaml", Some(WAYPOINT_GATEWAY));
    assert!(gateway.status.success(), "{}", text(&gateway));
    let deadline = Instant::now() + Duration::from_secs(10);
    while call("GET", &format!("http://{server}:80/")).is_ok_and(|(code, _)| code == 200) {
        assert!(
            Instant::now() < deadline,
            "still served without its waypoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = lab.config("apply", "l7.yaml", None);
    assert!(
        text(&again).contains("fail closed"),
        "apply says why: {}",
        text(&again)
    );
}

/// [`mesh_with_waypoint`] plus `server-v2` (a second version of `server`, its own
/// service) and `flaky`: a service bound to the waypoint with one live and one dead
/// replica (its pod runs no server).
fn mesh_for_routes() -> String {
    use test_support::fixtures::{self, Container, Pod, Port, Service};
    let service = |name: &str| {
        Service::new(name, "shop")
            .selector("app", name)
            .port(Port::new(80).target("8080"))
    };
    mesh_with_waypoint()
        + "\n---\n"
        + &fixtures::documents(&[
            &Pod::new("server-v2", "shop")
                .label("app", "server-v2")
                .node("node-2")
                .container(Container::echo(8080)),
            &service("server-v2"),
            &Pod::new("flaky-live", "shop")
                .label("app", "flaky")
                .node("node-2")
                .container(Container::echo(8080)),
            &Pod::new("flaky-dead", "shop")
                .label("app", "flaky")
                .node("node-1")
                .container(Container::new("idle").command(&["sleep", "infinity"])),
            &service("flaky").label("istio.io/use-waypoint", "waypoint"),
            // The mirror's sink: the test serves in its namespace.
            &Pod::new("mirror-sink", "shop")
                .label("app", "mirror-sink")
                .node("node-2")
                .container(Container::new("idle").command(&["sleep", "infinity"])),
            &service("mirror-sink"),
        ])
}

/// Routes on `server`: a header match, a query match, a redirect, a rewrite with a header,
/// a mirror of POSTs, a timeout, a 90/10 split; and retries on `flaky`.
const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: server, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: server}]
  rules:
    - matches: [{headers: [{name: x-version, value: v2}]}]
      backendRefs: [{name: server-v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
    - matches: [{path: {type: PathPrefix, value: /rewrite}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /rewritten}}
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-routed, value: \"yes\"}]}
      backendRefs: [{name: server, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /mirrored}, method: POST}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: mirror-sink, port: 80}}
      backendRefs: [{name: server, port: 80}]
    - matches: [{queryParams: [{name: canary, value: \"1\"}]}]
      backendRefs: [{name: server-v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /delay}}]
      timeouts: {request: 300ms}
      backendRefs: [{name: server, port: 80}]
    - backendRefs:
        - {name: server, port: 80, weight: 90}
        - {name: server-v2, port: 80, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: flaky}]
  rules:
    - retry: {attempts: 2, codes: [503], backoff: 10ms}
      backendRefs: [{name: flaky, port: 80}]
";

#[test]
fn http_routes_through_the_waypoint_split_match_redirect_rewrite_time_out_and_retry() {
    if !root_or_skip(
        "http_routes_through_the_waypoint_split_match_redirect_rewrite_time_out_and_retry",
    ) {
        return;
    }
    // Users' files carry objects the mesh has no use for: taken, and said once.
    let settings = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {mode: fast}\n";
    let lab = Lab::new("t5rt", &format!("{}\n---\n{settings}", mesh_for_routes()));
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    assert!(
        text(&out).contains("not used by the mesh (accepted, not kept): ConfigMap shop/settings"),
        "{}",
        text(&out)
    );
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    // The mirror's sink, served by this test in the sink pod: what it saw, one line each.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel::<String>();
    let sink = runtime.block_on(listen_in(&lab, "p-shop-mirror-sink", 8080));
    runtime.spawn(record_requests(sink, seen_tx));
    let vip = |service: &str| address_in(&status, service, true);
    let (server, flaky) = (vip("shop/server"), vip("shop/flaky"));
    let call = |method: &str, path: &str, vip: &str| {
        lab.request_from(
            "p-shop-client",
            method,
            &format!("http://{vip}:80{path}"),
            None,
            None,
        )
        .unwrap()
    };
    let pod_of = |body: &str| -> String {
        let echoed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        echoed["pod"].as_str().unwrap_or("-").to_owned()
    };
    // Without a route, a dead replica fails about half the calls.
    let failed = (0..20)
        .filter(|_| call("GET", "/", &flaky).0 != 200)
        .count();
    assert!(failed > 0, "the dead replica is called without retries");

    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}}\n";
    let out = lab.config(
        "apply",
        "routes.yaml",
        Some(&format!("{ROUTES}---\n{policy}")),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("not used by the mesh (accepted, not kept): NetworkPolicy shop/deny-all"),
        "{}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while call("GET", "/old/x", &server).0 != 301 {
        assert!(Instant::now() < deadline, "routes never applied");
        std::thread::sleep(Duration::from_millis(100));
    }

    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    assert!(
        status.lines().any(|l| l.contains("HTTPRoute shop/server")
            && l.contains("Accepted=True ResolvedRefs=True; in force")),
        "{status}"
    );

    // 90/10 over 500 requests: v2 gets 50 ± 7 in expectation; allow five deviations.
    let mut v2 = 0;
    for _ in 0..500 {
        let (code, body) = call("GET", "/", &server);
        assert_eq!(code, 200, "{body}");
        if pod_of(&body) == "server-v2" {
            v2 += 1;
        }
    }
    assert!(
        (15..=90).contains(&v2),
        "server-v2 got {v2} of 500 (weight 10%)"
    );

    // A header match sends everything to v2.
    let out = lab.bowline(&[
        "exec",
        "--name",
        &lab.name,
        "shop/client",
        "--",
        "bowline",
        "call",
        "-H",
        "x-version: v2",
        &format!("http://{server}:80/"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pod_of(&String::from_utf8_lossy(&out.stdout)), "server-v2");

    // A rewrite with a header: the server sees the new path and the header.
    let (code, body) = call("GET", "/rewrite/abc?q=1", &server);
    assert_eq!(code, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/rewritten/abc?q=1", "{body}");
    assert_eq!(echoed["headers"]["x-routed"], "yes", "{body}");

    // A query match.
    let (code, body) = call("GET", "/?canary=1", &server);
    assert_eq!((code, pod_of(&body).as_str()), (200, "server-v2"), "{body}");

    // A mirrored POST: the caller gets the server's answer, the sink a copy with the body
    // and its host marked; a GET of the same path is not mirrored (the match is by method).
    let (code, body) = lab
        .request_from(
            "p-shop-client",
            "POST",
            &format!("http://{server}:80/mirrored/1"),
            Some("a body to copy"),
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let copy = seen
        .recv_timeout(Duration::from_secs(10))
        .expect("the mirror never saw the request");
    assert!(
        copy.starts_with("POST /mirrored/1 ")
            && copy.contains(&format!("host={server}-shadow:80"))
            && copy.ends_with("body=a body to copy"),
        "{copy}"
    );
    assert_eq!(call("GET", "/mirrored/2", &server).0, 200);
    assert!(
        seen.recv_timeout(Duration::from_millis(500)).is_err(),
        "a GET was mirrored"
    );

    // The timeout: a slow answer is 504, a quick one passes.
    let (code, body) = call("GET", "/delay/2000", &server);
    assert_eq!((code, body.as_str()), (504, "upstream request timeout"));
    assert_eq!(call("GET", "/delay/10", &server).0, 200);

    // Retries turn the dead replica's failures into answers from the live one.
    for _ in 0..20 {
        let (code, body) = call("GET", "/", &flaky);
        assert_eq!(code, 200, "retried: {body}");
        assert_eq!(pod_of(&body), "flaky-live");
    }
}

#[test]
fn a_waypoint_applied_live_is_deployed_bound_and_removed_with_its_gateway() {
    if !root_or_skip("a_waypoint_applied_live_is_deployed_bound_and_removed_with_its_gateway") {
        return;
    }
    let lab = Lab::new("t5wpa", &mesh());
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let out = lab.bowline(&[
        "waypoint",
        "apply",
        "-n",
        "plain",
        "--enroll-namespace",
        "--wait",
        "--lab",
        &lab.name,
    ]);
    assert!(out.status.success(), "waypoint apply: {}", text(&out));
    assert!(
        text(&out).contains("waypoint plain/waypoint is ready"),
        "{}",
        text(&out)
    );
    let out = lab.bowline(&[
        "waypoint", "status", "-n", "plain", "-o", "json", "--lab", &lab.name,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pods"][0]["ready"], true, "{status}");
    // The Gateway's status as the Gateway API shapes it: its Service's VIP, Programmed.
    assert_eq!(
        status["status"]["addresses"][0]["type"], "IPAddress",
        "{status}"
    );
    assert!(
        status["status"]["addresses"][0]["value"]
            .as_str()
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
        "{status}"
    );
    assert_eq!(
        status["status"]["conditions"],
        serde_json::json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "Programmed", "status": "True", "reason": "Programmed"},
        ]),
        "{status}"
    );
    assert_eq!(
        status["bound"],
        serde_json::json!(["Service plain/outsider"])
    );
    let waypoint_ip = status["pods"][0]["address"].as_str().unwrap().to_owned();
    // The bound service's traffic now passes the new waypoint.
    let (ok, body) = lab.call("shop/client", "http://outsider.plain/");
    assert!(ok, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        echoed["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{waypoint_ip}:")),
        "called through the waypoint: {body}"
    );
    // Applying it again is harmless; a different one needs --overwrite.
    let again = lab.bowline(&["waypoint", "apply", "-n", "plain", "--lab", &lab.name]);
    assert!(again.status.success(), "{}", text(&again));
    let other = lab.bowline(&[
        "waypoint", "apply", "-n", "plain", "--for", "all", "--lab", &lab.name,
    ]);
    assert!(
        !other.status.success() && text(&other).contains("--overwrite"),
        "{}",
        text(&other)
    );

    // Deleted: its pod and namespace go, and the service is called directly again.
    let out = lab.bowline(&[
        "waypoint", "delete", "-n", "plain", "waypoint", "--lab", &lab.name,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new("/run/netns")
        .join(lab.namespace("p-plain-waypoint-0"))
        .exists()
    {
        assert!(
            Instant::now() < deadline,
            "the waypoint's pod was never removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = text(&lab.bowline(&["waypoint", "list", "--lab", &lab.name]));
    assert!(!list.contains("plain"), "{list}");
    let (ok, body) = lab.call("shop/client", "http://outsider.plain/");
    assert!(ok, "{body}");
    assert!(
        !body.contains(&format!("\"peer\":\"{waypoint_ip}:")),
        "{body}"
    );
}

/// A TCP connection from inside lab namespace `ns` (`p-shop-client`…) to `addr`.
async fn connect_from(lab: &Lab, ns: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let std_tcp = netns::Namespace::existing(&lab.namespace(ns))
        .run(move || {
            let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            tcp.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(tcp)
        })
        .await
        .unwrap()
        .unwrap();
    tokio::net::TcpStream::from_std(std_tcp).unwrap()
}

/// The peak RSS (VmHWM, KiB) of the lab process recorded as `what`.
fn peak_rss_kib(lab: &Lab, what: &str) -> u64 {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.state.path().join(&lab.name).join("lab.json")).unwrap(),
    )
    .unwrap();
    let pid = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == what)
        .and_then(|p| p[1].as_u64())
        .unwrap_or_else(|| panic!("{what} in {state}"));
    // A supervised process: its child is the one that does the work.
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let pid = children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn the_waypoint_speaks_h2c_and_streams_a_gib_upload_in_bounded_memory() {
    if !root_or_skip("the_waypoint_speaks_h2c_and_streams_a_gib_upload_in_bounded_memory") {
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server (the first echo of the manifest) counts up to 2 GiB of request body.
    let manifest = mesh_with_waypoint().replacen(
        "[bowline, echo, --port, \"8080\"]",
        "[bowline, echo, --port, \"8080\", --max-body, \"2147483648\"]",
        1,
    );
    assert!(manifest.contains("--max-body"));
    let (lab, status) = Lab::started("t5h2", &manifest);
    let server: std::net::SocketAddr = format!("{}:80", address_in(&status, "shop/server", true))
        .parse()
        .unwrap();
    let waypoint_ip = address_in(&status, "shop/waypoint-0", false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // h2c with prior knowledge, through the waypoint, to an h2c server.
        let tcp = connect_from(&lab, "p-shop-client", server).await;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("http://{server}/h2"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed["protocol"], "HTTP/2.0", "{echoed}");
        assert!(
            echoed["peer"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{waypoint_ip}:")),
            "{echoed}"
        );

        // 1 GiB uploaded over HTTP/1.1 passes the waypoint streamed, not buffered.
        const GIB: u64 = 1 << 30;
        let mut tcp = connect_from(&lab, "p-shop-client", server).await;
        let head =
            format!("POST /upload HTTP/1.1\r\nhost: server.shop\r\ncontent-length: {GIB}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(GIB >> 20) {
            tcp.write_all(&chunk).await.unwrap();
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        while !String::from_utf8_lossy(&answer).contains("\"body_bytes\"") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&format!("\"body_bytes\":{GIB}")), "{text}");
    });
    let peak = peak_rss_kib(&lab, "pod shop/waypoint-0 waypoint");
    assert!(
        peak < 96 * 1024,
        "the waypoint's peak RSS was {peak} KiB for a 1 GiB upload"
    );
}

/// The CA's gRPC interface as a test server: answers every CSR with one "certificate",
/// refuses the CSR `refuse` with PERMISSION_DENIED.
struct FakeCa;

#[tonic::async_trait]
impl xds::ca::istio_certificate_service_server::IstioCertificateService for FakeCa {
    async fn create_certificate(
        &self,
        request: tonic::Request<xds::ca::IstioCertificateRequest>,
    ) -> Result<tonic::Response<xds::ca::IstioCertificateResponse>, tonic::Status> {
        if request.get_ref().csr == "refuse" {
            return Err(tonic::Status::permission_denied("refused"));
        }
        Ok(tonic::Response::new(xds::ca::IstioCertificateResponse {
            cert_chain: vec![format!("signed {}", request.get_ref().csr)],
        }))
    }
}

/// A listener on `port` inside lab namespace `ns`.
/// Answers every HTTP/1.1 request on `listener` with 200, reporting each as
/// `METHOD PATH host=HOST body=BODY`.
async fn record_requests(listener: tokio::net::TcpListener, seen: std::sync::mpsc::Sender<String>) {
    use http_body_util::BodyExt;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let host = parts
                            .headers
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let _ = seen.send(format!(
                            "{} {} host={host} body={}",
                            parts.method,
                            parts.uri,
                            String::from_utf8_lossy(&body)
                        ));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn listen_in(lab: &Lab, ns: &str, port: u16) -> tokio::net::TcpListener {
    let std_listener = netns::Namespace::existing(&lab.namespace(ns))
        .run(move || {
            let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        })
        .await
        .unwrap()
        .unwrap();
    tokio::net::TcpListener::from_std(std_listener).unwrap()
}

/// Answers one WebSocket-style upgrade per connection with 101, then echoes bytes.
async fn upgrade_echo(listener: tokio::net::TcpListener) {
    use hyper::service::service_fn;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let service = service_fn(
                |mut req: hyper::Request<hyper::body::Incoming>| async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let mut io = hyper_util::rt::TokioIo::new(upgraded);
                            let (mut r, mut w) = tokio::io::split(&mut io);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut response =
                        hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    response.headers_mut().insert(
                        "upgrade",
                        hyper::header::HeaderValue::from_static("websocket"),
                    );
                    response.headers_mut().insert(
                        "connection",
                        hyper::header::HeaderValue::from_static("upgrade"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Changes applied while connections are open: a route on `ws`, a DENY on `grpc`.
const LIVE_CHANGE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ws, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: ws}]
  rules:
    - backendRefs: [{name: ws, port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: \"\", name: grpc}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
";

/// A GET of the waypoint pod's own surfaces (from inside its namespace).
async fn waypoint_get(lab: &Lab, url: &str) -> String {
    let namespace = netns::Namespace::existing(&lab.namespace("p-shop-waypoint-0"));
    lab::client::request(Some(&namespace), "GET", url, None, None)
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[test]
fn grpc_and_websocket_upgrades_pass_the_waypoint_with_grpc_telemetry_and_live_changes_keep_them() {
    if !root_or_skip(
        "grpc_and_websocket_upgrades_pass_the_waypoint_with_grpc_telemetry_and_live_changes_keep_them",
    ) {
        return;
    }
    use test_support::fixtures::{self, Container, Pod, Port, Service};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A pod whose servers are this test's (in its namespace), behind two bound services.
    let apps = fixtures::documents(&[
        &Pod::new("apps", "shop")
            .label("app", "apps")
            .node("node-2")
            .container(Container::new("idle").command(&["sleep", "infinity"])),
        &Service::new("grpc", "shop")
            .label("istio.io/use-waypoint", "waypoint")
            .selector("app", "apps")
            .port(Port::new(9000).name("grpc").target("9000")),
        &Service::new("ws", "shop")
            .label("istio.io/use-waypoint", "waypoint")
            .selector("app", "apps")
            .port(Port::new(80).name("http").target("8081")),
    ]);
    let (lab, status) = Lab::started("t5grpc", &format!("{}\n---\n{apps}", mesh_with_waypoint()));
    let grpc: std::net::SocketAddr = format!("{}:9000", address_in(&status, "shop/grpc", true))
        .parse()
        .unwrap();
    let ws: std::net::SocketAddr = format!("{}:80", address_in(&status, "shop/ws", true))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let grpc_listener = listen_in(&lab, "p-shop-apps", 9000).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    xds::ca::istio_certificate_service_server::IstioCertificateServiceServer::new(
                        FakeCa,
                    ),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                    grpc_listener,
                )),
        );
        tokio::spawn(upgrade_echo(listen_in(&lab, "p-shop-apps", 8081).await));

        // gRPC (tonic both ends) through the waypoint: an answer, then a refusal.
        let lab_ref = &lab;
        let namespace = lab_ref.namespace("p-shop-client");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_| {
                let namespace = namespace.clone();
                async move {
                    let std_tcp = netns::Namespace::existing(&namespace)
                        .run(move || {
                            let tcp = std::net::TcpStream::connect_timeout(&grpc, Duration::from_secs(5))?;
                            tcp.set_nonblocking(true)?;
                            Ok::<_, std::io::Error>(tcp)
                        })
                        .await
                        .map_err(std::io::Error::other)??;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::TcpStream::from_std(std_tcp)?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut client =
            xds::ca::istio_certificate_service_client::IstioCertificateServiceClient::new(channel);
        let answer = client
            .create_certificate(xds::ca::IstioCertificateRequest {
                csr: "csr-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(answer.get_ref().cert_chain, ["signed csr-1"]);
        let refused = client
            .create_certificate(xds::ca::IstioCertificateRequest {
                csr: "refuse".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // An HTTP/1.1 upgrade through the waypoint, then bytes both ways.
        let mut tcp = connect_from(&lab, "p-shop-client", ws).await;
        tcp.write_all(
            b"GET /chat HTTP/1.1\r\nhost: ws.shop\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "{}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        tcp.write_all(b"hello through the waypoint").await.unwrap();
        let mut echoed = [0u8; 26];
        tcp.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello through the waypoint");

        // A route and an L7 policy applied while the upgraded connection is open: once the
        // waypoint holds them, the connection is still there and carries bytes.
        let out = lab_ref.config("apply", "live.yaml", Some(LIVE_CHANGE));
        assert!(out.status.success(), "{}", text(&out));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let dump = waypoint_get(lab_ref, "http://127.0.0.1:15000/config_dump").await;
            let dump: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
            let policies = dump["policies"].as_array().cloned().unwrap_or_default();
            if dump["routes"]["shop/ws"].is_array()
                && policies.iter().any(|p| p["name"] == "no-admin")
            {
                break;
            }
            assert!(Instant::now() < deadline, "the waypoint never got the change: {dump}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tcp.write_all(b"still connected").await.unwrap();
        let mut echoed = [0u8; 15];
        tcp.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"still connected");
        let answer = client
            .create_certificate(xds::ca::IstioCertificateRequest {
                csr: "csr-2".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(answer.get_ref().cert_chain, ["signed csr-2"]);
    });
    // The waypoint counted gRPC by its status.
    let (code, metrics) = lab
        .request_from(
            "p-shop-waypoint-0",
            "GET",
            "http://127.0.0.1:15020/stats/prometheus",
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let grpc_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{") && l.contains("request_protocol=\"grpc\"")
        })
        .collect();
    for status in ["0", "7"] {
        assert!(
            grpc_lines
                .iter()
                .any(|l| l.contains(&format!("grpc_response_status=\"{status}\""))),
            "grpc-status {status} counted: {grpc_lines:?}"
        );
    }
}

#[test]
fn a_restarted_waypoint_keeps_enforcing_from_its_snapshot_while_the_control_plane_is_away() {
    if !root_or_skip(
        "a_restarted_waypoint_keeps_enforcing_from_its_snapshot_while_the_control_plane_is_away",
    ) {
        return;
    }
    let policy = "\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: get-only, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: server}]\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n";
    let (lab, status) = Lab::started("t5snap", &(mesh_with_waypoint() + policy));
    let server = address_in(&status, "shop/server", true);
    let call = |method: &str| {
        lab.request_from(
            "p-shop-client",
            method,
            &format!("http://{server}:80/"),
            None,
            None,
        )
        .map(|(code, _)| code)
    };
    assert_eq!(call("GET"), Ok(200));
    assert_eq!(call("POST"), Ok(403));
    // Give the waypoint a moment to write what it accepted.
    std::thread::sleep(Duration::from_millis(500));
    let waypoint_ns = lab.namespace("p-shop-waypoint-0");
    let control_plane = pid_in(&lab.namespace("net"), "control-plane", false).unwrap();
    let _away = Paused::new(control_plane);
    let old = pid_in(&waypoint_ns, "waypoint", false).unwrap();
    signal(old, nix::sys::signal::Signal::SIGKILL);
    // Its supervisor starts it again; it serves its snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let restarted = pid_in(&waypoint_ns, "waypoint", false).is_some_and(|pid| pid != old);
        let ready = lab
            .request_from(
                "p-shop-waypoint-0",
                "GET",
                "http://127.0.0.1:15021/healthz/ready",
                None,
                None,
            )
            .is_ok_and(|(code, _)| code == 200);
        if restarted && ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waypoint never came back ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call("GET"), Ok(200), "served from the snapshot");
    assert_eq!(call("POST"), Ok(403), "its policy still enforced");
}
