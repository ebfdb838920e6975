//! Tunables of the client pool and the server, with the defaults the mesh uses.
//!
//! Windows (1 MiB per stream, 4 MiB per connection) cover the bandwidth-delay product of
//! a node-to-node link while bounding what a slow reader can make a proxy buffer; frames
//! are large so bulk data costs few frame headers; stream and header limits follow Istio's (client 100
//! streams per connection and 16 KiB headers, server 200 streams and 64 KiB headers).

use std::time::Duration;

/// HTTP/2 stream-level flow-control window (bytes).
pub(crate) const STREAM_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 connection-level flow-control window (bytes).
pub(crate) const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Largest DATA frame we accept (the peer may send frames up to this size).
pub(crate) const MAX_FRAME: u32 = 256 * 1024;
/// Most bytes h2 buffers per stream before `poll_capacity` applies back-pressure.
pub(crate) const SEND_BUFFER: usize = 256 * 1024;

/// Settings of a [`crate::Pool`].
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Most concurrent streams the pool puts on one connection before opening another.
    pub max_streams_per_connection: usize,
    /// A connection with no streams for this long is closed.
    pub idle_timeout: Duration,
    /// A connection beyond the first for the same key (opened under load) with no
    /// streams for this long is closed: each idle HBONE connection holds about 250 KiB
    /// of TLS and HTTP/2 buffers, so a burst must not leave its connections behind.
    pub surplus_idle_timeout: Duration,
    /// Limit for TCP connect, TLS and HTTP/2 handshakes together.
    pub connect_timeout: Duration,
    /// Limit for the server's answer to a `CONNECT`.
    pub response_timeout: Duration,
    /// Largest header list accepted from the server.
    pub max_header_list_size: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            surplus_idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(15),
            max_header_list_size: 16 * 1024,
        }
    }
}

/// Settings of a [`crate::Server`].
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most concurrent streams a client may open on one connection.
    pub max_concurrent_streams: u32,
    /// Largest header list accepted from a client.
    pub max_header_list_size: u32,
    /// Limit for the TLS and HTTP/2 handshakes of a new connection.
    pub handshake_timeout: Duration,
    /// Streams a client may reset before we accept them, before the connection is
    /// closed with `ENHANCE_YOUR_CALM` (rapid-reset protection).
    pub max_pending_accept_reset_streams: usize,
    /// Streams we may reset because of the client's protocol errors before closing the
    /// connection.
    pub max_local_error_reset_streams: usize,
    /// Streams one connection may have refused (bad method or authority, denied by the
    /// handler, unreachable target) within [`Self::refused_streams_window`] before the
    /// connection is closed with `GOAWAY ENHANCE_YOUR_CALM`: a refusal costs the server a
    /// task and a log line, so it counts against the same kind of budget as a reset.
    pub max_refused_streams: u32,
    /// The window of [`Self::max_refused_streams`].
    pub refused_streams_window: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 200,
            max_header_list_size: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 1024,
            max_refused_streams: 100,
            refused_streams_window: Duration::from_secs(1),
        }
    }
}
