//! The mesh certificate authority: an ECDSA P-256 root that signs workload CSRs into
//! short-lived leaves carrying exactly one SPIFFE URI SAN.
//!
//! It checks what it signs (key type and size, the SAN, the trust domain, the lifetime) and
//! refuses with the reason. It does not decide *who* may ask for an identity — callers
//! (the control plane's CA service, the in-process provider) authenticate first.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::oid_registry;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::spiffe::SpiffeId;
use crate::tls;

/// Default lifetime of a workload leaf.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime the CA grants unless configured otherwise.
pub const DEFAULT_MAX_LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a root the CA creates itself.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start this long in the past so peers with a slightly slow clock accept them.
const BACKDATE: Duration = Duration::from_secs(60);

/// File names inside a CA state directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File holding the root's private key (mode 0600).
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Why the CA could not start or refused to sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the state directory failed.
    #[error("CA state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stored root or key cannot be used.
    #[error(
        "CA root in {path} is unusable: {reason}; fix or remove the files to create a new root"
    )]
    BadRoot {
        /// Where the root was loaded from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CSR is not a parseable, correctly self-signed PKCS#10 request.
    #[error("CSR refused: not a valid PKCS#10 request ({0})")]
    MalformedCsr(String),
    /// The CSR's key type or size is not accepted.
    #[error("CSR refused: {0}; use an ECDSA P-256/P-384 key or RSA of at least 2048 bits")]
    UnacceptableKey(String),
    /// The CSR's SANs are not exactly the requested identity.
    #[error("CSR refused: {0}")]
    UnacceptableSan(String),
    /// The requested identity belongs to another trust domain.
    #[error("CSR refused: identity {identity} is outside this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        /// The identity asked for.
        identity: SpiffeId,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// The requested validity is not acceptable.
    #[error("CSR refused: {0}")]
    BadValidity(String),
    /// Signing failed inside the crypto library.
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

/// Settings of a CA.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Trust domain of every identity this CA signs.
    pub trust_domain: String,
    /// Lifetime of a leaf when the caller does not ask for one.
    pub default_lifetime: Duration,
    /// Longest lifetime granted; longer requests are refused.
    pub max_lifetime: Duration,
}

impl CaConfig {
    /// The defaults (24 h leaves, at most 90 days) for a trust domain.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            default_lifetime: DEFAULT_LEAF_LIFETIME,
            max_lifetime: DEFAULT_MAX_LEAF_LIFETIME,
        }
    }
}

/// An ECDSA P-256 root CA.
pub struct CertificateAuthority {
    config: CaConfig,
    root_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new root in memory.
    pub fn generate(config: CaConfig) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, config.trust_domain.clone());
        dn.push(DnType::CommonName, "Bowline mesh root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + ROOT_LIFETIME);
        params.serial_number = Some(random_serial());
        let root = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            root_pem: root.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            config,
        })
    }

    /// Loads `root-cert.pem` and `root-key.pem` from `dir`.
    pub fn load(dir: &Path, config: CaConfig) -> Result<Self, CaError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let root_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let bad = |reason: String| CaError::BadRoot {
            path: dir.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("key: {e}")))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(root_pem.as_bytes())
            .map_err(|e: rustls_pki_types::pem::Error| bad(format!("certificate: {e}")))?;
        let der: rustls_pki_types::CertificateDer<'static> = der;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(bad("the certificate is not a CA (basicConstraints)".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad("the key does not belong to the certificate".into()));
        }
        if !parsed.validity().is_valid() {
            return Err(bad(
                "the root certificate has expired or is not yet valid".into()
            ));
        }
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| bad(format!("certificate: {e}")))?;
        Ok(Self {
            config,
            root_pem,
            key_pem,
            issuer,
        })
    }

    /// Loads the root from `dir`, or creates one and stores it there (key mode 0600).
    pub fn load_or_generate(dir: &Path, config: CaConfig) -> Result<Self, CaError> {
        if dir.join(ROOT_CERT_FILE).exists() || dir.join(ROOT_KEY_FILE).exists() {
            return Self::load(dir, config);
        }
        let ca = Self::generate(config)?;
        ca.save(dir)?;
        Ok(ca)
    }

    /// Writes the root certificate and key into `dir`, creating it if needed.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join(ROOT_KEY_FILE);
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&key_path)
            .and_then(|mut f| f.write_all(self.key_pem.as_bytes()))
            .map_err(io(&key_path))?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        fs::write(&cert_path, &self.root_pem).map_err(io(&cert_path))
    }

    /// The CA's settings.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The trust bundle (the root certificate) in PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Signs `csr_pem` for `identity` with the requested lifetime (the default if `None`).
    /// Returns the chain in PEM, leaf first and root last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        lifetime: Option<Duration>,
    ) -> Result<Vec<String>, CaError> {
        let lifetime = lifetime.unwrap_or(self.config.default_lifetime);
        if lifetime.is_zero() {
            return Err(CaError::BadValidity("a zero lifetime was requested".into()));
        }
        if lifetime > self.config.max_lifetime {
            return Err(CaError::BadValidity(format!(
                "lifetime {}s exceeds the CA's maximum of {}s",
                lifetime.as_secs(),
                self.config.max_lifetime.as_secs()
            )));
        }
        let now = SystemTime::now();
        self.sign_csr_with_validity(csr_pem, identity, now - BACKDATE, now + lifetime)
    }

    /// Signs with an explicit validity window. Used for backdating and by tests that
    /// need certificates which are already expired.
    pub fn sign_csr_with_validity(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        if identity.trust_domain() != self.config.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.config.trust_domain.clone(),
            });
        }
        if not_after <= not_before {
            return Err(CaError::BadValidity(
                "not_after must be later than not_before".into(),
            ));
        }
        check_csr_key(csr_pem)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::MalformedCsr(e.to_string()))?;
        check_csr_san(&csr.params.subject_alt_names, identity)?;

        // The leaf is built from our own parameters; nothing else the CSR asks for
        // (CA flags, key usages, subject) is copied.
        let mut params = CertificateParams::default();
        params.subject_alt_names =
            vec![SanType::URI(identity.to_string().try_into().map_err(
                |e: rcgen::Error| CaError::UnacceptableSan(e.to_string()),
            )?)];
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(random_serial());
        let leaf = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(vec![leaf.pem(), self.root_pem.clone()])
    }

    /// A TLS server certificate for a mesh service that is not a workload (the control
    /// plane's gRPC endpoint): DNS and IP subject names, serverAuth only, a fresh P-256
    /// key. Returns the chain (leaf first, root last) and the key, PEM.
    pub fn issue_server_certificate(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e: rcgen::Error| CaError::UnacceptableSan(e.to_string()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + lifetime);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((vec![cert.pem(), self.root_pem.clone()], key.serialize_pem()))
    }
}

