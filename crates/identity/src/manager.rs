//! The certificate manager: one certificate per workload identity, fetched through a
//! [`CertificateProvider`], renewed at half-life in the background.
//!
//! A failed renewal keeps the still-valid certificate in service and retries with
//! exponential backoff (each delay jittered between half and all of it); a failed first
//! fetch is retried the same way in the background. Renewal swaps an immutable [`Issued`]
//! value atomically, so handshakes in progress and live connections are never disturbed:
//! new handshakes simply pick up the new certificate.
//!
//! With a [`CertificateCache`] every issuance is also kept on disk, and a first fetch is
//! answered from the cache when it holds a still-valid certificate for the identity — so a
//! restarted process serves its workloads while the certificate service is away; renewal
//! then goes on as usual. A forgotten identity's entry is removed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use rustls::ServerConfig;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::ca::{CaError, CertificateAuthority, generate_csr};
use crate::cache::CertificateCache;
use crate::cert::{CertificateError, WorkloadCertificate};
use crate::spiffe::SpiffeId;
use crate::tls::{self, TlsError};

/// Why a provider could not issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The in-process CA refused or failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The certificate service could not be reached.
    #[error("certificate service unavailable: {0}")]
    Unavailable(String),
    /// The certificate service answered with a refusal.
    #[error("certificate service refused the request: {0}")]
    Refused(String),
}

/// Where certificates come from: the in-process CA, or (later) the control plane's CA
/// service.
#[async_trait::async_trait]
pub trait CertificateProvider: Send + Sync + 'static {
    /// Signs `csr_pem` for `identity`, valid for about `lifetime`. Returns the chain in
    /// PEM, leaf first and root last.
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError>;
}

#[async_trait::async_trait]
impl CertificateProvider for CertificateAuthority {
    async fn sign(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Vec<String>, ProviderError> {
        Ok(self.sign_csr(csr_pem, identity, Some(lifetime))?)
    }
}

/// Why the manager could not hand out a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generating the key or CSR failed.
    #[error("cannot create a key and CSR for {identity}: {source}")]
    Csr {
        /// The identity.
        identity: SpiffeId,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// The provider did not issue.
    #[error("cannot obtain a certificate for {identity}: {source}")]
    Provider {
        /// The identity.
        identity: SpiffeId,
        /// The underlying error.
        source: ProviderError,
    },
    /// What the provider issued is unusable.
    #[error("the certificate issued for {identity} is unusable: {source}")]
    Unusable {
        /// The identity.
        identity: SpiffeId,
        /// The underlying error.
        source: CertificateError,
    },
    /// The provider issued a certificate for another identity.
    #[error("asked for {asked} but the certificate names {got}")]
    WrongIdentity {
        /// What was asked for.
        asked: SpiffeId,
        /// What came back.
        got: SpiffeId,
    },
    /// Building the TLS config failed.
    #[error("cannot build TLS for {identity}: {source}")]
    Tls {
        /// The identity.
        identity: SpiffeId,
        /// The underlying error.
        source: TlsError,
    },
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Lifetime requested for each certificate.
    pub lifetime: Duration,
    /// First retry delay after a failed renewal (before jitter: each delay is drawn
    /// between half and all of the doubling schedule).
    pub retry_min: Duration,
    /// Longest retry delay (before jitter).
    pub retry_max: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            lifetime: crate::ca::DEFAULT_LEAF_LIFETIME,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// One issuance: the certificate and the server config presenting it.
#[derive(Debug)]
pub struct Issued {
    /// The certificate.
    pub cert: WorkloadCertificate,
    /// A TLS server config presenting it (see [`tls::server_config`]).
    pub server_config: Arc<ServerConfig>,
    /// Increases with every issuance in this process; tells a connection made with an
    /// older certificate from one made with the current one.
    pub generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Holds and renews one certificate per identity.
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateManager")
            .field("identities", &self.inner.slots.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    provider: Arc<dyn CertificateProvider>,
    config: ManagerConfig,
    slots: DashMap<SpiffeId, Arc<Slot>>,
    cache: Option<CertificateCache>,
}

struct Slot {
    identity: SpiffeId,
    current: ArcSwapOption<Issued>,
    /// Serialises first fetches so concurrent callers share one issuance.
    fetching: tokio::sync::Mutex<()>,
    /// Wakes the refresher when the certificate was replaced out of band.
    replaced: Notify,
    refresher: std::sync::Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            slot.stop_refresher();
        }
    }
}

impl Slot {
    fn stop_refresher(&self) {
        if let Ok(mut handle) = self.refresher.lock()
            && let Some(handle) = handle.take()
        {
            handle.abort();
        }
    }

