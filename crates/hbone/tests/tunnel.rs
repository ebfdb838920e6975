//! What a tunnel user sees when things work: bytes arrive intact, streams share
//! connections up to the cap, half-closes propagate, idle connections go away, and
//! certificate rotation never disturbs a live stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bench::demo::echo_and_verify;
use harness::Harness;
use hbone::{ClientSettings, HboneHeaders, ServerSettings};
use test_support::{count_then_answer_server, echo_server, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `n` tasks each open a stream at the same moment and echo 1000 bytes through it.
async fn echo_concurrently(h: &Harness, echo: std::net::SocketAddr, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let pool = h.pool.clone();
        let key = h.key();
        tasks.push(tokio::spawn(async move {
            let stream = pool.connect(&key, &harness::request(echo)).await.unwrap();
            echo_and_verify(stream, i, 1000).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arrive_intact_from_one_byte_to_one_gibibyte() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    for (i, len) in [1u64, 1000, 16 * 1024 + 1, 1 << 20, 64 << 20, 1 << 30]
        .into_iter()
        .enumerate()
    {
        let stream = h.connect(echo).await.unwrap();
        echo_and_verify(stream, i, len)
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
    }
    assert_eq!(
        h.connections(),
        1,
        "sequential streams reuse one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_and_fifty_concurrent_streams_all_arrive_intact() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    // All 150 are open at the same time before any data flows.
    let mut streams = Vec::new();
    for _ in 0..150 {
        streams.push(h.connect(echo).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        tasks.push(tokio::spawn(echo_and_verify(stream, i, 256 * 1024)));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(h.stats.streams.load(Ordering::Relaxed), 150);
    assert_eq!(
        h.stats.established.load(Ordering::Relaxed),
        2,
        "150 streams at 100 per connection need two connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_the_target_which_can_still_answer() {
    let h = Harness::start().await;
    let target = count_then_answer_server().await;
    let mut stream = h.connect(target).await.unwrap();
    stream.write_all(&[7u8; 100_000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 100000 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_half_close_reaches_the_client_which_can_keep_sending() {
    let h = Harness::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"hello").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        tx.send(got.len()).unwrap();
    });
    let mut stream = h.connect(target).await.unwrap();
    let mut greeting = Vec::new();
    stream.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(
        greeting, b"hello",
        "the target's half-close ends our read side"
    );
    stream.write_all(&vec![1u8; 1 << 20]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(
        rx.await.unwrap(),
        1 << 20,
        "our side kept sending after EOF"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_connection() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    for i in 0..10 {
        let stream = h.connect(echo).await.unwrap();
        echo_and_verify(stream, i, 1000).await.unwrap();
    }
    echo_concurrently(&h, echo, 10).await;
    assert_eq!(h.connections(), 1);
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 1);
    assert_eq!(h.stats.streams.load(Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_streams_share_one_dial() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    // Twenty callers find no connection at once: they wait for one dial.
    echo_concurrently(&h, echo, 20).await;
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_makes_the_pool_open_another() {
    let settings = ClientSettings {
        max_streams_per_connection: 4,
        ..ClientSettings::default()
    };
    let h = Harness::with(settings, ServerSettings::default()).await;
    let echo = echo_server().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(h.connect(echo).await.unwrap());
    }
    assert_eq!(h.connections(), 1);
    held.push(h.connect(echo).await.unwrap());
    assert_eq!(
        h.connections(),
        2,
        "the fifth stream needs a second connection"
    );
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 2);
    // Every held stream still works.
    for (i, stream) in held.into_iter().enumerate() {
        echo_and_verify(stream, i, 10_000).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_timeout() {
    let settings = ClientSettings {
        idle_timeout: Duration::from_millis(200),
        ..ClientSettings::default()
    };
    let h = Harness::with(settings, ServerSettings::default()).await;
    let echo = echo_server().await;
    let stream = h.connect(echo).await.unwrap();
    echo_and_verify(stream, 0, 1000).await.unwrap();
    assert_eq!(h.connections(), 1);
    eventually(Duration::from_secs(5), "idle connection closed", || {
        h.connections() == 0
    })
    .await;
    // The pool recovers transparently.
    let stream = h.connect(echo).await.unwrap();
    echo_and_verify(stream, 1, 1000).await.unwrap();
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_not_closed_as_idle() {
    let settings = ClientSettings {
        idle_timeout: Duration::from_millis(100),
        ..ClientSettings::default()
    };
    let h = Harness::with(settings, ServerSettings::default()).await;
    let echo = echo_server().await;
    let mut stream = h.connect(echo).await.unwrap();
    // Hold the stream quietly for several idle periods, then use it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.connections(), 1);
    stream.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_live_streams_and_new_streams_use_the_new_certificate() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    let mut live = h.connect(echo).await.unwrap();
    live.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    live.read_exact(&mut buf).await.unwrap();
    let old_serial = h
        .manager
        .current(&h.client)
        .unwrap()
        .cert
        .info()
        .serial
        .clone();

    let renewed = h.manager.rotate(&h.client).await.unwrap();
    let new_serial = renewed.cert.info().serial.clone();
    assert_ne!(old_serial, new_serial);
    h.manager.rotate(&h.server).await.unwrap();

    // The live stream is undisturbed.
    live.write_all(b"after!").await.unwrap();
    live.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");

    // A new stream goes over a new connection presenting the new certificate.
    let fresh = h.connect(echo).await.unwrap();
    echo_and_verify(fresh, 1, 100_000).await.unwrap();
    let seen = h.forwarder.seen();
    assert_eq!(seen.first().unwrap().tls.peer_serial, old_serial);
    assert_eq!(seen.last().unwrap().tls.peer_serial, new_serial);
    assert_eq!(h.stats.established.load(Ordering::Relaxed), 2);

    // Once its last stream ends, the old connection closes.
    drop(live);
    eventually(Duration::from_secs(10), "old connection drained", || {
        h.connections() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_reach_the_server_and_identity_comes_from_the_certificate() {
    let h = Harness::start().await;
    let echo = echo_server().await;
    let request = hbone::ConnectRequest {
        authority: echo,
        headers: HboneHeaders {
            baggage: Some("k8s.namespace.name=shop".into()),
            forwarded: Some("for=10.0.0.7".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        },
    };
    let stream = h.pool.connect(&h.key(), &request).await.unwrap();
    echo_and_verify(stream, 0, 10).await.unwrap();
    let seen = h.forwarder.seen();
    assert_eq!(seen[0].headers, request.headers);
    assert_eq!(seen[0].peer, h.client);
    assert_eq!(seen[0].target, echo);
    assert_eq!(seen[0].tls.version, "TLSv1_3");
    assert_eq!(seen[0].tls.key_exchange, "X25519MLKEM768");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_underneath_the_pool_is_replaced() {
    // A relay between client and server that we can cut.
    let h = Harness::start().await;
    let echo = echo_server().await;
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let server = h.server_addr;
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            let mut cut = cut_rx.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(server).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
        }
    });
    let key = hbone::PoolKey {
        address: relay_addr,
        ..h.key()
    };
    let stream = h.pool.connect(&key, &harness::request(echo)).await.unwrap();
    echo_and_verify(stream, 0, 1000).await.unwrap();
    cut_tx.send(true).unwrap();
    eventually(Duration::from_secs(5), "cut connection evicted", || {
        h.pool.connections(&key) == 0
    })
    .await;
    cut_tx.send(false).unwrap();
    let stream = h.pool.connect(&key, &harness::request(echo)).await.unwrap();
    echo_and_verify(stream, 1, 1000).await.unwrap();
    assert_eq!(h.pool.connections(&key), 1);
}
