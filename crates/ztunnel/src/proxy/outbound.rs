//! Outbound: the app's connection, captured to 15001 inside its pod, is resolved and
//! sent through an HBONE tunnel presenting the pod's identity, or passed through as plain
//! TCP when the destination is outside the mesh. A connection made straight to the
//! listener (its original destination is the listener's own address) or to one of
//! ztunnel's ports on a pod address is refused: forwarding it would loop.
//!
//! Each connection: accept → original destination → route → record opened → dial →
//! pump → record finished; a failure at any step finishes the record with the typed
//! error and closes the client as [`super::outcome`] says (a reset, or a SOCKS5 reply
//! first). The mesh snapshot is released before the dial.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{ConnectRequest, HboneHeaders, PoolKey};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::error::{ProxyError, Side};
use super::outcome::{self, Close};
use super::pump::{self, Bytes, TcpMeter};
use super::record::{ConnectionRecord, Direction, LogFields};
use super::route::{Route, resolve};
use super::trace::{TraceContext, connection_id};
use super::{Pod, ProxyInputs, close, connect_from};
use crate::metrics::TcpLabels;
use crate::state::Snapshot;

/// Serves the pod's outbound listener until it is closed or the pod removed.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>, inputs: Arc<ProxyInputs>) {
    loop {
        let (tcp, peer) = hbone::accept::accept(&listener, &inputs.fd_reserve).await;
        let (pod, inputs) = (pod.clone(), inputs.clone());
        tokio::spawn(async move { handle(tcp, peer, &pod, &inputs).await });
    }
}

async fn handle(tcp: TcpStream, peer: SocketAddr, pod: &Pod, inputs: &ProxyInputs) {
    let _ = tcp.set_nodelay(true);
    let original = netns::socket::original_dst(&tcp)
        .map_err(ProxyError::NoOriginalDestination)
        .and_then(|original| {
            // Not redirected: the app dialled the listener itself (only then is the
            // original destination on an own port, so the common path pays no extra
            // system call).
            let direct = inputs.is_own_port(original.port())
                && tcp.local_addr().is_ok_and(|local| local == original);
            if direct {
                Err(ProxyError::OwnPort(original))
            } else {
                Ok(original)
            }
        });
    forward(tcp, peer, original, pod, inputs, Client::Captured).await;
}

/// The kind of client, which decides what it hears once its destination is reached (or
/// not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    /// A captured connection: nothing on success; failure is a reset.
    Captured,
    /// A SOCKS5 client: a reply with the outcome first.
    Socks5,
}

/// Sends `tcp` (from `peer`, for `original`) on its way as pod `pod`'s outbound traffic,
/// and reports it.
pub(crate) async fn forward(
    tcp: TcpStream,
    peer: SocketAddr,
    original: Result<SocketAddr, ProxyError>,
    pod: &Pod,
    inputs: &ProxyInputs,
    client: Client,
) {
    let trace = TraceContext::new();
    let span = tracing::debug_span!("conn", id = connection_id(), %trace);
    async move {
        let snap = inputs.store.load();
        let destination = original.as_ref().ok().copied();
        let route = original.and_then(|original| resolve(inputs, &snap, original));
        let record = open_record(inputs, &snap, pod, peer, destination, &route, trace);
        drop(snap);
        let mut tcp = tcp;
        let meters = Meters::default();
        let (bytes, result) = match route {
            Ok(route) => {
                let result = tokio::select! {
                    result = connect_and_pump(&mut tcp, peer, route, pod, inputs, client, trace, &meters) => result,
                    () = pod.removed() => Err(ProxyError::PodRemoved),
                };
                (meters.bytes(), result)
            }
            Err(error) => (Bytes::default(), Err(error)),
        };
        if client == Client::Socks5
            && let Err(error) = &result
            && !meters.replied.load(std::sync::atomic::Ordering::Relaxed)
        {
            super::socks5::reply(&mut tcp, outcome::socks5_reply(error)).await;
        }
        close(tcp, outcome::client_close(&result));
        record.finish(bytes, result);
    }
    .instrument(span)
    .await;
}

/// The meters of whichever pump runs, and whether a SOCKS5 client got its success reply.
#[derive(Debug, Default)]
struct Meters {
    hbone: hbone::Meter,
    tcp: TcpMeter,
    replied: std::sync::atomic::AtomicBool,
}

impl Meters {
    fn bytes(&self) -> Bytes {
        let tunnelled = pump::hbone_bytes(self.hbone.transferred(), Side::Downstream);
        let plain = self.tcp.bytes();
        Bytes {
            sent: tunnelled.sent + plain.sent,
            received: tunnelled.received + plain.received,
        }
    }
}

