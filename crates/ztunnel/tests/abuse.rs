//! What a misbehaving or hostile pod can do to a node's ztunnel, end to end in namespaces
//! the test builds: connections aimed at ztunnel's own listeners are refused without a
//! forwarding loop, and running out of descriptors refuses fast instead of hanging.
//! Needs root (see `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mesh.rs"]
mod mesh;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::{ClientSettings, ConnectRequest, HboneError, Pool, PoolKey};
use mesh::{Mesh, call, refused};
use test_support::{id, root_or_skip};

const FRONTEND: usize = 0;
const REVIEWS: usize = 1;
const LEGACY: usize = 2;

const CONFIG: &str = r#"
workloads:
  - {uid: shop/frontend-0, name: frontend-0, namespace: shop, serviceAccount: frontend, addresses: [10.1.0.2], protocol: HBONE}
  - {uid: shop/reviews-0, name: reviews-0, namespace: shop, serviceAccount: reviews, addresses: [10.2.0.2], protocol: HBONE}
  - {uid: legacy/legacy-0, name: legacy-0, namespace: legacy, addresses: [10.3.0.2]}
services: []
policies: []
"#;

async fn mesh() -> Mesh {
    let mut mesh = Mesh::start(CONFIG).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.pod("legacy", "legacy-0", "default", "10.3.0.2");
    mesh.app(REVIEWS, 8080).await;
    mesh.enrol(FRONTEND).await.unwrap();
    mesh.enrol(REVIEWS).await.unwrap();
    mesh.agent.snapshot_sent().await.unwrap();
    mesh
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Descriptors this process (the in-process ztunnel) holds.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Dials from the router namespace (outside every pod), for HBONE clients.
struct FromRouter(netns::Namespace);

impl hbone::Dialer for FromRouter {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + '_>,
    > {
        Box::pin(async move {
            let socket = self
                .0
                .run(move || netns::socket::outgoing_socket(addr, Default::default()))
                .await
                .map_err(std::io::Error::other)??;
            socket.connect(addr).await
        })
    }
}

/// How many connections ztunnel refused for aiming at its own ports.
fn own_port_refusals(mesh: &Mesh) -> u64 {
    mesh.inputs
        .metrics
        .encode()
        .lines()
        .filter(|l| l.contains("reason=\"own_port\"") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_aimed_at_ztunnels_own_ports_are_refused_and_never_loop() {
    if !root_or_skip("connections_aimed_at_ztunnels_own_ports_are_refused_and_never_loop") {
        return;
    }
    let mesh = mesh().await;
    // Warm up: one good call, so lazily opened descriptors are counted in the baseline.
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.2.0.2:8080"))
        .await
        .unwrap();
    call(tcp, 1000).await.unwrap();
    let before = open_fds();

    // Plain TCP from another namespace to the pod's capture ports (arrives at 15006).
    for target in ["10.2.0.2:15006", "10.2.0.2:15001", "10.2.0.2:15021"] {
        assert!(
            refused(&mesh, LEGACY, addr(target)).await,
            "{target} from outside"
        );
    }
    // From an enrolled pod: captured outbound to another pod's ports, its own ports, and
    // straight at the outbound listener.
    for target in [
        "10.2.0.2:15006",
        "10.2.0.2:15008",
        "10.1.0.2:15001",
        "127.0.0.1:15001",
        "127.0.0.1:15006",
    ] {
        assert!(
            refused(&mesh, FRONTEND, addr(target)).await,
            "{target} from an enrolled pod"
        );
    }
    // An HBONE CONNECT whose authority is one of ztunnel's listeners in the pod.
    let pool = Pool::with_dialer(
        mesh.ca.manager(),
        ClientSettings::default(),
        Arc::new(FromRouter(netns::Namespace::existing(
            mesh.fabric.router().name(),
        ))),
    );
    let key = PoolKey {
        source: id("shop", "frontend"),
        destination: id("shop", "reviews"),
        address: addr("10.2.0.2:15008"),
    };
    for authority in ["10.2.0.2:15001", "10.2.0.2:15006", "10.2.0.2:15008"] {
        let request = ConnectRequest {
            authority: addr(authority),
            headers: Default::default(),
        };
        let err = pool.connect(&key, &request).await.unwrap_err();
        assert!(
            matches!(err, HboneError::Refused { status, .. } if status == http::StatusCode::BAD_REQUEST),
            "CONNECT {authority}: {err}"
        );
    }
    // The real app is still reachable the same way.
    let good = ConnectRequest {
        authority: addr("10.2.0.2:8080"),
        headers: Default::default(),
    };
    pool.connect(&key, &good).await.unwrap();

    assert!(
        own_port_refusals(&mesh) >= 11,
        "each refusal is counted: {}",
        mesh.inputs.metrics.encode()
    );
    // No loop: the descriptor count comes back to where it was (a loop reached 20,000).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = open_fds();
        if now <= before + 16 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ztunnel holds {now} descriptors, {before} before the refused connections"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the mesh still works.
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.2.0.2:8080"))
        .await
        .unwrap();
    call(tcp, 1000).await.unwrap();
}
