//! A plain TCP relay: the floor any two-proxy data path can reach on a machine.
//!
//! `bowline bench l4` runs two of these (one in each pod's namespace) on the same hops as
//! the mesh — client → relay A → across the router → relay B → server — with nothing but
//! a kernel-to-user-to-kernel copy per hop: no TLS, no HTTP/2, no policy. Comparing the
//! mesh with it separates what the extra processes cost on this machine from what our
//! tunnel costs on top.
//!
//! Owns: the relay. Must not: do anything a plain copy loop would not (it is the floor).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Per-direction buffer, the same size as ztunnel's largest read buffer.
const BUFFER: usize = 256 * 1024;

/// Listens on every `from` and relays each accepted connection to its `to`, until the
/// process ends. Fails only if a listener cannot be opened.
pub async fn run(maps: &[(SocketAddr, SocketAddr)]) -> io::Result<()> {
    let mut tasks = Vec::new();
    for &(from, to) in maps {
        let listener = TcpListener::bind(from)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("relay cannot listen on {from}: {e}")))?;
        tasks.push(tokio::spawn(accept_loop(listener, to)));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            // Out of descriptors or similar: give the process a moment instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut inbound,
                &mut outbound,
                BUFFER,
                BUFFER,
            )
            .await;
        });
    }
}

/// Parses `LISTEN=TARGET` (two socket addresses).
pub fn parse_map(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("expected LISTEN=TARGET, got {text:?}"))?;
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| format!("{s:?} is not an address:port ({e})"))
    };
    Ok((parse(from)?, parse(to)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_map_parses_listen_and_target() {
        assert_eq!(
            parse_map("127.0.0.1:9100=10.2.0.2:9200"),
            Ok((
                "127.0.0.1:9100".parse().unwrap(),
                "10.2.0.2:9200".parse().unwrap()
            ))
        );
        assert!(parse_map("127.0.0.1:9100").is_err());
        assert!(parse_map("x=10.2.0.2:1").is_err());
    }
}
