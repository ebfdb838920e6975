//! The traffic every benchmark pushes, and the targets that answer it: a sink that counts
//! what it received, an echo, bulk writes against the sink and 64-byte ping-pong against
//! the echo — the same over plain TCP, HBONE streams and the mesh, so their figures
//! compare. And HTTP/1.1 keep-alive load ([`HttpConnection`]) in two shapes: closed loop
//! ([`http_closed_loop`]: every connection sends its next request when the previous
//! answer is in — the request rate a path can carry) and open loop at a fixed rate
//! ([`http_fixed_rate`]: requests spaced evenly, whatever the path does — the latency and
//! the cost per request at a given load).
//!
//! Owns: the load and its targets. Must not: choose paths, open the connections (the
//! caller dials them, in whatever namespace the path starts) or summarise results.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Write size of bulk transfers, and the sink's read size.
pub(crate) const BULK_WRITE: usize = 256 * 1024;
/// Payload of a ping-pong round trip.
const PING: usize = 64;

/// Reads and discards; when the writer half-closes, answers with the byte count.
pub(crate) async fn serve_sink(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; BULK_WRITE];
            let mut total = 0u64;
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = tcp.write_all(&total.to_be_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// Serves a TCP echo on `listener`: every byte back, half-close answered with half-close.
pub(crate) async fn serve_echo(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// Writes to a [`serve_sink`] for `phase`, half-closes, and returns the byte count the
/// sink answered with.
pub(crate) async fn fill_sink<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    phase: Duration,
) -> io::Result<u64> {
    let buf = vec![0x5au8; BULK_WRITE];
    let deadline = Instant::now() + phase;
    while Instant::now() < deadline {
        io.write_all(&buf).await?;
    }
    io.shutdown().await?;
    let mut count = [0u8; 8];
    io.read_exact(&mut count).await?;
    Ok(u64::from_be_bytes(count))
}

/// 64-byte ping-pong with a [`serve_echo`] for `phase`; the round trip times in
/// microseconds.
pub(crate) async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    phase: Duration,
) -> io::Result<Vec<f64>> {
    let ping = [0x42u8; PING];
    let mut pong = [0u8; PING];
    let mut rtts = Vec::with_capacity(100_000);
    let deadline = Instant::now() + phase;
    while Instant::now() < deadline {
        let start = Instant::now();
        io.write_all(&ping).await?;
        io.read_exact(&mut pong).await?;
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    io.shutdown().await?;
    Ok(rtts)
}

/// Gigabits per second of `bytes` in `elapsed`.
pub(crate) fn gbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9) / 1e9
}

/// One HTTP/1.1 keep-alive connection sending `GET`s one at a time and reading each
/// answer whole (`Content-Length` or chunked).
pub(crate) struct HttpConnection<S> {
    io: BufReader<S>,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> HttpConnection<S> {
    /// Requests `GET path` with `Host: host` on `io`.
    pub(crate) fn new(io: S, host: &str, path: &str) -> Self {
        Self {
            io: BufReader::new(io),
            request: format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// One request and its whole answer; an answer other than 2xx is an error (with the
    /// status and the start of the body).
    pub(crate) async fn get(&mut self) -> io::Result<()> {
        self.io.get_mut().write_all(&self.request).await?;
        let status = self.read_head().await?;
        if !(200..300).contains(&status.code) {
            let body = String::from_utf8_lossy(&self.body);
            let body: String = body.chars().take(200).collect();
            return Err(io::Error::other(format!(
                "answered HTTP {}: {}",
                status.code,
                body.trim()
            )));
        }
        Ok(())
    }

    /// The body of the last answer.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// Reads a status line, headers and the body into `self.body`.
    async fn read_head(&mut self) -> io::Result<Head> {
        let mut head = Head::default();
        let mut first = true;
        loop {
            self.line.clear();
            if self.io.read_line(&mut self.line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the HTTP server closed the connection",
                ));
            }
            if first {
                head.code = parse_status(&self.line)?;
                first = false;
                continue;
            }
            if self.line == "\r\n" {
                break;
            }
            head.add(&self.line);
        }
        self.body.clear();
        if head.chunked {
            self.read_chunked().await?;
        } else {
            self.body.resize(head.length, 0);
            self.io.read_exact(&mut self.body).await?;
        }
        Ok(head)
    }

    async fn read_chunked(&mut self) -> io::Result<()> {
        loop {
            self.line.clear();
            self.io.read_line(&mut self.line).await?;
            let size = self.line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {:?}", self.line.trim())))?;
            let start = self.body.len();
            self.body.resize(start + size, 0);
            self.io.read_exact(&mut self.body[start..]).await?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    self.line.clear();
                    if self.io.read_line(&mut self.line).await? == 0 || self.line == "\r\n" {
                        return Ok(());
                    }
                }
            }
            let mut crlf = [0u8; 2];
            self.io.read_exact(&mut crlf).await?;
        }
    }
}

