//! The DNS proxy on 15053 inside every enrolled pod (UDP and TCP; the capture rules
//! redirect the pod's port-53 traffic to it).
//!
//! Names of mesh services are answered from the mesh state, so pods resolve
//! `<svc>`, `<svc>.<ns>` and `<svc>.<ns>.svc.<domain>` (the short forms relative to the
//! asking pod's namespace) to the service VIPs, or to the endpoints' addresses for a
//! headless service. Search-list expansions of those forms (`<svc>.<ns>.<podns>.svc.…`)
//! are recognised too, and so are ServiceEntry hosts (`api.example.com`, and the
//! search-list expansions of it). An unknown name under `svc.<domain>` gets NXDOMAIN at once, so
//! resolvers walking their search list move on quickly. Every other name is forwarded,
//! unchanged, from ztunnel's own namespace to the upstream resolvers (UDP or TCP as the
//! pod asked); when none answers the pod gets SERVFAIL.
//!
//! The sockets are bound to 127.0.0.1: the kernel's REDIRECT sends a pod's own traffic
//! there, and replying from that address lets connection tracking restore the resolver
//! address the pod asked, which stub resolvers check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::state::{Snapshot, Store};

/// Time to live of answers for mesh names, in seconds.
const MESH_TTL: u32 = 30;
/// Largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP_LIMIT: usize = 512;
/// The UDP payload size we advertise and accept with EDNS.
const EDNS_PAYLOAD: u16 = 1232;
/// How long a TCP client may stay silent between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Forwarded queries in flight per pod; more are answered SERVFAIL.
const MAX_FORWARDS: usize = 256;

/// How the DNS proxy behaves.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Open 15053 in pods (the node agent captures port 53 only when this is on).
    pub enabled: bool,
    /// Resolvers for names outside the mesh, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long each upstream is given.
    pub upstream_timeout: Duration,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            upstreams: system_upstreams(),
            upstream_timeout: Duration::from_secs(2),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// The `nameserver` entries of `/etc/resolv.conf`, port 53.
pub fn system_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// What the proxy needs to answer one pod.
#[derive(Debug)]
pub struct DnsContext {
    /// Mesh state.
    pub store: Arc<Store>,
    /// Settings.
    pub settings: DnsSettings,
    /// The asking pod's namespace (for short names).
    pub namespace: String,
    /// The asking pod, for logs.
    pub pod: String,
    /// Bounds forwarded queries in flight.
    forwards: Arc<tokio::sync::Semaphore>,
}

impl DnsContext {
    /// A context for the pod `pod` in `namespace`.
    pub fn new(store: Arc<Store>, settings: DnsSettings, namespace: &str, pod: &str) -> Self {
        Self {
            store,
            settings,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
        }
    }
}

/// What to do with one query: answer it, forward it, or drop it.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// The name is not ours: forward the query as it is.
    Forward,
    /// Not even a DNS header: drop it.
    Drop,
}

/// Answers `query` from the mesh state, or says it must be forwarded.
pub fn answer(snapshot: &Snapshot, context: &DnsContext, query: &[u8]) -> Action {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return format_error(query),
    };
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
    {
        return reply(&request, ResponseCode::NotImp, Vec::new());
    }
    let [question] = request.queries.as_slice() else {
        return reply(&request, ResponseCode::FormErr, Vec::new());
    };
    if question.query_class() != DNSClass::IN {
        return Action::Forward;
    }
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    match resolve(
        snapshot,
        name,
        &context.namespace,
        &context.settings.cluster_domain,
    ) {
        Resolution::Found(addresses) => {
            let wanted = question.query_type();
            let records = addresses
                .into_iter()
                .filter_map(|ip| match (ip, wanted) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
                    _ => None,
                })
                .map(|data| Record::from_rdata(question.name().clone(), MESH_TTL, data))
                .collect();
            reply(&request, ResponseCode::NoError, records)
        }
        Resolution::NoSuchService => reply(&request, ResponseCode::NXDomain, Vec::new()),
        Resolution::NotOurs => Action::Forward,
    }
}

