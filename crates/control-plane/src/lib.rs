//! The control plane: what users write (Kubernetes and Istio YAML) in, what each ztunnel
//! needs (workload xDS) and certificates out.
//!
//! Owns: the versioned config store and its sources, translation to Istio's workload API
//! ([`translate`], pure), the delta ADS server, the CA service, the apply API and the
//! operator surfaces. Must not: carry data-plane traffic.

#![forbid(unsafe_code)]

pub mod ads;
pub mod app;
pub mod ca_service;
pub mod http_api;
pub mod metrics;
pub mod store;
pub mod tokens;
pub mod translate;