/// What an answer's head says about its body.
#[derive(Debug, Default, PartialEq)]
struct Head {
    code: u16,
    length: usize,
    chunked: bool,
}

impl Head {
    /// Takes in one header line.
    fn add(&mut self, line: &str) {
        let Some((name, value)) = line.split_once(':') else {
            return;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            self.length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
}

/// The code of an HTTP/1.x status line.
fn parse_status(line: &str) -> io::Result<u16> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => Ok(code),
        _ => Err(invalid(format!(
            "not an HTTP/1.x status line: {:?}",
            line.trim()
        ))),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// What a run of HTTP requests did.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// Requests answered.
    pub(crate) done: u64,
    /// From the start to the last answer.
    pub(crate) elapsed: Duration,
    /// Each request's time from its write to the end of its answer, in microseconds
    /// (only [`http_fixed_rate`] records them).
    pub(crate) latencies_us: Vec<f64>,
}

impl Requests {
    /// Answers per second.
    pub(crate) fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Closed loop for `phase`: each connection sends its next request as soon as the
/// previous answer is in, all at once — what the path carries with that much
/// concurrency. Connections should have answered once already, so nothing is opened on
/// the clock.
pub(crate) async fn http_closed_loop<S>(
    connections: Vec<HttpConnection<S>>,
    phase: Duration,
) -> io::Result<Requests>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + phase;
    let mut tasks = tokio::task::JoinSet::new();
    for mut connection in connections {
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                connection.get().await?;
                done += 1;
            }
            Ok::<_, io::Error>(done)
        });
    }
    let mut out = Requests::default();
    while let Some(result) = tasks.join_next().await {
        out.done += result.map_err(io::Error::other)??;
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// Open loop for `phase`: `rate` requests per second, evenly spaced (a tick every
/// 1/`rate` s; tokio's timer has millisecond resolution, so above 1000/s several leave
/// per millisecond), each taken by whichever connection is free. A request waits only
/// when every connection is busy — then the path is not keeping up, and the achieved rate
/// ([`Requests::rate`]) falls below `rate`. Latency is measured from each request's write
/// to the end of its answer.
pub(crate) async fn http_fixed_rate<S>(
    connections: Vec<HttpConnection<S>>,
    rate: f64,
    phase: Duration,
) -> io::Result<Requests>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let total = (rate * phase.as_secs_f64()).round() as u64;
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .map_err(|_| invalid(format!("request rate {rate} is not a positive number")))?;
    // Up to a second of backlog; beyond that the ticker waits (and then catches up).
    let backlog = usize::try_from(total.clamp(1, rate.ceil().max(1.0) as u64)).unwrap_or(1);
    let (ticks, queue) = tokio::sync::mpsc::channel::<()>(backlog);
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for mut connection in connections {
        let queue = Arc::clone(&queue);
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            loop {
                // The tokio mutex is fair: idle connections take ticks in turn.
                let tick = queue.lock().await.recv().await;
                if tick.is_none() {
                    return Ok::<_, io::Error>(latencies);
                }
                let sent = Instant::now();
                connection.get().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
            }
        });
    }
    let ticker = async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..total {
            interval.tick().await;
            if ticks.send(()).await.is_err() {
                break;
            }
        }
    };
    tokio::spawn(ticker);
    let mut out = Requests::default();
    while let Some(result) = workers.join_next().await {
        let latencies = result.map_err(io::Error::other)??;
        out.done += latencies.len() as u64;
        out.latencies_us.extend(latencies);
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_headers_are_read() {
        assert_eq!(parse_status("HTTP/1.1 200 OK\r\n").ok(), Some(200));
        assert_eq!(
            parse_status("HTTP/1.0 503 Service Unavailable\r\n").ok(),
            Some(503)
        );
        assert!(parse_status("SSH-2.0-OpenSSH\r\n").is_err());
        let mut head = Head::default();
        head.add("Content-Length: 42\r\n");
        head.add("content-type: application/json\r\n");
        assert_eq!((head.length, head.chunked), (42, false));
        head.add("Transfer-Encoding: chunked\r\n");
        assert!(head.chunked);
    }

    #[tokio::test]
    async fn answers_are_read_whole_with_a_length_or_in_chunks() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut connection = HttpConnection::new(client, "bench", "/");
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        connection.get().await.unwrap();
        assert_eq!(connection.body(), b"hello");
        server
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        connection.get().await.unwrap();
        assert_eq!(connection.body(), b"abcde");
        server
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nUH")
            .await
            .unwrap();
        let error = connection.get().await.unwrap_err().to_string();
        assert!(error.contains("503") && error.contains("UH"), "{error}");
        let mut sent = vec![0u8; 3 * 31];
        server.read_exact(&mut sent).await.unwrap();
        assert!(sent.starts_with(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"));
    }
}
