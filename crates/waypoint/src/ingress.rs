//! An ingress gateway's listeners: the waypoint run with `--ingress` serves its Gateway's
//! ports to clients outside the mesh, with the per-request path of [`crate::request`]
//! (authorization by policies attached to the Gateway, the port's route table, upstream
//! over HBONE to the destination's ztunnel or, for a service that asks, its waypoint).
//!
//! The ports follow the control plane: every [`RECONCILE_EVERY`] the listeners are made to
//! match the Gateway's route tables (a port bound when its table arrives, dropped when it
//! goes, re-bound when it turns TLS on or off; a port that cannot be bound is logged and
//! tried again). On an HTTPS port the certificate is chosen per handshake by SNI: the most
//! specific listener whose hostname takes the server name, then the first of its Secrets
//! that holds a usable chain and key. Secrets are files — `<dir>/<namespace>/<name>/
//! tls.crt` and `tls.key`, as a kubelet mounts a secret volume — read again on the same
//! tick (a renewed certificate is served from the next handshake). A handshake for a name
//! no listener takes, or whose Secret is missing, is refused and logged.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::Shared;
use crate::inbound::{IngressPort, Tunnel};

/// How often listeners and certificates are brought up to date.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificates by Secret (namespace, name).
type Keys = HashMap<(String, String), Arc<CertifiedKey>>;

/// Serves the Gateway's ports until the task is dropped; `secrets` is the directory the
/// certificates are read from.
pub async fn run(shared: Arc<Shared>, secrets: Option<PathBuf>, bind_ip: std::net::IpAddr) {
    let keys: Arc<ArcSwap<Keys>> = Arc::default();
    let mut files = Files::default();
    let mut bound: BTreeMap<u16, (bool, JoinHandle<()>)> = BTreeMap::new();
    let mut every = tokio::time::interval(RECONCILE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let tables = shared.policies.ingress_ports(&shared.gateway);
        // Certificates first, so a new HTTPS port has them from its first handshake.
        if let Some(dir) = &secrets {
            let wanted: Vec<(String, String)> = tables
                .values()
                .filter_map(|t| t.ingress.as_ref())
                .flat_map(|i| {
                    i.listeners
                        .iter()
                        .flat_map(|l| l.certificates.iter().cloned())
                })
                .collect();
            if let Some(changed) = files.refresh(dir, &wanted) {
                keys.store(Arc::new(changed));
            }
        }
        bound.retain(|port, (tls, task)| {
            let keep = tables
                .get(port)
                .and_then(|t| t.ingress.as_ref())
                .is_some_and(|i| i.tls == *tls);
            if !keep {
                task.abort();
                tracing::info!(port, "ingress: listener closed");
            }
            keep
        });
        for (port, table) in &tables {
            let Some(ingress) = &table.ingress else {
                continue;
            };
            if bound.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::new(bind_ip, *port);
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%addr, %error, "ingress: cannot listen; will try again");
                    continue;
                }
            };
            let acceptor = match ingress.tls {
                false => None,
                true => {
                    let resolver = Resolver {
                        shared: shared.clone(),
                        port: *port,
                        keys: keys.clone(),
                    };
                    match server_config(resolver) {
                        Ok(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
                        Err(error) => {
                            tracing::error!(%addr, %error, "ingress: no TLS configuration; port not served");
                            continue;
                        }
                    }
                }
            };
            tracing::info!(%addr, tls = ingress.tls, "ingress: listening");
            let task = tokio::spawn(accept(shared.clone(), listener, *port, acceptor));
            bound.insert(*port, (ingress.tls, task));
        }
    }
}

