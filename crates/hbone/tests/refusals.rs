//! What a tunnel user sees when something is wrong: the wrong peer, an untrusted or
//! expired certificate, no certificate, an old TLS version, garbage, plain HTTP/1, bad
//! requests on a good connection, slow or greedy clients. Each is refused with a reason,
//! and the server keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bench::demo::{Forwarder, echo_and_verify};
use bytes::Bytes;
use harness::{Harness, request, start_server};
use hbone::{
    ClientSettings, ConnectHandler, HboneError, IncomingConnect, Pool, PoolKey, ServerSettings,
};
use http::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use test_support::{TestCa, anonymous_client_config, closed_port, echo_server, eventually, id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The server still serves a well-behaved client.
async fn still_serves(h: &Harness) {
    let echo = echo_server().await;
    let stream = h.connect(echo).await.expect("server still serving");
    echo_and_verify(stream, 99, 10_000).await.unwrap();
}

/// The server counted `n` refused connections and still serves a good client.
async fn refused_and_still_serving(h: &Harness, n: u64) {
    eventually(Duration::from_secs(5), "refusals counted", || {
        h.stats.handshake_failures.load(Ordering::Relaxed) == n
    })
    .await;
    still_serves(h).await;
}

/// A call from `shop/frontend` (certificates from `manager`) to the server `server_id`
/// at `addr`, which must fail; returns the error.
async fn frontend_call(
    manager: identity::CertificateManager,
    server_id: identity::SpiffeId,
    addr: std::net::SocketAddr,
) -> HboneError {
    let pool = Pool::new(manager, ClientSettings::default());
    let key = PoolKey {
        source: id("shop", "frontend"),
        destination: server_id,
        address: addr,
    };
    pool.connect(&key, &request(echo_server().await))
        .await
        .unwrap_err()
}

fn handshake_message(err: HboneError) -> String {
    match err {
        HboneError::Handshake { source, .. } => source.to_string(),
        other => panic!("expected a handshake refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_refused() {
    let h = Harness::start().await;
    let key = PoolKey {
        destination: id("shop", "payments"),
        ..h.key()
    };
    let err = h
        .pool
        .connect(&key, &request(echo_server().await))
        .await
        .unwrap_err();
    let msg = handshake_message(err);
    assert!(
        msg.contains("spiffe://cluster.local/ns/shop/sa/backend")
            && msg.contains("not the expected spiffe://cluster.local/ns/shop/sa/payments"),
        "{msg}"
    );
    assert_eq!(h.stats.streams.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_server_from_an_untrusted_ca_is_refused() {
    let h = Harness::start().await;
    let other_ca = TestCa::new();
    let pool = Pool::new(other_ca.manager(), ClientSettings::default());
    let err = pool
        .connect(&h.key(), &request(echo_server().await))
        .await
        .unwrap_err();
    let msg = handshake_message(err);
    // Both test roots share a subject name, so webpki finds the "issuer" and then fails
    // its signature; an unrelated subject would give UnknownIssuer. Either way: refused.
    assert!(msg.contains("invalid peer certificate"), "{msg}");
    eventually(
        Duration::from_secs(5),
        "server saw the client give up",
        || h.stats.handshake_failures.load(Ordering::Relaxed) == 1,
    )
    .await;
    still_serves(&h).await;
}

#[tokio::test]
async fn a_client_from_an_untrusted_ca_is_refused_by_the_server() {
    let h = Harness::start().await;
    // The client presents a certificate from another CA.
    let stranger = TestCa::new().manager();
    let own = stranger.fetch(&h.client).await.unwrap();
    let mut config = (*anonymous_client_config(&[&rustls::version::TLS13])).clone();
    config.client_auth_cert_resolver = std::sync::Arc::new(Fixed(own.cert.certified_key().clone()));
    let outcome = tls_outcome(&h, std::sync::Arc::new(config)).await;
    // Refused with an alert (webpki reports the foreign chain as a bad signature because
    // both test roots share a subject name) or a plain close; never answered.
    assert!(
        outcome.contains("alert") || outcome == "read 0 bytes",
        "{outcome}"
    );
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 0);
    refused_and_still_serving(&h, 1).await;
}

/// Connects with `config`, sends the HTTP/2 preface and reads: the handshake error, the
/// read error (TLS 1.3 reports a refused client certificate after the client's
/// Finished), or how many bytes came back.
async fn tls_outcome(h: &Harness, config: std::sync::Arc<rustls::ClientConfig>) -> String {
    let tcp = TcpStream::connect(h.server_addr).await.unwrap();
    let name = ServerName::try_from("backend").unwrap();
    match TlsConnector::from(config).connect(name, tcp).await {
        Err(e) => e.to_string(),
        Ok(mut tls) => {
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match tls.read(&mut buf).await {
                Ok(n) => format!("read {n} bytes"),
                Err(e) => e.to_string(),
            }
        }
    }
}

#[derive(Debug)]
struct Fixed(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let ca = TestCa::new();
    let server_id = id("shop", "backend");
    let (addr, stats) = start_server(
        ca.expired_manager(),
        server_id.clone(),
        ServerSettings::default(),
        Forwarder::default(),
    )
    .await;
    let err = frontend_call(ca.manager(), server_id, addr).await;
    let msg = handshake_message(err);
    assert!(msg.to_lowercase().contains("expired"), "{msg}");
    assert_eq!(stats.streams.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let h = Harness::start().await;
    let pool = Pool::new(h.ca.expired_manager(), ClientSettings::default());
    let result = pool.connect(&h.key(), &request(echo_server().await)).await;
    let err = result.expect_err("an expired client must not get a stream");
    assert!(err.to_string().contains("CertificateExpired"), "{err}");
    // TLS 1.3 reports the refusal after the client's handshake completes, so the pool
    // sees a dead connection and retries once on a new one: two refusals.
    eventually(
        Duration::from_secs(5),
        "server counted the refusals",
        || h.stats.handshake_failures.load(Ordering::Relaxed) == 2,
    )
    .await;
    assert_eq!(h.stats.streams.load(Ordering::Relaxed), 0);
    still_serves(&h).await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let h = Harness::start().await;
    let outcome = tls_outcome(&h, anonymous_client_config(&[&rustls::version::TLS13])).await;
    assert!(
        outcome.to_lowercase().contains("certificaterequired") || outcome.contains("read 0"),
        "{outcome}"
    );
    refused_and_still_serving(&h, 1).await;
}

#[tokio::test]
async fn tls_1_2_clients_are_refused() {
    let h = Harness::start().await;
    let outcome = tls_outcome(&h, anonymous_client_config(&[&rustls::version::TLS12])).await;
    assert!(
        outcome.to_lowercase().contains("protocolversion"),
        "{outcome}"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn garbage_and_plain_http1_are_refused_and_the_server_keeps_serving() {
    let h = Harness::start().await;
    for junk in [
        &b"\x00\x01\x02garbage garbage garbage\xff\xfe"[..],
        &b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        let mut tcp = TcpStream::connect(h.server_addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .expect("the server must close a garbage connection promptly");
        assert!(
            !answer.starts_with(b"HTTP/"),
            "no HTTP/1 answer on an HBONE port"
        );
    }
    refused_and_still_serving(&h, 3).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let settings = ServerSettings {
        handshake_timeout: Duration::from_millis(200),
        ..ServerSettings::default()
    };
    let h = Harness::with(ClientSettings::default(), settings).await;
    let mut tcp = TcpStream::connect(h.server_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed by the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    still_serves(&h).await;
}

/// A raw HTTP/2 client on a genuine mTLS connection, for sending what the pool never would.
async fn raw_h2(h: &Harness) -> h2::client::SendRequest<Bytes> {
    let issued = h.manager.fetch(&h.client).await.unwrap();
    let config = identity::client_config(&issued.cert, vec![h.server.clone()]).unwrap();
    let tcp = TcpStream::connect(h.server_addr).await.unwrap();
    let tls = TlsConnector::from(config)
        .connect(ServerName::IpAddress(h.server_addr.ip().into()), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send
}

async fn status_of(send: &mut h2::client::SendRequest<Bytes>, req: Request<()>) -> StatusCode {
    let mut ready = send.clone().ready().await.unwrap();
    let (response, _body) = ready.send_request(req, true).unwrap();
    response.await.unwrap().status()
}

#[tokio::test]
async fn bad_requests_are_refused_without_disturbing_other_streams_on_the_connection() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    let mut send = raw_h2(&h).await;

    // A good CONNECT first, held open across the bad requests.
    let good = Request::builder()
        .method(Method::CONNECT)
        .uri(echo.to_string())
        .body(())
        .unwrap();
    let (response, mut body_tx) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(good, false)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body_rx = response.into_body();

    let get = Request::builder()
        .method(Method::GET)
        .uri(format!("https://{echo}/"))
        .body(())
        .unwrap();
    assert_eq!(
        status_of(&mut send, get).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    for authority in ["example.com:80", "10.0.0.1", "backend"] {
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap();
        assert_eq!(
            status_of(&mut send, connect).await,
            StatusCode::BAD_REQUEST,
            "{authority}"
        );
    }
    assert_eq!(h.stats.malformed_streams.load(Ordering::Relaxed), 4);

    // The good stream still echoes.
    body_tx
        .send_data(Bytes::from_static(b"ping"), false)
        .unwrap();
    let data = body_rx.data().await.unwrap().unwrap();
    assert_eq!(&data[..], b"ping");
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 1);
}

/// Refuses everything with 401, as a policy would.
struct DenyAll;

impl ConnectHandler for DenyAll {
    async fn handle(&self, connect: IncomingConnect) {
        connect.refuse(StatusCode::UNAUTHORIZED, "denied by test policy");
    }
}

#[tokio::test]
async fn a_policy_refusal_reaches_the_client_as_401() {
    let ca = TestCa::new();
    let manager = ca.manager();
    let server_id = id("shop", "backend");
    let (addr, _) = start_server(
        manager.clone(),
        server_id.clone(),
        ServerSettings::default(),
        DenyAll,
    )
    .await;
    let err = frontend_call(manager, server_id, addr).await;
    assert!(
        matches!(err, HboneError::Refused { status, .. } if status == StatusCode::UNAUTHORIZED),
        "{err}"
    );
    // What a 401 means for the client is explained by the proxy's outcome mapping.
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test]
async fn an_unreachable_target_is_answered_with_503() {
    let h = Harness::start().await;
    let err = h.connect(closed_port().await).await.unwrap_err();
    assert!(
        matches!(err, HboneError::Refused { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
        "{err}"
    );
    still_serves(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_held_back_by_flow_control() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    let mut greedy = h.connect(echo).await.unwrap();
    // Write far more than every window and socket buffer on the path can hold, never
    // reading the echo: the write must stall rather than the server buffering it all.
    let chunk = vec![0u8; 1 << 20];
    let stalled = tokio::time::timeout(Duration::from_secs(2), async {
        for _ in 0..256 {
            greedy.write_all(&chunk).await.unwrap();
        }
    })
    .await;
    assert!(stalled.is_err(), "256 MiB were accepted without being read");
    // Meanwhile everyone else is served.
    still_serves(&h).await;
}

#[tokio::test]
async fn an_unreachable_hbone_peer_is_reported_with_an_operator_hint() {
    let ca = TestCa::new();
    let pool = Pool::new(ca.manager(), ClientSettings::default());
    let key = PoolKey {
        source: id("a", "b"),
        destination: id("a", "c"),
        address: closed_port().await,
    };
    let err = pool
        .connect(&key, &request(echo_server().await))
        .await
        .unwrap_err();
    assert!(matches!(err, HboneError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("15008"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_dead_peer_fail_together() {
    // A peer that accepts TCP and then says nothing: every dial times out in TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let ca = TestCa::new();
    let settings = ClientSettings {
        connect_timeout: Duration::from_millis(300),
        ..ClientSettings::default()
    };
    let pool = Pool::new(ca.manager(), settings);
    let key = PoolKey {
        source: id("a", "b"),
        destination: id("a", "c"),
        address: addr,
    };
    let target = echo_server().await;
    let mut callers = Vec::new();
    for _ in 0..10 {
        let pool = pool.clone();
        let key = key.clone();
        callers.push(tokio::spawn(async move {
            pool.connect(&key, &request(target)).await.unwrap_err()
        }));
    }
    let mut shared = 0;
    for caller in callers {
        let err = caller.await.unwrap();
        if matches!(err, HboneError::PeerUnavailable { .. }) {
            assert!(
                err.to_string().contains("timed out during TLS handshake"),
                "{err}"
            );
            shared += 1;
        } else {
            assert!(matches!(err, HboneError::Timeout { .. }), "{err}");
        }
    }
    assert_eq!(
        shared, 9,
        "one caller dials, the nine queued behind it share its failure"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_whose_streams_keep_being_refused_is_sent_away_and_others_still_served() {
    let settings = ServerSettings {
        max_refused_streams: 50,
        refused_streams_window: Duration::from_secs(600),
        ..ServerSettings::default()
    };
    let h = Harness::with(ClientSettings::default(), settings).await;
    let unreachable = closed_port().await;
    let send = raw_h2(&h).await;
    let mut refused = 0;
    let mut sent_away = false;
    for i in 0..1_000 {
        // Bad authorities (refused by the server) and unreachable targets (refused by
        // the handler) both spend the budget.
        let uri = if i % 2 == 0 {
            "backend".to_owned()
        } else {
            unreachable.to_string()
        };
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .body(())
            .unwrap();
        let Ok(ready) = send.clone().ready().await else {
            sent_away = true;
            break;
        };
        let mut ready = ready;
        let Ok((response, _)) = ready.send_request(connect, true) else {
            sent_away = true;
            break;
        };
        match response.await {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {}
            Ok(_) => refused += 1,
            Err(_) => {
                sent_away = true;
                break;
            }
        }
    }
    assert!(
        sent_away,
        "the connection must be closed once the budget is spent"
    );
    assert!(
        (50..=52).contains(&refused),
        "about the budget's worth of refusals before GOAWAY, got {refused}"
    );
    assert_eq!(h.stats.refusal_goaways.load(Ordering::Relaxed), 1);
    still_serves(&h).await;
}
