//! The ztunnel side of the node agent protocol (ZDS, docs/protocols.md): connect, say hello,
//! then answer every request with an `Ack` (empty error = success).
//!
//! On each (re)connection the agent sends every pod it knows (`add` with the netns fd, or
//! `keep`) and then `snapshot_sent`; pods not mentioned since the connection began are
//! dropped. After that, `add` and `del` arrive as pods come and go. When the agent goes
//! away ztunnel keeps serving its pods and reconnects with backoff.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netns::fdpass::SeqPacket;
use prost::Message;
use xds::zds;

use super::{PodInfo, Pods};

/// Largest ZDS message accepted.
const MAX_MESSAGE: usize = 64 * 1024;

/// Why a session with the agent ended.
#[derive(Debug, thiserror::Error)]
pub enum ZdsError {
    /// Socket trouble.
    #[error("node agent socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why one agent request was refused; its text goes back in the `Ack`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not a `WorkloadRequest`.
    #[error("undecodable WorkloadRequest: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// A request without a payload.
    #[error("empty WorkloadRequest")]
    Empty,
    /// `add` without the namespace descriptor it must carry.
    #[error("add {0} came without a netns descriptor")]
    NoNetns(String),
    /// The pod could not be served.
    #[error(transparent)]
    Pod(#[from] crate::inpod::PodError),
    /// `keep` for a pod this ztunnel does not serve.
    #[error("keep {0}: this ztunnel does not serve that pod; send add")]
    NotServed(String),
}

/// Connects to the agent at `path` and serves it forever, reconnecting with backoff.
pub async fn run(path: PathBuf, pods: Arc<Pods>) {
    let mut delay = Duration::from_millis(100);
    loop {
        match session(&path, &pods).await {
            Ok(()) => {
                tracing::info!(socket = %path.display(), "node agent closed the connection; pods keep serving, reconnecting");
                delay = Duration::from_millis(100);
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "node agent unavailable; pods keep serving");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One connection: hello, then requests until the agent closes.
pub async fn session(path: &Path, pods: &Pods) -> Result<(), ZdsError> {
    let io = |source| ZdsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let socket = SeqPacket::connect(path).map_err(io)?;
    let hello = zds::ZdsHello {
        version: zds::Version::V1 as i32,
    };
    socket
        .send(&hello.encode_to_vec(), None)
        .await
        .map_err(io)?;
    tracing::info!(socket = %path.display(), "connected to the node agent");
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut mentioned: HashSet<String> = HashSet::new();
    let mut in_snapshot = true;
    loop {
        let (len, fd) = socket.recv(&mut buf).await.map_err(io)?;
        if len == 0 {
            return Ok(());
        }
        let result = match zds::WorkloadRequest::decode(&buf[..len]) {
            Ok(request) => handle(request, fd, pods, &mut mentioned, &mut in_snapshot).await,
            Err(error) => Err(RequestError::from(error)),
        };
        if let Err(reason) = &result {
            tracing::warn!(%reason, "node agent request refused");
        }
        let ack = zds::WorkloadResponse {
            payload: Some(zds::workload_response::Payload::Ack(zds::Ack {
                error: result.err().map(|e| e.to_string()).unwrap_or_default(),
            })),
        };
        socket.send(&ack.encode_to_vec(), None).await.map_err(io)?;
    }
}

async fn handle(
    request: zds::WorkloadRequest,
    fd: Option<std::os::fd::OwnedFd>,
    pods: &Pods,
    mentioned: &mut HashSet<String>,
    in_snapshot: &mut bool,
) -> Result<(), RequestError> {
    use zds::workload_request::Payload;
    match request.payload {
        Some(Payload::Add(add)) => {
            let fd = fd.ok_or_else(|| RequestError::NoNetns(add.uid.clone()))?;
            let info = add.workload_info.unwrap_or_default();
            let uid = add.uid.clone();
            pods.add(
                PodInfo {
                    uid: add.uid,
                    name: info.name,
                    namespace: info.namespace,
                    service_account: info.service_account,
                },
                fd,
            )
            .await?;
            mentioned.insert(uid);
            Ok(())
        }
        Some(Payload::Keep(keep)) => {
            if pods.contains(&keep.uid) {
                mentioned.insert(keep.uid);
                Ok(())
            } else {
                Err(RequestError::NotServed(keep.uid))
            }
        }
        Some(Payload::Del(del)) => {
            pods.remove(&del.uid);
            Ok(())
        }
        Some(Payload::SnapshotSent(_)) => {
            if *in_snapshot {
                pods.retain(|uid| mentioned.contains(uid));
                *in_snapshot = false;
                pods.node_agent_synced();
            }
            Ok(())
        }
        None => Err(RequestError::Empty),
    }
}