    fn usable(&self) -> Option<Arc<Issued>> {
        self.current
            .load_full()
            .filter(|c| c.cert.info().is_valid_at(SystemTime::now()))
    }
}

impl CertificateManager {
    /// A manager fetching from `provider`.
    pub fn new(provider: Arc<dyn CertificateProvider>, config: ManagerConfig) -> Self {
        Self::build(provider, config, None)
    }

    /// A manager fetching from `provider` that keeps what it is issued in `cache` and
    /// answers first fetches from it while the cached certificate is valid.
    pub fn with_cache(
        provider: Arc<dyn CertificateProvider>,
        config: ManagerConfig,
        cache: CertificateCache,
    ) -> Self {
        Self::build(provider, config, Some(cache))
    }

    fn build(
        provider: Arc<dyn CertificateProvider>,
        config: ManagerConfig,
        cache: Option<CertificateCache>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider,
                config,
                slots: DashMap::new(),
                cache,
            }),
        }
    }

    /// The current certificate for `identity`, fetching it on first use (from the cache if
    /// it holds a valid one, else from the provider; concurrent first callers share one
    /// request) and renewing it from then on. After a failed first fetch the manager keeps
    /// trying in the background.
    pub async fn fetch(&self, identity: &SpiffeId) -> Result<Arc<Issued>, CertError> {
        let slot = self
            .inner
            .slots
            .entry(identity.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    identity: identity.clone(),
                    current: ArcSwapOption::empty(),
                    fetching: tokio::sync::Mutex::new(()),
                    replaced: Notify::new(),
                    refresher: std::sync::Mutex::new(None),
                })
            })
            .clone();
        if let Some(issued) = slot.usable() {
            return Ok(issued);
        }
        let _one_at_a_time = slot.fetching.lock().await;
        if let Some(issued) = slot.usable() {
            return Ok(issued);
        }
        let issued = match self.inner.cached(identity) {
            Some(cached) => cached,
            None => match self.inner.issue(identity).await {
                Ok(issued) => issued,
                Err(error) => {
                    // Keep trying in the background, so the identity gets its certificate
                    // once the provider is back even if nobody asks again.
                    self.ensure_refresher(&slot, true);
                    return Err(error);
                }
            },
        };
        slot.current.store(Some(issued.clone()));
        slot.replaced.notify_one();
        self.ensure_refresher(&slot, false);
        Ok(issued)
    }

    /// The certificate currently held for `identity`, if any, without fetching.
    pub fn current(&self, identity: &SpiffeId) -> Option<Arc<Issued>> {
        self.inner.slots.get(identity)?.current.load_full()
    }

    /// Renews `identity` now, whatever its age. Live connections keep their session; new
    /// handshakes use the new certificate.
    pub async fn rotate(&self, identity: &SpiffeId) -> Result<Arc<Issued>, CertError> {
        self.fetch(identity).await?;
        let slot = self
            .inner
            .slots
            .get(identity)
            .map(|s| s.clone())
            .ok_or_else(|| CertError::Provider {
                identity: identity.clone(),
                source: ProviderError::Refused("identity was forgotten during rotation".into()),
            })?;
        let issued = self.inner.issue(identity).await?;
        slot.current.store(Some(issued.clone()));
        slot.replaced.notify_one();
        Ok(issued)
    }

    /// Stops holding and renewing `identity` (its workload left the node), and removes it
    /// from the cache.
    pub fn forget(&self, identity: &SpiffeId) {
        if let Some((_, slot)) = self.inner.slots.remove(identity) {
            slot.stop_refresher();
        }
        if let Some(cache) = &self.inner.cache {
            cache.remove(identity);
        }
    }

    /// Every certificate currently held, for operator dumps.
    pub fn certificates(&self) -> Vec<Arc<Issued>> {
        self.inner
            .slots
            .iter()
            .filter_map(|s| s.current.load_full())
            .collect()
    }

    /// Starts the slot's refresher unless it runs; `retrying` when a fetch just failed, so
    /// it starts with a retry delay instead of asking again at once.
    fn ensure_refresher(&self, slot: &Arc<Slot>, retrying: bool) {
        let Ok(mut handle) = slot.refresher.lock() else {
            return;
        };
        if handle.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let task = tokio::spawn(refresh(Arc::downgrade(&self.inner), slot.clone(), retrying));
        *handle = Some(task.abort_handle());
    }
}

