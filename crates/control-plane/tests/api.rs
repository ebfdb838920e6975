//! The control plane's HTTP surfaces as a client meets them: the public listener is
//! read-only, the management API asks every request for the operator token, and the
//! apply path holds to its limits — refusing what is too big or too deep at once, a few
//! parses at a time, off the async runtime — while readiness and xDS keep being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use support::xds_client::Client;
use support::{ControlPlane, http};
use test_support::fixtures;

/// The shop's namespace and `reviews-0`.
fn mesh() -> String {
    fixtures::documents(&[&fixtures::shop_namespace(), &fixtures::reviews_pod()])
}

static POLICY: LazyLock<String> = LazyLock::new(|| {
    fixtures::documents(&[&fixtures::deny_namespace("deny-legacy", "shop", "legacy")])
});

/// `count` ServiceAccount documents named `<prefix>-<i>`, each about `bytes` long.
fn many_documents(prefix: &str, count: usize, bytes: usize) -> String {
    let note = "n".repeat(bytes.saturating_sub(120));
    (0..count)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {prefix}-{i}, namespace: shop, annotations: {{note: {note}}}}}\n"
            )
        })
        .collect()
}

/// `/ready` answers, and how long it took.
async fn ready_in(cp: &ControlPlane) -> Duration {
    let started = Instant::now();
    let (status, _) = http(&cp.bound.http, "GET", "/ready", None, None).await;
    assert_eq!(status, 200);
    started.elapsed()
}

#[tokio::test]
async fn the_public_listener_serves_metrics_and_readiness_and_refuses_writes() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let token = cp.token();
    let public = &cp.bound.http;
    assert_eq!(http(public, "GET", "/ready", None, None).await.0, 200);
    let (status, metrics) = http(public, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("bowline_config_version"), "{metrics}");
    for (method, path) in [
        ("POST", "/api/apply"),
        ("POST", "/api/delete"),
        ("GET", "/debug/config"),
    ] {
        // Not even with the token: that port is for scrapers and probes.
        let (status, body) = http(public, method, path, Some(POLICY.as_str()), Some(&token)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body.contains("management listener (--api-addr"), "{body}");
    }
    let (_, config) = cp.api("GET", "/debug/config", None).await;
    assert!(!config.contains("deny-legacy"), "nothing was applied");
}

#[tokio::test]
async fn an_apply_with_objects_the_mesh_does_not_use_takes_the_rest_and_lists_them_once() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let body = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls, namespace: shop}}\ndata: {{key: c2VjcmV0}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: reader, namespace: shop}}\nrules: []\n",
        POLICY.as_str()
    );
    let (status, answer) = cp.api("POST", "/api/apply", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["warnings"],
        serde_json::json!([
            "not used by the mesh (accepted, not kept): Secret shop/tls, Role shop/reader"
        ]),
        "{answer}"
    );
    let (_, config) = cp.api("GET", "/debug/config", None).await;
    assert!(
        config.contains("deny-legacy"),
        "the policy was applied: {config}"
    );
    assert!(
        !config.contains("\"tls\""),
        "the Secret was not kept: {config}"
    );
}

#[tokio::test]
async fn the_management_api_refuses_a_request_without_the_operator_token() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let api = &cp.bound.api;
    assert!(cp.bound.api.ip().is_loopback());
    let token_file = cp.state_dir().join("operator-token");
    for token in [None, Some("0".repeat(64)), Some(format!("{}x", cp.token()))] {
        for (method, path) in [("POST", "/api/apply"), ("GET", "/debug/config")] {
            let (status, body) =
                http(api, method, path, Some(POLICY.as_str()), token.as_deref()).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(
                body.contains(&token_file.display().to_string()) && body.contains("--token-file"),
                "the answer says where the token is: {body}"
            );
        }
    }
    let (_, config) = cp.api("GET", "/debug/config", None).await;
    assert!(!config.contains("deny-legacy"), "nothing was applied");
    let (status, body) = cp.api("POST", "/api/apply", Some(POLICY.as_str())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"outcome\": \"created\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_body_is_refused_fast_while_readiness_and_xds_keep_serving() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::AUTHORIZATION_TYPE_URL).await;

    // 200 KB of `[` after a key: 149 s of a core in the YAML loader if it got there.
    let nested = format!("a: {}", "[".repeat(200_000));
    let started = Instant::now();
    let (first, second, ready) = tokio::join!(
        cp.api("POST", "/api/apply", Some(&nested)),
        cp.api("POST", "/api/apply", Some(&nested)),
        ready_in(&cp),
    );
    let took = started.elapsed();
    for (status, body) in [first, second] {
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("nested deeper than 64 levels at line 1 column 68")
                && body.contains("\"limit\": \"depth\""),
            "{body}"
        );
    }
    assert!(took < Duration::from_secs(2), "refused in {took:?}");
    assert!(ready < Duration::from_secs(1), "/ready took {ready:?}");

    // xDS is still served: an apply right after reaches the subscribed client.
    let (status, body) = cp.api("POST", "/api/apply", Some(POLICY.as_str())).await;
    assert_eq!(status, 200, "{body}");
    let pushed = client.next().await;
    assert_eq!(pushed.resources[0].name, "shop/deny-legacy");
}

