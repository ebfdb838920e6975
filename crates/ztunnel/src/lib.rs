//! ztunnel: the per-node L4 proxy. For every enrolled pod on its node it provides mutual
//! TLS (HBONE), SPIFFE identity, L4 authorization, load balancing and TCP telemetry,
//! without touching the pod.
//!
//! Owns: the mesh state it is given (local file or xDS), listeners inside pod namespaces,
//! the outbound and inbound proxy paths, certificates for its pods, operator surfaces.
//! Must not: parse user (Kubernetes/Istio) YAML — it consumes the compiled form only.
//!
//! Map: [`state`] (what the mesh looks like: snapshot store, local file), [`inpod`]
//! (pods handed over by the node agent, their listeners), [`proxy`] (outbound, inbound
//! HBONE and plaintext paths of one pod).

#![forbid(unsafe_code)]

pub mod inpod;
pub mod proxy;
pub mod state;
