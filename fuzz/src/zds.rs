//! The node agent protocol (ZDS) from both ends, over real unix `SOCK_SEQPACKET` sockets
//! in a private temporary directory. The first byte of the input picks the end; the rest
//! is [`crate::records`], one message each.
//!
//! - Even first byte — ztunnel's side ([`ztunnel::inpod::zds::session`] with a real
//!   [`Pods`]): the harness plays the agent, sends each record as a `WorkloadRequest`
//!   (tag bit 0 set: with a descriptor attached, `/dev/null`, so an `add` gets as far as
//!   entering the "namespace" and is refused there, never opening listeners) and reads
//!   each `Ack`, then closes.
//! - Odd first byte — the agent's side ([`cni::zds::AgentSocket`]): the harness plays
//!   ztunnel, sends the first record as its `ZdsHello` and each further record as the
//!   `WorkloadResponse` to the agent's next request (`add`, `keep`, `del`,
//!   `snapshot_sent` in turn).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cni::zds::{AgentError, AgentSocket, PodRef};
use netns::fdpass::{SeqPacket, SeqPacketListener};
use ztunnel::inpod::{PodPorts, Pods};
use ztunnel::proxy::{ProxyInputs, ProxySettings};
use ztunnel::state::Store;

struct Harness {
    runtime: tokio::runtime::Runtime,
    /// Where the fake agent listens for ztunnel's session.
    agent_path: PathBuf,
    agent_listener: SeqPacketListener,
    pods: Arc<Pods>,
    /// Where the real agent listens for the fake ztunnel.
    ztunnel_path: PathBuf,
    agent: AgentSocket,
    devnull: File,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = crate::runtime();
        let dir = std::env::temp_dir().join(format!("bowline-fuzz-zds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a private temporary directory");
        let agent_path = dir.join("agent.sock");
        let ztunnel_path = dir.join("cni.sock");
        let (agent_listener, agent) = {
            let _entered = runtime.enter();
            (
                SeqPacketListener::bind(&agent_path).expect("bind the fake agent's socket"),
                AgentSocket::bind(&ztunnel_path).expect("bind the agent's socket"),
            )
        };
        let settings = ProxySettings {
            dns: ztunnel::dns::DnsSettings {
                upstreams: Vec::new(),
                ..ztunnel::dns::DnsSettings::default()
            },
            ..ProxySettings::default()
        };
        let inputs = Arc::new(ProxyInputs::new(
            Arc::new(Store::default()),
            crate::manager(),
            settings,
        ));
        Harness {
            runtime,
            agent_path,
            agent_listener,
            pods: Arc::new(Pods::new(inputs, PodPorts::default())),
            ztunnel_path,
            agent,
            devnull: File::open("/dev/null").expect("/dev/null"),
        }
    })
}

/// One input: one ZDS connection.
pub fn run(data: &[u8]) {
    let Some((side, rest)) = data.split_first() else {
        return;
    };
    let h = harness();
    if side % 2 == 0 {
        h.runtime.block_on(ztunnel_side(h, rest));
    } else {
        h.runtime.block_on(agent_side(h, rest));
    }
}

/// ztunnel's session against a fake agent sending the records.
async fn ztunnel_side(h: &Harness, rest: &[u8]) {
    let fake_agent = async {
        let connection = h
            .agent_listener
            .accept()
            .await
            .expect("ztunnel connects to the agent");
        let mut buf = vec![0u8; 64 * 1024];
        if !matches!(connection.recv(&mut buf).await, Ok((n, _)) if n > 0) {
            return;
        }
        for (tag, message) in crate::records(rest) {
            let fd = (tag & 1 == 1).then(|| h.devnull.as_raw_fd());
            if connection.send(message, fd).await.is_err() {
                return;
            }
            if !matches!(connection.recv(&mut buf).await, Ok((n, _)) if n > 0) {
                return;
            }
        }
    };
    let session = ztunnel::inpod::zds::session(&h.agent_path, &h.pods);
    let ((), _) = tokio::join!(fake_agent, session);
}

/// The agent's connection against a fake ztunnel answering with the records.
async fn agent_side(h: &Harness, rest: &[u8]) {
    let fake_ztunnel = async {
        let connection = SeqPacket::connect(&h.ztunnel_path).expect("connect to the agent");
        let mut messages = crate::records(rest).map(|(_, m)| m);
        let hello = messages.next().unwrap_or_default();
        if connection.send(hello, None).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        for message in messages {
            if !matches!(connection.recv(&mut buf).await, Ok((n, _)) if n > 0) {
                return;
            }
            if connection.send(message, None).await.is_err() {
                return;
            }
        }
        // Dropping the connection ends the agent's loop below.
    };
    let agent = async {
        let Ok(ztunnel) = h.agent.accept().await else {
            return;
        };
        let pod = PodRef {
            uid: "Kubernetes//Pod/shop/frontend-0",
            name: "frontend-0",
            namespace: "shop",
            service_account: "frontend",
        };
        for turn in 0usize.. {
            let result = match turn % 4 {
                0 => ztunnel.add(&pod, h.devnull.as_fd()).await,
                1 => ztunnel.keep(pod.uid).await,
                2 => ztunnel.del(pod.uid).await,
                _ => ztunnel.snapshot_sent().await,
            };
            if matches!(
                result,
                Err(AgentError::Io(_) | AgentError::Closed | AgentError::Timeout(_))
            ) {
                return;
            }
        }
    };
    tokio::join!(fake_ztunnel, agent);
}
