//! The request path against bad clients and what they see: the waypoint's own answers,
//! malformed and oversized requests, slow headers, HTTP/2 floods (CONTINUATION, rapid
//! reset) — on in-memory connections, with an
//! empty mesh (every destination unknown).

use super::*;

#[test]
fn every_refusal_has_its_status_flag_and_body() {
    let denied = Refusal::Denied {
        policy: "shop/get-only".into(),
        reason: "no rule matched".into(),
    };
    assert_eq!(
        denied.answer(),
        (StatusCode::FORBIDDEN, "-", "RBAC: access denied")
    );
    assert_eq!(
        Refusal::NoRoute(String::new()).answer().0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(Refusal::NoHealthyUpstream(String::new()).answer().1, "UH");
    assert_eq!(Refusal::ConnectFailed(String::new()).answer().1, "UF");
    assert_eq!(Refusal::UpstreamReset(String::new()).answer().1, "UC");
}

#[test]
fn hosts_lose_their_port() {
    assert_eq!(strip_port("reviews:9080"), "reviews");
    assert_eq!(strip_port("reviews"), "reviews");
    assert_eq!(strip_port("[fd00::1]:80"), "fd00::1");
}

#[test]
fn request_ids_are_uuid_shaped_and_differ() {
    let (a, b) = (new_request_id(), new_request_id());
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(a.matches('-').count(), 4);
}

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A waypoint's shared state with an empty mesh and an in-process CA.
fn shared() -> Arc<Shared> {
    let ca =
        identity::CertificateAuthority::generate(identity::CaConfig::new("cluster.local")).unwrap();
    let manager =
        identity::CertificateManager::new(Arc::new(ca), identity::ManagerConfig::default());
    let identity = identity::SpiffeId::new("cluster.local", "shop", "waypoint").unwrap();
    Arc::new(Shared {
        gateway: ("shop".into(), "waypoint".into()),
        identity: identity.clone(),
        state: Arc::default(),
        policies: Arc::default(),
        metrics: Arc::default(),
        connector: crate::upstream::Connector {
            identity,
            pool: hbone::Pool::new(manager.clone(), hbone::ClientSettings::default()),
            hbone_port: 15008,
        },
        clients: crate::upstream::HttpClients::default(),
        load: crate::upstream::Load::default(),
        manager,
    })
}

/// A tunnel to an address nobody serves, from a shop client.
fn tunnel() -> Arc<Tunnel> {
    Arc::new(Tunnel {
        peer: Some(identity::SpiffeId::new("cluster.local", "shop", "client").unwrap()),
        peer_addr: "10.0.0.2:40000".parse().unwrap(),
        target: "10.96.0.9:80".parse().unwrap(),
        client: "10.0.0.2".parse().unwrap(),
        ingress: None,
    })
}

/// A connection being served; the client end.
fn connection(shared: &Arc<Shared>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve(shared.clone(), tunnel(), server));
    client
}

