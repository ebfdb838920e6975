//! SOCKS5 (RFC 1928; `CONNECT` only, no authentication) for apps that are not captured:
//! a connection through 127.0.0.1:15080 is treated as outbound traffic of the workload
//! this ztunnel serves in shared mode. A destination may be an address or a service
//! hostname from the mesh state (`reviews.shop.svc.cluster.local`), which resolves to the
//! service's VIP.
//!
//! Refused, with the SOCKS reply code and a log line: other versions, clients that offer
//! no "no authentication" method, commands other than `CONNECT`, unknown hostnames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::outbound::{Answer, forward};
use super::{Pod, ProxyInputs};

/// How long a client may take to finish the SOCKS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
const SUCCEEDED: u8 = 0;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// Serves SOCKS5 on `listener` for `pod`.
pub async fn serve(listener: TcpListener, pod: Arc<Pod>, inputs: Arc<ProxyInputs>) {
    loop {
        let (tcp, peer) = hbone::accept::accept(&listener, &inputs.fd_reserve).await;
        let (pod, inputs) = (pod.clone(), inputs.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut tcp, &inputs)).await {
                Ok(Ok(target)) => forward(tcp, peer, target, &pod, &inputs, Answer::Socks5).await,
                Ok(Err(reason)) => {
                    tracing::info!(%peer, reason, "SOCKS5 request refused");
                }
                Err(_) => tracing::info!(%peer, "SOCKS5 handshake timed out"),
            }
        });
    }
}

/// Reads the greeting and the request; answers refusals itself.
async fn handshake(tcp: &mut TcpStream, inputs: &ProxyInputs) -> Result<SocketAddr, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.map_err(io)?;
    if head[0] != VERSION {
        return Err(format!("SOCKS version {} (only 5 is served)", head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut methods).await.map_err(io)?;
    if !methods.contains(&NO_AUTH) {
        let _ = tcp.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await;
        return Err("the client offers no \"no authentication\" method".into());
    }
    tcp.write_all(&[VERSION, NO_AUTH]).await.map_err(io)?;

    let mut request = [0u8; 4];
    tcp.read_exact(&mut request).await.map_err(io)?;
    if request[1] != CONNECT {
        reply(tcp, COMMAND_NOT_SUPPORTED).await;
        return Err(format!("command {} (only CONNECT is served)", request[1]));
    }
    let ip = match request[3] {
        1 => {
            let mut b = [0u8; 4];
            tcp.read_exact(&mut b).await.map_err(io)?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        4 => {
            let mut b = [0u8; 16];
            tcp.read_exact(&mut b).await.map_err(io)?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await.map_err(io)?;
            let mut name = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut name).await.map_err(io)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let snap = inputs.store.load();
            match snap
                .service_by_hostname(&name)
                .and_then(|s| s.vips.first().copied())
            {
                Some(vip) => vip,
                None => {
                    reply(tcp, HOST_UNREACHABLE).await;
                    return Err(format!("{name:?} is not a service hostname in the mesh"));
                }
            }
        }
        other => {
            reply(tcp, ADDRESS_NOT_SUPPORTED).await;
            return Err(format!("address type {other}"));
        }
    };
    let mut port = [0u8; 2];
    tcp.read_exact(&mut port).await.map_err(io)?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Sends the success reply (bound address unspecified).
pub(crate) async fn succeeded(tcp: &mut TcpStream) -> std::io::Result<()> {
    tcp.write_all(&[VERSION, SUCCEEDED, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
}

/// Sends the "connection refused" reply, best effort.
pub(crate) async fn failed(tcp: &mut TcpStream) {
    reply(tcp, CONNECTION_REFUSED).await;
}

async fn reply(tcp: &mut TcpStream, code: u8) {
    let _ = tcp
        .write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0])
        .await;
}
