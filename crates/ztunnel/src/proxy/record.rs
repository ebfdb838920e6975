//! One record per connection, opened when the connection is accepted (before any dial)
//! and finished exactly once with the typed result — success, refusal or failure alike:
//!
//! - `istio_tcp_connections_opened_total` at open (flags `-`); closed, sent and received
//!   bytes at finish with the result's response flags, bytes counted also when the
//!   connection failed part-way;
//! - `ztunnel_connection_failures_total{direction,reason}` for every error;
//! - one access-log line in Istio's shape (`src.workload="client-1" … dst.addr=…:15008
//!   dst.hbone_addr=…:8080`) with the connection's `trace` id, which both ztunnels' lines
//!   for one connection share. (The span `conn{id, trace}` around a connection's other
//!   lines is at debug level: at info, spans for thousands of connections would keep
//!   tracing's span slab allocated after they close.) Errors log at most one
//!   line per second per reason (with the count of the rest), so a flood of refusals
//!   cannot flood the log; successes always log;
//! - the live-connection count drain waits on.
//!
//! A record dropped without [`ConnectionRecord::finish`] (its task was cancelled) still
//! reports, as an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use identity::SpiffeId;

use super::error::ProxyError;
use super::outcome;
use super::pump::Bytes;
use super::trace::TraceContext;
use crate::metrics::{Metrics, TcpLabels};
use crate::state::Workload;

/// `outbound` or `inbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a local pod.
    Outbound,
    /// To a local pod.
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// The access-log fields of a connection; absent ones are left out of the line.
#[derive(Debug, Clone, Default)]
pub struct LogFields {
    /// Client address.
    pub src_addr: Option<SocketAddr>,
    /// Source workload name (bare, as Istio logs it).
    pub src_workload: Option<String>,
    /// Source namespace.
    pub src_namespace: Option<String>,
    /// Source identity.
    pub src_identity: Option<String>,
    /// Source cluster.
    pub src_cluster: Option<String>,
    /// The address connected to: the HBONE address (`:15008`) when tunnelled.
    pub dst_addr: Option<SocketAddr>,
    /// The tunnelled target (`:authority`, the app's `ip:port`).
    pub dst_hbone_addr: Option<SocketAddr>,
    /// Destination service hostname.
    pub dst_service: Option<String>,
    /// Destination workload name.
    pub dst_workload: Option<String>,
    /// Destination namespace.
    pub dst_namespace: Option<String>,
    /// Destination identity.
    pub dst_identity: Option<String>,
    /// Destination cluster.
    pub dst_cluster: Option<String>,
}

impl LogFields {
    /// Fills the source side from a workload.
    pub fn source(&mut self, w: &Workload) {
        self.src_workload = Some(w.name.clone());
        self.src_namespace = Some(w.namespace.clone());
        self.src_identity = Some(w.identity.to_string());
        self.src_cluster = non_empty(&w.cluster_id);
    }

    /// Fills the destination side from a workload.
    pub fn destination(&mut self, w: &Workload) {
        self.dst_workload = Some(w.name.clone());
        self.dst_namespace = Some(w.namespace.clone());
        self.dst_identity = Some(w.identity.to_string());
        self.dst_cluster = non_empty(&w.cluster_id);
    }

    /// Sets the source identity when known only from a certificate.
    pub fn source_identity(&mut self, id: &SpiffeId) {
        self.src_identity = Some(id.to_string());
    }
}

/// A present string field, logged quoted as Istio does (`src.workload="client-1"`).
fn quoted(v: &Option<String>) -> Option<tracing::field::DebugValue<&str>> {
    v.as_deref().map(tracing::field::debug)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// One connection's telemetry (see the module docs).
#[derive(Debug)]
pub struct ConnectionRecord {
    metrics: Arc<Metrics>,
    direction: Direction,
    labels: TcpLabels,
    log: LogFields,
    started: Instant,
    trace: TraceContext,
    finished: bool,
}

impl ConnectionRecord {
    /// Opens the record: counted as opened and live from now on.
    pub fn open(
        metrics: Arc<Metrics>,
        direction: Direction,
        labels: TcpLabels,
        log: LogFields,
        trace: TraceContext,
    ) -> Self {
        metrics.opened.get_or_create(&labels).inc();
        metrics.open_sockets.inc();
        metrics.live.send_modify(|n| *n += 1);
        Self {
            metrics,
            direction,
            labels,
            log,
            started: Instant::now(),
            trace,
            finished: false,
        }
    }

    /// The connection's trace context.
    pub fn trace(&self) -> TraceContext {
        self.trace
    }

    /// Reports the connection: bytes moved (also when it failed) and its result.
    pub fn finish(mut self, bytes: Bytes, result: Result<(), ProxyError>) {
        self.report(bytes, &result);
    }

    fn report(&mut self, bytes: Bytes, result: &Result<(), ProxyError>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let m = &self.metrics;
        let flags = outcome::response_flags(result);
        let flagged;
        let labels = if flags == "-" {
            &self.labels
        } else {
            flagged = TcpLabels {
                response_flags: flags.into(),
                ..self.labels.clone()
            };
            &flagged
        };
        m.closed.get_or_create(labels).inc();
        m.sent.get_or_create(labels).inc_by(bytes.sent);
        m.received.get_or_create(labels).inc_by(bytes.received);
        m.open_sockets.dec();
        m.live.send_modify(|n| *n = n.saturating_sub(1));
        let direction = self.direction.as_str();
        let error = match result {
            Ok(()) => None,
            Err(error) => {
                let reason = outcome::failure_reason(error);
                m.failure(direction, reason);
                match m.logs.allow(reason) {
                    Some(suppressed) => Some((outcome::describe(error), suppressed)),
                    None => return,
                }
            }
        };
        let l = &self.log;
        let addr = |v: &Option<SocketAddr>| v.map(tracing::field::display);
        let duration = format!("{}ms", self.started.elapsed().as_millis());
        let (error, suppressed) = match &error {
            Some((e, n)) => (Some(e.as_str()), Some(*n).filter(|n| *n > 0)),
            None => (None, None),
        };
        tracing::info!(
            src.addr = addr(&l.src_addr),
            src.workload = quoted(&l.src_workload),
            src.namespace = quoted(&l.src_namespace),
            src.identity = quoted(&l.src_identity),
            src.cluster = quoted(&l.src_cluster),
            dst.addr = addr(&l.dst_addr),
            dst.hbone_addr = addr(&l.dst_hbone_addr),
            dst.service = quoted(&l.dst_service),
            dst.workload = quoted(&l.dst_workload),
            dst.namespace = quoted(&l.dst_namespace),
            dst.identity = quoted(&l.dst_identity),
            dst.cluster = quoted(&l.dst_cluster),
            direction,
            bytes_sent = bytes.sent,
            bytes_recv = bytes.received,
            duration,
            trace = %self.trace,
            response_flags = (flags != "-").then_some(flags),
            error,
            suppressed,
            "connection complete"
        );
    }
}

impl Drop for ConnectionRecord {
    fn drop(&mut self) {
        if !self.finished {
            self.report(Bytes::default(), &Err(ProxyError::Shutdown));
        }
    }
}
