//! Outbound: the app's connection, captured to 15001 inside its pod, is resolved and
//! sent through an HBONE tunnel presenting the pod's identity, or passed through as plain
//! TCP when the destination is outside the mesh. Failures reset the app's connection at
//! once, with the reason logged.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{ConnectRequest, HboneHeaders, PoolKey};
use tokio::net::{TcpListener, TcpStream};

use super::route::{Route, resolve};
use super::{Pod, ProxyInputs, connect_from, reset};

/// Serves the pod's outbound listener until it is closed or the pod removed.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>, inputs: Arc<ProxyInputs>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(pod = %pod.name, %error, "outbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
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
            tracing::warn!(pod = %pod.name, %peer, %error, "outbound connection without an original destination (not captured?)");
            return reset(tcp);
        }
    };
    let route = resolve(inputs, &inputs.store.load(), original);
    let started = std::time::Instant::now();
    let outcome = match &route {
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
                    let mut tcp = tcp;
                    let (r, w) = tcp.split();
                    hbone::copy_bidirectional(r, w, stream)
                        .await
                        .map(|t| (t.to_tunnel, t.from_tunnel))
                        .map_err(|e| e.to_string())
                }
                Err(error) => {
                    inputs.endpoint_failed(authority.ip());
                    tracing::warn!(pod = %pod.name, %peer, dst = %original, dst.workload = %workload, %error, "outbound tunnel refused");
                    return reset(tcp);
                }
            }
        }
        Route::Passthrough(target) => match connect_from(&pod.worker, *target, None).await {
            Ok(mut upstream) => {
                let mut tcp = tcp;
                tokio::io::copy_bidirectional(&mut tcp, &mut upstream)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(error) => {
                inputs.endpoint_failed(target.ip());
                tracing::warn!(pod = %pod.name, %peer, dst = %target, %error, "passthrough connect failed");
                return reset(tcp);
            }
        },
        Route::Refuse(reason) => {
            tracing::warn!(pod = %pod.name, %peer, dst = %original, reason, "outbound connection refused");
            return reset(tcp);
        }
    };
    let (sent, received) = outcome.as_ref().copied().unwrap_or((0, 0));
    tracing::info!(
        src.addr = %peer,
        src.workload = %pod.name,
        src.identity = %pod.identity,
        dst.addr = %original,
        route = ?route_label(&route),
        direction = "outbound",
        bytes_sent = sent,
        bytes_recv = received,
        duration = ?started.elapsed(),
        error = outcome.err().unwrap_or_default(),
        "connection complete"
    );
}

fn route_label(route: &Route) -> String {
    match route {
        Route::Hbone {
            hbone_addr,
            identity,
            ..
        } => format!("hbone {hbone_addr} {identity}"),
        Route::Passthrough(addr) => format!("passthrough {addr}"),
        Route::Refuse(_) => "refused".into(),
    }
}
