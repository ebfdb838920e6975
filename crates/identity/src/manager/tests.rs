//! Fetching, sharing, renewing and pacing certificates against providers that succeed,
//! fail, or issue stale certificates.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::ca::CaConfig;

/// Issues certificates that are already past half-life (as a CA with a skewed clock would).
struct Stale {
    ca: CertificateAuthority,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl CertificateProvider for Stale {
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        _lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now();
        Ok(self.ca.sign_csr_with_validity(
            csr_pem,
            identity,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(60),
        )?)
    }
}

// On a paused clock, so the second of pacing below is the renewal loop's own schedule,
// not however fast this machine happens to be.
#[tokio::test(start_paused = true)]
async fn a_certificate_issued_past_half_life_does_not_make_renewal_spin() {
    crate::tls::install_default_provider();
    let provider = Arc::new(Stale {
        ca: CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap(),
        calls: AtomicUsize::new(0),
    });
    let config = ManagerConfig {
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        ..ManagerConfig::default()
    };
    let manager = CertificateManager::new(provider.clone(), config);
    manager.fetch(&who()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Retries paced 100, 200, 400, 400… ms (each jittered to between half and all of
    // it): in one second a handful of renewals, not thousands.
    let calls = provider.calls.load(Ordering::SeqCst);
    assert!((2..=8).contains(&calls), "{calls} issuances in one second");
}

/// A provider that delegates to a CA but can be told to fail, and counts calls.
struct Flaky {
    ca: CertificateAuthority,
    failing: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl CertificateProvider for Flaky {
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable("test outage".into()));
        }
        self.ca.sign(identity, csr_pem, lifetime).await
    }
}

fn flaky() -> Arc<Flaky> {
    crate::tls::install_default_provider();
    Arc::new(Flaky {
        ca: CertificateAuthority::generate(CaConfig::new("cluster.local")).unwrap(),
        failing: false.into(),
        calls: AtomicUsize::new(0),
    })
}

fn who() -> SpiffeId {
    "spiffe://cluster.local/ns/a/sa/b".parse().unwrap()
}