/// What the server sends until it closes or a response head (and what followed it in
/// the same read) has arrived.
async fn answer(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh connection gets its answer (an abusive one before it changed nothing).
async fn a_new_connection_is_served(shared: &Arc<Shared>) {
    let mut good = connection(shared);
    good.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut good).await.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn a_destination_without_a_route_is_404_nr_and_counted() {
    let shared = shared();
    let mut client = connection(&shared);
    client
        .write_all(b"GET /x HTTP/1.1\r\nhost: nowhere\r\n\r\n")
        .await
        .unwrap();
    let text = answer(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    // The body may come in the next read.
    let mut rest = [0u8; 256];
    let n = client.read(&mut rest).await.unwrap_or(0);
    let all = format!("{text}{}", String::from_utf8_lossy(&rest[..n]));
    assert!(all.contains("no route to the destination"), "{all}");
    let metrics = shared.metrics.encode();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.contains("response_code=\"404\"") && line.contains("response_flags=\"NR\""),
        "{line}"
    );
    assert!(
        line.contains("reporter=\"waypoint\"") && line.ends_with(" 1"),
        "{line}"
    );
}

#[tokio::test]
async fn a_malformed_request_is_refused_with_400_and_the_next_connection_is_served() {
    let shared = shared();
    let mut bad = connection(&shared);
    bad.write_all(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
        .await
        .unwrap();
    let text = answer(&mut bad).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    a_new_connection_is_served(&shared).await;
}

#[tokio::test]
async fn oversized_headers_are_refused_without_buffering_them() {
    let shared = shared();
    let mut client = connection(&shared);
    let big = "a".repeat(MAX_HEADER_BYTES + 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    // The server may stop reading before all of it is written.
    let _ = client.write_all(request.as_bytes()).await;
    let text = answer(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let shared = shared();
    let mut client = connection(&shared);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HEADER_TIMEOUT * 3, client.read(&mut buf)).await;
    let n = read.expect("the connection is closed at the header timeout");
    let text = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).into_owned();
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(started.elapsed() >= HEADER_TIMEOUT);
}

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// `GET /` to `x`, HPACK-encoded from the static table.
const GET_SLASH: [u8; 6] = [0x82, 0x86, 0x84, 0x41, 0x01, b'x'];

/// Writes `bytes` to the server in a task (the server may stop reading), reads what the
/// server sends until it closes the connection; returns the frame types it sent, the
/// bytes the client managed to write, and whether it closed within `within`.
async fn h2_exchange(
    client: DuplexStream,
    bytes: Vec<u8>,
    within: Duration,
) -> (Vec<u8>, usize, bool) {
    let (mut read, mut write) = tokio::io::split(client);
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(16 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
            count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // Keep the write half open: closing it would end the connection from our side.
        std::future::pending::<()>().await;
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    let written = written.load(Ordering::Relaxed) as usize;
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let len = usize::from(received[at]) << 16
            | usize::from(received[at + 1]) << 8
            | usize::from(received[at + 2]);
        kinds.push(received[at + 3]);
        at += 9 + len;
    }
    (kinds, written, closed)
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_with_goaway_and_the_next_connection_is_served() {
    let shared = shared();
    let client = connection(&shared);
    // A header block that never ends: HEADERS without END_HEADERS, then 1000 CONTINUATION
    // frames of 16 KiB (16 MiB, 250 times the header limit).
    let mut flood = h2_preface();
    flood.extend(frame(HEADERS, END_STREAM, 1, &GET_SLASH));
    let filler = [0x40u8; 16 * 1024];
    for _ in 0..1000 {
        flood.extend(frame(CONTINUATION, 0, 1, &filler));
    }
    let total = flood.len();
    let (kinds, written, closed) = h2_exchange(client, flood, Duration::from_secs(30)).await;
    assert!(closed, "the flooding connection was not closed");
    assert!(kinds.contains(&GOAWAY), "no GOAWAY, frames {kinds:?}");
    // Nothing was buffered to the end: the server stopped reading early (what was
    // written is at most what it read plus the in-memory pipe's 1 MiB).
    assert!(
        written < total / 4,
        "{written} of {total} bytes were taken in"
    );
    let metrics = shared.metrics.encode();
    assert!(!metrics.contains("istio_requests_total{"), "{metrics}");

    a_new_connection_is_served(&shared).await;
}

#[tokio::test]
async fn a_rapid_reset_flood_is_cut_off_with_goaway_and_the_next_connection_is_served() {
    let shared = shared();
    let client = connection(&shared);
    // 10 000 requests, each cancelled right after it is sent (CVE-2023-44487).
    let mut flood = h2_preface();
    for i in 0..10_000u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(HEADERS, END_STREAM | END_HEADERS, stream, &GET_SLASH));
        flood.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let (kinds, _written, closed) = h2_exchange(client, flood, Duration::from_secs(30)).await;
    assert!(closed, "the flooding connection was not closed");
    assert!(kinds.contains(&GOAWAY), "no GOAWAY, frames {kinds:?}");
    let served: u64 = shared
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        served < 1000,
        "{served} of the 10 000 cancelled requests were handled"
    );

    a_new_connection_is_served(&shared).await;
}
