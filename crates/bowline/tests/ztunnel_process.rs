//! `bowline ztunnel` as a real process, driven by a node agent stand-in over ZDS, with
//! pods in namespaces the test builds. Needs root (see `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ztunnel/tests/support/mesh.rs"]
mod mesh;

use std::net::SocketAddr;
use std::time::Duration;

use mesh::{Mesh, call, greeted, refused, socks5_connect};
use test_support::root_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
workloads:
  - {uid: shop/frontend-0, name: frontend-0, namespace: shop, serviceAccount: frontend, addresses: [10.1.0.2], protocol: HBONE}
  - {uid: shop/reviews-0, name: reviews-0, namespace: shop, serviceAccount: reviews, addresses: [10.2.0.2], protocol: HBONE}
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The ztunnel process with frontend (pod 0) and reviews (pod 1, app on 8080) enrolled.
async fn two_pods() -> Mesh {
    let mut mesh = Mesh::start_process(CONFIG, env!("CARGO_BIN_EXE_bowline").as_ref()).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.app(1, 8080).await;
    mesh.enrol(0).await.unwrap();
    mesh.enrol(1).await.unwrap();
    mesh.agent.snapshot_sent().await.unwrap();
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_live_connections_finish_then_closes_them_and_exits() {
    if !root_or_skip("sigterm_lets_live_connections_finish_then_closes_them_and_exits") {
        return;
    }
    let mut mesh = two_pods().await;

    // A call through the ztunnel process works end to end.
    let tcp = mesh.dial(Some(0), addr("10.2.0.2:8080")).await.unwrap();
    assert_eq!(call(tcp, 100_000).await.unwrap().to_string(), "10.1.0.2");

    // A live connection, then SIGTERM.
    let (mut live, _) = greeted(&mesh, 0, addr("10.2.0.2:8080")).await;
    let pid = mesh.process.as_ref().unwrap().id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // During the drain the live connection still carries bytes…
    live.write_all(b"still flowing").await.unwrap();
    let mut echoed = [0u8; 13];
    live.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still flowing");
    // …but new connections are not accepted.
    assert!(
        refused(&mesh, 0, addr("10.2.0.2:8080")).await,
        "no new connections while draining"
    );

    // After the 1 s deadline the live connection is closed and the process exits cleanly.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), live.read_to_end(&mut rest))
        .await
        .expect("closed at the drain deadline")
        .ok();
    let child = mesh.process.as_mut().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ztunnel did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

const SHARED_CONFIG: &str = r#"
workloads:
  - {uid: shop/vm-0, name: vm-0, namespace: shop, serviceAccount: vm, addresses: [10.5.0.2], protocol: HBONE}
  - {uid: shop/rogue-0, name: rogue-0, namespace: shop, serviceAccount: rogue, addresses: [10.4.0.2], protocol: HBONE}
  - uid: shop/reviews-0
    name: reviews-0
    namespace: shop
    serviceAccount: reviews
    addresses: [10.2.0.2]
    protocol: HBONE
    services:
      shop/reviews.shop.svc.cluster.local: [{servicePort: 9080, targetPort: 8080}]
services:
  - name: reviews
    namespace: shop
    hostname: reviews.shop.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{servicePort: 9080, targetPort: 8080}]
policies:
  - name: only-the-vm
    namespace: shop
    scope: Namespace
    action: Allow
    rules: [{clauses: [{matches: [{principals: [cluster.local/ns/shop/sa/vm]}]}]}]
"#;

/// A child process killed (by its PID) and reaped when the test ends, pass or fail.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_gives_the_hosts_own_apps_their_identity_and_socks5() {
    if !root_or_skip("shared_mode_gives_the_hosts_own_apps_their_identity_and_socks5") {
        return;
    }
    // reviews (and rogue) on an in-process in-pod ztunnel; the "host" is a namespace
    // whose own apps are the workload shop/vm-0, served by a shared-mode ztunnel process
    // running inside it.
    let mut mesh = Mesh::start(SHARED_CONFIG).await;
    let host = mesh.pod("shop", "vm-0", "vm", "10.5.0.2");
    let rogue = mesh.pod("shop", "rogue-0", "rogue", "10.4.0.2");
    let reviews = mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.app(reviews, 8080).await;
    mesh.enrol(reviews).await.unwrap();
    mesh.enrol(rogue).await.unwrap();
    netns::capture::install(
        &mesh.members[host].ns,
        &netns::capture::CaptureSpec::default(),
    )
    .unwrap();
    let ca_dir = mesh.dir.path().join("shared-ca");
    mesh.ca.ca.save(&ca_dir).unwrap();
    let log = mesh.dir.path().join("shared.log");
    let _ztunnel = ChildGuard(
        std::process::Command::new("ip")
            .args(["netns", "exec", mesh.members[host].ns.name()])
            .arg(env!("CARGO_BIN_EXE_bowline"))
            .args(["--log", "info", "ztunnel", "--mode", "shared"])
            .args(["--shared-workload", "shop/vm-0", "--config"])
            .arg(mesh.dir.path().join("mesh.yaml"))
            .arg("--ca-dir")
            .arg(&ca_dir)
            .args([
                "--admin-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--readiness-addr", "127.0.0.1:0", "--drain-seconds", "0"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    // The host's apps are captured like a pod's: the call to the VIP goes out over HBONE
    // with the vm identity (the only one reviews admits) and keeps the host's address.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        if let Ok(tcp) = mesh.dial(Some(host), addr("10.96.0.10:9080")).await
            && let Ok(seen) = call(tcp, 100_000).await
        {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shared-mode ztunnel never carried a call; its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen.to_string(), "10.5.0.2");
    assert!(
        refused(&mesh, rogue, addr("10.96.0.10:9080")).await,
        "another identity is refused by the same policy"
    );

    // An app that is not captured uses SOCKS5 on 127.0.0.1:15080, by service name.
    let mut socks = mesh
        .dial(Some(host), addr("127.0.0.1:15080"))
        .await
        .unwrap();
    assert_eq!(
        socks5_connect(&mut socks, "reviews.shop.svc.cluster.local", 9080).await,
        0
    );
    assert_eq!(call(socks, 10_000).await.unwrap().to_string(), "10.5.0.2");
}

/// How a call that should be answered or refused ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Greeted,
    RefusedAtOnce,
    Hung,
}

async fn attempt(
    mesh: &Mesh,
    from: usize,
    target: SocketAddr,
) -> (Outcome, Option<tokio::net::TcpStream>) {
    let Ok(mut tcp) = mesh.dial(Some(from), target).await else {
        return (Outcome::RefusedAtOnce, None);
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut first)).await {
        Ok(Ok(1)) => (Outcome::Greeted, Some(tcp)),
        Ok(_) => (Outcome::RefusedAtOnce, None),
        Err(_) => (Outcome::Hung, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_new_connections_are_refused_at_once_not_left_hanging() {
    if !root_or_skip("at_the_descriptor_limit_new_connections_are_refused_at_once_not_left_hanging")
    {
        return;
    }
    let mesh = two_pods().await;
    let target = addr("10.2.0.2:8080");
    // Warm up the tunnel pool, then give ztunnel only a few descriptors more than it holds.
    let (first, held_first) = attempt(&mesh, 0, target).await;
    assert_eq!(first, Outcome::Greeted);
    let pid = mesh.process.as_ref().unwrap().id();
    let count = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let fds = count();
    // The limit bounds descriptor numbers, not their count: leave ten above the highest.
    let highest = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .max()
        .unwrap();
    let limit = highest + 1 + 10;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit");

    eprintln!(
        "descriptors: {fds} before the limit of {limit}, {} now",
        count()
    );
    let mut held = vec![held_first];
    let mut outcomes = Vec::new();
    // Each served call holds two descriptors (the app's connection and ztunnel's to the
    // app); keep calling until ten have been refused (or one hangs).
    for _ in 0..400 {
        let (outcome, tcp) = attempt(&mesh, 0, target).await;
        let stop = outcome == Outcome::Hung
            || outcomes
                .iter()
                .filter(|o| **o == Outcome::RefusedAtOnce)
                .count()
                >= 9
                && outcome == Outcome::RefusedAtOnce;
        outcomes.push(outcome);
        held.push(tcp);
        if stop {
            break;
        }
    }
    eprintln!("descriptors at the limit: {}", count());
    let log = std::fs::read_to_string(mesh.dir.path().join("ztunnel.log")).unwrap();
    let tail = &log[log.len().saturating_sub(4000)..];
    assert!(
        !outcomes.contains(&Outcome::Hung),
        "no connection may hang at the limit: {outcomes:?}; ztunnel's log ends: {tail}"
    );
    assert!(
        outcomes.contains(&Outcome::Greeted) && outcomes.contains(&Outcome::RefusedAtOnce),
        "some served, the rest refused: {outcomes:?}"
    );
    assert!(
        log.contains("out of file descriptors") || log.contains("Too many open files"),
        "the operator is told why: {log}"
    );
    // Once descriptors are free again, calls work.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while attempt(&mesh, 0, target).await.0 != Outcome::Greeted {
        assert!(std::time::Instant::now() < deadline, "calls work again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Anonymous resident memory of process `pid`, in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_thousands_of_closed_connections_goes_back_to_the_system() {
    if !root_or_skip("memory_of_thousands_of_closed_connections_goes_back_to_the_system") {
        return;
    }
    let mesh = two_pods().await;
    let target = addr("10.2.0.2:8080");
    let pid = mesh.process.as_ref().unwrap().id();
    // Idle, after a few calls have set up the tunnel pool and certificates.
    for _ in 0..3 {
        let (tcp, _) = greeted(&mesh, 0, target).await;
        drop(tcp);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_anon_kib(pid);

    // 5,000 connections open at once, each having carried a little data.
    let mut held = Vec::new();
    for _ in 0..5_000 {
        held.push(greeted(&mesh, 0, target).await.0);
    }
    let busy = rss_anon_kib(pid);
    drop(held);

    // Within 10 s, at least 95 % of what the burst took is back with the system (before:
    // 71 MB of 131 MB kept). What stays is the one tunnel connection kept for reuse (its
    // 60 s idle timeout) and allocator residue; docs/benchmarks.md has the figures.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut now = rss_anon_kib(pid);
    while (busy.saturating_sub(now)) * 100 < busy.saturating_sub(idle) * 95 {
        assert!(
            std::time::Instant::now() < deadline,
            "ztunnel keeps {now} KiB anonymous memory 10 s after 5,000 connections closed \
             (idle {idle} KiB, {busy} KiB with them open)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = rss_anon_kib(pid);
    }
    eprintln!("anonymous RSS: idle {idle} KiB, 5,000 open {busy} KiB, after close {now} KiB");
}
