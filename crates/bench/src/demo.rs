//! `bowline hbone-demo`: a CA, an HBONE server in front of an echo target and a client
//! pool, all on loopback in one process; data is pushed through several streams, checked
//! byte for byte, and what happened is reported (identities on both ends, TLS parameters,
//! bytes, throughput, connections used).
//!
//! Also home of [`Forwarder`], the simplest useful [`ConnectHandler`]: connect to the
//! requested loopback target and pump bytes. The demo, the HBONE benchmark and hbone's
//! own tests use it.
//!
//! Owns: the demo's CA, identities, forwarder and byte-exact check. Must not: reach
//! anything but loopback.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hbone::{
    ClientSettings, ConnectHandler, ConnectRequest, HboneHeaders, IncomingConnect, Pool, PoolKey,
    Server, ServerSettings, TlsSummary, copy_bidirectional,
};
use http::StatusCode;
use identity::{CaConfig, CertificateAuthority, CertificateManager, ManagerConfig, SpiffeId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::serve_echo;

/// What a [`Forwarder`] saw of one stream.
#[derive(Debug, Clone)]
pub struct SeenStream {
    /// The client's verified identity.
    pub peer: SpiffeId,
    /// The requested target.
    pub target: SocketAddr,
    /// The metadata headers.
    pub headers: HboneHeaders,
    /// The connection's TLS parameters.
    pub tls: Arc<TlsSummary>,
}

/// Connects each `CONNECT` to its target (loopback only; anything else gets 403) and
/// pumps bytes both ways. 503 when the target refuses.
#[derive(Debug, Clone, Default)]
pub struct Forwarder {
    seen: Arc<Mutex<Vec<SeenStream>>>,
}

impl Forwarder {
    /// The streams served so far.
    pub fn seen(&self) -> Vec<SeenStream> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl ConnectHandler for Forwarder {
    async fn handle(&self, connect: IncomingConnect) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(SeenStream {
                peer: connect.peer.clone(),
                target: connect.target,
                headers: connect.headers.clone(),
                tls: connect.tls.clone(),
            });
        }
        if !connect.target.ip().is_loopback() {
            connect.refuse(
                StatusCode::FORBIDDEN,
                "the demo forwarder only reaches loopback",
            );
            return;
        }
        let mut upstream = match TcpStream::connect(connect.target).await {
            Ok(tcp) => tcp,
            Err(error) => {
                connect.refuse(StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let target = connect.target;
        let Ok(stream) = connect.accept() else { return };
        let (read, write) = upstream.split();
        if let Err(error) = copy_bidirectional(read, write, stream).await {
            tracing::debug!(%target, %error, "forwarded stream ended with an error");
        }
    }
}

/// A CA, a manager, and the two identities of the demo.
#[derive(Debug, Clone)]
pub struct DemoMesh {
    /// Certificates for both ends, from the in-process CA.
    pub manager: CertificateManager,
    /// The client workload.
    pub client: SpiffeId,
    /// The server workload.
    pub server: SpiffeId,
}

impl DemoMesh {
    /// A fresh in-memory CA for `cluster.local`.
    pub fn new() -> Result<Self, DemoError> {
        identity::install_default_provider();
        let ca = CertificateAuthority::generate(CaConfig::new("cluster.local"))?;
        Ok(Self {
            manager: CertificateManager::new(Arc::new(ca), ManagerConfig::default()),
            client: SpiffeId::new("cluster.local", "demo", "client")?,
            server: SpiffeId::new("cluster.local", "demo", "server")?,
        })
    }

    /// Starts an HBONE server for the server identity on an ephemeral loopback port,
    /// forwarding with `forwarder`. Returns its address.
    pub async fn start_server(&self, forwarder: Forwarder) -> Result<SocketAddr, DemoError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Server::new(
            self.server.clone(),
            self.manager.clone(),
            forwarder,
            ServerSettings::default(),
        );
        tokio::spawn(server.serve(listener));
        Ok(addr)
    }

    /// The pool key from client to server at `addr`.
    pub fn key(&self, addr: SocketAddr) -> PoolKey {
        PoolKey {
            source: self.client.clone(),
            destination: self.server.clone(),
            address: addr,
        }
    }
}

/// Why the demo or the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Socket trouble.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// CA trouble.
    #[error(transparent)]
    Ca(#[from] identity::CaError),
    /// Bad identity.
    #[error(transparent)]
    Identity(#[from] identity::SpiffeIdError),
    /// Tunnel trouble.
    #[error(transparent)]
    Hbone(#[from] hbone::HboneError),
    /// The echoed bytes differ from what was sent.
    #[error("stream {stream}: echoed bytes differ from what was sent at offset {offset}")]
    Corrupted {
        /// Which stream.
        stream: usize,
        /// First differing offset.
        offset: u64,
    },
    /// A task failed.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Identity the client presented, as the server verified it.
    pub client_seen_by_server: Vec<SpiffeId>,
    /// Identity the client required of the server (the handshake enforced it).
    pub server_required_by_client: SpiffeId,
    /// TLS parameters of the connection.
    pub tls: Option<TlsSummary>,
    /// Streams opened.
    pub streams: usize,
    /// Bytes sent per stream (and echoed back).
    pub bytes_per_stream: u64,
    /// HBONE connections the pool used.
    pub connections: usize,
    /// Wall time of the transfer.
    pub elapsed: Duration,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.bytes_per_stream * self.streams as u64 * 2;
        let gbps = total as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9;
        writeln!(
            f,
            "HBONE demo — mutual TLS HTTP/2 CONNECT tunnel on loopback"
        )?;
        let mut seen = self.client_seen_by_server.clone();
        seen.dedup();
        for id in &seen {
            writeln!(f, "  server verified client identity : {id}")?;
        }
        writeln!(
            f,
            "  client required server identity : {}",
            self.server_required_by_client
        )?;
        if let Some(tls) = &self.tls {
            writeln!(
                f,
                "  TLS                             : {} {} key exchange {}",
                tls.version, tls.cipher_suite, tls.key_exchange
            )?;
        }
        writeln!(
            f,
            "  streams                         : {} on {} HBONE connection(s)",
            self.streams, self.connections
        )?;
        writeln!(
            f,
            "  bytes                           : {} sent and {} echoed per stream, all verified",
            self.bytes_per_stream, self.bytes_per_stream
        )?;
        write!(
            f,
            "  throughput                      : {:.2} Gbit/s both directions together in {:.2?}",
            gbps, self.elapsed
        )
    }
}

/// Runs the demo: `streams` streams each echoing `bytes_per_stream` bytes.
pub async fn run(streams: usize, bytes_per_stream: u64) -> Result<DemoReport, DemoError> {
    let mesh = DemoMesh::new()?;
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(serve_echo(echo));
    let forwarder = Forwarder::default();
    let server_addr = mesh.start_server(forwarder.clone()).await?;
    let pool = Pool::new(mesh.manager.clone(), ClientSettings::default());
    let key = mesh.key(server_addr);

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for index in 0..streams {
        let pool = pool.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let request = ConnectRequest {
                authority: echo_addr,
                headers: HboneHeaders {
                    baggage: Some("k8s.namespace.name=demo,k8s.deployment.name=client".into()),
                    forwarded: Some("for=127.0.0.1".into()),
                    traceparent: None,
                },
            };
            let stream = pool.connect(&key, &request).await?;
            echo_and_verify(stream, index, bytes_per_stream).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let seen = forwarder.seen();
    Ok(DemoReport {
        client_seen_by_server: seen.iter().map(|s| s.peer.clone()).collect(),
        server_required_by_client: mesh.server.clone(),
        tls: seen.first().map(|s| (*s.tls).clone()),
        streams,
        bytes_per_stream,
        connections: pool.connections(&key),
        elapsed,
    })
}

/// Writes `len` pattern bytes into `stream` (offset-dependent, so reordering or loss is
/// caught), half-closes, and checks that exactly the same bytes come back, concurrently.
pub async fn echo_and_verify<S: AsyncRead + AsyncWrite>(
    stream: S,
    index: usize,
    len: u64,
) -> Result<(), DemoError> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let seed = index as u64;
    let write = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(buf.len() as u64) as usize;
            fill_pattern(seed, offset, &mut buf[..n]);
            writer.write_all(&buf[..n]).await?;
            offset += n as u64;
        }
        writer.shutdown().await?;
        Ok::<(), DemoError>(())
    };
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut expected = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            fill_pattern(seed, offset, &mut expected[..n]);
            if let Some(i) = buf[..n]
                .iter()
                .zip(&expected[..n])
                .position(|(a, b)| a != b)
            {
                return Err(DemoError::Corrupted {
                    stream: index,
                    offset: offset + i as u64,
                });
            }
            offset += n as u64;
        }
        if offset != len {
            return Err(DemoError::Corrupted {
                stream: index,
                offset,
            });
        }
        Ok(())
    };
    tokio::try_join!(write, read)?;
    Ok(())
}

/// Fills `buf` with the pattern of stream `seed` starting at `offset`.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        *b = (x >> 29) as u8;
    }
}
