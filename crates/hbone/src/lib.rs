//! HBONE: the mesh tunnel. Mutual TLS (from the `identity` crate) carrying HTTP/2, where
//! each `CONNECT` stream is one proxied TCP connection (`:authority` = the original
//! destination `ip:port`).
//!
//! Owns: the client connection pool, the server, the byte pump between a TCP socket and a
//! stream, and the HTTP/2 and socket settings that make them fast and abuse-resistant.
//! Must not: know workloads, services or policies — callers say which identities to
//! present and expect, and decide what a `CONNECT` may reach.
//!
//! Data path: [`Pool::connect`] → [`H2Stream`] ⇄ [`copy_bidirectional`] on the client;
//! [`Server`] → [`ConnectHandler::handle`] → [`IncomingConnect::accept`] on the server.

#![forbid(unsafe_code)]

pub mod accept;
mod copy;
mod error;
mod headers;
mod pool;
mod server;
mod settings;
mod stream;

pub use accept::{FdReserve, LogGate};
pub use copy::{
    CopyError, CopySide, Meter, Transferred, copy_bidirectional, copy_bidirectional_metered,
};
pub use error::HboneError;
pub use headers::HboneHeaders;
pub use pool::{ConnectRequest, Dialer, DirectDialer, Pool, PoolKey};
pub use server::{ConnectHandler, IncomingConnect, Server, ServerStats, TlsSummary};
pub use settings::{ClientSettings, ServerSettings};
pub use stream::H2Stream;

/// The port HBONE listens on, in every enrolled pod's netns and on waypoints.
pub const HBONE_PORT: u16 = 15008;
