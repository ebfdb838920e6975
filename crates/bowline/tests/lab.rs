//! The one-host lab end to end, through the `bowline` binary: `up`, `exec`, `apply`,
//! `status`, `down`. Each test has its own lab name and state directory, and removes its
//! lab even when it fails. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::root_or_skip;

const BOWLINE: &str = env!("CARGO_BIN_EXE_bowline");

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  nodeName: node-1
  containers: [{name: shell, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: shop, labels: {app: server}}
spec:
  nodeName: node-2
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: neighbour, namespace: shop, labels: {app: neighbour}}
spec:
  nodeName: node-1
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: plain, labels: {app: outsider}}
spec:
  nodeName: node-2
  containers: [{name: app, command: [bowline, echo, --port, "8080"]}]
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: shop}
spec: {selector: {app: server}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: neighbour, namespace: shop}
spec: {selector: {app: neighbour}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: outsider, namespace: plain}
spec: {selector: {app: outsider}, ports: [{port: 80, targetPort: 8080}]}
"#;

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
        let manifests = self.dir.path().to_str().unwrap().to_owned();
        self.bowline(&["up", "-f", &manifests, "--name", &self.name, "--detach"])
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
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every frame seen on any interface of namespace `ns` for `window`, concatenated.
fn sniff(ns: &str, window: Duration) -> std::thread::JoinHandle<Vec<u8>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
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
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            let end = Instant::now() + window;
            while Instant::now() < end {
                if let Ok(n) = (&socket).read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
            seen
        })
        .unwrap()
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plaintext_never_leaves_an_enrolled_pod_and_callers_keep_their_address() {
    if !root_or_skip("plaintext_never_leaves_an_enrolled_pod_and_callers_keep_their_address") {
        return;
    }
    let lab = Lab::new("t5wire", MESH);
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
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
    let wire = sniff(&lab.namespace("net"), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let token = "secret-token-5f1d";
    let (ok, body) = lab.call("shop/client", &format!("http://server.shop/{token}"));
    assert!(ok, "{body}");
    let seen = wire.join().unwrap();
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
    let wire = sniff(&lab.namespace("net"), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let (ok, body) = lab.call("shop/client", &format!("http://outsider.plain/{token}"));
    assert!(ok, "{body}");
    assert!(
        contains(&wire.join().unwrap(), token.as_bytes()),
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
fn a_namespace_is_enrolled_live_and_a_policy_applies_without_restarts() {
    if !root_or_skip("a_namespace_is_enrolled_live_and_a_policy_applies_without_restarts") {
        return;
    }
    let lab = Lab::new("t5live", MESH);
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
    let enrol = lab.dir.path().join("enrol.yaml");
    std::fs::write(&enrol, "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain, labels: {istio.io/dataplane-mode: ambient}}\n").unwrap();
    let out = lab.bowline(&["apply", "--name", &lab.name, "-f", enrol.to_str().unwrap()]);
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
    let deny = lab.dir.path().join("deny.yaml");
    std::fs::write(
        &deny,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-default, namespace: shop}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/default]}}]}]\n",
    )
    .unwrap();
    let out = lab.bowline(&["apply", "--name", &lab.name, "-f", deny.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.call("shop/client", "http://server.shop/").0 {
        assert!(Instant::now() < deadline, "the policy was never enforced");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn down_after_a_killed_up_leaves_nothing_behind() {
    if !root_or_skip("down_after_a_killed_up_leaves_nothing_behind") {
        return;
    }
    let lab = Lab::new("t5kill", MESH);
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
    let cases: [(&str, String, &str); 4] = [
        (
            "t5node",
            MESH.replace("nodeName: node-2", "nodeName: node-9"),
            "spec.nodeName \"node-9\" is not a node of this lab",
        ),
        (
            "t5dup",
            format!(
                "{MESH}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: shop}}\n"
            ),
            "Pod shop/client is defined twice",
        ),
        (
            "t5svc",
            format!(
                "{MESH}---\napiVersion: v1\nkind: Service\nmetadata: {{name: ghost, namespace: shop}}\nspec: {{selector: {{app: ghost}}, ports: [{{port: 80}}]}}\n"
            ),
            "Service shop/ghost selects no pod",
        ),
        (
            "t5yaml",
            format!(
                "{MESH}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: x, namespace: shop, labels: [oops}}\n"
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
    let out = Command::new("ip")
        .args(["netns", "pids", &lab.namespace(&format!("node-{node}"))])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"ztunnel") && !args.iter().any(|a| *a == b"supervise")
        })
}

#[test]
fn a_killed_ztunnel_comes_back_and_serves_its_pods_without_restarting_them() {
    if !root_or_skip("a_killed_ztunnel_comes_back_and_serves_its_pods_without_restarting_them") {
        return;
    }
    let lab = Lab::new("t5zt", MESH);
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let new = ztunnel_pid(&lab, "node-1");
        let ready = new.is_some_and(|p| p != old)
            && lab
                .bowline(&[
                    "exec",
                    "--name",
                    &lab.name,
                    "node/node-1",
                    "--",
                    "bowline",
                    "call",
                    "http://127.0.0.1:15021/healthz/ready",
                ])
                .status
                .success();
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "ztunnel did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_at = Instant::now();
    let mut attempts = 0;
    while !lab.call("shop/client", "http://server.shop/").0 {
        attempts += 1;
        assert!(attempts < 100, "calls never worked again");
    }
    let after_ready = ready_at.elapsed();
    assert!(
        after_ready < Duration::from_secs(1),
        "calls worked {after_ready:?} after ztunnel was ready"
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
