//! The cache's files: modes, round trip, and every reason an entry is not used.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::ca::{CaConfig, CertificateAuthority, generate_csr};

fn who() -> SpiffeId {
    "spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap()
}

fn issue(ca: &CertificateAuthority, identity: &SpiffeId) -> (Vec<String>, String) {
    let (csr, key) = generate_csr(identity).unwrap();
    (ca.sign_csr(&csr, identity, None).unwrap(), key)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_cached_certificate_is_private_and_reads_back() {
    crate::tls::install_default_provider();
    let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("certs");
    let cache = CertificateCache::open(&dir, ca.root_pem()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let (chain, key) = issue(&ca, &who());
    cache.store(&who(), &chain, &key).unwrap();
    let file = cache.path(&who());
    assert_eq!(file, dir.join("cluster.local~shop~reviews.pem"));
    assert_eq!(mode(&file), 0o600);
    let loaded = cache.load(&who(), SystemTime::now()).unwrap();
    assert_eq!(loaded.identity(), &who());
    // Replaced in place: still private, no temporary file left.
    let (chain, key) = issue(&ca, &who());
    cache.store(&who(), &chain, &key).unwrap();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert_ne!(
        cache.load(&who(), SystemTime::now()).unwrap().info().serial,
        loaded.info().serial
    );
}

#[test]
fn expired_foreign_or_damaged_entries_are_removed_not_used() {
    crate::tls::install_default_provider();
    let ca = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = CertificateCache::open(dir.path(), ca.root_pem()).unwrap();
    let (chain, key) = issue(&ca, &who());

    // Expired by the time it is read.
    cache.store(&who(), &chain, &key).unwrap();
    let later = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    assert!(cache.load(&who(), later).is_none());
    assert!(!cache.path(&who()).exists(), "an expired entry is removed");

    // Issued under a root that is no longer the mesh's.
    let other = CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap();
    let rotated = CertificateCache::open(dir.path(), other.root_pem()).unwrap();
    rotated.store(&who(), &chain, &key).unwrap();
    assert!(rotated.load(&who(), SystemTime::now()).is_none());

    // Another identity's certificate under this identity's name.
    let stranger: SpiffeId = "spiffe://cluster.local/ns/shop/sa/frontend"
        .parse()
        .unwrap();
    let (their_chain, their_key) = issue(&ca, &stranger);
    cache.store(&who(), &their_chain, &their_key).unwrap();
    assert!(cache.load(&who(), SystemTime::now()).is_none());

    // Cut short.
    cache.store(&who(), &chain, &key).unwrap();
    let text = std::fs::read_to_string(cache.path(&who())).unwrap();
    std::fs::write(cache.path(&who()), &text[..text.len() / 2]).unwrap();
    assert!(cache.load(&who(), SystemTime::now()).is_none());
    assert!(!cache.path(&who()).exists());

    // Nothing there at all.
    assert!(cache.load(&who(), SystemTime::now()).is_none());
}

#[test]
fn a_trust_root_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = CertificateCache::open(dir.path(), "not a certificate").unwrap_err();
    assert!(matches!(err, CacheError::BadRoot), "{err}");
}
