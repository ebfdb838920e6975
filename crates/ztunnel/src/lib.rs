//! ztunnel: the per-node L4 proxy. For every enrolled pod on its node it provides mutual
//! TLS (HBONE), SPIFFE identity, L4 authorization, load balancing and TCP telemetry,
//! without touching the pod.
//!
//! Owns: the mesh state it is given (local file or xDS), listeners inside pod namespaces,
//! the outbound and inbound proxy paths, certificates for its pods, operator surfaces.
//! Must not: parse user (Kubernetes/Istio) YAML — it consumes the compiled form only.
//!
//! Map: [`app`] (settings and the run loop), [`state`] (what the mesh looks like: snapshot
//! store, local file or xDS from the control plane), [`ca_client`] (certificates from the
//! control plane), [`inpod`]
//! (pods handed over by the node agent, their listeners), [`proxy`] (outbound, inbound
//! HBONE and plaintext paths of one pod), [`dns`] (the DNS proxy in each pod), [`metrics`] (Istio's TCP metrics and the
//! access log, once per connection), [`admin`] (config dump, log level, metrics,
//! readiness).

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod ca_client;
pub mod dns;
pub mod inpod;
pub mod metrics;
pub mod proxy;
pub mod state;
