//! Passing a file descriptor (a network namespace) with a message over a unix
//! `SOCK_SEQPACKET` socket, as the node agent does when it hands a pod to ztunnel.
//!
//! One message per packet; the descriptor rides as `SCM_RIGHTS` ancillary data.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
