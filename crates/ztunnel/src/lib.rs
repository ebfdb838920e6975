//! ztunnel: the per-node L4 proxy. For every enrolled pod on its node it provides mutual
//! TLS (HBONE), SPIFFE identity, L4 authorization, load balancing and TCP telemetry,
//! without touching the pod.
//!
//! Owns: the mesh state it is given (local file or xDS), listeners inside pod namespaces,
//! the outbound and inbound proxy paths, certificates for its pods, operator surfaces.
//! Must not: parse user (Kubernetes/Istio) YAML — it consumes the compiled form only.
//!
//! Built so far: [`state`] (snapshot store, local configuration file with located
//! errors and a watcher). The listeners and proxy paths follow.

#![forbid(unsafe_code)]

pub mod state;
