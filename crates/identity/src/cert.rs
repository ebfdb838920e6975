//! A workload's certificate as the data path uses it: the parsed leaf (identity, serial,
//! validity), the rustls signing key and chain, and the trust bundle it was issued under.
//!
//! Built once per issuance and shared behind an `Arc`; never mutated.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::tls;

/// Why a certificate (or chain, or key) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// PEM text did not hold what was expected.
    #[error("cannot read {what} from PEM: {reason}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// The chain was empty.
    #[error("the certificate chain is empty; a chain must hold the leaf first and the root last")]
    EmptyChain,
    /// The DER could not be parsed as X.509.
    #[error("certificate is not valid X.509: {0}")]
    X509(String),
    /// The leaf does not carry exactly one SPIFFE URI SAN.
    #[error("certificate must carry exactly one URI SAN with a SPIFFE id, found {0}")]
    NoSpiffeSan(String),
    /// The URI SAN is not a valid mesh identity.
    #[error("certificate SAN is not a mesh identity: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
    /// The private key cannot sign with the provider.
    #[error("private key is not usable for TLS: {0}")]
    Key(rustls::Error),
    /// The root could not be added to the trust store.
    #[error("trust bundle certificate rejected: {0}")]
    Root(rustls::Error),
}

/// The facts about a leaf certificate that operators and the manager care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The one SPIFFE identity in the SAN.
    pub identity: SpiffeId,
    /// Serial number, lowercase hex with colons as `openssl` prints it.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl LeafInfo {
    /// Parses the identity, serial and validity out of a DER leaf.
    pub fn parse(der: &[u8]) -> Result<Self, CertificateError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertificateError::X509(e.to_string()))?;
        let validity = cert.validity();
        let uris: Vec<&str> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(CertificateError::X509(e.to_string())),
        };
        let identity = match uris.as_slice() {
            [one] => one.parse::<SpiffeId>()?,
            [] => return Err(CertificateError::NoSpiffeSan("none".into())),
            many => return Err(CertificateError::NoSpiffeSan(format!("{many:?}"))),
        };
        Ok(Self {
            identity,
            serial: cert.raw_serial_as_string(),
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
        })
    }

    /// Total lifetime of the certificate.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// The moment the manager renews: half-way through the lifetime.
    pub fn half_life(&self) -> SystemTime {
        self.not_before + self.lifetime() / 2
    }

    /// Whether the certificate is within its validity period at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

/// One issued workload certificate, ready for TLS.
#[derive(Debug)]
pub struct WorkloadCertificate {
    info: LeafInfo,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    root_ders: Vec<CertificateDer<'static>>,
}

impl WorkloadCertificate {
    /// Assembles a certificate from the CA's answer (PEM chain, leaf first and root last)
    /// and the PEM private key whose CSR it answered.
    pub fn from_pem_chain(chain_pem: &[String], key_pem: &str) -> Result<Self, CertificateError> {
        let mut ders = Vec::with_capacity(chain_pem.len());
        for pem in chain_pem {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                ders.push(der.map_err(|e| CertificateError::Pem {
                    what: "certificate chain",
                    reason: e.to_string(),
                })?);
            }
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
            CertificateError::Pem {
                what: "private key",
                reason: e.to_string(),
            }
        })?;
        Self::from_der(ders, key)
    }

    /// Assembles a certificate from DER: `chain` is leaf first, root last (a chain of one
    /// is a self-signed leaf that is its own root).
    pub fn from_der(
        mut chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::EmptyChain)?;
        let info = LeafInfo::parse(leaf)?;
        // The last certificate is the root of trust; everything before it is presented.
        let root = if chain.len() > 1 {
            chain.pop().ok_or(CertificateError::EmptyChain)?
        } else {
            leaf.clone()
        };
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).map_err(CertificateError::Root)?;
        let signing_key = tls::crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(CertificateError::Key)?;
        Ok(Self {
            info,
            certified_key: Arc::new(CertifiedKey::new(chain, signing_key)),
            roots: Arc::new(roots),
            root_ders: vec![root],
        })
    }

    /// Identity, serial and validity.
    pub fn info(&self) -> &LeafInfo {
        &self.info
    }

    /// The identity this certificate proves.
    pub fn identity(&self) -> &SpiffeId {
        &self.info.identity
    }

    /// The chain and key rustls presents.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    /// The trust bundle peers are verified against.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The trust bundle as DER certificates.
    pub fn root_ders(&self) -> &[CertificateDer<'static>] {
        &self.root_ders
    }
}
