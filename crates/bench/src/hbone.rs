//! `bowline bench hbone`: HBONE against plain TCP on loopback, measured in one run.
//!
//! Measures (each `duration` long in total, split into rounds that alternate with the
//! other measures so the machine's drifting load hits them alike): single-stream bulk
//! throughput over plain TCP and over one HBONE stream (client pool → mutual TLS HTTP/2 →
//! server → TCP sink), 16 HBONE streams at once, and 64-byte ping-pong round trips over
//! plain TCP and over HBONE (to an echo target). Throughput counts the bytes the sink
//! received, from the first write to the sink's answer after the half-close. Results are
//! medians over rounds, reported as absolute figures and as ratios against the TCP
//! baseline of the same run — never as a pass/fail threshold.
//!
//! Owns: the sink and the measurements. Must not: tune HBONE differently from what the
//! mesh ships (it uses the default client and server settings).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use hbone::{ClientSettings, ConnectRequest, H2Stream, HboneHeaders, Pool, PoolKey};

use crate::demo::{DemoError, DemoMesh, Forwarder};
use crate::load::{fill_sink, gbps, ping_pong, serve_echo, serve_sink};
use crate::stats::{median, percentile};

/// Each measure alternates with the others this many times.
const ROUNDS: u32 = 3;

/// The benchmark's results; field names are the `--json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct HboneBenchReport {
    /// Plain TCP, one connection.
    pub tcp_gbps: f64,
    /// HBONE, one stream.
    pub hbone_gbps: f64,
    /// HBONE, 16 concurrent streams.
    pub hbone_16_streams_gbps: f64,
    /// Median over rounds of HBONE single-stream throughput / TCP throughput of the
    /// same round.
    pub hbone_to_tcp_ratio: f64,
    /// Plain TCP 64-byte round trip, median.
    pub tcp_rtt_p50_us: f64,
    /// Plain TCP 64-byte round trip, 99th percentile.
    pub tcp_rtt_p99_us: f64,
    /// HBONE 64-byte round trip, median.
    pub hbone_rtt_p50_us: f64,
    /// HBONE 64-byte round trip, 99th percentile.
    pub hbone_rtt_p99_us: f64,
    /// Round trips measured per transport.
    pub rtt_samples: usize,
    /// Seconds per measure (split into alternating rounds).
    pub phase_seconds: f64,
    /// Rounds each measure was split into.
    pub rounds: u32,
}

impl fmt::Display for HboneBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        writeln!(
            f,
            "HBONE vs plain TCP on loopback ({:.1} s per measure in {} alternating rounds; medians)",
            self.phase_seconds, self.rounds
        )?;
        writeln!(f, "{:<34}{:>14}{:>14}", "measure", "value", "vs TCP")?;
        let rows = [
            ("TCP single stream (Gbit/s)", self.tcp_gbps, 1.0),
            (
                "HBONE single stream (Gbit/s)",
                self.hbone_gbps,
                self.hbone_to_tcp_ratio,
            ),
            (
                "HBONE 16 streams (Gbit/s)",
                self.hbone_16_streams_gbps,
                ratio(self.hbone_16_streams_gbps, self.tcp_gbps),
            ),
            ("TCP RTT p50 (µs)", self.tcp_rtt_p50_us, 1.0),
            ("TCP RTT p99 (µs)", self.tcp_rtt_p99_us, 1.0),
            (
                "HBONE RTT p50 (µs)",
                self.hbone_rtt_p50_us,
                ratio(self.hbone_rtt_p50_us, self.tcp_rtt_p50_us),
            ),
            (
                "HBONE RTT p99 (µs)",
                self.hbone_rtt_p99_us,
                ratio(self.hbone_rtt_p99_us, self.tcp_rtt_p99_us),
            ),
        ];
        for (name, value, r) in rows {
            writeln!(f, "{name:<34}{value:>14.2}{r:>13.2}x")?;
        }
        write!(
            f,
            "({} round trips per transport; throughput counts bytes the sink received)",
            self.rtt_samples
        )
    }
}