fn server_config(resolver: Resolver) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(identity::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts clients on one port.
async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(port, %error, "ingress: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let target = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(peer.ip(), port));
        let tunnel = Arc::new(Tunnel {
            peer: None,
            peer_addr: peer,
            target,
            client: peer.ip(),
            ingress: Some(IngressPort {
                port,
                tls: tls.is_some(),
            }),
        });
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _live = shared.metrics.live();
            match tls {
                None => crate::request::serve(shared.clone(), tunnel, stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            crate::request::serve(shared.clone(), tunnel, stream).await;
                        }
                        Ok(Err(error)) => {
                            tracing::info!(%peer, port, %error, "ingress: TLS handshake refused");
                        }
                        Err(_) => tracing::info!(%peer, port, "ingress: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Chooses the certificate of an HTTPS port by SNI.
struct Resolver {
    shared: Arc<Shared>,
    port: u16,
    keys: Arc<ArcSwap<Keys>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("port", &self.port)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self
            .shared
            .policies
            .ingress_table(&self.shared.gateway, self.port)?;
        let ingress = table.ingress.as_ref()?;
        let name = hello.server_name();
        let Some(listener) = ingress.listener_for(name) else {
            tracing::info!(port = self.port, server_name = ?name, "ingress: no listener for this server name");
            return None;
        };
        let keys = self.keys.load();
        let found = listener
            .certificates
            .iter()
            .find_map(|secret| keys.get(secret).cloned());
        if found.is_none() {
            tracing::warn!(port = self.port, listener = %listener.name, secrets = ?listener.certificates, "ingress: no usable certificate for this listener (is its Secret there?)");
        }
        found
    }
}

/// The Secret files last read: (namespace, name) → (chain, key, the certificate made of
/// them when they are usable).
#[derive(Debug, Default)]
struct Files {
    read: HashMap<(String, String), Read>,
}

/// A Secret's files as last read, and the certificate made of them (if usable).
type Read = (Vec<u8>, Vec<u8>, Option<Arc<CertifiedKey>>);

impl Files {
    /// Reads the `wanted` Secrets under `dir`; the usable certificates when anything
    /// changed since the last call.
    fn refresh(&mut self, dir: &Path, wanted: &[(String, String)]) -> Option<Keys> {
        let mut changed = false;
        let before = self.read.len();
        self.read.retain(|k, _| wanted.contains(k));
        changed |= self.read.len() != before;
        for secret in wanted {
            let folder = dir.join(&secret.0).join(&secret.1);
            let chain = std::fs::read(folder.join("tls.crt")).unwrap_or_default();
            let key = std::fs::read(folder.join("tls.key")).unwrap_or_default();
            if self
                .read
                .get(secret)
                .is_some_and(|(c, k, _)| *c == chain && *k == key)
            {
                continue;
            }
            changed = true;
            let certified = match certified_key(&chain, &key) {
                Ok(certified) => {
                    tracing::info!(secret = %format!("{}/{}", secret.0, secret.1), "ingress: certificate loaded");
                    Some(Arc::new(certified))
                }
                Err(why) => {
                    tracing::warn!(secret = %format!("{}/{}", secret.0, secret.1), dir = %folder.display(), "ingress: certificate not usable: {why}");
                    None
                }
            };
            self.read.insert(secret.clone(), (chain, key, certified));
        }
        changed.then(|| {
            self.read
                .iter()
                .filter_map(|(k, (_, _, c))| c.clone().map(|c| (k.clone(), c)))
                .collect()
        })
    }
}

/// A certificate from PEM files.
fn certified_key(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    if chain.is_empty() || key.is_empty() {
        return Err("tls.crt or tls.key is missing".into());
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
    let signing = identity::tls::crypto_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("tls.key does not belong to tls.crt: {e}"))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_loaded_when_they_change_and_a_broken_one_is_not_served() {
        let dir = std::env::temp_dir().join(format!("bowline-ingress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cert = test_support::WebCertificate::new(&["shop.example"]);
        let folder = dir.join("shop").join("cert");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("tls.crt"), &cert.chain_pem).unwrap();
        std::fs::write(folder.join("tls.key"), &cert.key_pem).unwrap();
        let wanted = vec![("shop".to_owned(), "cert".to_owned())];
        let mut files = Files::default();
        let keys = files.refresh(&dir, &wanted).unwrap();
        assert!(keys.contains_key(&wanted[0]));
        assert!(files.refresh(&dir, &wanted).is_none(), "nothing changed");
        let other = test_support::WebCertificate::new(&["shop.example"]);
        std::fs::write(folder.join("tls.key"), &other.key_pem).unwrap();
        let keys = files.refresh(&dir, &wanted).unwrap();
        assert!(keys.is_empty(), "a key of another certificate is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
