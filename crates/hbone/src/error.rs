//! The one error type of the tunnel layer, with messages meant for an operator.

use std::net::SocketAddr;

use http::StatusCode;

/// Why a tunnel could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// No certificate to present.
    #[error(transparent)]
    Certificate(Box<identity::CertError>),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(Box<identity::TlsError>),
    /// TCP connect failed.
    #[error(
        "cannot connect to HBONE peer {addr}: {source} (is the peer's ztunnel running, or is something blocking port 15008?)"
    )]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// TCP, TLS or HTTP/2 setup took too long.
    #[error(
        "connection to HBONE peer {addr} timed out during {stage} (maybe a firewall or NetworkPolicy drops port 15008)"
    )]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// `TCP connect`, `TLS handshake` or `HTTP/2 handshake`.
        stage: &'static str,
    },
    /// The TLS handshake failed: wrong identity, untrusted chain, expired certificate…
    #[error("mutual TLS with {addr} failed: {source}")]
    Handshake {
        /// The peer.
        addr: SocketAddr,
        /// The handshake error (rustls' reason inside).
        source: std::io::Error,
    },
    /// Another caller's dial to the same peer just failed; this caller shares its fate.
    #[error("HBONE peer {addr} is unavailable: {reason}")]
    PeerUnavailable {
        /// The peer.
        addr: SocketAddr,
        /// Why the dial failed.
        reason: String,
    },
    /// The peer did not agree on ALPN `h2`.
    #[error("HBONE peer {addr} did not negotiate ALPN h2; it is not an HBONE endpoint")]
    NotH2 {
        /// The peer.
        addr: SocketAddr,
    },
    /// HTTP/2 failed on the connection or stream.
    #[error("HTTP/2 error: {0}")]
    H2(#[from] h2::Error),
    /// The server answered the `CONNECT` with something other than 200.
    #[error("HBONE peer refused CONNECT {authority}: {status}")]
    Refused {
        /// Destination asked for.
        authority: SocketAddr,
        /// The answer.
        status: StatusCode,
    },
    /// The server did not answer the `CONNECT` in time.
    #[error("HBONE peer did not answer CONNECT {authority} in time")]
    ResponseTimeout {
        /// Destination asked for.
        authority: SocketAddr,
    },
    /// A request could not be built (a header value is not valid).
    #[error("cannot build CONNECT request: {0}")]
    Request(#[from] http::Error),
}

impl From<identity::CertError> for HboneError {
    fn from(e: identity::CertError) -> Self {
        Self::Certificate(Box::new(e))
    }
}

impl From<identity::TlsError> for HboneError {
    fn from(e: identity::TlsError) -> Self {
        Self::Tls(Box::new(e))
    }
}

impl HboneError {
    /// Whether a later attempt may succeed with nothing changed: the peer was
    /// unreachable, slow or overloaded, or the connection broke. Not: identity, TLS or
    /// protocol mismatches, or a refusal by the peer's policy.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::PeerUnavailable { .. }
            | Self::ResponseTimeout { .. } => true,
            Self::Refused { status, .. } => {
                *status == StatusCode::SERVICE_UNAVAILABLE
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::H2(_) => self.is_connection_level(),
            Self::Certificate(_)
            | Self::Tls(_)
            | Self::Handshake { .. }
            | Self::NotH2 { .. }
            | Self::Request(_) => false,
        }
    }

    /// Whether the error means the connection itself is unusable, so a request that
    /// failed on it may be retried once on a fresh connection.
    pub(crate) fn is_connection_level(&self) -> bool {
        match self {
            Self::H2(e) => {
                e.is_io() || e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM)
            }
            _ => false,
        }
    }
}
