//! Workload identity for the mesh: SPIFFE ids, the certificate authority, the
//! certificate manager and the rustls configurations every mTLS connection uses.
//!
//! Owns: identity parsing and formatting, CSR signing policy, certificate lifetimes and
//! renewal, the on-disk certificate cache, TLS parameters (TLS 1.3, ALPN `h2`, hybrid
//! post-quantum key exchange).
//! Must not: open sockets or know about workloads, services or policies — callers bring
//! the identity they act for.

#![forbid(unsafe_code)]

pub mod ca;
pub mod cache;
pub mod cert;
pub mod manager;
pub mod private_file;
pub mod spiffe;
pub mod tls;

pub use ca::{CaConfig, CaError, CertificateAuthority, generate_csr};
pub use cache::{CacheError, CertificateCache};
pub use cert::{CertificateError, LeafInfo, WorkloadCertificate};
pub use manager::{
    CertError, CertificateManager, CertificateProvider, Issued, ManagerConfig, ProviderError,
};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use tls::{TlsError, client_config, crypto_provider, install_default_provider, server_config};
