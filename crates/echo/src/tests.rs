//! Behaviour of the echo app as a client of it sees it, on 127.0.0.1 ephemeral ports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::Target;
use crate::http::Identity;
use crate::{EchoConfig, EchoError, get, run, serve_as};

const PATIENCE: Duration = Duration::from_secs(10);

/// An echo app serving on ephemeral ports, stopped when dropped.
struct Echo {
    http: SocketAddr,
    tcp: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), EchoError>>,
}

impl Echo {
    async fn start(pod: &str, upstreams: Vec<String>) -> Self {
        let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let (http_addr, tcp_addr) = (http.local_addr().unwrap(), tcp.local_addr().unwrap());
        let identity = Identity {
            pod: Some(pod.to_owned()),
            namespace: Some("demo".to_owned()),
            version: Some("v2".to_owned()),
            hostname: "test-host".to_owned(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_as(
            identity,
            vec![http],
            vec![tcp],
            (upstreams, crate::http::MAX_REQUEST_BODY),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            http: http_addr,
            tcp: tcp_addr,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn stop(self) -> Result<(), EchoError> {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the echo app did not stop after shutdown")
            .unwrap()
    }
}

/// What a test client got back.
struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    json: Value,
    /// The client's end of the connection, as the client saw it.
    client: SocketAddr,
}

/// Sends one request over a fresh HTTP/1.1 connection.
async fn http1(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    reply(response, client).await
}

/// Sends one request over a fresh HTTP/2 connection, prior knowledge (no upgrade).
async fn h2c(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    reply(response, client).await
}

async fn reply(response: hyper::Response<hyper::body::Incoming>, client: SocketAddr) -> Reply {
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|error| panic!("answer is not JSON ({error}): {body:?}"))
    };
    Reply {
        status,
        content_type,
        json,
        client,
    }
}

fn get_request(authority: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, authority.to_string())
        .body(Full::default())
        .unwrap()
}

/// A port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    closed_ports::<1>()[0]
}

/// `N` distinct ports nothing listens on (all bound at once, so they differ, then released).
fn closed_ports<const N: usize>() -> [u16; N] {
    let listeners: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    listeners.map(|listener| listener.local_addr().unwrap().port())
}

