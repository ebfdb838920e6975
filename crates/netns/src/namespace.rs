//! Named network namespaces (`/run/netns/<name>`, as `ip netns` keeps them) and running
//! code inside one.
//!
//! [`Namespace::create`] makes a namespace that is deleted when the handle drops, so a
//! test or lab that fails half-way leaves nothing behind. [`in_netns`] runs a closure on a
//! fresh thread that has entered the namespace: sockets created there stay in that
//! namespace for their whole life, so a listener can be bound inside a pod and then served
//! from the async runtime.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sched::{CloneFlags, setns};

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command (ip, iptables-restore) could not be started.
    #[error(
        "cannot run {command}: {source} (is it installed? the README's commands install iproute2 and iptables)"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Opening or entering a namespace failed.
    #[error("namespace {name}: {reason}")]
    Enter {
        /// The namespace.
        name: String,
        /// Why.
        reason: String,
    },
    /// The helper thread died.
    #[error("the namespace thread panicked or was lost")]
    Thread,
}

/// A named network namespace.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    /// Delete on drop: this handle created the namespace.
    owned: bool,
}

impl Namespace {
    /// Creates `name` (failing if it exists); deleted when the handle drops.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Gives up ownership: the namespace outlives this handle (something else, such as a
    /// lab's state on disk, is responsible for deleting it).
    pub fn keep(mut self) -> Self {
        self.owned = false;
        self
    }

    /// Refers to an existing namespace without taking ownership.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Opens the namespace: the descriptor keeps it alive and can be passed to another
    /// process or entered.
    pub fn open(&self) -> Result<File, NetnsError> {
        File::open(self.path()).map_err(|e| NetnsError::Enter {
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Runs `ip -n <name> <args…>`.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `program args…` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// [`Namespace::exec`] with `input` on its stdin.
    pub fn exec_with_input(
        &self,
        program: &str,
        args: &[&str],
        input: &str,
    ) -> Result<Output, NetnsError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run_with_input("ip", &full, Some(input))
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let file = self.open()?;
        in_netns(file, self.name.clone(), f).await
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = run("ip", &["netns", "del", &self.name])
        {
            tracing::warn!(namespace = %self.name, %error, "could not delete network namespace");
        }
    }
}

/// Runs `f` on a new thread that has entered the namespace `ns` (any descriptor of a
/// network namespace: `/run/netns/x`, `/proc/<pid>/ns/net`, one received from the node
/// agent). `label` names it in errors. The runtime's threads never change namespace.
pub async fn in_netns<T, F, N>(ns: N, label: String, f: F) -> Result<T, NetnsError>
where
    N: AsFd + Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let result = enter(ns.as_fd(), &label).map(|()| f());
            let _ = tx.send(result);
        })
        .map_err(|_| NetnsError::Thread)?;
    rx.await.map_err(|_| NetnsError::Thread)?
}

/// The same as [`in_netns`] for callers that are not async (a blocking thread).
pub fn in_netns_blocking<T, F>(ns: BorrowedFd<'_>, label: &str, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| enter(ns, label).map(|()| f()))
            .join()
            .map_err(|_| NetnsError::Thread)?
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread parked inside a namespace that runs short jobs there — creating sockets for a
/// pod, many times a second — without the cost of a new thread per job. It ends when the
/// worker is dropped.
#[derive(Debug, Clone)]
pub struct NetnsWorker {
    jobs: std::sync::mpsc::Sender<Job>,
    label: std::sync::Arc<str>,
}

impl NetnsWorker {
    /// Starts a worker inside the namespace `ns` (kept open by the worker thread).
    pub fn start<N: AsFd + Send + 'static>(ns: N, label: &str) -> Result<Self, NetnsError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = label.to_owned();
        // Labels come from the network (a pod uid over ZDS): a thread name must not hold a
        // NUL byte, or spawning panics.
        let thread_name: String = format!("netns-{label}")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let entered = enter(ns.as_fd(), &name);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                }
            })
            .map_err(|_| NetnsError::Thread)?;
        ready_rx.recv().map_err(|_| NetnsError::Thread)??;
        Ok(Self {
            jobs,
            label: label.into(),
        })
    }

    /// Runs `f` inside the namespace and returns its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| NetnsError::Thread)?;
        rx.await.map_err(|_| NetnsError::Thread)
    }

    /// The namespace's label (pod uid or name), for logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

fn enter(ns: BorrowedFd<'_>, label: &str) -> Result<(), NetnsError> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
        name: label.to_owned(),
        reason: format!("setns: {e}"),
    })
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output, NetnsError> {
    run_with_input(program, args, None)
}

/// Like [`run`], feeding `input` on stdin.
pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<Output, NetnsError> {
    use std::io::Write;
    use std::process::Stdio;

    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NetnsError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(NetnsError::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
