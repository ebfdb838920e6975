//! Outbound: the app's connection, captured to 15001 inside its pod, is resolved and
//! sent through an HBONE tunnel presenting the pod's identity, or passed through as plain
//! TCP when the destination is outside the mesh. Failures reset the app's connection at
//! once, with the reason logged (a line per second per kind at most). A connection made
//! straight to the listener (its original destination is the listener's own address) or
//! to one of ztunnel's ports on a pod address is refused: forwarding it would loop.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{ConnectRequest, HboneHeaders, PoolKey};
use tokio::net::{TcpListener, TcpStream};

use super::route::{Route, resolve};
use super::{Pod, ProxyInputs, connect_from, reset};
use crate::metrics::{ConnectionRecord, LogFields, TcpLabels};

/// Serves the pod's outbound listener until it is closed or the pod removed.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>, inputs: Arc<ProxyInputs>) {
    loop {
        let (tcp, peer) = hbone::accept::accept(&listener, &inputs.fd_reserve).await;
        let (pod, inputs) = (pod.clone(), inputs.clone());
        tokio::spawn(async move {
            let mut removed = pod.removed.clone();
            tokio::select! {
                () = handle(tcp, peer, &pod, &inputs) => {}
                _ = removed.wait_for(|r| *r) => {}
            }
        });
    }
}

async fn handle(tcp: TcpStream, peer: SocketAddr, pod: &Pod, inputs: &ProxyInputs) {
    let _ = tcp.set_nodelay(true);
    let original = match netns::socket::original_dst(&tcp) {
        Ok(addr) => addr,
        Err(error) => {
            if let Some(suppressed) = inputs.logs.allow("outbound_no_original") {
                tracing::warn!(pod = %pod.name, %peer, %error, suppressed, "outbound connection without an original destination (not captured?)");
            }
            inputs
                .metrics
                .failure("outbound", "no_original_destination");
            return reset(tcp);
        }
    };
    // Not redirected: the app dialled the listener itself (only then is the original
    // destination on an own port, so the common path pays no extra system call).
    if inputs.is_own_port(original.port()) && tcp.local_addr().is_ok_and(|local| local == original)
    {
        refuse_own_port(inputs, pod, peer, original);
        return reset(tcp);
    }
    forward(tcp, peer, original, pod, inputs, Answer::Nothing).await;
}

/// What the client expects to hear once its destination is reached (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A captured connection: nothing; failure is a reset.
    Nothing,
    /// A SOCKS5 client: a reply with the outcome.
    Socks5,
}

