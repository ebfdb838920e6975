//! `bowline echo` and `bowline call`: the demo app and the HTTP GET for pods without
//! curl.
//!
//! Owns: these commands' flags and what they print. Must not: serve or call anything
//! itself — that is the `echo` crate.

use std::time::Duration;

use anyhow::Context;

use super::terminated;

#[derive(Debug, clap::Args)]
pub(crate) struct EchoArgs {
    /// HTTP port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Raw TCP echo port (repeatable).
    #[arg(long = "tcp-port")]
    tcp_ports: Vec<u16>,
    /// URL to call on every request (repeatable); answers are included.
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Largest request body counted, in bytes (default 16 MiB); larger ones get 413.
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// `http://host[:port][/path]`.
    url: String,
    /// The method.
    #[arg(short = 'X', long, default_value = "GET")]
    method: String,
    /// An extra request header, `NAME: VALUE` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Seconds to wait.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// `bowline echo`, until SIGTERM or Ctrl-C.
pub(crate) async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    let config = echo::EchoConfig {
        http_ports: args.ports,
        tcp_ports: args.tcp_ports,
        upstreams: args.upstreams,
        bind: args.bind,
        max_body: args.max_body,
    };
    echo::run(config, terminated()).await?;
    Ok(())
}

/// `bowline call URL`: prints the body; fails on a non-2xx status.
#[allow(clippy::print_stdout)]
pub(crate) async fn call(args: CallArgs) -> anyhow::Result<()> {
    let CallArgs {
        url,
        method,
        headers,
        timeout,
    } = args;
    let timeout = Duration::try_from_secs_f64(timeout).context("--timeout")?;
    let headers = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("--header {h:?}: write NAME: VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (status, body) = echo::call(&method, &url, &headers, timeout).await?;
    print!("{body}");
    if !(200..300).contains(&status) {
        anyhow::bail!("{url} answered {status}");
    }
    Ok(())
}
