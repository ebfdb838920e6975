//! In-pod mode: the node agent hands ztunnel each enrolled pod's network namespace over
//! the ZDS protocol; ztunnel opens the pod's listeners inside it (15001 outbound, 15006
//! inbound plaintext, 15008 HBONE, 15053 DNS when on) and closes them when the pod goes.
//! Like Istio's, they are bound with `SO_REUSEPORT` ([`netns::socket::listen_shared`]):
//! a ztunnel taking a pod over from another binds at once, even while the other still
//! listens or its connections linger in `TIME_WAIT`.
//!
//! [`Pods`] owns the running pods; [`zds`] speaks the protocol and keeps reconnecting to
//! the agent. Pods keep serving while the agent is away.

pub mod zds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use identity::SpiffeId;
use netns::NetnsWorker;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::dns::{self, DnsContext};
use crate::proxy::inbound::{self, Inbound};
use crate::proxy::{Pod, PodDialer, ProxyInputs, outbound};

/// Ports of the listeners opened in every pod.
#[derive(Debug, Clone, Copy)]
pub struct PodPorts {
    /// Outbound capture.
    pub outbound: u16,
    /// Inbound plaintext capture.
    pub inbound_plaintext: u16,
    /// HBONE.
    pub hbone: u16,
    /// DNS proxy (UDP and TCP on 127.0.0.1), when DNS is on.
    pub dns: u16,
}

impl Default for PodPorts {
    fn default() -> Self {
        Self {
            outbound: 15001,
            inbound_plaintext: 15006,
            hbone: 15008,
            dns: 15053,
        }
    }
}

/// What the node agent says about a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Workload uid (matches the mesh state).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account (`default` if empty).
    pub service_account: String,
}