/// Refuses keys that are too weak or of a kind the mesh does not use.
fn check_csr_key(csr_pem: &str) -> Result<(), CaError> {
    let der: rustls_pki_types::CertificateSigningRequestDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::MalformedCsr(e.to_string()))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CaError::MalformedCsr(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(oid)
                    if oid == oid_registry::OID_EC_P256
                        || oid == oid_registry::OID_NIST_EC_P384 =>
                {
                    Ok(())
                }
                Some(oid) => Err(CaError::UnacceptableKey(format!(
                    "elliptic curve {oid} is not accepted"
                ))),
                None => Err(CaError::UnacceptableKey(
                    "EC key without a named curve".into(),
                )),
            }
        }
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => Ok(()),
        Ok(PublicKey::RSA(rsa)) => Err(CaError::UnacceptableKey(format!(
            "RSA key of {} bits is too small",
            rsa.key_size()
        ))),
        Ok(_) => Err(CaError::UnacceptableKey(format!(
            "key algorithm {} is not accepted",
            spki.algorithm.algorithm
        ))),
        Err(e) => Err(CaError::UnacceptableKey(format!(
            "unreadable public key: {e}"
        ))),
    }
}

/// Exactly one SAN, a URI, equal to the identity the caller is entitled to.
fn check_csr_san(sans: &[SanType], identity: &SpiffeId) -> Result<(), CaError> {
    let want = identity.to_string();
    match sans {
        [SanType::URI(uri)] if uri.as_str() == want => Ok(()),
        [SanType::URI(uri)] => Err(CaError::UnacceptableSan(format!(
            "the CSR asks for {:?} but the caller may only receive {want}",
            uri.as_str()
        ))),
        [] => Err(CaError::UnacceptableSan(format!(
            "the CSR has no SAN; it must carry exactly one URI SAN {want}"
        ))),
        [_] => Err(CaError::UnacceptableSan(format!(
            "the CSR's SAN is not a URI; it must carry exactly one URI SAN {want}"
        ))),
        more => Err(CaError::UnacceptableSan(format!(
            "the CSR carries {} SANs; it must carry exactly one URI SAN {want}",
            more.len()
        ))),
    }
}

/// A fresh P-256 key and a CSR for `identity`, both PEM. Used by the certificate manager
/// and by anything else that asks a CA for a workload certificate.
pub fn generate_csr(identity: &SpiffeId) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The provider's CSPRNG only fails if the OS has no entropy source at all; a serial
    // of zeros is then still unique enough to not be a security issue for one root.
    let _ = tls::crypto_provider().secure_random.fill(&mut bytes);
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // and no leading zero byte to be stripped
    SerialNumber::from_slice(&bytes)
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
