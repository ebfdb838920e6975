//! Accept loops that refuse fast when the process is out of file descriptors, and a gate
//! that keeps repeated refusal logs to one line per interval.
//!
//! At the descriptor limit `accept(2)` fails with `EMFILE` while the connection stays in
//! the kernel's backlog: the client has a connected socket and waits until it times out,
//! and a loop that retries spins. [`accept`] keeps one spare descriptor per process
//! ([`FdReserve`]); when the limit is hit it closes the spare, accepts the waiting
//! connection, resets it at once (the client sees a refusal, not a hang), counts it and
//! takes the spare back.
//!
//! Must not: know what the accepted connections carry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// One spare descriptor, shared by every accept loop of a process, and the count of
/// connections refused because descriptors ran out.
#[derive(Debug)]
pub struct FdReserve {
    spare: Mutex<Option<std::fs::File>>,
    refused: AtomicU64,
}

impl Default for FdReserve {
    fn default() -> Self {
        Self {
            spare: Mutex::new(open_spare()),
            refused: AtomicU64::new(0),
        }
    }
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl FdReserve {
    /// Connections refused because the process was out of descriptors.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Gives the spare descriptor back to the process; false if there was none.
    fn release(&self) -> bool {
        self.spare
            .lock()
            .map(|mut spare| spare.take().is_some())
            .unwrap_or(false)
    }

    fn restore(&self) {
        if let Ok(mut spare) = self.spare.lock()
            && spare.is_none()
        {
            *spare = open_spare();
        }
    }
}

/// Whether an accept error means the process or system is out of descriptors.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

/// Accepts the next connection on `listener`. Connections that arrive while the process
/// is out of descriptors are reset at once and counted in `reserve`; errors of a single
/// connection (aborted before accept) are skipped. Never spins: when nothing can be done
/// it waits briefly before trying again.
pub async fn accept(listener: &TcpListener, reserve: &FdReserve) -> (TcpStream, SocketAddr) {
    loop {
        let error = match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => error,
        };
        if out_of_descriptors(&error) {
            if reserve.release() {
                // The connection that hit the limit is waiting; do not wait for another.
                let waiting = tokio::time::timeout(Duration::from_millis(1), listener.accept());
                if let Ok(Ok((tcp, _))) = waiting.await {
                    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                    drop(tcp);
                    let refused = reserve.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(
                            refused,
                            local = ?listener.local_addr().ok(),
                            "out of file descriptors: refusing new connections at once; raise the limit (ulimit -n, LimitNOFILE) or find what holds them"
                        );
                    }
                }
                reserve.restore();
            } else {
                // Another loop holds the moment; let it free a descriptor.
                tokio::time::sleep(Duration::from_millis(5)).await;
                reserve.restore();
            }
            continue;
        }
        match error.kind() {
            std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted => {}
            _ => {
                tracing::warn!(%error, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Lets a repeated log line through once per interval per key; the line that passes
/// carries how many were held back since the last one.
#[derive(Debug)]
pub struct LogGate {
    interval: Duration,
    seen: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl Default for LogGate {
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}

impl LogGate {
    /// A gate letting one line per `interval` through for each key.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::default(),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be logged now (`suppressed` lines were
    /// held back since the last one), `None` when it should be dropped.
    pub fn allow(&self, key: &'static str) -> Option<u64> {
        let Ok(mut seen) = self.seen.lock() else {
            return Some(0);
        };
        let now = Instant::now();
        let entry = seen.entry(key).or_insert((None, 0));
        if entry
            .0
            .is_none_or(|last| now.duration_since(last) >= self.interval)
        {
            let suppressed = entry.1;
            *entry = (Some(now), 0);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_repeated_line_passes_once_per_interval_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(3600));
        assert_eq!(gate.allow("denied"), Some(0));
        for _ in 0..999 {
            assert_eq!(gate.allow("denied"), None);
        }
        assert_eq!(gate.allow("other"), Some(0), "keys are independent");
        let gate = LogGate::new(Duration::ZERO);
        assert_eq!(gate.allow("denied"), Some(0));
        assert_eq!(gate.allow("denied"), Some(0));
    }
}
