//! The waypoint: the L7 proxy a namespace or service opts into. ztunnels tunnel traffic
//! for services bound to it (`istio.io/use-waypoint`) over HBONE; the waypoint terminates
//! the tunnel, applies the L7 authorization attached to it (`targetRefs`), picks the real
//! endpoint and re-originates HBONE to the destination pod's ztunnel under its own
//! identity, reporting Istio's request metrics with `reporter="waypoint"`.
//!
//! Owns: its mesh state (Istio's workload types from the control plane, as ztunnel gets
//! them, plus Bowline's `bowline.l7.v1.Authorization`), its certificate, the HBONE server
//! on 15008, the per-request path and the operator surfaces. Must not: parse user YAML —
//! the control plane compiles everything it needs.
//!
//! A request goes through named phases, each a module: [`inbound`] (accept the tunnel:
//! who, to where, which protocol) → [`request`] (authorize, route, forward, respond, log)
//! → [`upstream`] (endpoint choice and the HBONE connection to it). [`policies`] keeps the
//! L7 policies and route tables from the control plane ([`routes`]: matching and
//! backends), [`metrics`] the telemetry, [`admin`] the operator
//! surfaces and [`app`] wires them and drains on shutdown.
//!
//! Run with `--ingress`, the same proxy is a Gateway of class `istio`: [`ingress`] serves
//! the Gateway's HTTP and HTTPS listeners to clients outside the mesh (no HBONE
//! listener), with the same request path and upstreams.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod inbound;
pub mod ingress;
pub mod metrics;
pub mod policies;
pub mod request;
pub mod routes;
pub mod upstream;
