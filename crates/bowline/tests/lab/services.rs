//! Services from both sides of the mesh: the lab's kube-proxy lets a pod outside the
//! mesh reach an ambient pod through its Service VIP, as on Kubernetes — the connection
//! arrives at the pod in plaintext, the pod's capture hands it to ztunnel's inbound
//! plaintext listener (15006), and the pod's PeerAuthentication decides (PERMISSIVE lets
//! it in, STRICT refuses it); and a ServiceEntry gives an ambient pod a host outside
//! the mesh, answered by ztunnel's DNS proxy and reached in plaintext.

use test_support::root_or_skip;

use super::{Lab, mesh, text};

/// Asserts that `node`'s ztunnel counted a TCP connection with all of `labels`.
fn assert_tcp_opened(lab: &Lab, node: &str, labels: &[&str]) {
    let (_, metrics) = super::node_get(lab, node, "http://127.0.0.1:15020/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && labels.iter().all(|label| l.contains(label))),
        "{labels:?} on {node}: {metrics}"
    );
}

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
";

#[test]
fn a_pod_outside_the_mesh_reaches_an_ambient_pod_by_its_service_vip_in_plaintext_until_strict() {
    if !root_or_skip(
        "a_pod_outside_the_mesh_reaches_an_ambient_pod_by_its_service_vip_in_plaintext_until_strict",
    ) {
        return;
    }
    let (lab, status) = Lab::started("t13kp", &mesh());
    let outsider_ip = super::address_in(&status, "plain/outsider", false);
    // By name (the hosts file gives the VIP) and by the VIP itself.
    let vip = super::address_in(&status, "shop/server", true);
    for url in ["http://server.shop/".to_owned(), format!("http://{vip}/")] {
        let (ok, body) = lab.call("plain/outsider", &url);
        assert!(ok, "{url}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["pod"], "server", "{body}");
        // Plaintext from outside the mesh keeps its source address.
        assert!(
            answer["peer"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{outsider_ip}:")),
            "{body}"
        );
    }
    // It came in through the server's ztunnel as plaintext (its inbound listener 15006).
    assert_tcp_opened(
        &lab,
        "node-2",
        &[
            "destination_workload=\"server\"",
            "reporter=\"destination\"",
            "connection_security_policy=\"none\"",
        ],
    );

    // STRICT, applied with --wait: once it returns every proxy holds it, so the very
    // next plaintext call is refused; the mesh's own callers still get through.
    std::fs::write(lab.dir.path().join("strict.yaml"), STRICT).unwrap();
    let strict = lab.dir.path().join("strict.yaml");
    let out = lab.bowline(&[
        "apply",
        "--name",
        &lab.name,
        "--wait",
        "-f",
        strict.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("acknowledged by every connected proxy"),
        "{}",
        text(&out)
    );
    let (ok, body) = lab.call("plain/outsider", "http://server.shop/");
    assert!(
        !ok,
        "STRICT let plaintext in right after apply --wait: {body}"
    );
    let (ok, body) = lab.call("shop/client", "http://server/");
    assert!(ok, "mutual TLS from inside the mesh: {body}");

    // A proxy that does not acknowledge within the timeout is named (node-1's ztunnel,
    // stopped); the change is made all the same, and it takes it once it runs again.
    {
        let _stopped = super::Paused::new(super::ztunnel_pid(&lab, "node-1").unwrap());
        let out = lab.bowline(&[
            "delete",
            "--name",
            &lab.name,
            "--wait",
            "--timeout",
            "1",
            "-f",
            strict.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("PeerAuthentication shop/strict deleted"),
            "{said}"
        );
        assert!(
            said.contains("not every proxy acknowledged version") && said.contains("node-1 ("),
            "{said}"
        );
        assert!(!said.contains("node-2 ("), "node-2 did acknowledge: {said}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lab.call("plain/outsider", "http://server.shop/").0 {
        assert!(
            std::time::Instant::now() < deadline,
            "PERMISSIVE again never let plaintext in"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_service_entry_host_is_answered_by_the_dns_proxy_and_reached_outside_the_mesh() {
    if !root_or_skip(
        "a_service_entry_host_is_answered_by_the_dns_proxy_and_reached_outside_the_mesh",
    ) {
        return;
    }
    let (lab, status) = Lab::started("t13se", &mesh());
    let outsider_ip = super::address_in(&status, "plain/outsider", false);
    let entry = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: outside, namespace: shop}}
spec:
  hosts: [api.outside.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 8080}}]
  endpoints: [{{address: {outsider_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: by-name, namespace: shop}}
spec:
  hosts: [named.outside.example]
  resolution: DNS
  ports: [{{number: 80, name: http}}]
  endpoints: [{{address: outsider.plain.svc.cluster.local}}]
"
    );
    std::fs::write(lab.dir.path().join("entry.yaml"), &entry).unwrap();
    let file = lab.dir.path().join("entry.yaml");
    let out = lab.bowline(&[
        "apply",
        "--name",
        &lab.name,
        "--wait",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The enrolled client resolves the host through ztunnel's DNS proxy (an allocated
    // VIP) and its connection goes out in plaintext to the entry's endpoint.
    let (ok, body) = lab.call("shop/client", "http://api.outside.example/");
    assert!(ok, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["pod"], "outsider", "{body}");
    assert!(
        answer["local"].as_str().unwrap().ends_with(":8080"),
        "the targetPort: {body}"
    );
    assert_tcp_opened(
        &lab,
        "node-1",
        &[
            "reporter=\"source\"",
            "destination_service=\"api.outside.example\"",
            "connection_security_policy=\"none\"",
        ],
    );
    // Resolution DNS: ztunnel resolves the endpoint's name from its node (the lab's
    // hosts file there: the outsider's Service VIP) and connects to it in plaintext.
    let (ok, body) = lab.call("shop/client", "http://named.outside.example/");
    assert!(ok, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["pod"], "outsider", "{body}");
    // A pod outside the mesh has no DNS proxy: the name is not the cluster's to answer.
    let (ok, _) = lab.call("plain/outsider", "http://api.outside.example/");
    assert!(!ok, "only mesh pods resolve a ServiceEntry host");
}
