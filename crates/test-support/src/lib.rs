//! Fixtures shared by Bowline's tests: certificate authorities and managers, providers
//! that misbehave on purpose, TLS clients that break the rules, and small TCP servers.
//!
//! Must not: be a runtime dependency of any shipped crate.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fixtures;

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use identity::{
    CaConfig, CertificateAuthority, CertificateManager, CertificateProvider, ManagerConfig,
    ProviderError, SpiffeId,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The trust domain tests use.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Logs to the test harness at `warn`, or at the level in `BOWLINE_TEST_LOG`.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("BOWLINE_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
        identity::install_default_provider();
    });
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, ns, sa).unwrap()
}

/// A fresh in-memory CA for [`TRUST_DOMAIN`].
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA itself.
    pub ca: Arc<CertificateAuthority>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new root.
    pub fn new() -> Self {
        init_tracing();
        Self {
            ca: Arc::new(CertificateAuthority::generate(CaConfig::new(TRUST_DOMAIN)).unwrap()),
        }
    }

    /// A manager fetching from this CA with default settings.
    pub fn manager(&self) -> CertificateManager {
        self.manager_with(ManagerConfig::default())
    }

    /// A manager fetching from this CA.
    pub fn manager_with(&self, config: ManagerConfig) -> CertificateManager {
        CertificateManager::new(self.ca.clone(), config)
    }

    /// A manager whose certificates all expired an hour ago.
    pub fn expired_manager(&self) -> CertificateManager {
        CertificateManager::new(
            Arc::new(ExpiredIssuer(self.ca.clone())),
            ManagerConfig::default(),
        )
    }
}

/// Signs certificates whose validity ended an hour ago.
struct ExpiredIssuer(Arc<CertificateAuthority>);

#[async_trait::async_trait]
impl CertificateProvider for ExpiredIssuer {
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        _lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        let now = SystemTime::now();
        Ok(self.0.sign_csr_with_validity(
            csr_pem,
            identity,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )?)
    }
}

/// A TLS client config that presents no certificate and trusts any server: for proving
/// that servers refuse clients without a certificate.
pub fn anonymous_client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct TrustAnything;

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A loopback TCP echo server (half-close answered with half-close).
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A loopback TCP server that reads until EOF and then answers `got <n> bytes` and
/// closes: proves a client's half-close arrived and the reverse direction still works.
pub async fn count_then_answer_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n,
                        Err(_) => return,
                    }
                }
                let _ = tcp.write_all(format!("got {total} bytes").as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback address on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Polls `check` every 10 ms until it holds or `limit` passes; panics with `what`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether this test may build network namespaces. Root is needed; in CI
/// (`BOWLINE_REQUIRE_ROOT=1`, set by `.ci/run`) running without it is a failure, elsewhere
/// the test says loudly that it is skipped.
///
/// Without root, the test is first re-run in a user namespace of its own (`unshare
/// --user --map-root-user --net --mount`, a fresh `/run`, loopback up), where it is root
/// over namespaces it creates — the way a contributor runs the end-to-end tier without
/// sudo. Its result is this test's result. Only when that is impossible (no `unshare`,
/// user namespaces disabled) is the test skipped, loudly.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if let Some(outcome) = rerun_in_user_namespace(test) {
        match outcome {
            Ok(()) => return false,
            Err(output) => panic!("{test} failed in its user namespace:\n{output}"),
        }
    }
    let required = std::env::var("BOWLINE_REQUIRE_ROOT").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{test} needs root to build network namespaces, and BOWLINE_REQUIRE_ROOT=1 says this run must not skip it"
    );
    eprintln!("SKIPPED {test}: needs root to build network namespaces");
    false
}

/// Re-runs test `test` of this test binary inside a new user, network and mount
/// namespace. `None` when that cannot be done here (or we already are inside one); else
/// the child's verdict, with its output on failure.
fn rerun_in_user_namespace(test: &str) -> Option<Result<(), String>> {
    const MARK: &str = "BOWLINE_TEST_IN_USERNS";
    if std::env::var_os(MARK).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let setup = "mount -t tmpfs tmpfs /run && ip link set lo up && exec \"$0\" \"$@\"";
    let output = std::process::Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            "--",
            "sh",
            "-c",
            setup,
        ])
        .arg(&exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(MARK, "1")
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The namespace could not be made (user namespaces off): not this test's failure.
    if text.contains("unshare failed") || text.contains("cannot open /proc/self/uid_map") {
        return None;
    }
    if !text.contains("running 1 test") {
        // The name did not select exactly this test (a test inside a module): skip.
        return None;
    }
    if output.status.success() {
        eprintln!("{test}: ran as root of its own user namespace");
        Some(Ok(()))
    } else {
        Some(Err(text))
    }
}

/// A name for a namespace or interface that no other test or process uses:
/// `<prefix><pid base36><counter>`, at most 15 characters (the interface name limit).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}{}", base36(std::process::id()), base36(n));
    name.chars().take(15).collect()
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A web server's certificate (not a mesh identity): a fresh CA and a leaf for some DNS
/// names, as an ingress gateway's `kubernetes.io/tls` Secret holds one.
#[derive(Debug, Clone)]
pub struct WebCertificate {
    /// The CA clients trust, PEM.
    pub root_pem: String,
    /// The leaf, PEM.
    pub chain_pem: String,
    /// The leaf's key, PEM (PKCS#8).
    pub key_pem: String,
}

impl WebCertificate {
    /// A leaf for `hosts` signed by a CA of its own.
    pub fn new(hosts: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test web CA");
        let root = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        WebCertificate {
            root_pem: root.pem(),
            chain_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The `kubernetes.io/tls` Secret `namespace/name` holding it, as YAML.
    pub fn secret_yaml(&self, namespace: &str, name: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            b64(&self.chain_pem),
            b64(&self.key_pem)
        )
    }
}
