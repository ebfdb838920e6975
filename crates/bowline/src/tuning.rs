//! Process tuning for a proxy's memory and copies: the allocator, how promptly freed
//! memory goes back to the kernel, the runtime's idle-time collection, and glibc's
//! `memcpy` strategy.
//!
//! Owns: every `unsafe` call of the binary (mimalloc options, `malloc_trim`). Must not:
//! change what a command does — only how much memory it keeps and how fast it copies.

use std::time::Duration;

use anyhow::Context;

/// mimalloc keeps freed large buffers for reuse; glibc's allocator returns them to the
/// kernel and pays page faults on every reuse, which costs a third of bulk throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's option enum (checked by a test below).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed memory back to the kernel at once instead of after its
/// default delay of one second, so a proxy's resident memory follows its live buffers
/// (ztunnel under `bench l4`: 16 → 10 MB anonymous peak, throughput unchanged). An
/// operator's `MIMALLOC_PURGE_DELAY` still wins.
#[allow(unsafe_code)]
pub(crate) fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: stores one integer option; called first in `main`, before any other
        // thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// How often an idle worker thread hands its freed memory back (see below).
const COLLECT_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static LAST_COLLECT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs when a runtime worker thread goes idle: at most once per [`COLLECT_EVERY`], has
/// mimalloc free this thread's empty pages and blocks other threads freed into them.
/// mimalloc heaps are per thread and a block freed by another thread (a connection's
/// buffer dropped on another worker) waits on its page until the owning thread allocates
/// there again, so without this a proxy that served a burst of connections kept tens of
/// megabytes after they closed (5,000 connections: 71 MB kept against 2.4 MB idle).
#[allow(unsafe_code)]
fn collect_freed_memory_when_idle() {
    let due = LAST_COLLECT.with(|last| {
        let now = std::time::Instant::now();
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: collects the calling thread's own heap; no pointer is passed.
        unsafe { libmimalloc_sys::mi_collect(true) };
        #[cfg(target_env = "gnu")]
        // SAFETY: asks glibc's allocator (used by the C crypto library, aws-lc) to return
        // free memory at the top of its heaps; takes no pointer, safe at any time.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

/// Once per [`COLLECT_EVERY`], gives every worker a no-op task so that each one wakes and
/// parks again, and so collects (above) even when the process is otherwise idle: the
/// memory a burst freed comes back within a couple of seconds, not at the next traffic.
async fn wake_workers_to_collect(workers: usize) {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    loop {
        tick.tick().await;
        for _ in 0..workers {
            tokio::spawn(std::future::ready(()));
        }
    }
}

/// The multi-threaded runtime (`worker_threads`, default one per core) whose idle workers
/// hand freed memory back, with the task that wakes them to do so.
pub(crate) fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .enable_all()
        .on_thread_park(collect_freed_memory_when_idle);
    if let Some(n) = worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    let workers = worker_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    runtime.spawn(wake_workers_to_collect(workers));
    Ok(runtime)
}

/// The glibc tunable that decides from which size `memcpy` uses `rep movsb`.
const REP_MOVSB_TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";

/// Re-executes this process once (same PID, arguments and descriptors) with glibc told
/// not to copy with `rep movsb`, for the processes that carry TLS traffic.
///
/// glibc before 2.39 copies 2 KiB and more with `rep movsb`; on AMD EPYC that runs at
/// about a twentieth of the speed (3.5 against 66 GB/s, measured) when the destination
/// is not 16-byte aligned — and rustls builds every TLS record by copying the plaintext
/// behind a 5-byte header. glibc reads its tunables only at start, hence the re-exec.
/// An operator's own `GLIBC_TUNABLES` setting of the same tunable is kept;
/// `BOWLINE_NO_REEXEC=1` turns this off.
pub(crate) fn reexec_with_vector_memcpy() {
    use std::os::unix::process::CommandExt;

    if !cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        target_arch = "x86_64"
    )) {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(REP_MOVSB_TUNABLE) || std::env::var_os("BOWLINE_NO_REEXEC").is_some() {
        return;
    }
    // Above any copy a proxy makes; larger copies use non-temporal stores anyway.
    let setting = format!("{REP_MOVSB_TUNABLE}=1073741824");
    let value = if current.is_empty() {
        setting
    } else {
        format!("{current}:{setting}")
    };
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec();
    // `exec` returns only when it failed: carry on untuned.
    eprintln!("bowline: could not re-execute with vector memcpy ({error}); continuing");
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn allocator_option_index_is_the_purge_delay() {
        // SAFETY: reads one integer option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default purge delay is 1000 ms; no neighbouring option has it.
        assert_eq!(
            delay, 1000,
            "mimalloc's option enum changed: fix MI_OPTION_PURGE_DELAY"
        );
    }
}
