//! ztunnel's metrics, with Istio's names and labels (PROTOCOLS.md "Telemetry"), and the
//! per-connection record that reports each connection exactly once: when it finishes,
//! or from `Drop` if its task was cancelled.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::Workload;

/// Istio's TCP labels.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: String,
    /// Source workload name.
    pub source_workload: String,
    /// Source namespace.
    pub source_workload_namespace: String,
    /// Source SPIFFE id.
    pub source_principal: String,
    /// Source `app`.
    pub source_app: String,
    /// Source `version`.
    pub source_version: String,
    /// Source cluster.
    pub source_cluster: String,
    /// Destination workload name.
    pub destination_workload: String,
    /// Destination namespace.
    pub destination_workload_namespace: String,
    /// Destination SPIFFE id.
    pub destination_principal: String,
    /// Destination `app`.
    pub destination_app: String,
    /// Destination `version`.
    pub destination_version: String,
    /// Destination cluster.
    pub destination_cluster: String,
    /// Destination service hostname.
    pub destination_service: String,
    /// Destination service name.
    pub destination_service_name: String,
    /// Destination service namespace.
    pub destination_service_namespace: String,
    /// Always `tcp` here.
    pub request_protocol: String,
    /// Why a connection failed (`-` when it did not).
    pub response_flags: String,
    /// `mutual_tls` or `none`.
    pub connection_security_policy: String,
}

impl TcpLabels {
    /// Fills the source side from a workload.
    pub fn with_source(mut self, w: &Workload) -> Self {
        self.source_workload = workload_name(w);
        self.source_workload_namespace = w.namespace.clone();
        self.source_principal = w.identity.to_string();
        self.source_app = w.canonical_name.clone();
        self.source_version = w.canonical_revision.clone();
        self.source_cluster = w.cluster_id.clone();
        self
    }

    /// Fills the destination side from a workload.
    pub fn with_destination(mut self, w: &Workload) -> Self {
        self.destination_workload = workload_name(w);
        self.destination_workload_namespace = w.namespace.clone();
        self.destination_principal = w.identity.to_string();
        self.destination_app = w.canonical_name.clone();
        self.destination_version = w.canonical_revision.clone();
        self.destination_cluster = w.cluster_id.clone();
        self
    }
}

fn workload_name(w: &Workload) -> String {
    if w.workload_name.is_empty() {
        w.name.clone()
    } else {
        w.workload_name.clone()
    }
}

/// Labels of connection failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Short reason: `policy_denied`, `no_route`, `tunnel_failed`, `upstream_unreachable`.
    pub reason: String,
}

/// Every metric ztunnel exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    open_sockets: Gauge,
    config_stale: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            opened: Family::default(),
            closed: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            failures: Family::default(),
            open_sockets: Gauge::default(),
            config_stale: Gauge::default(),
            registry: Registry::default(),
        };
        // Registered under Istio's names (the client adds `_total` to counters).
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            metrics.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            metrics.closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the destination",
            metrics.sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the destination",
            metrics.received.clone(),
        );
        registry.register(
            "ztunnel_connection_failures",
            "Connections refused or failed, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "ztunnel_open_sockets",
            "Proxied connections open now",
            metrics.open_sockets.clone(),
        );
        registry.register(
            "ztunnel_config_stale",
            "1 while the configuration in force comes from the snapshot file and the control plane has not confirmed it",
            metrics.config_stale.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets `ztunnel_config_stale`.
    pub fn set_config_stale(&self, stale: bool) {
        self.config_stale.set(i64::from(stale));
    }

    /// Proxied connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open_sockets.get()
    }

    /// Counts a refused or failed connection.
    pub fn failure(&self, direction: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                direction: direction.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// The access-log fields of a connection.
#[derive(Debug, Clone, Default)]
pub struct LogFields {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Client address.
    pub src_addr: String,
    /// Source workload name.
    pub src_workload: String,
    /// Source namespace.
    pub src_namespace: String,
    /// Source identity.
    pub src_identity: String,
    /// Destination address.
    pub dst_addr: String,
    /// The HBONE address used, if tunnelled.
    pub dst_hbone_addr: String,
    /// Destination service.
    pub dst_service: String,
    /// Destination workload.
    pub dst_workload: String,
    /// Destination namespace.
    pub dst_namespace: String,
    /// Destination identity.
    pub dst_identity: String,
}

/// One connection's telemetry: counted as opened when created; closed, bytes and the
/// access-log line exactly once, when dropped (so a cancelled task still reports).
#[derive(Debug)]
pub struct ConnectionRecord {
    metrics: Arc<Metrics>,
    labels: TcpLabels,
    log: LogFields,
    started: Instant,
    sent: u64,
    received: u64,
    error: Option<String>,
}

impl ConnectionRecord {
    /// Opens the record.
    pub fn open(metrics: Arc<Metrics>, labels: TcpLabels, log: LogFields) -> Self {
        metrics.opened.get_or_create(&labels).inc();
        metrics.open_sockets.inc();
        Self {
            metrics,
            labels,
            log,
            started: Instant::now(),
            sent: 0,
            received: 0,
            error: None,
        }
    }

    /// Records the outcome of the byte pump: bytes sent to the destination and received
    /// from it, or the error that ended it.
    pub fn finish(&mut self, outcome: Result<(u64, u64), String>) {
        match outcome {
            Ok((sent, received)) => {
                self.sent = sent;
                self.received = received;
            }
            Err(error) => self.error = Some(error),
        }
    }
}

impl Drop for ConnectionRecord {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.closed.get_or_create(&self.labels).inc();
        m.sent.get_or_create(&self.labels).inc_by(self.sent);
        m.received.get_or_create(&self.labels).inc_by(self.received);
        m.open_sockets.dec();
        let l = &self.log;
        let duration = format!("{}ms", self.started.elapsed().as_millis());
        tracing::info!(
            src.addr = %l.src_addr,
            src.workload = %l.src_workload,
            src.namespace = %l.src_namespace,
            src.identity = %l.src_identity,
            dst.addr = %l.dst_addr,
            dst.hbone_addr = %l.dst_hbone_addr,
            dst.service = %l.dst_service,
            dst.workload = %l.dst_workload,
            dst.namespace = %l.dst_namespace,
            dst.identity = %l.dst_identity,
            direction = l.direction,
            bytes_sent = self.sent,
            bytes_recv = self.received,
            duration,
            error = self.error.as_deref().unwrap_or(""),
            "connection complete"
        );
    }
}