/// Dials the route (the tunnel, or the passthrough target), tells a SOCKS5 client it
/// succeeded, and pumps bytes until both directions end.
#[allow(clippy::too_many_arguments)]
async fn connect_and_pump(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    route: Route,
    pod: &Pod,
    inputs: &ProxyInputs,
    client: Client,
    trace: TraceContext,
    meters: &Meters,
) -> Result<(), ProxyError> {
    match route {
        Route::Hbone {
            hbone_addr,
            authority,
            identity,
            ..
        } => {
            let key = PoolKey {
                source: pod.identity.clone(),
                destination: identity,
                address: hbone_addr,
            };
            let request = ConnectRequest {
                authority,
                headers: HboneHeaders {
                    forwarded: Some(format!("for={}", peer.ip())),
                    traceparent: Some(trace.traceparent()),
                    ..HboneHeaders::default()
                },
            };
            let stream = match pod.pool.connect(&key, &request).await {
                Ok(stream) => stream,
                Err(error) => {
                    if error.is_transient() {
                        inputs.endpoint_failed(authority.ip());
                    }
                    return Err(error.into());
                }
            };
            inputs.endpoint_recovered(authority.ip());
            reached(tcp, client, meters).await?;
            let (r, w) = tcp.split();
            hbone::copy_bidirectional_metered(r, w, stream, &meters.hbone)
                .await
                .map(drop)
                .map_err(|e| pump::hbone_error(e, Side::Downstream))
        }
        Route::Passthrough(target) => passthrough(tcp, target, pod, inputs, client, meters).await,
        Route::Resolve { host, port, .. } => {
            let target = resolve_host(&host, port, inputs).await?;
            passthrough(tcp, target, pod, inputs, client, meters).await
        }
    }
}

/// Plain TCP from the pod to `target`, pumped until both directions end.
async fn passthrough(
    tcp: &mut TcpStream,
    target: SocketAddr,
    pod: &Pod,
    inputs: &ProxyInputs,
    client: Client,
    meters: &Meters,
) -> Result<(), ProxyError> {
    let mut upstream = match connect_from(&pod.worker, target, None).await {
        Ok(upstream) => upstream,
        Err(source) => {
            inputs.endpoint_failed(target.ip());
            return Err(ProxyError::Connect { target, source });
        }
    };
    inputs.endpoint_recovered(target.ip());
    reached(tcp, client, meters).await?;
    let result = pump::copy_tcp(tcp, &mut upstream, &meters.tcp).await;
    let how = match &result {
        Err(ProxyError::Io {
            side: Side::Downstream,
            ..
        }) => Close::Reset,
        _ => Close::Fin,
    };
    close(upstream, how);
    result
}

/// What a host-name endpoint resolves to from ztunnel's own namespace (its resolver, not
/// the pod's), IPv4 first; never one of ztunnel's own listeners.
async fn resolve_host(
    host: &str,
    port: u16,
    inputs: &ProxyInputs,
) -> Result<SocketAddr, ProxyError> {
    let unresolved = |why: String| {
        ProxyError::NoRoute(super::error::NoRoute::Unresolved {
            host: host.to_owned(),
            why,
        })
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    let target = resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| unresolved("no address".into()))?;
    if inputs.is_own_port(port) && (target.ip().is_loopback() || target.ip().is_unspecified()) {
        return Err(ProxyError::OwnPort(target));
    }
    Ok(target)
}

/// The destination is reached: a SOCKS5 client hears so (captured clients hear nothing).
async fn reached(tcp: &mut TcpStream, client: Client, meters: &Meters) -> Result<(), ProxyError> {
    if client == Client::Socks5 {
        meters
            .replied
            .store(true, std::sync::atomic::Ordering::Relaxed);
        super::socks5::succeeded(tcp)
            .await
            .map_err(ProxyError::DownstreamClosed)?;
    }
    Ok(())
}

/// Opens the record of an outbound connection (reporter `source`) with what is known:
/// the pod, the client, and where the route leads.
fn open_record(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    pod: &Pod,
    peer: SocketAddr,
    original: Option<SocketAddr>,
    route: &Result<Route, ProxyError>,
    trace: TraceContext,
) -> ConnectionRecord {
    let mut labels = TcpLabels {
        reporter: "source".into(),
        request_protocol: "tcp".into(),
        response_flags: "-".into(),
        ..TcpLabels::default()
    };
    let mut log = LogFields {
        src_addr: Some(peer),
        dst_addr: original,
        ..LogFields::default()
    };
    match snap.workload(&pod.uid) {
        Some(me) => {
            labels = labels.with_source(me);
            log.source(me);
        }
        None => {
            labels.source_principal = pod.identity.to_string();
            log.source_identity(&pod.identity);
        }
    }
    if let Some(service) = original.and_then(|o| snap.service_by_vip(o.ip())) {
        labels.destination_service = service.hostname.clone();
        labels.destination_service_name = service.name.clone();
        labels.destination_service_namespace = service.namespace.clone();
        log.dst_service = Some(service.hostname.clone());
    }
    let destination = match route {
        Ok(Route::Hbone {
            workload,
            hbone_addr,
            authority,
            ..
        }) => {
            labels.connection_security_policy = "mutual_tls".into();
            log.dst_addr = Some(*hbone_addr);
            log.dst_hbone_addr = Some(*authority);
            snap.workload(workload)
        }
        Ok(Route::Passthrough(target)) => {
            labels.connection_security_policy = "none".into();
            log.dst_addr = Some(*target);
            snap.workload_by_ip(target.ip())
        }
        Ok(Route::Resolve { workload, .. }) => {
            labels.connection_security_policy = "none".into();
            snap.workload(workload)
        }
        Err(_) => None,
    };
    if let Some(dst) = destination {
        labels = labels.with_destination(dst);
        log.destination(dst);
    }
    ConnectionRecord::open(
        inputs.metrics.clone(),
        Direction::Outbound,
        labels,
        log,
        trace,
    )
}
