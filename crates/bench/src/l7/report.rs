//! The report of `bowline bench l7` and how it is printed.

use serde::Serialize;

use super::{ROUNDS, ratio};

/// The results; field names are the `--json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct L7BenchReport {
    /// Seconds per measure and path (split over rounds).
    pub duration_s: f64,
    /// Keep-alive connections per measure.
    pub connections: usize,
    /// Target request rate of the fixed-rate measures (req/s).
    pub rate: f64,
    /// Where the direct path goes: the server pod's address (no kube-proxy in the lab).
    pub direct_target: String,
    /// The node the waypoint pod runs on (the client's is node-1, the apps' node-2).
    pub waypoint_node: String,
    /// Closed loop, plain client → plain server pod (req/s).
    pub direct_http_rps: f64,
    /// Closed loop, mesh client → `mesh/l4` VIP: ztunnel → ztunnel (req/s).
    pub mesh_http_rps: f64,
    /// Closed loop, mesh client → `mesh/l7` VIP: ztunnel → waypoint → ztunnel (req/s).
    pub waypoint_http_rps: f64,
    /// `mesh_http_rps` / `direct_http_rps`.
    pub mesh_vs_direct_rps_ratio: f64,
    /// `waypoint_http_rps` / `mesh_http_rps`.
    pub waypoint_vs_mesh_rps_ratio: f64,
    /// Rate the mesh path was driven at in the fixed-rate measure (req/s, achieved).
    pub mesh_fixed_rate_rps: f64,
    /// Rate the waypoint path was driven at in the fixed-rate measure (req/s, achieved).
    pub waypoint_fixed_rate_rps: f64,
    /// Mesh path latency at the fixed rate, median (µs).
    pub mesh_latency_p50_us: f64,
    /// Mesh path latency at the fixed rate, p99 (µs).
    pub mesh_latency_p99_us: f64,
    /// Waypoint path latency at the fixed rate, median (µs).
    pub waypoint_latency_p50_us: f64,
    /// Waypoint path latency at the fixed rate, p99 (µs).
    pub waypoint_latency_p99_us: f64,
    /// `waypoint_latency_p50_us` − `mesh_latency_p50_us`.
    pub waypoint_added_p50_us: f64,
    /// Requests through the waypoint in the fixed-rate measure.
    pub waypoint_requests: u64,
    /// Waypoint CPU time (user + system, all threads) per request at the fixed rate (µs).
    pub waypoint_cpu_us_per_request: f64,
    /// HTTPRoute rules in the routes path's table.
    pub route_rules: usize,
    /// Closed loop, mesh client → `mesh/l7-routes` VIP (req/s).
    pub routes_http_rps: f64,
    /// `routes_http_rps` / `waypoint_http_rps`.
    pub routes_vs_waypoint_rps_ratio: f64,
    /// Routes path latency at the fixed rate, median (µs).
    pub routes_latency_p50_us: f64,
    /// Waypoint CPU time per request on the routes path at the fixed rate (µs).
    pub routes_cpu_us_per_request: f64,
    /// `routes_cpu_us_per_request` / `waypoint_cpu_us_per_request`.
    pub routes_vs_waypoint_cpu_ratio: f64,
    /// Waypoint CPU time per second while the fixed-rate load went to the mesh path
    /// instead — its background work (µs/s).
    pub waypoint_idle_cpu_us_per_s: f64,
    /// Both ztunnels' CPU time per request on the mesh path at the fixed rate (µs).
    pub mesh_ztunnel_cpu_us_per_request: f64,
    /// Both ztunnels' CPU time per request on the waypoint path at the fixed rate (µs).
    pub waypoint_path_ztunnel_cpu_us_per_request: f64,
    /// CPU per request of the waypoint path (waypoint and ztunnels) over the mesh path's
    /// (ztunnels).
    pub waypoint_path_vs_mesh_cpu_ratio: f64,
    /// Largest waypoint RSS sampled (every 50 ms) at the fixed rate (KiB).
    pub waypoint_rss_kb: u64,
    /// Largest anonymous part (heap, stacks) of that RSS (KiB).
    pub waypoint_rss_anon_kb: u64,
    /// The waypoint's RSS high-water mark at the end (`VmHWM`, the whole run, or the
    /// largest sample if above it, KiB).
    pub waypoint_peak_rss_kb: u64,
    /// The ingress path: closed-loop req/s from outside the lab (its router namespace)
    /// through the ingress gateway to `mesh/l4`.
    pub ingress_http_rps: f64,
    /// `ingress_http_rps / direct_http_rps`.
    pub ingress_vs_direct_rps_ratio: f64,
    /// `ingress_http_rps / waypoint_http_rps`.
    pub ingress_vs_waypoint_rps_ratio: f64,
    /// Latency p50 at the fixed rate, µs.
    pub ingress_latency_p50_us: f64,
    /// The gateway's CPU µs per request at the fixed rate.
    pub ingress_cpu_us_per_request: f64,
    /// `ingress_cpu_us_per_request / waypoint_cpu_us_per_request`.
    pub ingress_vs_waypoint_cpu_ratio: f64,
}

