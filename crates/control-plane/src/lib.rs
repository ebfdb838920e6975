//! The control plane: what users write (Kubernetes and Istio YAML) in, what each ztunnel
//! needs (workload xDS) and certificates out.
//!
//! Owns: the versioned config store and its sources, translation to Istio's workload API
//! ([`translate`], pure), the delta ADS server, the CA service, the node agents' capture
//! reports ([`capture_status`]), the apply API behind the operator token
//! ([`operator_token`]) and the operator surfaces ([`http_api`]), and what a waypoint Gateway deploys
//! ([`waypoints`]). Must not: carry
//! data-plane traffic.

#![forbid(unsafe_code)]

pub mod ads;
pub mod app;
pub mod ca_service;
pub mod capture_status;
pub mod http_api;
pub mod metrics;
pub mod operator_token;
pub mod store;
pub mod tokens;
pub mod translate;
pub mod waypoints;
