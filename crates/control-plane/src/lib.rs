//! The control plane: what users write (Kubernetes and Istio YAML) in, what each ztunnel
//! needs (workload xDS) and certificates out.
//!
//! Owns: the versioned config store and its sources, translation to Istio's workload API
//! ([`translate`], pure), the delta ADS server, the CA service, the apply API and the
//! operator surfaces. Must not: carry data-plane traffic.

#![forbid(unsafe_code)]

pub mod translate;