/// Why a pod could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// A listener could not be opened.
    #[error("cannot listen on {addr} inside pod {pod}: {source}")]
    Listen {
        /// The pod.
        pod: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The identity is not valid.
    #[error(transparent)]
    Identity(#[from] identity::SpiffeIdError),
}

/// A pod's listeners, bound inside its namespace.
struct PodListeners {
    outbound: TcpListener,
    plaintext: TcpListener,
    hbone: TcpListener,
    dns: Option<(tokio::net::UdpSocket, TcpListener)>,
}

struct Running {
    pod: Arc<Pod>,
    /// The accept loops; connections run in tasks of their own.
    tasks: Vec<JoinHandle<()>>,
    removed: tokio::sync::watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.removed.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The pods this ztunnel serves.
pub struct Pods {
    inputs: Arc<ProxyInputs>,
    ports: PodPorts,
    running: Mutex<HashMap<String, Running>>,
    /// Readiness waits for the node agent's first snapshot of pods (in-pod mode).
    awaiting_node_agent: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods").field("uids", &self.uids()).finish()
    }
}

impl Pods {
    /// No pods yet.
    pub fn new(inputs: Arc<ProxyInputs>, ports: PodPorts) -> Self {
        Self {
            inputs,
            ports,
            running: Mutex::default(),
            awaiting_node_agent: false.into(),
        }
    }

    /// Makes readiness wait until the node agent has sent its pods once (in-pod mode: a
    /// ztunnel that has not heard of its node's pods is not ready to serve them).
    pub fn expect_node_agent(&self) {
        self.awaiting_node_agent
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The node agent has sent its pods (`snapshot_sent`).
    pub(crate) fn node_agent_synced(&self) {
        self.awaiting_node_agent
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether readiness still waits for the node agent's first snapshot.
    pub fn awaiting_node_agent(&self) -> bool {
        self.awaiting_node_agent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts serving a pod inside the namespace `netns`. A pod already running under
    /// this uid keeps running (the agent re-sends pods after a reconnect).
    pub async fn add(&self, info: PodInfo, netns: OwnedFd) -> Result<(), PodError> {
        if self.contains(&info.uid) {
            return Ok(());
        }
        let sa = if info.service_account.is_empty() {
            "default"
        } else {
            &info.service_account
        };
        let identity = SpiffeId::new(&self.inputs.settings.trust_domain, &info.namespace, sa)?;
        let name = format!("{}/{}", info.namespace, info.name);
        let worker = NetnsWorker::start(netns, &info.uid)?;
        let listeners = self.bind(&worker, &name).await?;
        self.prefetch_certificate(&identity, &name);
        let (removed_tx, removed_rx) = tokio::sync::watch::channel(false);
        let pool = hbone::Pool::with_dialer(
            self.inputs.manager.clone(),
            self.inputs.settings.pool.clone(),
            Arc::new(PodDialer {
                worker: worker.clone(),
            }),
        );
        let pod = Arc::new(Pod {
            uid: info.uid.clone(),
            name: name.clone(),
            identity,
            worker,
            pool,
            removed: removed_rx,
        });
        let tasks = self.serve(&pod, listeners, &info.namespace);
        tracing::info!(pod = %name, uid = %info.uid, dns = self.inputs.settings.dns.enabled, "pod enrolled: listening in its namespace");
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                info.uid,
                Running {
                    pod,
                    tasks,
                    removed: removed_tx,
                },
            );
        }
        Ok(())
    }

    /// Binds the pod's listeners inside its namespace, with `SO_REUSEPORT` so a ztunnel
    /// taking the pod over from another binds at once.
    async fn bind(&self, worker: &NetnsWorker, name: &str) -> Result<PodListeners, PodError> {
        let failed = |addr| {
            move |source| PodError::Listen {
                pod: name.to_owned(),
                addr,
                source,
            }
        };
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let listen = |addr: SocketAddr| async move {
            worker
                .run(move || netns::socket::listen_shared(addr))
                .await?
                .and_then(netns::socket::into_tokio)
                .map_err(failed(addr))
        };
        let outbound = listen(any(self.ports.outbound)).await?;
        let plaintext = listen(any(self.ports.inbound_plaintext)).await?;
        let hbone = listen(any(self.ports.hbone)).await?;
        let dns = if self.inputs.settings.dns.enabled {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.ports.dns));
            let sockets = worker
                .run(move || {
                    Ok::<_, std::io::Error>((
                        netns::socket::udp_shared(addr)?,
                        netns::socket::listen_shared(addr)?,
                    ))
                })
                .await?
                .and_then(|(udp, tcp)| {
                    Ok((
                        tokio::net::UdpSocket::from_std(udp)?,
                        netns::socket::into_tokio(tcp)?,
                    ))
                })
                .map_err(failed(addr))?;
            Some(sockets)
        } else {
            None
        };
        Ok(PodListeners {
            outbound,
            plaintext,
            hbone,
            dns,
        })
    }

    /// Fetches the pod's certificate eagerly, in the background, so the first
    /// connection does not wait for it and the node agent's hand-over does not wait
    /// either (a connection arriving first waits on the same fetch); after a restart it
    /// comes from the certificate cache when there is one, and a failure is retried by
    /// the manager in the background. Readiness reports pods whose certificate is
    /// missing.
    fn prefetch_certificate(&self, identity: &SpiffeId, name: &str) {
        let manager = self.inputs.manager.clone();
        let identity = identity.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(error) = manager.fetch(&identity).await {
                tracing::warn!(pod = %name, %error, "no certificate yet; retrying in the background");
            }
        });
    }

    /// Starts the pod's serving tasks: outbound, inbound plaintext, HBONE, DNS.
    fn serve(
        &self,
        pod: &Arc<Pod>,
        listeners: PodListeners,
        namespace: &str,
    ) -> Vec<JoinHandle<()>> {
        let inbound_handler = Inbound {
            pod: pod.clone(),
            inputs: self.inputs.clone(),
        };
        let server = hbone::Server::new(
            pod.identity.clone(),
            self.inputs.manager.clone(),
            inbound_handler.clone(),
            hbone::ServerSettings::default(),
        )
        .with_fd_reserve(self.inputs.fd_reserve.clone());
        let mut tasks = vec![
            tokio::spawn(outbound::serve(
                listeners.outbound,
                pod.clone(),
                self.inputs.clone(),
            )),
            tokio::spawn(inbound::serve_plaintext(
                listeners.plaintext,
                inbound_handler,
            )),
            tokio::spawn(server.serve(listeners.hbone)),
        ];
        if let Some((udp, tcp)) = listeners.dns {
            let context = Arc::new(DnsContext::new(
                self.inputs.store.clone(),
                self.inputs.settings.dns.clone(),
                namespace,
                &pod.name,
            ));
            tasks.push(tokio::spawn(dns::serve_udp(udp, context.clone())));
            tasks.push(tokio::spawn(dns::serve_tcp(
                tcp,
                context,
                self.inputs.fd_reserve.clone(),
            )));
        }
        tasks
    }

    /// Stops serving a pod: listeners close and its live connections end.
    pub fn remove(&self, uid: &str) -> bool {
        let Ok(mut running) = self.running.lock() else {
            return false;
        };
        let Some(gone) = running.remove(uid) else {
            return false;
        };
        // Other pods may run under the same service account.
        let shared = running
            .values()
            .any(|r| r.pod.identity == gone.pod.identity);
        drop(running);
        if !shared {
            self.inputs.manager.forget(&gone.pod.identity);
        }
        tracing::info!(pod = %gone.pod.name, uid, "pod removed: listeners closed");
        true
    }

    /// Closes every pod's listeners; live connections continue (drain).
    pub fn stop_accepting(&self) {
        if let Ok(running) = self.running.lock() {
            for r in running.values() {
                for task in &r.tasks {
                    task.abort();
                }
            }
        }
    }

    /// Stops serving every pod at shutdown: listeners close and live connections end, but
    /// their identities are not forgotten (their cached certificates stay for the next
    /// start).
    pub fn shutdown(&self) {
        let gone = self
            .running
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        drop(gone);
    }

    /// Removes every pod whose uid `keep` rejects.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        for uid in self.uids() {
            if !keep(&uid) {
                self.remove(&uid);
            }
        }
    }

    /// Whether `uid` is being served.
    pub fn contains(&self, uid: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(uid))
            .unwrap_or(false)
    }

    /// The pod served under `uid`.
    pub fn pod(&self, uid: &str) -> Option<Arc<Pod>> {
        self.running.lock().ok()?.get(uid).map(|r| r.pod.clone())
    }

    /// The identities of the pods being served.
    pub fn identities(&self) -> Vec<SpiffeId> {
        self.running
            .lock()
            .map(|r| r.values().map(|p| p.pod.identity.clone()).collect())
            .unwrap_or_default()
    }

    /// The uids being served, sorted.
    pub fn uids(&self) -> Vec<String> {
        let mut uids: Vec<_> = self
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        uids.sort();
        uids
    }
}
