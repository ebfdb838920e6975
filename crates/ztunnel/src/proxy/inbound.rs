//! Inbound: HBONE on 15008 inside the pod (mutual TLS presenting the pod's certificate,
//! the peer's identity verified) and plaintext captured to 15006. Both check the pod's
//! L4 authorization, then connect to the app inside the pod keeping the client's source
//! address (`IP_TRANSPARENT`, mark 0x539, replies routed back by connmark 0x111). A live
//! connection that a policy change forbids is closed. A target on one of ztunnel's own
//! ports is refused (400) before anything else: connecting to it would loop back into
//! ztunnel. Denials are counted always and logged at most once a second per kind.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use identity::SpiffeId;
use policy::{Decision, L4Request};
use tokio::net::{TcpListener, TcpStream};

use super::{Pod, ProxyInputs, connect_from, reset};
use crate::metrics::{ConnectionRecord, LogFields, TcpLabels};
use crate::state::Snapshot;

/// The HBONE handler of one pod.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Shared inputs.
    pub inputs: Arc<ProxyInputs>,
}

/// Why an inbound connection is not served.
enum Refusal {
    Status(StatusCode, String),
    /// The target is one of ztunnel's own ports.
    OwnPort(SocketAddr),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::Status(status, _) => *status,
            Self::OwnPort(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Status(_, reason) => reason.clone(),
            Self::OwnPort(target) => format!(
                "{target}: port {} is one of ztunnel's own listeners; refused so that it cannot loop",
                target.port()
            ),
        }
    }

    /// The failure metric's reason label.
    fn metric(&self) -> &'static str {
        match self {
            Self::Status(..) => "policy_denied",
            Self::OwnPort(_) => "own_port",
        }
    }
}

impl Inbound {
    /// Checks target and policy for a connection from `peer` (None = plaintext).
    fn admit(
        &self,
        snap: &Snapshot,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), Refusal> {
        if self.inputs.is_own_port(target.port()) {
            return Err(Refusal::OwnPort(target));
        }
        let Some(workload) = snap.workload(&self.pod.uid) else {
            return Err(Refusal::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("pod {} is not in the mesh state (yet)", self.pod.uid),
            ));
        };
        if !workload.addresses.contains(&target.ip()) {
            return Err(Refusal::Status(
                StatusCode::BAD_REQUEST,
                format!("{target} is not an address of pod {}", self.pod.name),
            ));
        }
        if workload.waypoint.is_some() {
            let waypoint_identity = crate::proxy::route::resolve(&self.inputs, snap, target);
            let allowed = match &waypoint_identity {
                crate::proxy::route::Route::Hbone { identity, .. } => Some(identity) == peer,
                _ => false,
            };
            if !allowed {
                return Err(Refusal::Status(
                    StatusCode::UNAUTHORIZED,
                    "traffic to this pod must pass its waypoint".into(),
                ));
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
            Decision::Deny { by, reason } => Err(Refusal::Status(
                StatusCode::UNAUTHORIZED,
                format!("{reason} (policy {by})"),
            )),
        }
    }

    /// Pumps bytes between the client side and the app until done, the pod is removed,
    /// or a policy change forbids the connection.
    async fn pump<F>(
        &self,
        copy: F,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        target: SocketAddr,
    ) -> Result<(u64, u64), String>
    where
        F: std::future::Future<Output = std::io::Result<(u64, u64)>>,
    {
        let mut updates = self.inputs.store.subscribe();
        let mut removed = self.pod.removed.clone();
        tokio::pin!(copy);
        loop {
            tokio::select! {
                result = &mut copy => return result.map_err(|e| e.to_string()),
                _ = removed.wait_for(|r| *r) => return Err("pod removed".into()),
                changed = updates.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let snap = self.inputs.store.load();
                    if let Err(refusal) = self.admit(&snap, peer, source, target) {
                        let reason = refusal.reason();
                        tracing::info!(pod = %self.pod.name, %source, %target, reason, "closing a live connection the new policy forbids");
                        return Err(format!("closed by policy change: {reason}"));
                    }
                }
            }
        }
    }
}

