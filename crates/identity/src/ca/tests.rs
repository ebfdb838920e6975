//! What the CA signs and what it refuses, checked on real CSRs and certificates.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use super::*;
use crate::cert::LeafInfo;

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap()
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn csr_with(key: &KeyPair, sans: Vec<SanType>) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn leaf_of(chain: &[String]) -> LeafInfo {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes()).unwrap();
    let der: rustls_pki_types::CertificateDer<'static> = der;
    LeafInfo::parse(&der).unwrap()
}

#[test]
fn signs_a_leaf_with_exactly_the_requested_identity() {
    let ca = ca();
    let who = id("shop", "frontend");
    let (csr, _key) = generate_csr(&who).unwrap();
    let chain = ca.sign_csr(&csr, &who, None).unwrap();
    assert_eq!(chain.len(), 2, "leaf then root");
    assert_eq!(chain[1], ca.root_pem());
    let leaf = leaf_of(&chain);
    assert_eq!(leaf.identity, who);
    let lifetime = leaf.lifetime();
    // Default 24 h plus the one-minute backdate.
    assert_eq!(lifetime, DEFAULT_LEAF_LIFETIME + BACKDATE);
    assert!(leaf.is_valid_at(SystemTime::now()));
}

#[test]
fn honours_a_requested_lifetime_and_refuses_excessive_ones() {
    let ca = ca();
    let who = id("a", "b");
    let (csr, _) = generate_csr(&who).unwrap();
    let chain = ca
        .sign_csr(&csr, &who, Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(
        leaf_of(&chain).lifetime(),
        Duration::from_secs(3600) + BACKDATE
    );
    let err = ca
        .sign_csr(&csr, &who, Some(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_err();
    assert!(matches!(err, CaError::BadValidity(_)), "{err}");
}

#[test]
fn refuses_a_csr_for_another_identity() {
    let ca = ca();
    let (csr, _) = generate_csr(&id("shop", "admin")).unwrap();
    let err = ca
        .sign_csr(&csr, &id("shop", "frontend"), None)
        .unwrap_err();
    assert!(matches!(err, CaError::UnacceptableSan(_)), "{err}");
    assert!(
        err.to_string()
            .contains("spiffe://cluster.local/ns/shop/sa/admin")
    );
}

#[test]
fn refuses_extra_or_missing_sans() {
    let ca = ca();
    let who = id("a", "b");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let two = csr_with(
        &key,
        vec![
            SanType::URI(who.to_string().try_into().unwrap()),
            SanType::DnsName("evil.example".try_into().unwrap()),
        ],
    );
    assert!(matches!(
        ca.sign_csr(&two, &who, None).unwrap_err(),
        CaError::UnacceptableSan(_)
    ));
    let none = csr_with(&key, vec![]);
    assert!(matches!(
        ca.sign_csr(&none, &who, None).unwrap_err(),
        CaError::UnacceptableSan(_)
    ));
    let dns = csr_with(&key, vec![SanType::DnsName("a.b".try_into().unwrap())]);
    assert!(matches!(
        ca.sign_csr(&dns, &who, None).unwrap_err(),
        CaError::UnacceptableSan(_)
    ));
}

#[test]
fn refuses_identities_of_another_trust_domain() {
    let ca = ca();
    let other = SpiffeId::new("other.domain", "a", "b").unwrap();
    let (csr, _) = generate_csr(&other).unwrap();
    let err = ca.sign_csr(&csr, &other, None).unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");
}

#[test]
fn refuses_garbage_and_weak_keys() {
    let ca = ca();
    let who = id("a", "b");
    let err = ca.sign_csr("not a csr", &who, None).unwrap_err();
    assert!(matches!(err, CaError::MalformedCsr(_)), "{err}");
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = csr_with(&ed, vec![SanType::URI(who.to_string().try_into().unwrap())]);
    let err = ca.sign_csr(&csr, &who, None).unwrap_err();
    assert!(matches!(err, CaError::UnacceptableKey(_)), "{err}");
}

#[test]
fn accepts_p384_keys() {
    let ca = ca();
    let who = id("a", "b");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = csr_with(
        &key,
        vec![SanType::URI(who.to_string().try_into().unwrap())],
    );
    ca.sign_csr(&csr, &who, None).unwrap();
}

#[test]
fn the_leaf_cannot_act_as_a_ca_even_if_the_csr_asks() {
    let ca = ca();
    let who = id("a", "b");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![SanType::URI(who.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca.sign_csr(&csr, &who, None).unwrap();
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(chain[0].as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!cert.is_ca());
}

#[test]
fn a_saved_root_loads_back_and_keeps_signing() {
    let dir = tempfile::tempdir().unwrap();
    let first =
        CertificateAuthority::load_or_generate(dir.path(), CaConfig::new("cluster.local")).unwrap();
    let again =
        CertificateAuthority::load_or_generate(dir.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(first.root_pem(), again.root_pem());
    let who = id("a", "b");
    let (csr, _) = generate_csr(&who).unwrap();
    let chain = again.sign_csr(&csr, &who, None).unwrap();
    assert_eq!(chain[1], first.root_pem());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(ROOT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_mismatched_or_corrupt_root_is_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let a = ca();
    let b = ca();
    a.save(dir.path()).unwrap();
    std::fs::write(dir.path().join(ROOT_KEY_FILE), &b.key_pem).unwrap();
    let err = CertificateAuthority::load(dir.path(), CaConfig::new("cluster.local")).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    std::fs::write(dir.path().join(ROOT_CERT_FILE), "garbage").unwrap();
    let err = CertificateAuthority::load(dir.path(), CaConfig::new("cluster.local")).unwrap_err();
    assert!(matches!(err, CaError::BadRoot { .. }), "{err}");
}
