//! `bowline bench l4`: direct pod → pod TCP against pod → ztunnel → HBONE → ztunnel → pod,
//! measured in one run on the same veth path, with a plain two-relay path as a floor.
//!
//! Two pods in fresh namespaces, each served by its own `bowline ztunnel` process (two
//! nodes), handed over through the real ZDS protocol. Rounds alternate between the
//! direct path (no capture rules), the relay path (two plain TCP relay processes on the
//! mesh's hops, [`crate::relay`]) and the mesh path (capture installed), so drift in the
//! machine's load hits all alike; figures are medians over rounds. Measured: single and
//! 4-stream throughput, 64-byte ping-pong RTT, HTTP/1.1 keep-alive request rate, new
//! connections per second, and each ztunnel's peak RSS (with its anonymous and
//! file-backed parts) and CPU time.
//!
//! Owns: the two-pod topology and the measurements. Must not: judge the figures (no
//! thresholds) or leave namespaces or processes behind when it fails half-way.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::capture::{self, CaptureSpec};
use netns::socket::{self, Outgoing};
use netns::{Namespace, NetnsError};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use lab::topology::Fabric;

use crate::load;
use crate::procfs::{PeakSampler, usage};
use crate::stats::{median, percentile};

const SINK: u16 = 9000;
const ECHO: u16 = 9001;
const HTTP: u16 = 9002;
const CONNECT: u16 = 9003;
const APP_PORTS: [u16; 4] = [SINK, ECHO, HTTP, CONNECT];
/// Relay A listens on 127.0.0.1:(app port + this) in the client pod.
const RELAY_A_OFFSET: u16 = 100;
/// Relay B listens on the server pod's address at (app port + this).
const RELAY_B_OFFSET: u16 = 200;
const ROUNDS: u32 = 2;

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Namespace trouble (are you root?).
    #[error("{0} (the benchmark builds network namespaces: run it as root)")]
    Netns(#[from] NetnsError),
    /// Socket or process trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node agent side failed.
    #[error("node agent: {0}")]
    Agent(#[from] cni::zds::AgentError),
    /// Something else, explained.
    #[error("{0}")]
    Setup(String),
}

/// The results; field names are the `--json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct L4BenchReport {
    /// Direct TCP, one stream.
    pub direct_gbps: f64,
    /// Through the mesh, one stream.
    pub mesh_gbps: f64,
    /// Through two plain TCP relays, one stream.
    pub relay_gbps: f64,
    /// Direct, 4 streams.
    pub direct_4_streams_gbps: f64,
    /// Mesh, 4 streams.
    pub mesh_4_streams_gbps: f64,
    /// Relays, 4 streams.
    pub relay_4_streams_gbps: f64,
    /// Direct 64-byte RTT median.
    pub direct_rtt_p50_us: f64,
    /// Direct 64-byte RTT p99.
    pub direct_rtt_p99_us: f64,
    /// Mesh 64-byte RTT median.
    pub mesh_rtt_p50_us: f64,
    /// Mesh 64-byte RTT p99.
    pub mesh_rtt_p99_us: f64,
    /// Relay 64-byte RTT median.
    pub relay_rtt_p50_us: f64,
    /// Relay 64-byte RTT p99.
    pub relay_rtt_p99_us: f64,
    /// Direct HTTP/1.1 keep-alive requests per second (one connection).
    pub direct_http_rps: f64,
    /// Mesh HTTP/1.1 keep-alive requests per second (one connection).
    pub mesh_http_rps: f64,
    /// Relay HTTP/1.1 keep-alive requests per second (one connection).
    pub relay_http_rps: f64,
    /// Direct new connections per second (connect, 1-byte exchange, close).
    pub direct_conn_per_s: f64,
    /// Mesh new connections per second.
    pub mesh_conn_per_s: f64,
    /// Relay new connections per second.
    pub relay_conn_per_s: f64,
    /// Largest peak RSS of the two ztunnels (the kernel's high-water mark).
    pub ztunnel_peak_rss_kb: u64,
    /// Largest anonymous (heap, stacks) part of a ztunnel's RSS, sampled every 50 ms.
    pub ztunnel_peak_rss_anon_kb: u64,
    /// Largest file-backed part (the mapped binary and libraries), sampled likewise.
    pub ztunnel_peak_rss_file_kb: u64,
    /// CPU seconds used by the client node's ztunnel.
    pub ztunnel_a_cpu_seconds: f64,
    /// CPU seconds used by the server node's ztunnel.
    pub ztunnel_b_cpu_seconds: f64,
    /// Seconds per measure and path (split over rounds).
    pub phase_seconds: f64,
}