/// A FORMERR for a message that has at least a header, so the client stops waiting.
fn format_error(query: &[u8]) -> Action {
    let Some(id) = query.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Action::Drop;
    };
    if query.len() < 12 {
        return Action::Drop;
    }
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .map_or(Action::Drop, Action::Reply)
}

fn reply(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Action {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = code != ResponseCode::NotImp;
    response.metadata.response_code = code;
    response.queries = request.queries.clone();
    response.answers = answers;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.edns = Some(edns);
    }
    response.to_vec().map_or(Action::Drop, Action::Reply)
}

/// Where a name leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A mesh service: these addresses.
    Found(Vec<IpAddr>),
    /// Under `svc.<domain>` but no such service.
    NoSuchService,
    /// Not a cluster name.
    NotOurs,
}

/// Resolves `name` (lower case, no trailing dot) for a pod in `namespace`.
pub fn resolve(snapshot: &Snapshot, name: &str, namespace: &str, domain: &str) -> Resolution {
    let cluster_suffix = format!(".svc.{domain}");
    let mut candidates = Vec::with_capacity(3);
    if name.ends_with(&cluster_suffix) {
        candidates.push(name.to_owned());
        // A resolver's search list appends `<podns>.svc.<domain>` or `svc.<domain>` to
        // names that already had a namespace.
        for search in [
            format!(".{namespace}{cluster_suffix}"),
            cluster_suffix.clone(),
        ] {
            if let Some(relative) = name.strip_suffix(&search) {
                candidates.extend(expand(relative, namespace, &cluster_suffix));
                // A ServiceEntry host the search list was appended to.
                if relative.contains('.') {
                    candidates.push(relative.to_owned());
                }
            }
        }
    } else {
        // A ServiceEntry's host is its hostname as written (`api.example.com`).
        candidates.push(name.to_owned());
        candidates.extend(expand(name, namespace, &cluster_suffix));
    }
    for hostname in &candidates {
        if let Some(service) = snapshot.service_by_hostname(hostname) {
            let addresses = if service.vips.is_empty() {
                snapshot
                    .endpoints(&service.key())
                    .iter()
                    .filter(|w| w.healthy)
                    .flat_map(|w| w.addresses.iter().copied())
                    .collect()
            } else {
                service.vips.clone()
            };
            return Resolution::Found(addresses);
        }
    }
    if name.ends_with(&cluster_suffix) {
        Resolution::NoSuchService
    } else {
        Resolution::NotOurs
    }
}

/// The full service hostname a relative name stands for, if it has that shape.
fn expand(relative: &str, namespace: &str, cluster_suffix: &str) -> Option<String> {
    match relative.split('.').count() {
        1 => Some(format!("{relative}.{namespace}{cluster_suffix}")),
        2 => Some(format!("{relative}{cluster_suffix}")),
        3 if relative.ends_with(".svc") => {
            Some(format!("{relative}{}", &cluster_suffix[".svc".len()..]))
        }
        _ => None,
    }
}

/// Serves DNS over UDP on `socket` until the task is dropped.
pub async fn serve_udp(socket: UdpSocket, context: Arc<DnsContext>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(pod = %context.pod, %error, "dns: receive failed");
                continue;
            }
        };
        let query = &buf[..len];
        match answer(&context.store.load(), &context, query) {
            Action::Reply(bytes) => {
                let _ = socket
                    .send_to(&fit_udp(bytes, query_payload_limit(query)), client)
                    .await;
            }
            Action::Drop => {
                tracing::debug!(pod = %context.pod, %client, "dns: dropped a datagram that is not DNS");
            }
            Action::Forward => {
                let Ok(permit) = context.forwards.clone().try_acquire_owned() else {
                    if let Some(bytes) = servfail(query) {
                        let _ = socket.send_to(&bytes, client).await;
                    }
                    continue;
                };
                let query = query.to_vec();
                let socket = socket.clone();
                let context = context.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let limit = query_payload_limit(&query);
                    let bytes = match forward_udp(&context.settings, &query).await {
                        Some(bytes) => fit_udp(bytes, limit),
                        None => {
                            tracing::info!(pod = %context.pod, "dns: no upstream resolver answered; SERVFAIL");
                            match servfail(&query) {
                                Some(bytes) => bytes,
                                None => return,
                            }
                        }
                    };
                    let _ = socket.send_to(&bytes, client).await;
                });
            }
        }
    }
}