/// Sends `tcp` (from `peer`, for `original`) on its way as pod `pod`'s outbound traffic.
pub(crate) async fn forward(
    tcp: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
    pod: &Pod,
    inputs: &ProxyInputs,
    answer: Answer,
) {
    let snap = inputs.store.load();
    let route = resolve(inputs, &snap, original);
    let record = || {
        let mut labels = TcpLabels {
            reporter: "source".into(),
            request_protocol: "tcp".into(),
            response_flags: "-".into(),
            ..TcpLabels::default()
        };
        let mut log = LogFields {
            direction: "outbound",
            src_addr: peer.to_string(),
            src_workload: pod.name.clone(),
            src_identity: pod.identity.to_string(),
            dst_addr: original.to_string(),
            ..LogFields::default()
        };
        if let Some(me) = snap.workload(&pod.uid) {
            labels = labels.with_source(me);
            log.src_namespace = me.namespace.clone();
        }
        if let Some(service) = snap.service_by_vip(original.ip()) {
            labels.destination_service = service.hostname.clone();
            labels.destination_service_name = service.name.clone();
            labels.destination_service_namespace = service.namespace.clone();
            log.dst_service = service.hostname.clone();
        }
        let destination = match &route {
            Route::Hbone {
                workload,
                hbone_addr,
                ..
            } => {
                labels.connection_security_policy = "mutual_tls".into();
                log.dst_hbone_addr = hbone_addr.to_string();
                snap.workload(workload)
            }
            Route::Passthrough(target) => {
                labels.connection_security_policy = "none".into();
                snap.workload_by_ip(target.ip())
            }
            Route::Refuse(_) | Route::OwnPort(_) => None,
        };
        if let Some(dst) = destination {
            labels = labels.with_destination(dst);
            log.dst_workload = dst.name.clone();
            log.dst_namespace = dst.namespace.clone();
            log.dst_identity = dst.identity.to_string();
        }
        ConnectionRecord::open(inputs.metrics.clone(), labels, log)
    };
    match &route {
        Route::Hbone {
            hbone_addr,
            authority,
            identity,
            workload,
        } => {
            let key = PoolKey {
                source: pod.identity.clone(),
                destination: identity.clone(),
                address: *hbone_addr,
            };
            let request = ConnectRequest {
                authority: *authority,
                headers: HboneHeaders {
                    forwarded: Some(format!("for={}", peer.ip())),
                    ..HboneHeaders::default()
                },
            };
            match pod.pool.connect(&key, &request).await {
                Ok(stream) => {
                    let mut record = record();
                    drop(snap);
                    let mut tcp = tcp;
                    if answer == Answer::Socks5 && super::socks5::succeeded(&mut tcp).await.is_err()
                    {
                        return;
                    }
                    let (r, w) = tcp.split();
                    let outcome = hbone::copy_bidirectional(r, w, stream)
                        .await
                        .map(|t| (t.to_tunnel, t.from_tunnel))
                        .map_err(|e| e.to_string());
                    record.finish(outcome);
                }
                Err(error) => {
                    inputs.endpoint_failed(authority.ip());
                    inputs.metrics.failure("outbound", "tunnel_failed");
                    if let Some(suppressed) = inputs.logs.allow("outbound_tunnel") {
                        tracing::warn!(pod = %pod.name, %peer, dst = %original, dst.workload = %workload, %error, suppressed, "outbound tunnel refused");
                    }
                    fail(tcp, answer).await;
                }
            }
        }
        Route::Passthrough(target) => match connect_from(&pod.worker, *target, None).await {
            Ok(mut upstream) => {
                let mut record = record();
                drop(snap);
                let mut tcp = tcp;
                if answer == Answer::Socks5 && super::socks5::succeeded(&mut tcp).await.is_err() {
                    return;
                }
                let outcome = tokio::io::copy_bidirectional(&mut tcp, &mut upstream)
                    .await
                    .map_err(|e| e.to_string());
                record.finish(outcome);
            }
            Err(error) => {
                inputs.endpoint_failed(target.ip());
                inputs.metrics.failure("outbound", "upstream_unreachable");
                if let Some(suppressed) = inputs.logs.allow("outbound_passthrough") {
                    tracing::warn!(pod = %pod.name, %peer, dst = %target, %error, suppressed, "passthrough connect failed");
                }
                fail(tcp, answer).await;
            }
        },
        Route::Refuse(reason) => {
            inputs.metrics.failure("outbound", "no_route");
            if let Some(suppressed) = inputs.logs.allow("outbound_no_route") {
                tracing::warn!(pod = %pod.name, %peer, dst = %original, reason, suppressed, "outbound connection refused");
            }
            fail(tcp, answer).await;
        }
        Route::OwnPort(target) => {
            refuse_own_port(inputs, pod, peer, *target);
            fail(tcp, answer).await;
        }
    }
}

/// Counts and logs (gated) an outbound connection to one of ztunnel's own listeners.
fn refuse_own_port(inputs: &ProxyInputs, pod: &Pod, peer: SocketAddr, target: SocketAddr) {
    inputs.metrics.failure("outbound", "own_port");
    if let Some(suppressed) = inputs.logs.allow("outbound_own_port") {
        tracing::warn!(pod = %pod.name, %peer, dst = %target, suppressed, "outbound connection refused: the destination is one of ztunnel's own listeners (forwarding it would loop)");
    }
}

/// Tells the client its destination could not be reached: a reset, or a SOCKS5 failure
/// reply first.
async fn fail(mut tcp: TcpStream, answer: Answer) {
    if answer == Answer::Socks5 {
        super::socks5::failed(&mut tcp).await;
    }
    reset(tcp);
}