#[tokio::test]
async fn an_oversized_body_or_too_many_documents_are_refused_with_413() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let big = "x".repeat(control_plane::http_api::MAX_BODY + 1);
    let (status, body) = cp.api("POST", "/api/apply", Some(&big)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("larger than 4194304 bytes (4 MiB)") && body.contains("bodyBytes"),
        "{body}"
    );
    let (status, body) = cp
        .api(
            "POST",
            "/api/apply",
            Some(&many_documents("sa", 10_001, 130)),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("document 10001: more than 10000 documents"),
        "{body}"
    );
    let scalar = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: big, labels: {{a: {}}}}}\n",
        "v".repeat((1 << 20) + 1)
    );
    let (status, body) = cp.api("POST", "/api/apply", Some(&scalar)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("the limit is 1048576 bytes"), "{body}");
    let (_, config) = cp.api("GET", "/debug/config", None).await;
    assert!(!config.contains("sa-1") && !config.contains("\"big\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parses_beyond_two_at_once_are_told_to_retry_while_xds_keeps_pushing() {
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let mut client = Client::connect(&cp).await;
    client.synced(xds::AUTHORIZATION_TYPE_URL).await;
    let body = many_documents("sa", 10_000, 400);
    // Retried when the probe's small apply holds a slot at that moment.
    let slow = || async {
        loop {
            let answer = cp.api("POST", "/api/apply?dryRun=true", Some(&body)).await;
            if answer.0 != 503 {
                break answer;
            }
        }
    };
    let probe = async {
        // While two big applies are parsed: a third is told to retry, readiness answers,
        // a policy from a file reaches the xDS client.
        let mut busy = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while busy.is_none() && Instant::now() < deadline {
            // A dry run: harmless when it slips in before both big ones hold their slot.
            let (status, answer) = cp
                .api("POST", "/api/apply?dryRun=true", Some(POLICY.as_str()))
                .await;
            match status {
                503 => busy = Some(answer),
                200 => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => panic!("{status}: {answer}"),
            }
        }
        let ready = ready_in(&cp).await;
        std::fs::write(cp.config_dir().join("policy.yaml"), POLICY.as_str()).unwrap();
        let pushed = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a push while the parses run");
        (busy, ready, pushed)
    };
    let (first, second, (busy, ready, pushed)) = tokio::join!(slow(), slow(), probe);
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(second.0, 200, "{}", second.1);
    let busy = busy.expect("a third apply was refused while two were parsed");
    let (_, metrics) = http(&cp.bound.http, "GET", "/metrics", None, None).await;
    assert!(metrics.contains("bowline_apply_busy_total"), "{metrics}");
    assert!(
        busy.contains("busy: 2 applies are being parsed; retry"),
        "{busy}"
    );
    assert!(ready < Duration::from_millis(500), "/ready took {ready:?}");
    assert_eq!(pushed.resources[0].name, "shop/deny-legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_while_its_apply_is_parsed_changes_nothing() {
    use tokio::io::AsyncWriteExt;
    let cp = ControlPlane::start(&[("mesh.yaml", &mesh())]).await;
    let body = many_documents("gone", 10_000, 400);
    // How long the whole request takes when its client stays.
    let started = Instant::now();
    let (status, answer) = cp.api("POST", "/api/apply?dryRun=true", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let whole = started.elapsed();

    let token = cp.token();
    let mut tcp = tokio::net::TcpStream::connect(cp.bound.api).await.unwrap();
    let head = format!(
        "POST /api/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(whole / 3).await;
    drop(tcp);

    // Once the server has stopped the apply as cancelled (not refused): nothing was
    // applied, and both parse slots are free.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (_, metrics) = http(&cp.bound.http, "GET", "/metrics", None, None).await;
        if metrics.contains("bowline_apply_cancelled_total 1") || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains("bowline_apply_cancelled_total 1"),
        "stopped as cancelled, not refused: {metrics}"
    );
    let (_, config) = cp.api("GET", "/debug/config", None).await;
    assert!(
        !config.contains("gone-0"),
        "applied although its client went away (whole request {whole:?})"
    );
    let (a, b) = tokio::join!(
        cp.api("POST", "/api/apply", Some(POLICY.as_str())),
        cp.api("POST", "/api/apply?dryRun=true", Some(POLICY.as_str())),
    );
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
}