impl std::fmt::Display for L4BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        writeln!(
            f,
            "pod → pod: direct, through two plain TCP relays, and through two ztunnels (HBONE); {:.1} s per measure and path, medians of {ROUNDS} alternating rounds",
            self.phase_seconds
        )?;
        writeln!(
            f,
            "{:<31}{:>11}{:>11}{:>11}{:>13}{:>12}",
            "measure", "direct", "relay", "mesh", "mesh/direct", "mesh/relay"
        )?;
        let rows = [
            (
                "throughput, 1 stream (Gbit/s)",
                self.direct_gbps,
                self.relay_gbps,
                self.mesh_gbps,
            ),
            (
                "throughput, 4 streams (Gbit/s)",
                self.direct_4_streams_gbps,
                self.relay_4_streams_gbps,
                self.mesh_4_streams_gbps,
            ),
            (
                "RTT p50 (µs)",
                self.direct_rtt_p50_us,
                self.relay_rtt_p50_us,
                self.mesh_rtt_p50_us,
            ),
            (
                "RTT p99 (µs)",
                self.direct_rtt_p99_us,
                self.relay_rtt_p99_us,
                self.mesh_rtt_p99_us,
            ),
            (
                "HTTP/1.1 keep-alive (req/s)",
                self.direct_http_rps,
                self.relay_http_rps,
                self.mesh_http_rps,
            ),
            (
                "new connections (conn/s)",
                self.direct_conn_per_s,
                self.relay_conn_per_s,
                self.mesh_conn_per_s,
            ),
        ];
        for (name, direct, relay, mesh) in rows {
            writeln!(
                f,
                "{name:<31}{direct:>11.2}{relay:>11.2}{mesh:>11.2}{:>12.2}x{:>11.2}x",
                r(mesh, direct),
                r(mesh, relay)
            )?;
        }
        writeln!(
            f,
            "added RTT p50: mesh {:.1} µs, relays {:.1} µs",
            self.mesh_rtt_p50_us - self.direct_rtt_p50_us,
            self.relay_rtt_p50_us - self.direct_rtt_p50_us,
        )?;
        writeln!(
            f,
            "ztunnel peak RSS {} KiB (anonymous {} KiB, file-backed {} KiB); CPU seconds: client node {:.2}, server node {:.2}",
            self.ztunnel_peak_rss_kb,
            self.ztunnel_peak_rss_anon_kb,
            self.ztunnel_peak_rss_file_kb,
            self.ztunnel_a_cpu_seconds,
            self.ztunnel_b_cpu_seconds
        )
    }
}

/// A child process killed (by its PID) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Samples {
    gbps: Vec<f64>,
    gbps4: Vec<f64>,
    rtt: Vec<f64>,
    rps: Vec<f64>,
    cps: Vec<f64>,
}

