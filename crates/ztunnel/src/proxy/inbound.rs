//! Inbound: HBONE on 15008 inside the pod (mutual TLS presenting the pod's certificate,
//! the peer's identity verified) and plaintext captured to 15006. Both open the
//! connection's record at once, check the pod's L4 authorization ([`admit`]),
//! then connect to the app inside the pod keeping the client's source address
//! (`IP_TRANSPARENT`, mark 0x539, replies routed back by connmark 0x111). A live
//! connection that a policy change forbids is closed; it is re-checked only when an
//! update may change the decision. A target on one of ztunnel's own ports is refused
//! (400) before anything else: connecting to it would loop back into ztunnel. What the
//! peer hears (status, reset) comes from [`super::outcome`]; the record logs the result
//! once (refusals at most once a second per reason).

use std::net::SocketAddr;
use std::sync::Arc;

use identity::SpiffeId;
use policy::{Decision, L4Request};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::error::{ProxyError, Side};
use super::outcome;
use super::pump::{self, Bytes, TcpMeter};
use super::record::{ConnectionRecord, Direction, LogFields};
use super::route::{Route, resolve};
use super::trace::{TraceContext, connection_id};
use super::{Pod, ProxyInputs, close, connect_from};
use crate::metrics::TcpLabels;
use crate::state::Snapshot;

/// The HBONE handler of one pod.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Shared inputs.
    pub inputs: Arc<ProxyInputs>,
}

/// Checks target and policy for a connection to pod `uid` (`name` for messages) from
/// `peer` (None = plaintext) at `source` to `target`. Pure: the same inputs always give
/// the same answer, so it is also the re-check of live connections.
pub fn admit(
    inputs: &ProxyInputs,
    snap: &Snapshot,
    uid: &str,
    name: &str,
    peer: Option<&SpiffeId>,
    source: SocketAddr,
    target: SocketAddr,
) -> Result<(), ProxyError> {
    if inputs.is_own_port(target.port()) {
        return Err(ProxyError::OwnPort(target));
    }
    let Some(workload) = snap.workload(uid) else {
        return Err(ProxyError::UnknownPod(uid.to_owned()));
    };
    if !workload.addresses.contains(&target.ip()) {
        return Err(ProxyError::NotPodAddress {
            target,
            pod: name.to_owned(),
        });
    }
    if workload.waypoint.is_some() {
        let from_waypoint = match resolve(inputs, snap, target) {
            Ok(Route::Hbone { identity, .. }) => Some(&identity) == peer,
            _ => false,
        };
        if !from_waypoint {
            return Err(ProxyError::MustPassWaypoint);
        }
    }
    let request = L4Request {
        source_identity: peer,
        source_ip: source.ip(),
        destination_ip: target.ip(),
        destination_port: target.port(),
    };
    let verdict = policy::evaluate(snap.policies_for(workload), &request);
    for name in &verdict.dry_run_matches {
        tracing::info!(policy = %name, %source, %target, "dry-run policy matched");
    }
    match verdict.decision {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny { by, reason } => Err(ProxyError::Denied { policy: by, reason }),
    }
}

impl Inbound {
    /// [`admit`] for this pod.
    fn admit(
        &self,
        snap: &Snapshot,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), ProxyError> {
        admit(
            &self.inputs,
            snap,
            &self.pod.uid,
            &self.pod.name,
            peer,
            source,
            target,
        )
    }

    /// Runs `copy` until it ends, the pod is removed, or an update that may change the
    /// admission decision forbids the connection.
    async fn until_revoked<F>(
        &self,
        copy: F,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), ProxyError>
    where
        F: std::future::Future<Output = Result<(), ProxyError>>,
    {
        let mut updates = self.inputs.store.subscribe_admission();
        let removed = self.pod.removed();
        tokio::pin!(copy, removed);
        loop {
            tokio::select! {
                result = &mut copy => return result,
                () = &mut removed => return Err(ProxyError::PodRemoved),
                changed = updates.changed() => {
                    if changed.is_err() {
                        // The store is gone (shutdown); stop re-checking.
                        return copy.await;
                    }
                    let snap = self.inputs.store.load();
                    if let Err(error) = self.admit(&snap, peer, source, target) {
                        return Err(ProxyError::Revoked(Box::new(error)));
                    }
                }
            }
        }
    }
}

impl hbone::ConnectHandler for Inbound {
    async fn handle(&self, connect: hbone::IncomingConnect) {
        let trace = TraceContext::continue_from(connect.headers.traceparent.as_deref());
        let span = tracing::debug_span!("conn", id = connection_id(), %trace);
        self.tunnelled(connect, trace).instrument(span).await;
    }
}

