//! The agent side of ZDS (docs/protocols.md): serve a unix `SOCK_SEQPACKET` socket, accept
//! ztunnel, read its hello, and send requests — `add` with the pod's netns descriptor,
//! `keep`, `del`, `snapshot_sent` — each answered by an `Ack` whose error text (empty =
//! success) is returned to the caller.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use netns::fdpass::{SeqPacket, SeqPacketListener};
use prost::Message;
use xds::zds;

/// How long ztunnel may take to answer one request.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not get a positive answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Socket trouble.
    #[error("ZDS socket: {0}")]
    Io(#[from] std::io::Error),
    /// ztunnel answered with something undecodable.
    #[error("ztunnel sent an undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// ztunnel spoke an unsupported protocol version.
    #[error("ztunnel speaks ZDS version {0}; this agent speaks V1")]
    Version(i32),
    /// ztunnel closed the connection.
    #[error("ztunnel closed the connection")]
    Closed,
    /// ztunnel did not answer in time.
    #[error("ztunnel did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// ztunnel refused the request.
    #[error("ztunnel refused: {0}")]
    Refused(String),
}

/// The pod facts sent with `add`.
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    /// Workload uid.
    pub uid: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Service account.
    pub service_account: &'a str,
}

/// The listening socket ztunnel connects to.
#[derive(Debug)]
pub struct AgentSocket {
    listener: SeqPacketListener,
}

impl AgentSocket {
    /// Listens at `path`.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            listener: SeqPacketListener::bind(path)?,
        })
    }

    /// Waits for ztunnel to connect and say hello.
    pub async fn accept(&self) -> Result<ZtunnelConnection, AgentError> {
        let connection = self.listener.accept().await?;
        let mut buf = vec![0u8; 1024];
        let (len, _) = connection.recv(&mut buf).await?;
        if len == 0 {
            return Err(AgentError::Closed);
        }
        let hello = zds::ZdsHello::decode(&buf[..len])?;
        if hello.version != zds::Version::V1 as i32 {
            return Err(AgentError::Version(hello.version));
        }
        Ok(ZtunnelConnection { connection })
    }
}

/// A connected ztunnel.
#[derive(Debug)]
pub struct ZtunnelConnection {
    connection: SeqPacket,
}

impl ZtunnelConnection {
    /// Hands a pod (and its namespace) to ztunnel.
    pub async fn add(&self, pod: &PodRef<'_>, netns: BorrowedFd<'_>) -> Result<(), AgentError> {
        let add = zds::AddWorkload {
            uid: pod.uid.into(),
            workload_info: Some(zds::WorkloadInfo {
                name: pod.name.into(),
                namespace: pod.namespace.into(),
                service_account: pod.service_account.into(),
            }),
        };
        self.request(
            zds::workload_request::Payload::Add(add),
            Some(netns.as_raw_fd()),
        )
        .await
    }

    /// Tells a reconnected ztunnel a pod it already serves is still there.
    pub async fn keep(&self, uid: &str) -> Result<(), AgentError> {
        let keep = zds::KeepWorkload { uid: uid.into() };
        self.request(zds::workload_request::Payload::Keep(keep), None)
            .await
    }

    /// Tells ztunnel a pod is gone.
    pub async fn del(&self, uid: &str) -> Result<(), AgentError> {
        let del = zds::DelWorkload { uid: uid.into() };
        self.request(zds::workload_request::Payload::Del(del), None)
            .await
    }

    /// Ends the initial snapshot.
    pub async fn snapshot_sent(&self) -> Result<(), AgentError> {
        self.request(
            zds::workload_request::Payload::SnapshotSent(zds::SnapshotSent {}),
            None,
        )
        .await
    }

    /// Ends the connection (ztunnel keeps its pods and reconnects).
    pub fn close(&self) -> std::io::Result<()> {
        self.connection.shutdown()
    }

    async fn request(
        &self,
        payload: zds::workload_request::Payload,
        fd: Option<i32>,
    ) -> Result<(), AgentError> {
        let request = zds::WorkloadRequest {
            payload: Some(payload),
        };
        self.connection.send(&request.encode_to_vec(), fd).await?;
        let mut buf = vec![0u8; 4096];
        let (len, _) = tokio::time::timeout(ACK_TIMEOUT, self.connection.recv(&mut buf))
            .await
            .map_err(|_| AgentError::Timeout(ACK_TIMEOUT))??;
        if len == 0 {
            return Err(AgentError::Closed);
        }
        match zds::WorkloadResponse::decode(&buf[..len])?.payload {
            Some(zds::workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(()),
            Some(zds::workload_response::Payload::Ack(ack)) => Err(AgentError::Refused(ack.error)),
            None => Err(AgentError::Refused("empty response".into())),
        }
    }
}