impl hbone::ConnectHandler for Inbound {
    async fn handle(&self, connect: hbone::IncomingConnect) {
        let (peer, source, target) = (connect.peer.clone(), connect.peer_addr, connect.target);
        let snap = self.inputs.store.load();
        if let Err(refusal) = self.admit(&snap, Some(&peer), source, target) {
            let reason = refusal.reason();
            self.inputs.metrics.failure("inbound", refusal.metric());
            if let Some(suppressed) = self.inputs.logs.allow(refusal.metric()) {
                tracing::info!(pod = %self.pod.name, src.identity = %peer, %source, %target, reason, suppressed, "inbound connection denied");
            }
            connect.refuse(refusal.status(), &reason);
            return;
        }
        let mut record = self.record(&snap, Some(&peer), source, target);
        drop(snap);
        let app = match connect_from(&self.pod.worker, target, Some(source)).await {
            Ok(app) => app,
            Err(error) => {
                self.inputs
                    .metrics
                    .failure("inbound", "upstream_unreachable");
                let reason = format!("cannot reach the app at {target}: {error}");
                record.finish(Err(reason.clone()));
                connect.refuse(StatusCode::SERVICE_UNAVAILABLE, &reason);
                return;
            }
        };
        let Ok(stream) = connect.accept() else { return };
        let mut app = app;
        let copy = async {
            let (r, w) = app.split();
            hbone::copy_bidirectional(r, w, stream)
                .await
                .map(|t| (t.from_tunnel, t.to_tunnel))
        };
        record.finish(self.pump(copy, Some(&peer), source, target).await);
    }
}

/// Serves the pod's plaintext inbound listener (15006).
pub async fn serve_plaintext(listener: TcpListener, inbound: Inbound) {
    loop {
        let (tcp, source) = hbone::accept::accept(&listener, &inbound.inputs.fd_reserve).await;
        let inbound = inbound.clone();
        tokio::spawn(async move { inbound.plaintext(tcp, source).await });
    }
}

impl Inbound {
    async fn plaintext(&self, tcp: TcpStream, source: SocketAddr) {
        let target = match netns::socket::original_dst(&tcp) {
            Ok(target) => target,
            Err(error) => {
                if let Some(suppressed) = self.inputs.logs.allow("inbound_no_original") {
                    tracing::warn!(pod = %self.pod.name, %source, %error, suppressed, "plaintext inbound without an original destination");
                }
                return reset(tcp);
            }
        };
        let snap = self.inputs.store.load();
        if let Err(refusal) = self.admit(&snap, None, source, target) {
            let reason = refusal.reason();
            self.inputs.metrics.failure("inbound", refusal.metric());
            if let Some(suppressed) = self.inputs.logs.allow(refusal.metric()) {
                tracing::info!(pod = %self.pod.name, %source, %target, reason, suppressed, "inbound plaintext connection denied");
            }
            return reset(tcp);
        }
        let mut record = self.record(&snap, None, source, target);
        drop(snap);
        let mut app = match connect_from(&self.pod.worker, target, Some(source)).await {
            Ok(app) => app,
            Err(error) => {
                if let Some(suppressed) = self.inputs.logs.allow("inbound_app_unreachable") {
                    tracing::warn!(pod = %self.pod.name, %target, %error, suppressed, "cannot reach the app");
                }
                self.inputs
                    .metrics
                    .failure("inbound", "upstream_unreachable");
                record.finish(Err(error.to_string()));
                return reset(tcp);
            }
        };
        let mut tcp = tcp;
        let copy = async { tokio::io::copy_bidirectional(&mut tcp, &mut app).await };
        record.finish(self.pump(copy, None, source, target).await);
    }
}

impl Inbound {
    /// Opens the telemetry record of an admitted connection (reporter `destination`).
    fn record(
        &self,
        snap: &Snapshot,
        peer: Option<&SpiffeId>,
        source: SocketAddr,
        target: SocketAddr,
    ) -> ConnectionRecord {
        let mut labels = TcpLabels {
            reporter: "destination".into(),
            request_protocol: "tcp".into(),
            response_flags: "-".into(),
            connection_security_policy: if peer.is_some() { "mutual_tls" } else { "none" }.into(),
            source_principal: peer.map(ToString::to_string).unwrap_or_default(),
            ..TcpLabels::default()
        };
        let mut log = LogFields {
            direction: "inbound",
            src_addr: source.to_string(),
            src_identity: labels.source_principal.clone(),
            dst_addr: target.to_string(),
            dst_workload: self.pod.name.clone(),
            dst_identity: self.pod.identity.to_string(),
            ..LogFields::default()
        };
        if let Some(src) = snap.workload_by_ip(source.ip()) {
            labels = labels.with_source(src);
            log.src_workload = src.name.clone();
            log.src_namespace = src.namespace.clone();
        }
        if let Some(me) = snap.workload(&self.pod.uid) {
            labels = labels.with_destination(me);
            log.dst_namespace = me.namespace.clone();
        }
        ConnectionRecord::open(self.inputs.metrics.clone(), labels, log)
    }
}
