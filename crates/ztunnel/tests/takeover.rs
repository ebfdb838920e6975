//! One ztunnel taking pods over from another, as in an upgrade or when Istio's ztunnel and
//! Bowline's swap: the new one binds the pods' listeners (15001, 15006, 15008, 15053) at
//! once, while the old one still listens and its closed connections linger in
//! `TIME_WAIT`, and carries the pods' traffic once the old one lets go. Needs root (see
//! `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mesh.rs"]
mod mesh;

use std::net::{IpAddr, SocketAddr};

use mesh::{Mesh, call, greeted};
use netns::Namespace;
use test_support::root_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRONTEND: usize = 0;
const REVIEWS: usize = 1;

const CONFIG: &str = r#"
workloads:
  - {uid: shop/frontend-0, name: frontend-0, namespace: shop, serviceAccount: frontend, addresses: [10.1.0.2], protocol: HBONE}
  - {uid: shop/reviews-0, name: reviews-0, namespace: shop, serviceAccount: reviews, addresses: [10.2.0.2], protocol: HBONE}
services: []
policies: []
"#;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `TIME_WAIT` in `/proc/net/tcp`.
const TIME_WAIT: &str = "06";
/// `LISTEN` in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Sockets in `state` in `ns` whose local port is one of `ports`.
async fn sockets(ns: &Namespace, state: &'static str, ports: &[u16]) -> usize {
    let tables = ns
        .run(|| {
            ["tcp", "tcp6"]
                .map(|t| {
                    std::fs::read_to_string(format!("/proc/thread-self/net/{t}"))
                        .unwrap_or_default()
                })
                .join("\n")
        })
        .await
        .unwrap();
    tables
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            fields.get(3) == Some(&state) && local_port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ztunnel_takes_over_served_pods_at_once_and_carries_their_traffic() {
    if !root_or_skip("a_second_ztunnel_takes_over_served_pods_at_once_and_carries_their_traffic") {
        return;
    }
    let mut mesh = Mesh::start(CONFIG).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.app(REVIEWS, 8080).await;
    mesh.app_closing_first(REVIEWS, 8081).await;
    for pod in [FRONTEND, REVIEWS] {
        mesh.enrol(pod).await.unwrap();
    }
    mesh.agent.snapshot_sent().await.unwrap();

    // Traffic through the first ztunnel. The app on 8081 closes first, so the first
    // ztunnel closes the frontend's captured connections first: they linger in
    // TIME_WAIT on 15001 in the frontend's namespace.
    for _ in 0..3 {
        let mut tcp = mesh
            .dial(Some(FRONTEND), addr("10.2.0.2:8081"))
            .await
            .unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"bye");
    }
    let in_pod_ports = [15001, 15006, 15008, 15053];
    let lingering = sockets(&mesh.members[FRONTEND].ns, TIME_WAIT, &in_pod_ports).await
        + sockets(&mesh.members[REVIEWS].ns, TIME_WAIT, &in_pod_ports).await;
    assert!(lingering > 0, "closed connections linger in TIME_WAIT");
    let (mut live, seen) = greeted(&mesh, FRONTEND, addr("10.2.0.2:8080")).await;
    assert_eq!(seen, "10.1.0.2");

    // A second ztunnel takes both pods over while the first still listens in them: it
    // binds at once (its acknowledgement carries any bind error).
    mesh.start_second_node().await;
    for pod in [FRONTEND, REVIEWS] {
        mesh.enrol_on_second_node(pod)
            .await
            .unwrap_or_else(|e| panic!("the second ztunnel takes pod {pod} over at once: {e}"));
    }
    let second = mesh.second.as_ref().map(|(pods, _)| pods.clone()).unwrap();
    let hbone_listeners = sockets(&mesh.members[REVIEWS].ns, LISTEN, &[15008]).await;
    assert_eq!(
        hbone_listeners, 2,
        "both ztunnels listen on 15008 in the pod"
    );
    // Meanwhile the first one still carries the connection it had.
    live.write_all(b"still there").await.unwrap();
    let mut echoed = [0u8; 11];
    live.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still there");

    // The first ztunnel lets go (its connections end); the second carries the pods'
    // traffic alone. (No new connections were made while both listened: the kernel would
    // have spread them over both, and the second ztunnel's pool could hold an HBONE
    // connection to the first that is about to close.)
    for pod in [FRONTEND, REVIEWS] {
        let uid = mesh.members[pod].uid.clone();
        mesh.agent.del(&uid).await.unwrap();
        assert!(!mesh.pods.contains(&uid), "the first ztunnel let {uid} go");
        assert!(second.contains(&uid), "the second ztunnel serves {uid}");
    }
    // The first one's listeners close as its accept tasks end.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    for pod in [FRONTEND, REVIEWS] {
        while sockets(&mesh.members[pod].ns, LISTEN, &[15001, 15006, 15008]).await > 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first ztunnel closes its listeners in pod {pod}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    for _ in 0..4 {
        let tcp = mesh
            .dial(Some(FRONTEND), addr("10.2.0.2:8080"))
            .await
            .unwrap();
        assert_eq!(
            call(tcp, 100_000).await.unwrap(),
            IpAddr::from([10, 1, 0, 2]),
            "source address kept through the new ztunnel"
        );
    }
}