/// Runs the benchmark with `binary` (the `bowline` executable) as ztunnel.
pub async fn run(binary: &Path, phase: Duration) -> Result<L4BenchReport, BenchError> {
    let prefix = format!("bb{:x}", std::process::id() % 0xffff);
    let mut fabric = Fabric::new(&prefix)?;
    let a = fabric.add_pod("10.1.0.2".parse().map_err(|_| setup("address"))?)?;
    let b = fabric.add_pod("10.2.0.2".parse().map_err(|_| setup("address"))?)?;
    let pod_a = fabric.pod(a).ok_or_else(|| setup("pod a"))?;
    let pod_b = fabric.pod(b).ok_or_else(|| setup("pod b"))?;
    let dir = TempDir::new("l4")?;
    let config = dir.path().join("mesh.yaml");
    std::fs::write(
        &config,
        "workloads:\n\
         - {uid: bench/a, name: a, namespace: bench, serviceAccount: client, addresses: [10.1.0.2], protocol: HBONE}\n\
         - {uid: bench/b, name: b, namespace: bench, serviceAccount: server, addresses: [10.2.0.2], protocol: HBONE}\n",
    )?;
    start_apps(&pod_b.ns, pod_b.ip).await?;

    let (ztunnel_a, agent_a) = start_ztunnel(binary, dir.path(), "a", &config).await?;
    let (ztunnel_b, agent_b) = start_ztunnel(binary, dir.path(), "b", &config).await?;
    let file_a = pod_a.ns.open()?;
    let file_b = pod_b.ns.open()?;
    agent_a
        .add(
            &pod_ref("bench/a", "a", "client"),
            std::os::fd::AsFd::as_fd(&file_a),
        )
        .await?;
    agent_b
        .add(
            &pod_ref("bench/b", "b", "server"),
            std::os::fd::AsFd::as_fd(&file_b),
        )
        .await?;
    agent_a.snapshot_sent().await?;
    agent_b.snapshot_sent().await?;

    let relay_a = start_relay(
        binary,
        &pod_a.ns,
        APP_PORTS.map(|p| {
            (
                SocketAddr::new([127, 0, 0, 1].into(), p + RELAY_A_OFFSET),
                SocketAddr::new(pod_b.ip, p + RELAY_B_OFFSET),
            )
        }),
    )?;
    let relay_b = start_relay(
        binary,
        &pod_b.ns,
        APP_PORTS.map(|p| {
            (
                SocketAddr::new(pod_b.ip, p + RELAY_B_OFFSET),
                SocketAddr::new(pod_b.ip, p),
            )
        }),
    )?;
    let relay_entry = SocketAddr::new([127, 0, 0, 1].into(), CONNECT + RELAY_A_OFFSET);
    wait_listening(&pod_a.ns, relay_entry).await?;

    let sampler = PeakSampler::start(
        vec![ztunnel_a.0.id(), ztunnel_b.0.id()],
        &["RssAnon:", "RssFile:"],
    );
    let slice = phase / ROUNDS;
    let server = pod_b.ip;
    let direct_to = move |port: u16| SocketAddr::new(server, port);
    let relay_to = |port: u16| SocketAddr::new([127, 0, 0, 1].into(), port + RELAY_A_OFFSET);
    let (mut direct, mut relay, mut mesh) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..ROUNDS {
        capture::remove(&pod_a.ns)?;
        capture::remove(&pod_b.ns)?;
        measure(&pod_a.ns, direct_to, slice, &mut direct).await?;
        measure(&pod_a.ns, relay_to, slice, &mut relay).await?;
        capture::install(&pod_a.ns, &CaptureSpec::default())?;
        capture::install(&pod_b.ns, &CaptureSpec::default())?;
        measure(&pod_a.ns, direct_to, slice, &mut mesh).await?;
    }
    let (rss_a, cpu_a) = usage(ztunnel_a.0.id())?;
    let (rss_b, cpu_b) = usage(ztunnel_b.0.id())?;
    let [anon, file] = sampler.finish()[..] else {
        return Err(setup("RSS sampler"));
    };
    drop((agent_a, agent_b, ztunnel_a, ztunnel_b, relay_a, relay_b));
    Ok(L4BenchReport {
        direct_gbps: median(&mut direct.gbps),
        mesh_gbps: median(&mut mesh.gbps),
        relay_gbps: median(&mut relay.gbps),
        direct_4_streams_gbps: median(&mut direct.gbps4),
        mesh_4_streams_gbps: median(&mut mesh.gbps4),
        relay_4_streams_gbps: median(&mut relay.gbps4),
        direct_rtt_p50_us: percentile(&mut direct.rtt, 0.5),
        direct_rtt_p99_us: percentile(&mut direct.rtt, 0.99),
        mesh_rtt_p50_us: percentile(&mut mesh.rtt, 0.5),
        mesh_rtt_p99_us: percentile(&mut mesh.rtt, 0.99),
        relay_rtt_p50_us: percentile(&mut relay.rtt, 0.5),
        relay_rtt_p99_us: percentile(&mut relay.rtt, 0.99),
        direct_http_rps: median(&mut direct.rps),
        mesh_http_rps: median(&mut mesh.rps),
        relay_http_rps: median(&mut relay.rps),
        direct_conn_per_s: median(&mut direct.cps),
        mesh_conn_per_s: median(&mut mesh.cps),
        relay_conn_per_s: median(&mut relay.cps),
        ztunnel_peak_rss_kb: rss_a.max(rss_b),
        ztunnel_peak_rss_anon_kb: anon,
        ztunnel_peak_rss_file_kb: file,
        ztunnel_a_cpu_seconds: cpu_a,
        ztunnel_b_cpu_seconds: cpu_b,
        phase_seconds: phase.as_secs_f64(),
    })
}

/// Starts `bowline bench relay` inside `ns` with the given LISTEN=TARGET maps.
fn start_relay(
    binary: &Path,
    ns: &Namespace,
    maps: [(SocketAddr, SocketAddr); 4],
) -> Result<Child, BenchError> {
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", ns.name()])
        .arg(binary)
        .args(["--log", "warn", "bench", "relay"]);
    for (from, to) in maps {
        command.arg("--map").arg(format!("{from}={to}"));
    }
    Ok(Child(command.stdin(std::process::Stdio::null()).spawn()?))
}

