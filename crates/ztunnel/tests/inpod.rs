//! ztunnel end to end, in namespaces the test builds: pods handed over by a node agent
//! speaking ZDS, capture rules in their namespaces, real apps, HBONE between pods.
//! Needs root (see `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mesh.rs"]
mod mesh;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh::{Mesh, call, closes_soon, greeted, refused, socks5_connect};
use test_support::root_or_skip;

const FRONTEND: usize = 0;
const REVIEWS: usize = 1;
const LEGACY: usize = 2;
const ROGUE: usize = 3;

fn config(policies: &str) -> String {
    format!(
        r#"
workloads:
  - {{uid: shop/frontend-0, name: frontend-0, namespace: shop, serviceAccount: frontend, addresses: [10.1.0.2], protocol: HBONE}}
  - uid: shop/reviews-0
    name: reviews-0
    namespace: shop
    serviceAccount: reviews
    addresses: [10.2.0.2]
    protocol: HBONE
    services:
      shop/reviews.shop.svc.cluster.local: [{{servicePort: 9080, targetPort: 8080}}]
  - {{uid: legacy/legacy-0, name: legacy-0, namespace: legacy, addresses: [10.3.0.2]}}
  - {{uid: shop/rogue-0, name: rogue-0, namespace: shop, serviceAccount: rogue, addresses: [10.4.0.2], protocol: HBONE}}
services:
  - name: reviews
    namespace: shop
    hostname: reviews.shop.svc.cluster.local
    vips: [10.96.0.10]
    ports: [{{servicePort: 9080, targetPort: 8080}}]
policies: {policies}
"#
    )
}

