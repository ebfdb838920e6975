//! Passing a file descriptor (a network namespace) with a message over a unix
//! `SOCK_SEQPACKET` socket, as the node agent does when it hands a pod to ztunnel.
//!
//! One message per packet; the descriptor rides as `SCM_RIGHTS` ancillary data.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Sends `payload` as one packet, with `fd` attached if given.
pub fn send(socket: RawFd, payload: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let iov = [IoSlice::new(payload)];
    let fds;
    let cmsgs: Vec<ControlMessage<'_>> = match fd {
        Some(fd) => {
            fds = [fd];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(socket, &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one packet into `buf`: its length (0 = the peer closed) and the descriptor
/// attached to it, if any. Extra descriptors are closed. A packet longer than `buf` is an
/// error (its tail would be lost).
pub fn recv(socket: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    let len = msg.bytes;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| {
            // SAFETY: the kernel just installed `fd` in our table for this message;
            // nothing else refers to it, so we are its only owner.
            #[allow(unsafe_code)]
            unsafe {
                OwnedFd::from_raw_fd(fd)
            }
        })
        .collect();
    // The protocol sends at most one; any extra is closed when `owned` drops.
    let first = if owned.is_empty() {
        None
    } else {
        Some(owned.swap_remove(0))
    };
    if truncated {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "packet larger than the receive buffer",
        ));
    }
    Ok((len, first))
}

/// An async unix `SOCK_SEQPACKET` socket carrying messages with optional descriptors —
/// the transport of the node agent protocol.
#[derive(Debug)]
pub struct SeqPacket {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

/// A listening unix `SOCK_SEQPACKET` socket.
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

/// Registers `fd` with the runtime's reactor.
fn register(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an open descriptor owned by the `OwnedFd` that the `AsyncFd` takes
    // ownership of; it is neither closed nor replaced while registered (it is closed
    // only when the `AsyncFd` drops, after deregistration).
    #[allow(unsafe_code)]
    let registered = unsafe { tokio::io::unix::AsyncFd::register(fd) };
    registered.map_err(std::io::Error::from)
}

fn seqpacket_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

impl SeqPacket {
    /// Connects to the socket at `path`.
    pub fn connect(path: &std::path::Path) -> std::io::Result<Self> {
        let fd = seqpacket_socket()?;
        let addr = nix::sys::socket::UnixAddr::new(path)?;
        nix::sys::socket::connect(fd.as_raw_fd(), &addr)?;
        Ok(Self { fd: register(fd)? })
    }

    /// Shuts the connection down both ways; the peer sees the end of the stream.
    pub fn shutdown(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        )?;
        Ok(())
    }

    /// Sends one message, with `fd` attached if given.
    pub async fn send(&self, payload: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| send(inner.get_ref().as_raw_fd(), payload, fd)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message into `buf`: its length (0 = the peer closed) and the
    /// descriptor attached, if any.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv(inner.get_ref().as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

impl SeqPacketListener {
    /// Listens at `path` (an existing socket file there is replaced).
    pub fn bind(path: &std::path::Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let fd = seqpacket_socket()?;
        let addr = nix::sys::socket::UnixAddr::new(path)?;
        nix::sys::socket::bind(fd.as_raw_fd(), &addr)?;
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(16)?)?;
        Ok(Self { fd: register(fd)? })
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> std::io::Result<SeqPacket> {
        use nix::sys::socket::{SockFlag, accept4};
        loop {
            let mut guard = self.fd.readable().await?;
            let accepted = guard.try_io(|inner| {
                let raw = accept4(
                    inner.get_ref().as_raw_fd(),
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                )?;
                // SAFETY: accept4 just returned this new descriptor; we are its only
                // owner.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                Ok(owned)
            });
            match accepted {
                Ok(result) => {
                    return Ok(SeqPacket {
                        fd: register(result?)?,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }
}
