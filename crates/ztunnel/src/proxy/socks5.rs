//! SOCKS5 (RFC 1928; `CONNECT` only, no authentication) for apps that are not captured:
//! a connection through 127.0.0.1:15080 is treated as outbound traffic of the workload
//! this ztunnel serves in shared mode. A destination may be an address or a service
//! hostname from the mesh state (`reviews.shop.svc.cluster.local`), which resolves to the
//! service's VIP.
//!
//! Refused, with the SOCKS reply code and a log line (one per second per kind at most):
//! other versions, clients that offer no "no authentication" method, commands other than
//! `CONNECT`, unknown hostnames. After the handshake the connection is an outbound one
//! like any other (record, route, reply codes from [`super::outcome::socks5_reply`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::outbound::{Client, forward};
use super::outcome::socks5::{
    ADDRESS_NOT_SUPPORTED, COMMAND_NOT_SUPPORTED, HOST_UNREACHABLE, SUCCEEDED,
};
use super::{Pod, ProxyInputs};

/// How long a client may take to finish the SOCKS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// Why a SOCKS5 handshake was refused.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("SOCKS version {0} (only 5 is served)")]
    Version(u8),
    #[error("the client offers no \"no authentication\" method")]
    NoMethod,
    #[error("command {0} (only CONNECT is served)")]
    Command(u8),
    #[error("address type {0}")]
    AddressType(u8),
    #[error("{0:?} is not a service hostname in the mesh")]
    UnknownHost(String),
    #[error("the client went away: {0}")]
    Io(#[from] std::io::Error),
    #[error("the handshake took longer than {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
}

impl HandshakeError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Version(_) => "socks5_version",
            Self::NoMethod => "socks5_method",
            Self::Command(_) => "socks5_command",
            Self::AddressType(_) => "socks5_address_type",
            Self::UnknownHost(_) => "socks5_unknown_host",
            Self::Io(_) => "socks5_io",
            Self::Timeout => "socks5_timeout",
        }
    }
}

/// Serves SOCKS5 on `listener` for `pod`.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>, inputs: Arc<ProxyInputs>) {
    loop {
        let (tcp, peer) = hbone::accept::accept(&listener, &inputs.fd_reserve).await;
        let (pod, inputs) = (pod.clone(), inputs.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut tcp, &inputs))
                .await
                .unwrap_or(Err(HandshakeError::Timeout));
            match handshake {
                Ok(target) => forward(tcp, peer, Ok(target), &pod, &inputs, Client::Socks5).await,
                Err(refusal) => {
                    inputs.metrics.failure("outbound", refusal.kind());
                    if let Some(suppressed) = inputs.metrics.logs.allow(refusal.kind()) {
                        tracing::info!(%peer, %refusal, suppressed, "SOCKS5 request refused");
                    }
                }
            }
        });
    }
}

/// Reads the greeting and the request; answers refusals itself.
async fn handshake(
    tcp: &mut TcpStream,
    inputs: &ProxyInputs,
) -> Result<SocketAddr, HandshakeError> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(HandshakeError::Version(head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        let _ = tcp.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await;
        return Err(HandshakeError::NoMethod);
    }
    tcp.write_all(&[VERSION, NO_AUTH]).await?;

    let mut request = [0u8; 4];
    tcp.read_exact(&mut request).await?;
    if request[1] != CONNECT {
        reply(tcp, COMMAND_NOT_SUPPORTED).await;
        return Err(HandshakeError::Command(request[1]));
    }
    let ip = match request[3] {
        1 => {
            let mut b = [0u8; 4];
            tcp.read_exact(&mut b).await?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        4 => {
            let mut b = [0u8; 16];
            tcp.read_exact(&mut b).await?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut name).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let snap = inputs.store.load();
            match snap
                .service_by_hostname(&name)
                .and_then(|s| s.vips.first().copied())
            {
                Some(vip) => vip,
                None => {
                    reply(tcp, HOST_UNREACHABLE).await;
                    return Err(HandshakeError::UnknownHost(name));
                }
            }
        }
        other => {
            reply(tcp, ADDRESS_NOT_SUPPORTED).await;
            return Err(HandshakeError::AddressType(other));
        }
    };
    let mut port = [0u8; 2];
    tcp.read_exact(&mut port).await?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Sends the success reply (bound address unspecified).
pub(crate) async fn succeeded(tcp: &mut TcpStream) -> std::io::Result<()> {
    tcp.write_all(&[VERSION, SUCCEEDED, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
}

/// Sends a reply with `code` (a failure: [`super::outcome::socks5_reply`]), best effort.
pub(crate) async fn reply(tcp: &mut TcpStream, code: u8) {
    let _ = tcp
        .write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0])
        .await;
}