#[tokio::test]
async fn concurrent_first_fetches_share_one_issuance() {
    let provider = flaky();
    let manager = CertificateManager::new(provider.clone(), ManagerConfig::default());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let m = manager.clone();
        tasks.push(tokio::spawn(async move { m.fetch(&who()).await.unwrap() }));
    }
    let mut serials = Vec::new();
    for t in tasks {
        serials.push(t.await.unwrap().cert.info().serial.clone());
    }
    serials.dedup();
    assert_eq!(serials.len(), 1);
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn renews_at_half_life() {
    let provider = flaky();
    let config = ManagerConfig {
        // The CA backdates by a minute, so half-life of 122 s lands one second from now.
        lifetime: Duration::from_secs(62),
        ..ManagerConfig::default()
    };
    let manager = CertificateManager::new(provider.clone(), config);
    let first = manager.fetch(&who()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = manager.current(&who()).unwrap();
        if now.generation != first.generation {
            assert_ne!(now.cert.info().serial, first.cert.info().serial);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no renewal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_renewal_keeps_serving_and_retries_with_backoff() {
    let provider = flaky();
    let config = ManagerConfig {
        lifetime: Duration::from_secs(62),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
    };
    let manager = CertificateManager::new(provider.clone(), config);
    let first = manager.fetch(&who()).await.unwrap();
    provider.failing.store(true, Ordering::SeqCst);
    // Wait until several renewals have been attempted and failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while provider.calls.load(Ordering::SeqCst) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving the original, still-valid certificate.
    let held = manager.fetch(&who()).await.unwrap();
    assert_eq!(held.generation, first.generation);
    // Once the provider recovers, the next retry renews.
    provider.failing.store(false, Ordering::SeqCst);
    loop {
        if manager.current(&who()).unwrap().generation != first.generation {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_first_fetch_that_fails_reports_why() {
    let provider = flaky();
    provider.failing.store(true, Ordering::SeqCst);
    let manager = CertificateManager::new(provider, ManagerConfig::default());
    let err = manager.fetch(&who()).await.unwrap_err();
    assert!(err.to_string().contains("test outage"), "{err}");
}

#[tokio::test]
async fn forget_stops_holding_the_identity() {
    let provider = flaky();
    let manager = CertificateManager::new(provider, ManagerConfig::default());
    manager.fetch(&who()).await.unwrap();
    assert_eq!(manager.certificates().len(), 1);
    manager.forget(&who());
    assert!(manager.current(&who()).is_none());
    assert!(manager.certificates().is_empty());
}

fn cache_in(dir: &std::path::Path, provider: &Flaky) -> crate::cache::CertificateCache {
    crate::cache::CertificateCache::open(dir, provider.ca.root_pem()).unwrap()
}

#[tokio::test]
async fn a_restarted_manager_serves_the_cached_certificate_while_the_provider_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let provider = flaky();
    let config = ManagerConfig {
        // Half-life one second from now (the CA backdates by a minute).
        lifetime: Duration::from_secs(62),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
    };
    let before = CertificateManager::with_cache(
        provider.clone(),
        config.clone(),
        cache_in(dir.path(), &provider),
    );
    let first = before.fetch(&who()).await.unwrap();
    drop(before);

    // The process restarts while the provider is down: the cached certificate serves.
    provider.failing.store(true, Ordering::SeqCst);
    let calls = provider.calls.load(Ordering::SeqCst);
    let after =
        CertificateManager::with_cache(provider.clone(), config, cache_in(dir.path(), &provider));
    let cached = after.fetch(&who()).await.unwrap();
    assert_eq!(cached.cert.info().serial, first.cert.info().serial);
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        calls,
        "the provider was not asked"
    );

    // Renewal goes on as usual: failing at half-life keeps the cached one, and once the
    // provider is back a new certificate replaces it, in the cache too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while provider.calls.load(Ordering::SeqCst) == calls {
        assert!(tokio::time::Instant::now() < deadline, "no renewal attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        after.fetch(&who()).await.unwrap().generation,
        cached.generation
    );
    provider.failing.store(false, Ordering::SeqCst);
    let renewed = loop {
        let now = after.current(&who()).unwrap();
        if now.generation != cached.generation {
            break now;
        }
        assert!(tokio::time::Instant::now() < deadline, "no renewal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reopened = cache_in(dir.path(), &provider)
        .load(&who(), SystemTime::now())
        .unwrap();
    assert_eq!(reopened.info().serial, renewed.cert.info().serial);
}

#[tokio::test]
async fn forgetting_an_identity_removes_its_cached_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let provider = flaky();
    let cache = cache_in(dir.path(), &provider);
    let manager =
        CertificateManager::with_cache(provider.clone(), ManagerConfig::default(), cache.clone());
    manager.fetch(&who()).await.unwrap();
    assert!(cache.path(&who()).exists());
    manager.forget(&who());
    assert!(!cache.path(&who()).exists());
}

#[tokio::test]
async fn a_first_fetch_that_failed_is_retried_in_the_background() {
    let provider = flaky();
    provider.failing.store(true, Ordering::SeqCst);
    let config = ManagerConfig {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..ManagerConfig::default()
    };
    let manager = CertificateManager::new(provider.clone(), config);
    assert!(manager.fetch(&who()).await.is_err());
    provider.failing.store(false, Ordering::SeqCst);
    // Nobody asks again, yet the certificate arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while manager.current(&who()).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn retry_delays_are_jittered_between_half_and_all_of_the_schedule() {
    let delay = Duration::from_millis(800);
    let drawn: Vec<_> = (0..200).map(|_| jittered(delay)).collect();
    assert!(
        drawn.iter().all(|d| *d >= delay / 2 && *d <= delay),
        "{drawn:?}"
    );
    let distinct: std::collections::HashSet<_> = drawn.iter().collect();
    assert!(
        distinct.len() > 100,
        "not spread: {} distinct",
        distinct.len()
    );
    assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
}
