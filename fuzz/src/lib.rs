//! What the fuzz targets share: the record framing that lets one input carry several
//! messages, a runtime, a certificate manager, and one harness module per target (each
//! file under `fuzz_targets/` only calls its `run`).
//!
//! The harnesses drive the same public entry points the network or the user reaches, and
//! ignore every `Err`: refusing bad input is the point. Only a panic, a hang or an abort
//! is a finding. Fixtures are built once per process; per-input work starts from them.
//!
//! Must not: depend on anything outside this machine (everything is loopback or a unix
//! socket in a private temporary directory), or print per input (that would cap the
//! executions per second at the speed of the terminal).

use std::sync::{Arc, OnceLock};

use identity::{CaConfig, CertificateAuthority, CertificateManager, ManagerConfig, SpiffeId};

pub mod config_yaml;
pub mod dns;
pub mod hbone_connect;
pub mod waypoint_config;
pub mod xds_state;
pub mod zds;

/// The trust domain of every fixture identity.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Splits an input into records: a tag byte, a big-endian `u16` length, that many bytes.
/// A last record shorter than its length keeps what is there; a lone tag or half a length
/// ends the input. The tag's meaning is the target's (message kind, "attach a descriptor").
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [tag, hi, lo, rest @ ..] = data else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (body, tail) = rest.split_at(len);
        data = tail;
        Some((*tag, body))
    })
}

/// One record in the framing [`records`] reads (for seed generation).
pub fn record(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("a record body is at most 64 KiB");
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A single-threaded runtime: tasks a harness spawns run only inside its `block_on`, so
/// the coverage an input produces is credited to that input.
///
/// Also ignores `SIGPIPE`, as Rust's own `main` does for every Bowline binary: libFuzzer's
/// C `main` does not, and a write to a socket the peer closed would otherwise kill the
/// fuzzer instead of returning `EPIPE` as it does in production.
pub fn runtime() -> tokio::runtime::Runtime {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installs the predefined SIG_IGN disposition, no handler code; done before
    // any socket is used.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.expect("ignore SIGPIPE");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A certificate manager backed by an in-memory CA for [`TRUST_DOMAIN`] (the same shape
/// as ztunnel's, without the control plane). Built once per process.
pub fn manager() -> CertificateManager {
    static MANAGER: OnceLock<CertificateManager> = OnceLock::new();
    MANAGER
        .get_or_init(|| {
            identity::install_default_provider();
            let ca = CertificateAuthority::generate(CaConfig::new(TRUST_DOMAIN))
                .expect("an in-memory CA");
            CertificateManager::new(Arc::new(ca), ManagerConfig::default())
        })
        .clone()
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, ns, sa).expect("a valid fixture identity")
}

/// The small mesh the DNS and xDS harnesses answer from (ztunnel's local-file format):
/// services with VIPs in both families, a headless service with a healthy and an
/// unhealthy endpoint, and one policy.
pub const MESH_YAML: &str = r#"
workloads:
  - uid: shop/db-0
    name: db-0
    namespace: shop
    addresses: [10.2.0.7]
    protocol: HBONE
    services:
      shop/db.shop.svc.cluster.local: [{servicePort: 5432, targetPort: 5432}]
  - uid: shop/db-1
    name: db-1
    namespace: shop
    addresses: [10.2.0.8, "fd00::8"]
    protocol: HBONE
    status: Unhealthy
    services:
      shop/db.shop.svc.cluster.local: [{servicePort: 5432, targetPort: 5432}]
services:
  - name: reviews
    namespace: shop
    hostname: reviews.shop.svc.cluster.local
    vips: [10.96.0.10, "fd00::10"]
    ports: [{servicePort: 9080, targetPort: 8080}]
  - name: ratings
    namespace: other
    hostname: ratings.other.svc.cluster.local
    vips: [10.96.0.11]
    ports: [{servicePort: 9080, targetPort: 8080}]
  - name: db
    namespace: shop
    hostname: db.shop.svc.cluster.local
    ports: [{servicePort: 5432, targetPort: 5432}]
"#;

/// [`MESH_YAML`] as a snapshot.
pub fn mesh() -> ztunnel::state::Snapshot {
    ztunnel::state::file_source::parse(MESH_YAML, std::path::Path::new("fuzz-mesh.yaml"))
        .expect("the fixture mesh is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tolerate_truncation() {
        let mut input = record(1, b"abc");
        input.extend(record(0, b""));
        input.extend([7, 0, 9, b'x']);
        let got: Vec<_> = records(&input).collect();
        assert_eq!(got, vec![(1, &b"abc"[..]), (0, &b""[..]), (7, &b"x"[..])]);
        assert_eq!(records(&[1, 0]).count(), 0);
    }
}
