//! Namespaces, links, capture and descriptor passing, on real kernels objects the test
//! builds and removes (root required; see `test_support::root_or_skip`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use netns::capture::{self, CaptureSpec};
use netns::{Namespace, fdpass, links, socket};
use test_support::{root_or_skip, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two namespaces joined by a veth pair: `a` 10.9.0.1/24, `b` 10.9.0.2/24.
fn pair() -> (Namespace, Namespace) {
    let a = Namespace::create(&unique_name("bla")).unwrap();
    let b = Namespace::create(&unique_name("blb")).unwrap();
    let (ia, ib) = (unique_name("va"), unique_name("vb"));
    links::veth(&a, &ia, &b, &ib).unwrap();
    links::add_address(&a, &ia, "10.9.0.1/24").unwrap();
    links::add_address(&b, &ib, "10.9.0.2/24").unwrap();
    (a, b)
}

#[tokio::test]
async fn a_listener_bound_inside_a_namespace_serves_from_the_runtime() {
    if !root_or_skip("a_listener_bound_inside_a_namespace_serves_from_the_runtime") {
        return;
    }
    let (a, b) = pair();
    let addr: SocketAddr = "10.9.0.2:7000".parse().unwrap();
    let listener = b
        .run(move || socket::listen(addr, false))
        .await
        .unwrap()
        .unwrap();
    let listener = socket::into_tokio(listener).unwrap();
    tokio::spawn(async move {
        let (mut tcp, peer) = listener.accept().await.unwrap();
        tcp.write_all(peer.ip().to_string().as_bytes())
            .await
            .unwrap();
    });
    // The client socket is created inside `a`, then used from the runtime.
    let client = a
        .run(move || socket::outgoing_socket(addr, socket::Outgoing::default()))
        .await
        .unwrap()
        .unwrap();
    let mut tcp = client.connect(addr).await.unwrap();
    let mut seen = String::new();
    tcp.read_to_string(&mut seen).await.unwrap();
    assert_eq!(seen, "10.9.0.1");
}

#[tokio::test]
async fn namespaces_disappear_when_their_handle_drops() {
    if !root_or_skip("namespaces_disappear_when_their_handle_drops") {
        return;
    }
    let ns = Namespace::create(&unique_name("bld")).unwrap();
    let path = ns.path();
    assert!(path.exists());
    drop(ns);
    assert!(!path.exists());
}

#[tokio::test]
async fn capture_redirects_outbound_to_15001_with_the_original_destination() {
    if !root_or_skip("capture_redirects_outbound_to_15001_with_the_original_destination") {
        return;
    }
    let (pod, _peer) = pair();
    capture::install(&pod, &CaptureSpec::default()).unwrap();
    assert!(capture::is_installed(&pod));
    // Installing twice is harmless.
    capture::install(&pod, &CaptureSpec::default()).unwrap();

    let listener = pod
        .run(|| socket::listen("0.0.0.0:15001".parse().unwrap(), false))
        .await
        .unwrap()
        .unwrap();
    let listener = socket::into_tokio(listener).unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        socket::original_dst(&tcp).unwrap()
    });
    // The "app" in the pod dials the peer; capture sends it to 15001 instead.
    let target: SocketAddr = "10.9.0.2:9080".parse().unwrap();
    let app = pod
        .run(move || socket::outgoing_socket(target, socket::Outgoing::default()))
        .await
        .unwrap()
        .unwrap();
    let _conn = app.connect(target).await.unwrap();
    assert_eq!(accept.await.unwrap(), target);

    // Packets marked 0x539 (ztunnel's own) are not captured: nothing listens on the
    // peer, so the connection is refused rather than redirected.
    let marked = pod
        .run(move || {
            socket::outgoing_socket(
                target,
                socket::Outgoing {
                    mark: Some(capture::PROXY_MARK),
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
    assert!(marked.connect(target).await.is_err());

    capture::remove(&pod).unwrap();
    assert!(!capture::is_installed(&pod));
}

#[tokio::test]
async fn a_namespace_descriptor_travels_over_a_seqpacket_socket() {
    if !root_or_skip("a_namespace_descriptor_travels_over_a_seqpacket_socket") {
        return;
    }
    let (a, _b) = pair();
    let (s1, s2) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::empty(),
    )
    .unwrap();
    let file = a.open().unwrap();
    fdpass::send(s1.as_raw_fd(), b"add", Some(file.as_raw_fd())).unwrap();
    let mut buf = [0u8; 16];
    let (n, fd) = fdpass::recv(s2.as_raw_fd(), &mut buf).unwrap();
    assert_eq!(&buf[..n], b"add");
    let fd = fd.expect("descriptor attached");
    // The received descriptor enters the same namespace: its veth address is there.
    let addrs = netns::namespace::in_netns(fd, "received".into(), || {
        std::net::TcpListener::bind("10.9.0.1:0").is_ok()
    })
    .await
    .unwrap();
    assert!(addrs, "the received namespace holds 10.9.0.1");
}

#[tokio::test]
async fn a_worker_creates_many_sockets_inside_its_namespace() {
    if !root_or_skip("a_worker_creates_many_sockets_inside_its_namespace") {
        return;
    }
    let (a, _b) = pair();
    let worker = netns::NetnsWorker::start(a.open().unwrap(), "a").unwrap();
    for port in 7100..7110u16 {
        let addr: SocketAddr = format!("10.9.0.1:{port}").parse().unwrap();
        // 10.9.0.1 exists only inside `a`: binding it proves where the socket lives.
        let bound = worker
            .run(move || socket::listen(addr, false))
            .await
            .unwrap();
        assert!(bound.is_ok(), "{bound:?}");
    }
}

#[test]
fn a_worker_labelled_with_a_nul_byte_starts_instead_of_panicking() {
    if !root_or_skip("a_worker_labelled_with_a_nul_byte_starts_instead_of_panicking") {
        return;
    }
    // Found by the zds fuzz target: a pod uid from the node agent names the thread.
    let ns = std::fs::File::open("/proc/self/ns/net").unwrap();
    let worker = netns::NetnsWorker::start(ns, "shop/a\0b").unwrap();
    assert_eq!(worker.label(), "shop/a\0b");
}
