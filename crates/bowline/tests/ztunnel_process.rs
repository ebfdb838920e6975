//! `bowline ztunnel` as a real process, driven by a node agent stand-in over ZDS, with
//! pods in namespaces the test builds. Needs root (see `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../ztunnel/tests/support/mesh.rs"]
mod mesh;

use std::net::SocketAddr;
use std::time::Duration;

use mesh::{Mesh, call, greeted, refused};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_live_connections_finish_then_closes_them_and_exits() {
    if !root_or_skip("sigterm_lets_live_connections_finish_then_closes_them_and_exits") {
        return;
    }
    let mut mesh = Mesh::start_process(CONFIG, env!("CARGO_BIN_EXE_bowline").as_ref()).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.app(1, 8080).await;
    mesh.enrol(0).await.unwrap();
    mesh.enrol(1).await.unwrap();
    mesh.agent.snapshot_sent().await.unwrap();

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