impl std::fmt::Display for L7BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "HTTP/1.1 keep-alive, {} connections: direct, L4 mesh (ztunnel → ztunnel) and through a waypoint (ztunnel → waypoint on {} → ztunnel); {:.1} s per measure and path, {ROUNDS} alternating rounds",
            self.connections, self.waypoint_node, self.duration_s
        )?;
        writeln!(
            f,
            "{:<40}{:>12}{:>12}{:>12}",
            "closed loop", "req/s", "vs direct", "vs mesh"
        )?;
        let rows = [
            (
                format!("direct ({})", self.direct_target),
                self.direct_http_rps,
            ),
            ("mesh (mesh/l4 VIP)".to_owned(), self.mesh_http_rps),
            ("waypoint (mesh/l7 VIP)".to_owned(), self.waypoint_http_rps),
        ];
        for (name, rps) in rows {
            writeln!(
                f,
                "{name:<40}{rps:>12.0}{:>11.2}x{:>11.2}x",
                ratio(rps, self.direct_http_rps),
                ratio(rps, self.mesh_http_rps)
            )?;
        }
        writeln!(
            f,
            "at {:.0} req/s (achieved: mesh {:.0}, waypoint {:.0}): latency p50 / p99 mesh {:.1} / {:.1} µs, waypoint {:.1} / {:.1} µs; the waypoint adds {:.1} µs at p50",
            self.rate,
            self.mesh_fixed_rate_rps,
            self.waypoint_fixed_rate_rps,
            self.mesh_latency_p50_us,
            self.mesh_latency_p99_us,
            self.waypoint_latency_p50_us,
            self.waypoint_latency_p99_us,
            self.waypoint_added_p50_us
        )?;
        writeln!(
            f,
            "CPU per request at {:.0} req/s: waypoint {:.1} µs ({} requests; {:.0} µs/s without load); both ztunnels {:.1} µs on the waypoint path, {:.1} µs on the mesh path; waypoint path / mesh path {:.2}x",
            self.rate,
            self.waypoint_cpu_us_per_request,
            self.waypoint_requests,
            self.waypoint_idle_cpu_us_per_s,
            self.waypoint_path_ztunnel_cpu_us_per_request,
            self.mesh_ztunnel_cpu_us_per_request,
            self.waypoint_path_vs_mesh_cpu_ratio
        )?;
        writeln!(
            f,
            "{} HTTPRoute rules before a catch-all: closed loop {:.0} req/s ({:.2}x the waypoint path without routes); at {:.0} req/s p50 {:.1} µs, waypoint CPU {:.1} µs per request ({:.2}x)",
            self.route_rules,
            self.routes_http_rps,
            self.routes_vs_waypoint_rps_ratio,
            self.rate,
            self.routes_latency_p50_us,
            self.routes_cpu_us_per_request,
            self.routes_vs_waypoint_cpu_ratio
        )?;
        writeln!(
            f,
            "ingress (router namespace → gateway mesh/ingress → mesh/l4): closed loop {:.0} req/s ({:.2}x direct, {:.2}x the waypoint path); at {:.0} req/s p50 {:.1} µs, gateway CPU {:.1} µs per request ({:.2}x the waypoint's)",
            self.ingress_http_rps,
            self.ingress_vs_direct_rps_ratio,
            self.ingress_vs_waypoint_rps_ratio,
            self.rate,
            self.ingress_latency_p50_us,
            self.ingress_cpu_us_per_request,
            self.ingress_vs_waypoint_cpu_ratio
        )?;
        write!(
            f,
            "waypoint RSS {} KiB at {:.0} req/s (anonymous {} KiB), peak {} KiB over the run",
            self.waypoint_rss_kb, self.rate, self.waypoint_rss_anon_kb, self.waypoint_peak_rss_kb
        )
    }
}
