//! What a process has used, read from `/proc`: CPU time (`/proc/PID/stat`) and memory
//! (`/proc/PID/status`), for the benchmarks that start or find the processes they cost.
//!
//! Owns: reading and parsing those files. Must not: choose processes or judge figures.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A `kB` value of /proc/PID/status (`VmHWM:`, `VmRSS:`, `RssAnon:`…); 0 when missing.
pub(crate) fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// /proc/PID/status of `pid`.
pub(crate) fn status(pid: u32) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
}

/// User + system CPU time of a /proc/PID/stat line, in clock ticks (every thread of the
/// process; children not included).
pub(crate) fn cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may hold spaces and parentheses) start at
    // state (field 3); utime and stime are fields 14 and 15.
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(CLK_TCK)`, 100 when unknown).
pub(crate) fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|hz| *hz > 0)
        .unwrap_or(100)
}

/// CPU time `pid` has used so far, in microseconds (resolution: one clock tick, usually
/// 10 ms).
pub(crate) fn cpu_us(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no utime/stime fields"),
        )
    })?;
    Ok(ticks * 1_000_000 / ticks_per_second())
}

/// Peak RSS (KiB, the kernel's high-water mark) and CPU seconds of a process.
pub(crate) fn usage(pid: u32) -> io::Result<(u64, f64)> {
    let rss = status_kb(&status(pid)?, "VmHWM:");
    Ok((rss, cpu_us(pid)? as f64 / 1e6))
}

/// Samples `kB` values of /proc/PID/status of some processes every 50 ms and keeps the
/// largest of each key (over all the processes) until [`PeakSampler::finish`].
pub(crate) struct PeakSampler {
    task: tokio::task::JoinHandle<()>,
    peaks: Arc<Vec<AtomicU64>>,
}

impl PeakSampler {
    /// Starts sampling `keys` (`"RssAnon:"`…) of `pids`.
    pub(crate) fn start(pids: Vec<u32>, keys: &'static [&'static str]) -> Self {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
        let shared = Arc::clone(&peaks);
        let task = tokio::spawn(async move {
            loop {
                for pid in &pids {
                    if let Ok(status) = status(*pid) {
                        for (peak, key) in shared.iter().zip(keys) {
                            peak.fetch_max(status_kb(&status, key), Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { task, peaks }
    }

    /// Stops sampling; the peaks in KiB, in the order of the keys.
    pub(crate) fn finish(self) -> Vec<u64> {
        self.task.abort();
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_utime_plus_stime_even_with_a_strange_command_name() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1200 0 0 0 731 129 0 0 20 0 3 0 555 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(731 + 129));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tbowline\nVmHWM:\t   20480 kB\nVmRSS:\t   18000 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), 20480);
        assert_eq!(status_kb(status, "VmRSS:"), 18000);
        assert_eq!(status_kb(status, "RssAnon:"), 0);
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        cpu_us(pid).unwrap();
        assert!(status_kb(&status(pid).unwrap(), "VmHWM:") > 0);
    }
}
