//! rustls configurations for mesh mutual TLS.
//!
//! TLS 1.3 only, ALPN `h2`, the aws-lc-rs provider with hybrid post-quantum key exchange
//! (X25519MLKEM768) preferred and X25519 as the fallback. The server presents a workload's
//! certificate, requires a client certificate chaining to the bundle and extracts the
//! peer's SPIFFE id; the client presents the source workload's certificate and accepts
//! the server only if it chains to the bundle and its SAN is one of the expected
//! identities.
//!
//! Session resumption is off on both sides: mesh connections are pooled and long-lived,
//! and every handshake should verify the peer's current certificate.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    NoServerSessionStorage, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cert::{LeafInfo, WorkloadCertificate};
use crate::spiffe::SpiffeId;

/// The ALPN protocol every mesh connection speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration could not be built or a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client verifier could not be built from the trust bundle.
    #[error("cannot build client verifier from the trust bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate has no usable SPIFFE identity.
    #[error("the peer's certificate has no usable identity: {0}")]
    PeerIdentity(#[from] crate::cert::CertificateError),
}

/// The crypto provider every Bowline TLS config uses: aws-lc-rs, TLS 1.3 suites only,
/// X25519MLKEM768 preferred and X25519 fallback.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = aws_lc_rs::default_provider();
            provider.kx_groups = vec![
                aws_lc_rs::kx_group::X25519MLKEM768,
                aws_lc_rs::kx_group::X25519,
            ];
            provider
                .cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13);
            Arc::new(provider)
        })
        .clone()
}

/// Installs [`crypto_provider`] as the process default, so that a second provider pulled
/// in by another crate cannot make rustls panic on an ambiguous default. Call once at
/// start; later calls are harmless.
pub fn install_default_provider() {
    // An error only means a default is already installed, which is what we want.
    let _ = CryptoProvider::install_default((*crypto_provider()).clone());
}

/// A server config presenting `cert` and requiring a client certificate that chains to
/// `cert`'s trust bundle and carries a SPIFFE identity.
pub fn server_config(cert: &WorkloadCertificate) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let inner = WebPkiClientVerifier::builder_with_provider(cert.roots().clone(), provider.clone())
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier { inner }))
        .with_cert_resolver(Arc::new(FixedCert(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client config presenting `cert` and accepting a server only if its chain verifies
/// against `cert`'s bundle and its SPIFFE id is one of `expected`.
pub fn client_config(
    cert: &WorkloadCertificate,
    expected: Vec<SpiffeId>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier = SpiffeServerVerifier {
        roots: cert.roots().clone(),
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(FixedCert(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The verified SPIFFE identity of a peer, from the certificates rustls verified.
pub fn peer_identity(peer_certs: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, TlsError> {
    let leaf = peer_certs
        .and_then(|c| c.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    Ok(LeafInfo::parse(leaf)?.identity)
}

/// Presents one fixed certificate, on either side of the handshake.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// WebPKI chain verification, then a SPIFFE SAN check, so a certificate without a mesh
/// identity fails the handshake rather than later.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        LeafInfo::parse(end_entity).map_err(|e| general(format!("client certificate: {e}")))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Chain verification against the bundle, then the server's SPIFFE id must be one of the
/// identities expected for the destination. Server names (DNS/IP) are not used.
struct SpiffeServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    expected: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let info =
            LeafInfo::parse(end_entity).map_err(|e| general(format!("server certificate: {e}")))?;
        if self.expected.contains(&info.identity) {
            Ok(ServerCertVerified::assertion())
        } else {
            let expected: Vec<String> = self.expected.iter().map(ToString::to_string).collect();
            Err(general(format!(
                "server identity {} is not the expected {}",
                info.identity,
                expected.join(" or ")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A refused certificate, carried to the peer as a `bad_certificate` alert and to our own
/// logs with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

fn general(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(Refusal(msg)),
    )))
}