#[tokio::test]
async fn http_request_is_answered_with_what_the_server_saw() {
    let echo = Echo::start("echo-1", vec![]).await;
    let request = Request::post("/x?y=1")
        .header(hyper::header::HOST, "echo.demo")
        .header("x-test", "a")
        .header("x-repeated", "1")
        .header("x-repeated", "2")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();

    let reply = http1(echo.http, request).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let json = &reply.json;
    assert_eq!(json["pod"], "echo-1");
    assert_eq!(json["namespace"], "demo");
    assert_eq!(json["hostname"], "test-host");
    assert_eq!(json["peer"], reply.client.to_string());
    assert_eq!(json["local"], echo.http.to_string());
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/x?y=1");
    assert_eq!(json["protocol"], "HTTP/1.1");
    assert_eq!(json["headers"]["host"], "echo.demo");
    assert_eq!(json["headers"]["x-test"], "a");
    assert_eq!(json["headers"]["x-repeated"], "1, 2");
    assert_eq!(json["body_bytes"], 5);
    assert_eq!(json["upstreams"], json!([]));
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_on_the_same_port() {
    let echo = Echo::start("echo-1", vec![]).await;

    let over_h2 = h2c(
        echo.http,
        Request::put(echo.url("/h2?q"))
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap(),
    )
    .await;
    let over_h1 = http1(echo.http, get_request(echo.http, "/h1")).await;

    assert_eq!(over_h2.status, StatusCode::OK);
    assert_eq!(over_h2.json["protocol"], "HTTP/2.0");
    assert_eq!(over_h2.json["method"], "PUT");
    assert_eq!(over_h2.json["path"], "/h2?q");
    assert_eq!(over_h2.json["body_bytes"], 3);
    assert_eq!(over_h2.json["peer"], over_h2.client.to_string());
    assert_eq!(over_h1.json["protocol"], "HTTP/1.1");
    assert_eq!(over_h1.json["path"], "/h1");
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_answers_are_included_in_order() {
    let a = Echo::start("a", vec![]).await;
    let b = Echo::start("b", vec![]).await;
    let upstreams = vec![a.url("/one"), b.url("/two?x=2"), a.url("/status/503")];
    let front = Echo::start("front", upstreams.clone()).await;

    let reply = http1(front.http, get_request(front.http, "/")).await;

    assert_eq!(reply.status, StatusCode::OK);
    let answers = reply.json["upstreams"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    for (answer, url) in answers.iter().zip(&upstreams) {
        assert_eq!(answer["url"], url.as_str());
        assert!(answer.get("error").is_none(), "{answer}");
    }
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(answers[0]["body"]["pod"], "a");
    assert_eq!(answers[0]["body"]["path"], "/one");
    assert_eq!(answers[0]["body"]["headers"]["host"], a.http.to_string());
    assert_eq!(answers[1]["body"]["pod"], "b");
    assert_eq!(answers[1]["body"]["path"], "/two?x=2");
    assert_eq!(answers[2]["status"], 503);
    assert_eq!(answers[2]["body"]["pod"], "a");
    for echo in [front, a, b] {
        echo.stop().await.unwrap();
    }
}

#[tokio::test]
async fn upstream_calls_carry_the_trace_headers_and_end_user_and_nothing_else() {
    let a = Echo::start("a", vec![]).await;
    let front = Echo::start("front", vec![a.url("/")]).await;
    let mut request = get_request(front.http, "/");
    for (name, value) in [
        ("x-request-id", "r-1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("end-user", "jason"),
        ("authorization", "Bearer secret"),
    ] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }

    let reply = http1(front.http, request).await;

    assert_eq!(reply.json["version"], "v2");
    let seen = &reply.json["upstreams"][0]["body"]["headers"];
    assert_eq!(seen["x-request-id"], "r-1");
    assert_eq!(seen["end-user"], "jason");
    assert!(
        seen["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-0af7"))
    );
    assert!(seen.get("authorization").is_none(), "{seen}");
    for echo in [front, a] {
        echo.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_reported_not_fatal() {
    let good = Echo::start("good", vec![]).await;
    let unreachable = format!("http://127.0.0.1:{}/", closed_port());
    let front = Echo::start("front", vec![unreachable.clone(), good.url("/")]).await;

    let reply = http1(front.http, get_request(front.http, "/")).await;

    assert_eq!(reply.status, StatusCode::OK);
    let answers = reply.json["upstreams"].as_array().unwrap();
    assert_eq!(answers[0]["url"], unreachable.as_str());
    assert!(answers[0].get("status").is_none());
    let error = answers[0]["error"].as_str().unwrap();
    assert!(error.contains("cannot connect to 127.0.0.1:"), "{error}");
    assert_eq!(answers[1]["status"], 200);
    assert_eq!(answers[1]["body"]["pod"], "good");
    front.stop().await.unwrap();
    good.stop().await.unwrap();
}

#[tokio::test]
async fn an_upstream_body_that_is_not_json_is_included_as_text() {
    let plain = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let plain_url = format!("http://{}/", plain.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = plain.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot here\n")
                .await
                .unwrap();
        }
    });
    let front = Echo::start("front", vec![plain_url.clone()]).await;

    let reply = http1(front.http, get_request(front.http, "/")).await;

    assert_eq!(
        reply.json["upstreams"],
        json!([{ "url": plain_url, "status": 404, "body": "not here\n" }])
    );
    front.stop().await.unwrap();
}

#[tokio::test]
async fn status_path_sets_the_response_code() {
    let echo = Echo::start("echo-1", vec![]).await;

    let teapot = http1(echo.http, get_request(echo.http, "/status/418")).await;
    let unavailable = h2c(
        echo.http,
        Request::get(echo.url("/status/503"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let nonsense = http1(echo.http, get_request(echo.http, "/status/abc")).await;
    let out_of_range = http1(echo.http, get_request(echo.http, "/status/100")).await;
    let (status, body) = get(&echo.url("/status/302"), PATIENCE).await.unwrap();

    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.content_type.as_deref(), Some("application/json"));
    assert_eq!(teapot.json["path"], "/status/418");
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.json["protocol"], "HTTP/2.0");
    assert_eq!(nonsense.status, StatusCode::BAD_REQUEST);
    assert!(
        nonsense.json["error"]
            .as_str()
            .unwrap()
            .contains("200 to 599")
    );
    assert_eq!(out_of_range.status, StatusCode::BAD_REQUEST);
    assert_eq!(status, 302);
    assert!(body.contains("\"path\":\"/status/302\""), "{body}");
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn no_content_statuses_and_head_are_answered_without_a_body() {
    let echo = Echo::start("echo-1", vec![]).await;

    let no_content_h1 = get(&echo.url("/status/204"), PATIENCE).await.unwrap();
    let not_modified_h1 = get(&echo.url("/status/304"), PATIENCE).await.unwrap();
    let no_content_h2 = h2c(
        echo.http,
        Request::get(echo.url("/status/204"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let head_h2 = h2c(
        echo.http,
        Request::head(echo.url("/")).body(Full::default()).unwrap(),
    )
    .await;

    assert_eq!(no_content_h1, (204, String::new()));
    assert_eq!(not_modified_h1, (304, String::new()));
    assert_eq!(no_content_h2.status, StatusCode::NO_CONTENT);
    assert_eq!(no_content_h2.json, Value::Null);
    assert_eq!(head_h2.status, StatusCode::OK);
    assert_eq!(head_h2.json, Value::Null);
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_request_body_is_refused_with_413() {
    let echo = Echo::start("echo-1", vec![]).await;
    let limit = 16 * 1024 * 1024;

    let at_limit = Request::post("/")
        .body(Full::new(Bytes::from(vec![b'x'; limit])))
        .unwrap();
    let over_limit = Request::post("/")
        .body(Full::new(Bytes::from(vec![b'x'; limit + 1])))
        .unwrap();
    let accepted = http1(echo.http, at_limit).await;
    let refused = http1(echo.http, over_limit).await;

    assert_eq!(accepted.status, StatusCode::OK);
    assert_eq!(accepted.json["body_bytes"], limit);
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        refused.json["error"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_port_echoes_until_the_client_half_closes() {
    let echo = Echo::start("echo-1", vec![]).await;
    let mut stream = TcpStream::connect(echo.tcp).await.unwrap();

    // A first exchange while the connection is fully open…
    stream.write_all(b"ping").await.unwrap();
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).await.unwrap();
    // …then more than a socket buffer, with our write side closed after it.
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = stream.into_split();
    let sent = payload.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
        writer
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(PATIENCE, reader.read_to_end(&mut echoed))
        .await
        .expect("the echo did not close its side after ours")
        .unwrap();
    let _writer = writing.await.unwrap();

    assert_eq!(&first, b"ping");
    assert!(
        echoed == payload,
        "echoed {} bytes, sent {}",
        echoed.len(),
        payload.len()
    );
    echo.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_listening_and_closes_open_connections() {
    let echo = Echo::start("echo-1", vec![]).await;
    let (http, tcp) = (echo.http, echo.tcp);
    let mut open = TcpStream::connect(tcp).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    open.read_exact(&mut byte).await.unwrap();

    echo.stop().await.unwrap();

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, open.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(TcpStream::connect(http).await.is_err());
    assert!(TcpStream::connect(tcp).await.is_err());
}

#[tokio::test]
async fn run_serves_the_configured_ports_until_shutdown() {
    let [http_port, tcp_port] = closed_ports();
    let config = EchoConfig {
        http_ports: vec![http_port],
        tcp_ports: vec![tcp_port],
        bind: Ipv4Addr::LOCALHOST.into(),
        ..EchoConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(run(config, async move {
        let _ = stopped.await;
    }));

    // `run` binds in its own task: poll until the HTTP port answers.
    let url = format!("http://127.0.0.1:{http_port}/ready");
    let deadline = Instant::now() + PATIENCE;
    let (status, body) = loop {
        match get(&url, PATIENCE).await {
            Ok(answer) => break answer,
            Err(error) if Instant::now() < deadline => {
                assert!(!running.is_finished(), "run ended early: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("the HTTP port never answered: {error}"),
        }
    };
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, tcp_port))
        .await
        .unwrap();
    tcp.write_all(b"hi").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tcp.read_to_end(&mut echoed).await.unwrap();
    stop.send(()).unwrap();

    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["path"], "/ready");
    assert!(
        json["hostname"]
            .as_str()
            .is_some_and(|name| !name.is_empty())
    );
    assert_eq!(echoed, b"hi");
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_port_already_in_use_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = EchoConfig {
        http_ports: vec![port],
        bind: Ipv4Addr::LOCALHOST.into(),
        ..EchoConfig::default()
    };

    let error = run(config, std::future::pending()).await.unwrap_err();

    assert!(
        matches!(error, EchoError::Bind { addr, .. } if addr.port() == port),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")),
        "{message}"
    );
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_binding() {
    let nothing = run(EchoConfig::default(), std::future::pending()).await;
    let upstreams_without_http = run(
        EchoConfig {
            tcp_ports: vec![closed_port()],
            upstreams: vec!["http://127.0.0.1:1/".to_owned()],
            ..EchoConfig::default()
        },
        std::future::pending(),
    )
    .await;
    let bad_upstream = run(
        EchoConfig {
            http_ports: vec![closed_port()],
            upstreams: vec!["https://example.com/".to_owned()],
            ..EchoConfig::default()
        },
        std::future::pending(),
    )
    .await;

    assert!(
        matches!(nothing, Err(EchoError::NothingToServe)),
        "{nothing:?}"
    );
    assert!(matches!(
        upstreams_without_http,
        Err(EchoError::UpstreamsWithoutHttp)
    ));
    assert!(
        matches!(&bad_upstream, Err(EchoError::BadUrl { url, .. }) if url == "https://example.com/"),
        "{bad_upstream:?}"
    );
}

#[test]
fn urls_are_split_into_host_port_and_path() {
    let target = |url: &str| {
        let t = Target::parse(url).unwrap();
        (t.host, t.port, t.authority, t.path)
    };
    let owned = |host: &str, port, authority: &str, path: &str| {
        (host.to_owned(), port, authority.to_owned(), path.to_owned())
    };

    assert_eq!(
        target("http://svc:8080/a/b?c=d"),
        owned("svc", 8080, "svc:8080", "/a/b?c=d")
    );
    assert_eq!(target("http://svc"), owned("svc", 80, "svc", "/"));
    assert_eq!(target("HTTP://svc?x"), owned("svc", 80, "svc", "/?x"));
    assert_eq!(target("http://svc/p#frag"), owned("svc", 80, "svc", "/p"));
    assert_eq!(target("http://[::1]:9/"), owned("::1", 9, "[::1]:9", "/"));
    assert_eq!(
        target("http://[fd00::2]"),
        owned("fd00::2", 80, "[fd00::2]", "/")
    );
}

#[test]
fn urls_that_cannot_be_fetched_are_refused_with_the_reason() {
    for (url, reason) in [
        ("https://svc/", "only http://"),
        ("svc:80/", "only http://"),
        ("http://", "no host"),
        ("http://:80/", "no host"),
        ("http://svc:0/", "port"),
        ("http://svc:65536/", "port"),
        ("http://svc:http/", "port"),
        ("http://user@svc/", "user names"),
        ("http://[::1/", "']'"),
        ("http://[::1]x/", "']'"),
    ] {
        match Target::parse(url) {
            Err(error @ EchoError::BadUrl { .. }) => {
                let message = error.to_string();
                assert!(message.contains(reason), "{url}: {message}");
                assert!(message.contains(url), "{url}: {message}");
            }
            other => panic!("{url}: expected BadUrl, got {other:?}"),
        }
    }
}

// On a paused clock: `get`'s own timeout is the only timer, so the runtime jumps to it once
// the exchange is stuck, and the time that passed is exactly the timeout.
#[tokio::test(start_paused = true)]
async fn get_gives_up_after_the_timeout() {
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    // Accept and hold the connection without ever answering.
    let holder = tokio::spawn(async move {
        let (stream, _) = silent.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(stream);
    });

    let started = tokio::time::Instant::now();
    let error = tokio::time::timeout(PATIENCE, get(&url, Duration::from_millis(200)))
        .await
        .expect("get gave up by itself")
        .unwrap_err();

    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "gave up early"
    );
    assert!(
        matches!(&error, EchoError::Timeout { url: u, after } if *u == url && *after == Duration::from_millis(200)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("no complete answer from {url} within 200ms"))
    );
    holder.abort();
}
