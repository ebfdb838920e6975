//! The socket options the mesh relies on, through socket2.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The destination a captured connection was heading for before the REDIRECT rule sent
/// it to us (`SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })
}

/// Options for an outgoing connection the proxy makes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outgoing {
    /// `SO_MARK` on every packet (0x539 keeps it from being captured again).
    pub mark: Option<u32>,
    /// Connect from this source address even though it is not ours (`IP_TRANSPARENT`):
    /// the app sees the original client's address.
    pub transparent_source: Option<SocketAddr>,
}

/// A TCP socket for `destination` with `options` applied, ready to connect.
pub fn outgoing_socket(destination: SocketAddr, options: Outgoing) -> io::Result<TcpSocket> {
    let domain = Domain::for_address(destination);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(mark) = options.mark {
        socket.set_mark(mark)?;
    }
    if let Some(source) = options.transparent_source {
        match source {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
        }
        // Port 0: the kernel picks a source port for the spoofed address.
        socket.bind(&SocketAddr::new(source.ip(), 0).into())?;
    }
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// A listening socket on `addr` (with `SO_REUSEADDR`), for use from any runtime thread.
/// Call it inside a namespace (see [`crate::namespace::in_netns`]) to listen there.
pub fn listen(addr: SocketAddr, transparent: bool) -> io::Result<std::net::TcpListener> {
    listener(addr, transparent, false)
}

/// A listening socket on `addr` that another process may bind as well: `SO_REUSEADDR`
/// and `SO_REUSEPORT`, as Istio's ztunnel sets on its in-pod listeners. A ztunnel taking
/// a pod over from another (an upgrade, or Istio's and Bowline's swapping) binds at once,
/// while the other still listens or its closed connections linger in `TIME_WAIT`; the
/// kernel spreads new connections over both until the old one closes its listener. Both
/// processes must run as the same user.
pub fn listen_shared(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    listener(addr, false, true)
}

/// A UDP socket on `addr`, non-blocking, shareable like [`listen_shared`].
pub fn udp_shared(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn listener(
    addr: SocketAddr,
    transparent: bool,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if transparent {
        match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Registers a listener made by [`listen`] with the current runtime.
pub fn into_tokio(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    TcpListener::from_std(listener)
}