/// Waits until `addr` accepts connections from inside `ns`.
async fn wait_listening(ns: &Namespace, addr: SocketAddr) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match dial(ns, addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::Setup(format!(
                    "the benchmark's TCP relay did not start listening on {addr}: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn setup(what: &str) -> BenchError {
    BenchError::Setup(format!("bench setup failed: {what}"))
}

fn pod_ref<'a>(uid: &'a str, name: &'a str, sa: &'a str) -> cni::zds::PodRef<'a> {
    cni::zds::PodRef {
        uid,
        name,
        namespace: "bench",
        service_account: sa,
    }
}

/// A temporary directory (`bowline-bench-<what>-<pid>`) removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("bowline-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_ztunnel(
    binary: &Path,
    dir: &Path,
    node: &str,
    config: &Path,
) -> Result<(Child, cni::zds::ZtunnelConnection), BenchError> {
    let socket_path = dir.join(format!("ztunnel-{node}.sock"));
    let agent = cni::zds::AgentSocket::bind(&socket_path)?;
    let log = std::fs::File::create(dir.join(format!("ztunnel-{node}.log")))?;
    let child = Child(
        lab::process::ztunnel_command(binary, config, &socket_path, &dir.join("ca"), "warn")
            .stderr(log)
            .spawn()?,
    );
    let connection = tokio::time::timeout(Duration::from_secs(10), agent.accept())
        .await
        .map_err(|_| {
            BenchError::Setup(format!("ztunnel {node} did not connect to its node agent"))
        })??;
    Ok((child, connection))
}

/// Runs every measure once from `client`; `to` maps an app port to the address the
/// client dials for it on the path under test.
async fn measure(
    client: &Namespace,
    to: impl Fn(u16) -> SocketAddr,
    slice: Duration,
    out: &mut Samples,
) -> Result<(), BenchError> {
    out.gbps.push(bulk(client, to(SINK), 1, slice).await?);
    out.gbps4.push(bulk(client, to(SINK), 4, slice).await?);
    out.rtt
        .extend(load::ping_pong(dial(client, to(ECHO)).await?, slice).await?);
    out.rps.push(http_rate(client, to(HTTP), slice).await?);
    out.cps
        .push(connection_rate(client, to(CONNECT), slice).await?);
    Ok(())
}

async fn dial(client: &Namespace, target: SocketAddr) -> Result<TcpStream, BenchError> {
    let socket = client
        .run(move || socket::outgoing_socket(target, Outgoing::default()))
        .await??;
    Ok(socket.connect(target).await?)
}

async fn bulk(
    client: &Namespace,
    target: SocketAddr,
    streams: usize,
    slice: Duration,
) -> Result<f64, BenchError> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..streams {
        let tcp = dial(client, target).await?;
        tasks.push(tokio::spawn(load::fill_sink(tcp, slice)));
    }
    let mut bytes = 0u64;
    for task in tasks {
        bytes += task.await.map_err(|e| setup(&e.to_string()))??;
    }
    Ok(load::gbps(bytes, started.elapsed()))
}

async fn http_rate(
    client: &Namespace,
    target: SocketAddr,
    slice: Duration,
) -> Result<f64, BenchError> {
    let mut http = load::HttpConnection::new(dial(client, target).await?, "bench", "/");
    let started = Instant::now();
    let deadline = started + slice;
    let mut done = 0u64;
    while Instant::now() < deadline {
        http.get().await?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

async fn connection_rate(
    client: &Namespace,
    target: SocketAddr,
    slice: Duration,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    let deadline = started + slice;
    let mut done = 0u64;
    let mut byte = [0u8; 1];
    while Instant::now() < deadline {
        let mut tcp = dial(client, target).await?;
        tcp.write_all(b"x").await?;
        tcp.read_exact(&mut byte).await?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The apps in the server pod: a counting sink, an echo, an HTTP/1.1 server and a
/// one-byte responder.
async fn start_apps(ns: &Namespace, ip: IpAddr) -> Result<(), BenchError> {
    let mut listeners = Vec::new();
    for port in APP_PORTS {
        let addr = SocketAddr::new(ip, port);
        let listener = ns.run(move || socket::listen(addr, false)).await??;
        listeners.push(socket::into_tokio(listener)?);
    }
    let mut it = listeners.into_iter();
    let (Some(sink), Some(echo), Some(http), Some(connect)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(setup("listeners"));
    };
    tokio::spawn(load::serve_sink(sink));
    tokio::spawn(load::serve_echo(echo));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = http.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            b"hello from the bench\n",
                        )),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = connect.accept().await {
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                if tcp.read_exact(&mut byte).await.is_ok() {
                    let _ = tcp.write_all(&byte).await;
                }
            });
        }
    });
    Ok(())
}