/// Serves DNS over TCP (two-byte length prefix, several queries per connection).
pub async fn serve_tcp(
    listener: TcpListener,
    context: Arc<DnsContext>,
    reserve: Arc<hbone::FdReserve>,
) {
    loop {
        let (tcp, _) = hbone::accept::accept(&listener, &reserve).await;
        let context = context.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_tcp_client(tcp, &context).await {
                tracing::debug!(pod = %context.pod, %error, "dns: tcp client ended");
            }
        });
    }
}

async fn serve_tcp_client(mut tcp: TcpStream, context: &DnsContext) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut tcp)).await {
            Ok(Ok(Some(query))) => query,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(error)) => return Err(error),
        };
        let bytes = match answer(&context.store.load(), context, &query) {
            Action::Reply(bytes) => bytes,
            Action::Drop => return Ok(()),
            Action::Forward => match forward_tcp(&context.settings, &query).await {
                Some(bytes) => bytes,
                None => {
                    tracing::info!(pod = %context.pod, "dns: no upstream resolver answered over TCP; SERVFAIL");
                    match servfail(&query) {
                        Some(bytes) => bytes,
                        None => return Ok(()),
                    }
                }
            },
        };
        write_framed(&mut tcp, &bytes).await?;
    }
}

/// One length-prefixed message, or `None` at a clean end of stream.
async fn read_framed(tcp: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match tcp.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_framed(tcp: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("dns answer longer than 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    tcp.write_all(&framed).await
}

/// Asks the upstreams in turn over UDP; the first answer with our id wins.
async fn forward_udp(settings: &DnsSettings, query: &[u8]) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for upstream in &settings.upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        let deadline = tokio::time::Instant::now() + settings.upstream_timeout;
        while let Ok(Ok(len)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            if buf.get(..2) == Some(id) {
                buf.truncate(len);
                return Some(buf);
            }
        }
        tracing::debug!(%upstream, "dns: upstream did not answer in time");
    }
    None
}

/// Asks the upstreams in turn over TCP.
async fn forward_tcp(settings: &DnsSettings, query: &[u8]) -> Option<Vec<u8>> {
    for upstream in &settings.upstreams {
        let exchange = async {
            let mut tcp = TcpStream::connect(upstream).await?;
            write_framed(&mut tcp, query).await?;
            read_framed(&mut tcp).await
        };
        match tokio::time::timeout(settings.upstream_timeout, exchange).await {
            Ok(Ok(Some(answer))) => return Some(answer),
            _ => tracing::debug!(%upstream, "dns: upstream did not answer over TCP"),
        }
    }
    None
}

/// The SERVFAIL a pod gets when no upstream answers `query`, or `None` when `query` is
/// not a DNS message. Public (hidden) only for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    match reply(&request, ResponseCode::ServFail, Vec::new()) {
        Action::Reply(bytes) => Some(bytes),
        _ => None,
    }
}

/// The largest UDP answer the asker accepts. Public (hidden) only for the fuzz target in
/// `fuzz/`.
#[doc(hidden)]
pub fn query_payload_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .map_or(CLASSIC_UDP_LIMIT, |p| p.max(CLASSIC_UDP_LIMIT))
}

/// `answer` as is if it fits, else its truncated form (the client retries over TCP).
/// Public (hidden) only for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn fit_udp(answer: Vec<u8>, limit: usize) -> Vec<u8> {
    if answer.len() <= limit {
        return answer;
    }
    Message::from_vec(&answer)
        .ok()
        .and_then(|m| m.truncate().to_vec().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