impl Inbound {
    async fn tunnelled(&self, connect: hbone::IncomingConnect, trace: TraceContext) {
        let (peer, source, target) = (connect.peer.clone(), connect.peer_addr, connect.target);
        let snap = self.inputs.store.load();
        let hbone_addr = SocketAddr::new(target.ip(), self.inputs.settings.hbone_port);
        let record = self.open_record(
            &snap,
            Some(&peer),
            source,
            Some(hbone_addr),
            Some(target),
            trace,
        );
        let admitted = self.admit(&snap, Some(&peer), source, target);
        drop(snap);
        if let Err(error) = admitted {
            connect.refuse(outcome::hbone_status(&error), &outcome::describe(&error));
            return record.finish(Bytes::default(), Err(error));
        }
        let mut app = match connect_from(&self.pod.worker, target, Some(source)).await {
            Ok(app) => app,
            Err(source) => {
                let error = ProxyError::Connect { target, source };
                connect.refuse(outcome::hbone_status(&error), &outcome::describe(&error));
                return record.finish(Bytes::default(), Err(error));
            }
        };
        let stream = match connect.accept() {
            Ok(stream) => stream,
            Err(error) => {
                let error = ProxyError::Io {
                    side: Side::Downstream,
                    source: std::io::Error::other(error),
                };
                close(app, outcome::Close::Reset);
                return record.finish(Bytes::default(), Err(error));
            }
        };
        let meter = hbone::Meter::default();
        let copy = async {
            let (r, w) = app.split();
            hbone::copy_bidirectional_metered(r, w, stream, &meter)
                .await
                .map(drop)
                .map_err(|e| pump::hbone_error(e, Side::Upstream))
        };
        let result = self.until_revoked(copy, Some(&peer), source, target).await;
        close(app, outcome::client_close(&result));
        record.finish(
            pump::hbone_bytes(meter.transferred(), Side::Upstream),
            result,
        );
    }
}

/// Serves the pod's plaintext inbound listener (15006).
pub async fn serve_plaintext(listener: TcpListener, inbound: Inbound) {
    loop {
        let (tcp, source) = hbone::accept::accept(&listener, &inbound.inputs.fd_reserve).await;
        let inbound = inbound.clone();
        let trace = TraceContext::new();
        let span = tracing::debug_span!("conn", id = connection_id(), %trace);
        tokio::spawn(async move { inbound.plaintext(tcp, source, trace).await }.instrument(span));
    }
}

impl Inbound {
    async fn plaintext(&self, tcp: TcpStream, source: SocketAddr, trace: TraceContext) {
        let target = netns::socket::original_dst(&tcp).map_err(ProxyError::NoOriginalDestination);
        let snap = self.inputs.store.load();
        let dst = target.as_ref().ok().copied();
        let record = self.open_record(&snap, None, source, dst, None, trace);
        let admitted =
            target.and_then(|target| self.admit(&snap, None, source, target).map(|()| target));
        drop(snap);
        let target = match admitted {
            Ok(target) => target,
            Err(error) => {
                close(tcp, outcome::Close::Reset);
                return record.finish(Bytes::default(), Err(error));
            }
        };
        let mut app = match connect_from(&self.pod.worker, target, Some(source)).await {
            Ok(app) => app,
            Err(source) => {
                close(tcp, outcome::Close::Reset);
                return record.finish(
                    Bytes::default(),
                    Err(ProxyError::Connect { target, source }),
                );
            }
        };
        let mut tcp = tcp;
        let meter = TcpMeter::default();
        let copy = pump::copy_tcp(&mut tcp, &mut app, &meter);
        let result = self.until_revoked(copy, None, source, target).await;
        let how = outcome::client_close(&result);
        close(app, how);
        close(tcp, how);
        record.finish(meter.bytes(), result);
    }

    /// Opens the record of an inbound connection (reporter `destination`): `dst_addr` is
    /// the address connected to (`:15008` for HBONE), `hbone_target` the tunnelled one.
    fn open_record(
        &self,
        snap: &Snapshot,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        dst_addr: Option<SocketAddr>,
        hbone_target: Option<SocketAddr>,
        trace: TraceContext,
    ) -> ConnectionRecord {
        let mut labels = TcpLabels {
            reporter: "destination".into(),
            request_protocol: "tcp".into(),
            response_flags: "-".into(),
            connection_security_policy: if peer.is_some() { "mutual_tls" } else { "none" }.into(),
            ..TcpLabels::default()
        };
        let mut log = LogFields {
            src_addr: Some(source),
            dst_addr,
            dst_hbone_addr: hbone_target,
            ..LogFields::default()
        };
        if let Some(src) = snap.workload_by_ip(source.ip()) {
            labels = labels.with_source(src);
            log.source(src);
        }
        if let Some(peer) = peer {
            // The certificate is the truth about the source, whatever its address says.
            labels.source_principal = peer.to_string();
            log.source_identity(peer);
        }
        match snap.workload(&self.pod.uid) {
            Some(me) => {
                labels = labels.with_destination(me);
                log.destination(me);
            }
            None => {
                labels.destination_principal = self.pod.identity.to_string();
                log.dst_identity = Some(labels.destination_principal.clone());
            }
        }
        ConnectionRecord::open(
            self.inputs.metrics.clone(),
            Direction::Inbound,
            labels,
            log,
            trace,
        )
    }
}