/// Runs every phase for `phase` each.
pub async fn run(phase: Duration) -> Result<HboneBenchReport, DemoError> {
    let mesh = DemoMesh::new()?;
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    tokio::spawn(serve_sink(sink));
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(serve_echo(echo));
    let server = mesh.start_server(Forwarder::default()).await?;
    let pool = Pool::new(mesh.manager.clone(), ClientSettings::default());
    let key = mesh.key(server);

    // Warm up: certificates issued, connection pooled.
    let warm = open(&pool, &key, echo_addr).await?;
    drop(warm);

    // Alternate short rounds of each transport so drift in the machine's load affects
    // both alike; report medians.
    let slice = phase / ROUNDS;
    let (mut tcp_runs, mut hbone_runs, mut multi_runs, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tcp_rtts, mut hbone_rtts) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let tcp = TcpStream::connect(sink_addr).await?;
        tcp.set_nodelay(true)?;
        let tcp_run = bulk(tcp, slice).await?.gbps();
        let hbone_run = bulk(open(&pool, &key, sink_addr).await?, slice)
            .await?
            .gbps();
        ratios.push(if tcp_run > 0.0 {
            hbone_run / tcp_run
        } else {
            0.0
        });
        tcp_runs.push(tcp_run);
        hbone_runs.push(hbone_run);

        let mut streams = Vec::new();
        for _ in 0..16 {
            let stream = open(&pool, &key, sink_addr).await?;
            streams.push(tokio::spawn(bulk(stream, slice)));
        }
        let mut all = Bulk::default();
        for s in streams {
            let run = s.await??;
            all.bytes += run.bytes;
            all.elapsed = all.elapsed.max(run.elapsed);
        }
        multi_runs.push(all.gbps());

        let tcp = TcpStream::connect(echo_addr).await?;
        tcp.set_nodelay(true)?;
        tcp_rtts.extend(ping_pong(tcp, slice).await?);
        hbone_rtts.extend(ping_pong(open(&pool, &key, echo_addr).await?, slice).await?);
    }
    let tcp_gbps = median(&mut tcp_runs);
    let hbone_gbps = median(&mut hbone_runs);
    let hbone_16_streams_gbps = median(&mut multi_runs);
    let rtt_samples = tcp_rtts.len().min(hbone_rtts.len());

    Ok(HboneBenchReport {
        tcp_gbps,
        hbone_gbps,
        hbone_16_streams_gbps,
        hbone_to_tcp_ratio: median(&mut ratios),
        tcp_rtt_p50_us: percentile(&mut tcp_rtts, 0.50),
        tcp_rtt_p99_us: percentile(&mut tcp_rtts, 0.99),
        hbone_rtt_p50_us: percentile(&mut hbone_rtts, 0.50),
        hbone_rtt_p99_us: percentile(&mut hbone_rtts, 0.99),
        rtt_samples,
        phase_seconds: phase.as_secs_f64(),
        rounds: ROUNDS,
    })
}

async fn open(pool: &Pool, key: &PoolKey, target: SocketAddr) -> Result<H2Stream, DemoError> {
    let request = ConnectRequest {
        authority: target,
        headers: HboneHeaders::default(),
    };
    Ok(pool.connect(key, &request).await?)
}

/// One bulk transfer: bytes the sink counted, from first write to the sink's answer.
#[derive(Debug, Default, Clone, Copy)]
struct Bulk {
    bytes: u64,
    elapsed: Duration,
}

impl Bulk {
    fn gbps(self) -> f64 {
        gbps(self.bytes, self.elapsed)
    }
}

/// Writes to the sink for `phase` and waits for its byte count.
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    phase: Duration,
) -> Result<Bulk, DemoError> {
    let started = Instant::now();
    let bytes = fill_sink(io, phase).await?;
    Ok(Bulk {
        bytes,
        elapsed: started.elapsed(),
    })
}
