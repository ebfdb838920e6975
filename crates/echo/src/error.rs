//! Everything that can go wrong in the echo app, worded for the operator reading it.

use std::net::SocketAddr;
use std::time::Duration;

/// Why the echo app could not start, or why a [`get`](crate::get) failed.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// A listening socket could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another process using port {}, or is the address not on this host?)",
        addr.port()
    )]
    Bind {
        /// The address (and so the port) that could not be bound.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// Neither an HTTP nor a TCP port was configured.
    #[error("nothing to serve: set an HTTP port, a TCP port, or both")]
    NothingToServe,

    /// Upstreams were configured without an HTTP port, so they would never be called.
    #[error("upstreams are called on HTTP requests, but no HTTP port is set")]
    UpstreamsWithoutHttp,

    /// A URL is not of the supported form `http://host[:port][/path]`.
    #[error("bad URL {url:?}: {reason}; expected http://host[:port][/path]")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The TCP connection to the URL's host could not be made.
    #[error("cannot connect to {authority} (for {url}): {source}")]
    Connect {
        /// The URL being fetched.
        url: String,
        /// `host:port` that was dialled.
        authority: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The whole exchange (connect, request, answer) took longer than allowed.
    #[error("no complete answer from {url} within {after:?}; is the server up and reachable?")]
    Timeout {
        /// The URL being fetched.
        url: String,
        /// The time allowed.
        after: Duration,
    },

    /// The HTTP exchange failed after connecting (the peer is not speaking HTTP/1.1, or
    /// closed the connection early).
    #[error("HTTP exchange with {url} failed: {source}")]
    Http {
        /// The URL being fetched.
        url: String,
        /// What hyper reported.
        #[source]
        source: hyper::Error,
    },

    /// The answer's body could not be read in full.
    #[error("reading the answer body from {url} failed: {source}")]
    Body {
        /// The URL being fetched.
        url: String,
        /// Why, including "length limit exceeded" for answers over 16 MiB.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
