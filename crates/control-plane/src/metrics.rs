//! Control-plane metrics on 15014 `/metrics`: connected clients, pushes (count, bytes,
//! resources), push → ACK latency, NACKs, config errors, the store version, and applies
//! turned away (busy) or abandoned by their client.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    /// Connected xDS clients.
    pub clients: Gauge,
    /// Responses pushed.
    pub pushes: Counter,
    /// Resource bytes pushed.
    pub pushed_bytes: Counter,
    /// Resources pushed or removed.
    pub pushed_resources: Counter,
    /// Push to ACK, seconds.
    pub push_ack_seconds: Histogram,
    /// NACKs received.
    pub nacks: Counter,
    /// Documents refused (files and apply).
    pub config_errors: Counter,
    /// The store's version.
    pub config_version: Gauge,
    /// Certificates signed.
    pub certificates_issued: Counter,
    /// Certificate requests refused.
    pub certificates_refused: Counter,
    /// Applies answered 503 because others were being parsed.
    pub apply_busy: Counter,
    /// Applies whose client went away before they were applied (nothing changed).
    pub apply_cancelled: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            clients: Gauge::default(),
            pushes: Counter::default(),
            pushed_bytes: Counter::default(),
            pushed_resources: Counter::default(),
            push_ack_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            nacks: Counter::default(),
            config_errors: Counter::default(),
            config_version: Gauge::default(),
            certificates_issued: Counter::default(),
            certificates_refused: Counter::default(),
            apply_busy: Counter::default(),
            apply_cancelled: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "bowline_xds_clients",
            "Connected xDS clients",
            m.clients.clone(),
        );
        registry.register(
            "bowline_xds_pushes",
            "xDS responses pushed",
            m.pushes.clone(),
        );
        registry.register(
            "bowline_xds_pushed_bytes",
            "Resource bytes pushed",
            m.pushed_bytes.clone(),
        );
        registry.register(
            "bowline_xds_pushed_resources",
            "Resources pushed or removed",
            m.pushed_resources.clone(),
        );
        registry.register(
            "bowline_xds_push_ack_seconds",
            "Time from a push to its ACK",
            m.push_ack_seconds.clone(),
        );
        registry.register(
            "bowline_xds_nacks",
            "Pushes rejected by clients",
            m.nacks.clone(),
        );
        registry.register(
            "bowline_config_errors",
            "Documents refused",
            m.config_errors.clone(),
        );
        registry.register(
            "bowline_config_version",
            "Config store version",
            m.config_version.clone(),
        );
        registry.register(
            "bowline_certificates_issued",
            "Workload certificates signed",
            m.certificates_issued.clone(),
        );
        registry.register(
            "bowline_certificates_refused",
            "Certificate requests refused",
            m.certificates_refused.clone(),
        );
        registry.register(
            "bowline_apply_busy",
            "Applies refused with 503 while others were parsed",
            m.apply_busy.clone(),
        );
        registry.register(
            "bowline_apply_cancelled",
            "Applies abandoned by their client before they were applied",
            m.apply_cancelled.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
