//! ztunnel's metrics, with Istio's names and labels (docs/protocols.md "Telemetry"). The
//! per-connection record that feeds them is [`crate::proxy::record`]; this module also
//! counts connections alive now (accepted and not yet finished, dialing included) so
//! drain can wait for them.

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
    /// Short reason (see [`crate::proxy::outcome::failure_reason`]).
    pub reason: String,
}

/// Every metric ztunnel exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) opened: Family<TcpLabels, Counter>,
    pub(crate) closed: Family<TcpLabels, Counter>,
    pub(crate) sent: Family<TcpLabels, Counter>,
    pub(crate) received: Family<TcpLabels, Counter>,
    pub(crate) failures: Family<FailureLabels, Counter>,
    pub(crate) open_sockets: Gauge,
    config_stale: Gauge,
    /// Connections accepted and not yet finished (dialing included).
    pub(crate) live: tokio::sync::watch::Sender<usize>,
    /// Keeps failure log lines to one per second per reason.
    pub(crate) logs: hbone::LogGate,
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
            live: tokio::sync::watch::Sender::new(0),
            logs: hbone::LogGate::default(),
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

    /// Connections accepted and not finished yet, including those still dialing.
    pub fn live_connections(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until no connection is live (see [`Self::live_connections`]).
    pub async fn drained(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
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
