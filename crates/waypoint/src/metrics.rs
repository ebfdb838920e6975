//! The waypoint's telemetry, with Istio's names and labels and `reporter="waypoint"`:
//! `istio_requests_total`, `istio_request_duration_milliseconds` (Istio's buckets),
//! `istio_request_bytes` and `istio_response_bytes` per HTTP request, Istio's TCP metrics
//! for opaque traffic, and the requests and connections alive now (so drain can wait).

use dashmap::DashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ztunnel::metrics::TcpLabels;

/// Istio's request labels: the peers (as for TCP) plus the response.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Source and destination, `reporter`, `request_protocol` (`http`, `grpc`),
    /// `response_flags`, `connection_security_policy`.
    #[prometheus(flatten)]
    pub peers: TcpLabels,
    /// The HTTP status sent downstream.
    pub response_code: String,
    /// The gRPC status (`grpc-status`), `-` for plain HTTP.
    pub grpc_response_status: String,
}

/// Istio's duration buckets, in milliseconds.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Size buckets, in bytes: powers of ten from 1 to 10⁹.
const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// Every metric the waypoint exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `istio_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histograms,
    /// `istio_request_bytes`.
    pub request_bytes: Histograms,
    /// `istio_response_bytes`.
    pub response_bytes: Histograms,
    /// `istio_tcp_connections_opened_total`.
    pub tcp_opened: Family<TcpLabels, Counter>,
    /// `istio_tcp_connections_closed_total`.
    pub tcp_closed: Family<TcpLabels, Counter>,
    /// `istio_tcp_sent_bytes_total`.
    pub tcp_sent: Family<TcpLabels, Counter>,
    /// `istio_tcp_received_bytes_total`.
    pub tcp_received: Family<TcpLabels, Counter>,
    /// The four request series of each label set, found with one lookup (and a fast
    /// hash) instead of one per family.
    series: DashMap<RequestLabels, Series, foldhash::fast::RandomState>,
    /// Tunnels accepted and not yet finished.
    live: tokio::sync::watch::Sender<usize>,
}

/// One label set's request series: handles onto the families' own (shared) metrics.
#[derive(Debug, Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: Histograms = Family::new_with_constructor(duration_histogram);
        let request_bytes: Histograms = Family::new_with_constructor(size_histogram);
        let response_bytes: Histograms = Family::new_with_constructor(size_histogram);
        let [tcp_opened, tcp_closed, tcp_sent, tcp_received] =
            std::array::from_fn(|_| Family::<TcpLabels, Counter>::default());
        // Registered under Istio's names (the client adds `_total` to counters).
        registry.register("istio_requests", "Requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the destination",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the destination",
            tcp_received.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            series: DashMap::default(),
            live: tokio::sync::watch::Sender::new(0),
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

    /// Counts one finished request.
    pub fn request(&self, labels: &RequestLabels, millis: f64, request: u64, response: u64) {
        let record = |s: &Series| {
            s.requests.inc();
            s.duration.observe(millis);
            s.request_bytes.observe(request as f64);
            s.response_bytes.observe(response as f64);
        };
        if let Some(series) = self.series.get(labels) {
            return record(&series);
        }
        let series = Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        };
        record(&series);
        self.series.insert(labels.clone(), series);
    }

    /// Marks a tunnel alive until the guard drops.
    pub fn live(self: &std::sync::Arc<Self>) -> LiveGuard {
        self.live.send_modify(|n| *n += 1);
        LiveGuard(self.clone())
    }

    /// Tunnels alive now.
    pub fn live_tunnels(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until no tunnel is alive.
    pub async fn drained(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
    }
}

/// One live tunnel (see [`Metrics::live`]).
#[derive(Debug)]
pub struct LiveGuard(std::sync::Arc<Metrics>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}
