//! Why a channel or a delta ADS stream to the control plane failed: one enum for the
//! transport and stream layer ([`crate::transport`], [`crate::ads_client`]), each message
//! telling an operator what to check, and [`XdsError::is_retriable`] telling a client
//! whether trying again (with backoff) may help or an operator has to act first.
//!
//! Must not: describe refused resources — what a resource means is for the crate that
//! consumes it (ztunnel's and the node agent's own error types wrap this one).

use tonic::Code;

/// Why talking to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The address cannot be used as a gRPC endpoint.
    #[error(
        "control plane address {url:?} is not usable ({source}); give it as http://HOST:15010 (plaintext) or https://HOST:15012 (TLS)"
    )]
    Address {
        /// The address as given.
        url: String,
        /// Why it was refused.
        #[source]
        source: tonic::transport::Error,
    },
    /// A TLS address was given without the root that verifies it.
    #[error("{url} is TLS: give the mesh root certificate (--ca-root) to verify it")]
    MissingRoot {
        /// The address.
        url: String,
    },
    /// The TLS settings could not be built from the root given.
    #[error("TLS to {url}: {source}; check that --ca-root is the mesh root certificate (PEM)")]
    Tls {
        /// The address.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The stream could not be opened: the control plane is unreachable, or refused it.
    #[error("cannot open the xDS stream to {url}: {}{}", .status.message(), hint(.status.code()))]
    Connect {
        /// The address.
        url: String,
        /// What gRPC said.
        status: tonic::Status,
    },
    /// An open stream broke, or a response could not be decoded.
    #[error("the xDS stream broke: {}{}", .0.message(), hint(.0.code()))]
    Stream(tonic::Status),
    /// The stream's request side closed (the stream is gone); open a new one.
    #[error("the xDS stream is closed; reconnecting opens a new one")]
    RequestsClosed,
}

impl XdsError {
    /// Whether trying again (with backoff) may succeed without an operator changing
    /// anything: the control plane restarting or being out of reach is, a malformed
    /// address, a missing root or a refused token is not.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Address { .. } | Self::MissingRoot { .. } | Self::Tls { .. } => false,
            Self::Connect { status, .. } | Self::Stream(status) => retriable(status.code()),
            Self::RequestsClosed => true,
        }
    }

    /// The gRPC status, when the control plane (or the transport) answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Connect { status, .. } | Self::Stream(status) => Some(status),
            _ => None,
        }
    }
}

/// Codes after which the same request can only fail again until someone acts.
fn retriable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
    )
}

/// What to check, by code.
fn hint(code: Code) -> &'static str {
    match code {
        Code::Unavailable => {
            " (is the control plane running and reachable? a NetworkPolicy or firewall may block its xDS port 15010/15012)"
        }
        Code::DeadlineExceeded => " (the control plane did not answer in time; is it overloaded?)",
        Code::Unauthenticated | Code::PermissionDenied => {
            " (the control plane refused this client; check its token and the mesh root)"
        }
        Code::Unimplemented => {
            " (the server does not speak delta ADS; is the address the control plane's xDS port?)"
        }
        Code::ResourceExhausted => " (a response exceeded the size limit)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_control_plane_is_retried_and_says_what_to_check() {
        let error = XdsError::Connect {
            url: "http://10.0.0.1:15010".into(),
            status: tonic::Status::unavailable("tcp connect error"),
        };
        assert!(error.is_retriable());
        let text = error.to_string();
        assert!(text.contains("http://10.0.0.1:15010"), "{text}");
        assert!(text.contains("reachable"), "{text}");
    }

    #[test]
    fn a_refused_client_or_a_missing_root_is_not_retried() {
        let refused = XdsError::Stream(tonic::Status::permission_denied("bad token"));
        assert!(!refused.is_retriable());
        let no_root = XdsError::MissingRoot {
            url: "https://cp:15012".into(),
        };
        assert!(!no_root.is_retriable());
        assert!(no_root.to_string().contains("--ca-root"));
    }
}