impl Inner {
    /// A still-valid certificate for `identity` from the cache, if there is one.
    fn cached(&self, identity: &SpiffeId) -> Option<Arc<Issued>> {
        let cert = self.cache.as_ref()?.load(identity, SystemTime::now())?;
        let server_config = match tls::server_config(&cert) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%identity, %error, "cached certificate not usable for TLS; asking the provider");
                return None;
            }
        };
        tracing::info!(
            identity = %identity,
            serial = %cert.info().serial,
            expires = ?cert.info().not_after,
            "certificate loaded from the cache"
        );
        Some(Arc::new(Issued {
            cert,
            server_config,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }))
    }

    async fn issue(&self, identity: &SpiffeId) -> Result<Arc<Issued>, CertError> {
        let (csr, key) = generate_csr(identity).map_err(|source| CertError::Csr {
            identity: identity.clone(),
            source,
        })?;
        let chain = self
            .provider
            .sign(identity, &csr, self.config.lifetime)
            .await
            .map_err(|source| CertError::Provider {
                identity: identity.clone(),
                source,
            })?;
        let cert = WorkloadCertificate::from_pem_chain(&chain, &key).map_err(|source| {
            CertError::Unusable {
                identity: identity.clone(),
                source,
            }
        })?;
        if cert.identity() != identity {
            return Err(CertError::WrongIdentity {
                asked: identity.clone(),
                got: cert.identity().clone(),
            });
        }
        let server_config = tls::server_config(&cert).map_err(|source| CertError::Tls {
            identity: identity.clone(),
            source,
        })?;
        tracing::info!(
            identity = %identity,
            serial = %cert.info().serial,
            expires = ?cert.info().not_after,
            "certificate issued"
        );
        if let Some(cache) = &self.cache
            && let Err(error) = cache.store(identity, &chain, &key)
        {
            tracing::warn!(%identity, %error, "cannot cache the certificate; a restart while the certificate service is away would have to wait for it");
        }
        Ok(Arc::new(Issued {
            cert,
            server_config,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }))
    }
}

/// Renews at half-life; after a failure keeps the current certificate and retries with
/// exponential backoff (jittered), from the first delay at once if `retrying`. Ends when
/// aborted (the identity is forgotten or the manager dropped) or when the manager is gone.
async fn refresh(inner: Weak<Inner>, slot: Arc<Slot>, retrying: bool) {
    // The retry schedule (before jitter) while renewals fail; `None` while all is well.
    let mut backoff: Option<Duration> = None;
    if retrying && let Some(inner) = inner.upgrade() {
        backoff = Some(inner.config.retry_min);
    }
    loop {
        let wait = match (backoff, slot.current.load_full()) {
            (Some(delay), _) => jittered(delay),
            (None, Some(issued)) => issued
                .cert
                .info()
                .half_life()
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
            (None, None) => Duration::ZERO,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = slot.replaced.notified() => {
                // Replaced out of band (first fetch, rotation): recompute the schedule.
                backoff = None;
                continue;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let next_delay = backoff
            .map(|d| (d * 2).min(inner.config.retry_max))
            .unwrap_or(inner.config.retry_min);
        match inner.issue(&slot.identity).await {
            Ok(issued) => {
                let stale = issued.cert.info().half_life() <= SystemTime::now();
                slot.current.store(Some(issued));
                backoff = None;
                if stale {
                    // Renewing again at once would spin; the issuer's clock or lifetime
                    // is off, so pace the renewals like failures.
                    tracing::warn!(
                        identity = %slot.identity,
                        retry_in = ?next_delay,
                        "the new certificate is already past half-life (clock skew or a very short lifetime?)"
                    );
                    backoff = Some(next_delay);
                }
            }
            Err(error) => {
                tracing::warn!(
                    identity = %slot.identity,
                    %error,
                    still_valid = slot.usable().is_some(),
                    retry_in = ?next_delay,
                    "certificate renewal failed; keeping the current certificate and retrying"
                );
                backoff = Some(next_delay);
            }
        }
    }
}

/// A delay drawn uniformly between half of `delay` and all of it, so the identities of a
/// node (and the nodes of a mesh) that failed together do not retry together.
fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher of nothing: a random number without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = delay / 2;
    let span = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % span.saturating_add(1))
}

#[cfg(test)]
mod tests;
