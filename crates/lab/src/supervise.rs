//! `bowline supervise -- CMD…`: keeps one lab component running, as a DaemonSet would —
//! when it exits it is started again after a second; SIGTERM (from `bowline down`) stops
//! the component and the supervisor.

use std::time::Duration;

/// Runs `argv` until `stop` completes, restarting it whenever it exits. Returns when
/// stopped, or an error if the program cannot be started at all.
pub async fn run(
    argv: &[String],
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("give the command to supervise after --".into());
    };
    tokio::pin!(stop);
    let mut starts = 0u64;
    loop {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        starts += 1;
        if starts > 1 {
            tracing::warn!(program = %program, starts, "restarted");
        }
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(program = %program, status = ?status, "exited; restarting in 1 s");
            }
            () = &mut stop => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Ok(());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = &mut stop => return Ok(()),
        }
    }
}