/// frontend, reviews (app on 8080), legacy (not enrolled, app on 8080), rogue.
async fn shop(policies: &str) -> Mesh {
    let mut mesh = Mesh::start(&config(policies)).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.pod("legacy", "legacy-0", "default", "10.3.0.2");
    mesh.pod("shop", "rogue-0", "rogue", "10.4.0.2");
    mesh.app(REVIEWS, 8080).await;
    mesh.app(LEGACY, 8080).await;
    for pod in [FRONTEND, REVIEWS, ROGUE] {
        mesh.enrol(pod).await.unwrap();
    }
    mesh.agent.snapshot_sent().await.unwrap();
    mesh
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const ONLY_FRONTEND: &str = r#"
  - name: only-frontend
    namespace: shop
    scope: Namespace
    action: Allow
    rules: [{clauses: [{matches: [{principals: [cluster.local/ns/shop/sa/frontend]}]}]}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_to_pod_via_service_vip_and_pod_ip_keeps_source_ip_and_bytes() {
    if !root_or_skip("pod_to_pod_via_service_vip_and_pod_ip_keeps_source_ip_and_bytes") {
        return;
    }
    let mesh = shop("[]").await;
    for target in ["10.96.0.10:9080", "10.2.0.2:8080"] {
        let tcp = mesh.dial(Some(FRONTEND), addr(target)).await.unwrap();
        let seen = call(tcp, 1 << 20).await.unwrap();
        assert_eq!(seen, ip("10.1.0.2"), "via {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_policy_admits_the_allowed_principal_and_refuses_others() {
    if !root_or_skip("l4_policy_admits_the_allowed_principal_and_refuses_others") {
        return;
    }
    let mesh = shop(ONLY_FRONTEND).await;
    let ok = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    assert_eq!(call(ok, 1000).await.unwrap(), ip("10.1.0.2"));
    // Identity comes from the certificate: rogue (same namespace, other account) is out.
    assert!(
        refused(&mesh, ROGUE, addr("10.96.0.10:9080")).await,
        "rogue must not reach reviews"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_closes_a_live_connection_it_forbids_and_reports_its_bytes() {
    if !root_or_skip("a_policy_change_closes_a_live_connection_it_forbids_and_reports_its_bytes") {
        return;
    }
    let mesh = shop("[]").await;
    let (mut tcp, seen) = greeted(&mesh, FRONTEND, addr("10.2.0.2:8080")).await;
    assert_eq!(seen, "10.1.0.2");
    let deny_frontend = r#"
  - name: no-frontend
    namespace: shop
    scope: Namespace
    action: Deny
    rules: [{clauses: [{matches: [{principals: [cluster.local/ns/shop/sa/frontend]}]}]}]
"#;
    mesh.reconfigure(&config(deny_frontend)).await;
    assert!(
        closes_soon(&mut tcp).await,
        "the forbidden connection must be closed promptly"
    );
    // Its record says why, with the bytes it carried: the greeting ("10.1.0.2\n")
    // travelled from the app before the policy changed.
    let revoked = mesh
        .metric_line(|l| {
            l.starts_with("istio_tcp_received_bytes_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_flags=\"RBAC\"")
        })
        .await;
    let bytes: u64 = revoked.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes >= 9, "{revoked}");
    // New connections are refused too.
    assert!(refused(&mesh, FRONTEND, addr("10.2.0.2:8080")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_outside_the_mesh_is_passed_through() {
    if !root_or_skip("a_destination_outside_the_mesh_is_passed_through") {
        return;
    }
    let mesh = shop("[]").await;
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.3.0.2:8080"))
        .await
        .unwrap();
    assert_eq!(call(tcp, 100_000).await.unwrap(), ip("10.1.0.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_into_an_enrolled_pod_follows_its_policy() {
    if !root_or_skip("plaintext_into_an_enrolled_pod_follows_its_policy") {
        return;
    }
    let mesh = shop("[]").await;
    // legacy is not enrolled: its call arrives at reviews as plaintext (15006).
    let tcp = mesh
        .dial(Some(LEGACY), addr("10.2.0.2:8080"))
        .await
        .unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap(), ip("10.3.0.2"));
    let strict = r#"
  - name: strict-mtls
    namespace: shop
    scope: Namespace
    action: Deny
    rules: [{clauses: [{matches: [{notPrincipals: [{presence: {}}]}]}]}]
"#;
    mesh.reconfigure(&config(strict)).await;
    assert!(
        refused(&mesh, LEGACY, addr("10.2.0.2:8080")).await,
        "STRICT refuses plaintext"
    );
    // mTLS from frontend still works under STRICT.
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.2.0.2:8080"))
        .await
        .unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap(), ip("10.1.0.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_pod_closes_its_live_connections() {
    if !root_or_skip("removing_a_pod_closes_its_live_connections") {
        return;
    }
    let mesh = shop("[]").await;
    let (mut tcp, _) = greeted(&mesh, FRONTEND, addr("10.2.0.2:8080")).await;
    mesh.agent.del("shop/reviews-0").await.unwrap();
    assert!(!mesh.pods.contains("shop/reviews-0"));
    assert!(
        closes_soon(&mut tcp).await,
        "connections of a removed pod end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_agent_reconnect_pods_not_resent_are_dropped() {
    if !root_or_skip("after_an_agent_reconnect_pods_not_resent_are_dropped") {
        return;
    }
    let mut mesh = shop("[]").await;
    mesh.agent.reconnect().await;
    let agent = &mesh.agent;
    // Pods keep serving while the agent is away and through the new snapshot.
    agent.keep("shop/frontend-0").await.unwrap();
    agent.keep("shop/reviews-0").await.unwrap();
    let err = agent.keep("shop/never-seen").await.unwrap_err();
    assert!(err.contains("send add"), "{err}");
    agent.snapshot_sent().await.unwrap();
    assert_eq!(mesh.pods.uids(), ["shop/frontend-0", "shop/reviews-0"]);
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap(), ip("10.1.0.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access_log_and_config_dump_describe_the_mesh() {
    if !root_or_skip("metrics_access_log_and_config_dump_describe_the_mesh") {
        return;
    }
    let mesh = shop("[]").await;
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    call(tcp, 5000).await.unwrap();
    let admin = ztunnel::admin::AdminState {
        inputs: mesh.inputs.clone(),
        pods: mesh.pods.clone(),
        log_level: None,
    };
    // Both reporters count the connection once it has closed on both sides.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = mesh.inputs.metrics.encode();
        let closed = text
            .lines()
            .filter(|l| l.starts_with("istio_tcp_connections_closed_total{"))
            .count();
        if closed >= 2 || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let source_line = text
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
        })
        .expect("outbound connection counted");
    for label in [
        "source_workload=\"frontend-0\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/frontend\"",
        "destination_workload=\"reviews-0\"",
        "destination_service=\"reviews.shop.svc.cluster.local\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(
            source_line.contains(label),
            "{label} missing in {source_line}"
        );
    }
    assert!(text.contains("reporter=\"destination\""), "{text}");
    let sent = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_sent_bytes_total{") && l.contains("reporter=\"source\""))
        .unwrap();
    // 5000 bytes sent (the greeting travels the other way).
    assert!(sent.ends_with(" 5000"), "{sent}");

    let dump: serde_json::Value = serde_json::from_str(&admin.config_dump()).unwrap();
    assert_eq!(dump["workloads"].as_array().unwrap().len(), 4);
    assert_eq!(
        dump["services"][0]["hostname"],
        "reviews.shop.svc.cluster.local"
    );
    let identities: Vec<_> = dump["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["identity"].as_str().unwrap().to_string())
        .collect();
    assert!(identities.contains(&"spiffe://cluster.local/ns/shop/sa/reviews".to_string()));
    assert!(admin.ready().is_ok(), "{:?}", admin.ready());
}

/// The shop on two nodes, only frontend allowed: frontend and rogue on the first node,
/// reviews (app on 8080) on the second; both agents have sent their snapshots.
async fn two_nodes() -> Mesh {
    let mut mesh = Mesh::start(&config(ONLY_FRONTEND)).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.pod("legacy", "legacy-0", "default", "10.3.0.2");
    mesh.pod("shop", "rogue-0", "rogue", "10.4.0.2");
    mesh.app(REVIEWS, 8080).await;
    mesh.start_second_node().await;
    mesh.enrol(FRONTEND).await.unwrap();
    mesh.enrol(ROGUE).await.unwrap();
    mesh.enrol_on_second_node(REVIEWS).await.unwrap();
    mesh.agent.snapshot_sent().await.unwrap();
    let (_, agent) = mesh.second.as_ref().unwrap();
    agent.snapshot_sent().await.unwrap();
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_different_nodes_talk_through_both_ztunnels() {
    if !root_or_skip("pods_on_different_nodes_talk_through_both_ztunnels") {
        return;
    }
    let mesh = two_nodes().await;
    let (second, _) = mesh.second.as_ref().unwrap();
    assert_eq!(second.uids(), ["shop/reviews-0"]);
    assert!(!mesh.pods.contains("shop/reviews-0"));

    for target in ["10.96.0.10:9080", "10.2.0.2:8080"] {
        let tcp = mesh.dial(Some(FRONTEND), addr(target)).await.unwrap();
        assert_eq!(
            call(tcp, 1 << 20).await.unwrap(),
            ip("10.1.0.2"),
            "via {target}"
        );
    }
    // The second node verifies the first node's client certificates.
    assert!(refused(&mesh, ROGUE, addr("10.96.0.10:9080")).await);
}

/// A stand-in waypoint: answers every CONNECT with one line naming the authority and the
/// client identity it saw.
struct StubWaypoint;

impl hbone::ConnectHandler for StubWaypoint {
    async fn handle(&self, connect: hbone::IncomingConnect) {
        let line = format!("waypoint saw {} from {}\n", connect.target, connect.peer);
        if let Ok(mut stream) = connect.accept() {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_to_a_workload_bound_to_a_waypoint_is_tunnelled_to_the_waypoint() {
    if !root_or_skip("traffic_to_a_workload_bound_to_a_waypoint_is_tunnelled_to_the_waypoint") {
        return;
    }
    let with_waypoint = config("[]")
        .replace(
            "    protocol: HBONE\n    services:",
            "    protocol: HBONE\n    waypoint: {address: 10.5.0.2}\n    services:",
        )
        .replace(
            "services:\n  - name: reviews",
            "  - {uid: shop/waypoint-0, name: waypoint-0, namespace: shop, serviceAccount: waypoint, addresses: [10.5.0.2], protocol: HBONE}\nservices:\n  - name: reviews",
        );
    let mut mesh = Mesh::start(&with_waypoint).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    let waypoint = mesh.pod("shop", "waypoint-0", "waypoint", "10.5.0.2");
    mesh.enrol(FRONTEND).await.unwrap();
    mesh.agent.snapshot_sent().await.unwrap();
    // The stub waypoint listens on 15008 in its own namespace with the waypoint identity.
    let listen_at = addr("10.5.0.2:15008");
    let listener = mesh.members[waypoint]
        .ns
        .run(move || netns::socket::listen(listen_at, false))
        .await
        .unwrap()
        .unwrap();
    let server = hbone::Server::new(
        test_support::id("shop", "waypoint"),
        mesh.ca.manager(),
        StubWaypoint,
        hbone::ServerSettings::default(),
    );
    tokio::spawn(server.serve(netns::socket::into_tokio(listener).unwrap()));

    let mut tcp = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    let mut answer = String::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        "waypoint saw 10.2.0.2:8080 from spiffe://cluster.local/ns/shop/sa/frontend\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_edit_keeps_the_mesh_serving_the_last_good_state() {
    if !root_or_skip("a_bad_configuration_edit_keeps_the_mesh_serving_the_last_good_state") {
        return;
    }
    let mesh = shop(ONLY_FRONTEND).await;
    let mut updates = mesh.store.subscribe();
    updates.mark_unchanged();
    // A typo'd key and a broken address: refused, with the last good state in force.
    let broken = config(ONLY_FRONTEND)
        .replace("serviceAccount: reviews", "serviceAcount: reviews")
        .replace("10.96.0.10", "10.96.0.300");
    std::fs::write(mesh.dir.path().join("mesh.yaml"), broken).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !updates.has_changed().unwrap(),
        "a bad edit must not be applied"
    );
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    assert_eq!(call(tcp, 1000).await.unwrap(), ip("10.1.0.2"));
    assert!(
        refused(&mesh, ROGUE, addr("10.96.0.10:9080")).await,
        "the old policy still holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_request_keeps_working_when_client_ports_are_reused() {
    if !root_or_skip("one_connection_per_request_keeps_working_when_client_ports_are_reused") {
        return;
    }
    let mut mesh = shop("[]").await;
    mesh.app_closing_first(REVIEWS, 8081).await;
    // Ten client ports: every port is reused many times. A proxy socket left in TIME_WAIT
    // inside the client's namespace would make reused ports fail.
    netns::links::sysctl(
        &mesh.members[FRONTEND].ns,
        "net/ipv4/ip_local_port_range",
        "40000 40009",
    )
    .unwrap();
    for i in 0..100 {
        let mut tcp = mesh
            .dial(Some(FRONTEND), addr("10.2.0.2:8081"))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let mut answer = String::new();
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("connection {i} hung"))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(answer, "bye", "connection {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_carries_an_uncaptured_app_into_the_mesh_by_service_name() {
    if !root_or_skip("socks5_carries_an_uncaptured_app_into_the_mesh_by_service_name") {
        return;
    }
    let mesh = shop("[]").await;
    let socks_at = addr("127.0.0.1:15080");
    let listener = mesh.members[FRONTEND]
        .ns
        .run(move || netns::socket::listen(socks_at, false))
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(ztunnel::proxy::socks5::serve(
        netns::socket::into_tokio(listener).unwrap(),
        mesh.pods.pod("shop/frontend-0").unwrap(),
        mesh.inputs.clone(),
    ));

    let mut tcp = mesh.dial(Some(FRONTEND), socks_at).await.unwrap();
    assert_eq!(
        socks5_connect(&mut tcp, "reviews.shop.svc.cluster.local", 9080).await,
        0
    );
    assert_eq!(call(tcp, 10_000).await.unwrap(), ip("10.1.0.2"));

    let mut tcp = mesh.dial(Some(FRONTEND), socks_at).await.unwrap();
    assert_eq!(
        socks5_connect(&mut tcp, "nowhere.shop.svc.cluster.local", 9080).await,
        4,
        "host unreachable"
    );
}

/// Asks `resolver` (UDP, or TCP when `tcp`) from inside pod `i` for the A records of
/// `name`; returns the response code and addresses. The UDP socket is connected, so an
/// answer only counts if it comes back from the resolver address the pod asked.
async fn lookup(
    mesh: &Mesh,
    i: usize,
    resolver: SocketAddr,
    name: &str,
    tcp: bool,
) -> (hickory_proto::op::ResponseCode, Vec<IpAddr>) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::io::{Read, Write};
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let reply = mesh.members[i]
        .ns
        .run(move || -> std::io::Result<Vec<u8>> {
            let timeout = Some(Duration::from_secs(5));
            if tcp {
                let mut conn =
                    std::net::TcpStream::connect_timeout(&resolver, Duration::from_secs(5))?;
                conn.set_read_timeout(timeout)?;
                conn.write_all(&(bytes.len() as u16).to_be_bytes())?;
                conn.write_all(&bytes)?;
                let mut len = [0u8; 2];
                conn.read_exact(&mut len)?;
                let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
                conn.read_exact(&mut reply)?;
                Ok(reply)
            } else {
                let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
                socket.set_read_timeout(timeout)?;
                socket.connect(resolver)?;
                socket.send(&bytes)?;
                let mut reply = vec![0u8; 4096];
                let n = socket.recv(&mut reply)?;
                reply.truncate(n);
                Ok(reply)
            }
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("no DNS answer for {name} (tcp: {tcp}): {e}"));
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    let ips = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    (reply.metadata.response_code, ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_pods_resolve_mesh_services_through_the_dns_proxy() {
    use hickory_proto::op::ResponseCode;
    if !root_or_skip("enrolled_pods_resolve_mesh_services_through_the_dns_proxy") {
        return;
    }
    let mut mesh = Mesh::start(&config("[]")).await;
    mesh.pod("shop", "frontend-0", "frontend", "10.1.0.2");
    mesh.pod("shop", "reviews-0", "reviews", "10.2.0.2");
    mesh.app(REVIEWS, 8080).await;
    let dns_capture = netns::capture::CaptureSpec {
        dns_port: Some(15053),
        ..Default::default()
    };
    mesh.enrol_with(FRONTEND, &dns_capture).await.unwrap();
    mesh.enrol(REVIEWS).await.unwrap();
    // Any resolver address the pod is configured with: port 53 is captured.
    let resolver = addr("10.96.255.53:53");
    let vip = vec![ip("10.96.0.10")];
    for name in [
        "reviews.",
        "reviews.shop.",
        "reviews.shop.svc.cluster.local.",
    ] {
        assert_eq!(
            lookup(&mesh, FRONTEND, resolver, name, false).await,
            (ResponseCode::NoError, vip.clone()),
            "{name}"
        );
    }
    assert_eq!(
        lookup(&mesh, FRONTEND, resolver, "reviews.shop.", true).await,
        (ResponseCode::NoError, vip.clone()),
        "over TCP"
    );
    assert_eq!(
        lookup(
            &mesh,
            FRONTEND,
            resolver,
            "gone.shop.svc.cluster.local.",
            false
        )
        .await,
        (ResponseCode::NXDomain, vec![])
    );
    // Names outside the mesh go to the node's resolver, both ways.
    let outside = vec![IpAddr::V4(mesh::UPSTREAM_ANSWER)];
    for tcp in [false, true] {
        assert_eq!(
            lookup(&mesh, FRONTEND, resolver, "example.test.", tcp).await,
            (ResponseCode::NoError, outside.clone()),
            "forwarded (tcp: {tcp})"
        );
    }
    // The name the proxy gave works: the VIP it returned reaches the service.
    let (_, resolved) = lookup(&mesh, FRONTEND, resolver, "reviews.", false).await;
    let target = SocketAddr::new(resolved[0], 9080);
    let (_tcp, seen) = greeted(&mesh, FRONTEND, target).await;
    assert_eq!(seen, "10.1.0.2");
}

/// The log lines of everything that runs on this thread (use a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures this thread's `info` logs until the guard is dropped.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// The access-log lines so far.
    fn records(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains("connection complete"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (bounded) until at least `n` access-log lines were written.
    async fn wait_records(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.records();
            if records.len() >= n || tokio::time::Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of `key=` in an access-log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map(|i| i + 2)?
    } else {
        rest.find(' ').unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

/// The trace id of an access-log line (`trace=<32 hex>`).
fn trace_of(line: &str) -> &str {
    let start = line
        .find(" trace=")
        .expect("an access-log line carries its trace")
        + 7;
    &line[start..start + 32]
}

#[tokio::test(flavor = "current_thread")]
async fn both_ztunnels_log_one_line_per_connection_joined_by_the_trace_id() {
    if !root_or_skip("both_ztunnels_log_one_line_per_connection_joined_by_the_trace_id") {
        return;
    }
    let (logs, _guard) = Captured::start();
    let mesh = two_nodes().await;
    let tcp = mesh
        .dial(Some(FRONTEND), addr("10.96.0.10:9080"))
        .await
        .unwrap();
    call(tcp, 1000).await.unwrap();
    let records = logs.wait_records(2).await;
    assert_eq!(records.len(), 2, "one line per side: {records:#?}");
    let outbound = records
        .iter()
        .find(|l| l.contains("direction=\"outbound\""))
        .unwrap();
    let inbound = records
        .iter()
        .find(|l| l.contains("direction=\"inbound\""))
        .unwrap();
    assert_eq!(
        trace_of(outbound),
        trace_of(inbound),
        "{outbound}\n{inbound}"
    );
    for line in [outbound, inbound] {
        // Istio's shape: bare quoted names, the HBONE address, then the app's.
        assert_eq!(
            field(line, "src.workload"),
            Some("\"frontend-0\""),
            "{line}"
        );
        assert_eq!(field(line, "dst.workload"), Some("\"reviews-0\""), "{line}");
        assert_eq!(field(line, "dst.addr"), Some("10.2.0.2:15008"), "{line}");
        assert_eq!(
            field(line, "dst.hbone_addr"),
            Some("10.2.0.2:8080"),
            "{line}"
        );
        assert_eq!(field(line, "error"), None, "{line}");
    }
    assert_eq!(
        field(outbound, "dst.service"),
        Some("\"reviews.shop.svc.cluster.local\"")
    );

    // A denied connection is recorded on both sides, once each, with why.
    assert!(refused(&mesh, ROGUE, addr("10.96.0.10:9080")).await);
    let records = logs.wait_records(4).await;
    let denied: Vec<_> = records
        .iter()
        .filter(|l| l.contains("src.workload=\"rogue-0\""))
        .collect();
    assert_eq!(denied.len(), 2, "{records:#?}");
    let (out, inb) = if denied[0].contains("direction=\"outbound\"") {
        (denied[0], denied[1])
    } else {
        (denied[1], denied[0])
    };
    assert_eq!(trace_of(out), trace_of(inb));
    assert_eq!(field(inb, "response_flags"), Some("\"RBAC\""), "{inb}");
    assert!(field(inb, "error").unwrap().contains("policy"), "{inb}");
    assert_eq!(field(out, "response_flags"), Some("\"UF\""), "{out}");
    assert!(
        field(out, "error")
            .unwrap()
            .contains("authorization policy"),
        "the source side says why: {out}"
    );
    let closed = mesh
        .metric_line(|l| {
            l.starts_with("istio_tcp_connections_closed_total{")
                && l.contains("source_workload=\"rogue-0\"")
        })
        .await;
    assert!(closed.contains("response_flags=\"UF\""), "{closed}");
    mesh.metric_line(|l| {
        l.starts_with("istio_tcp_connections_opened_total{")
            && l.contains("source_workload=\"rogue-0\"")
    })
    .await;
}
