//! A minimal HTTP/1.1 request (GET by default) over plain TCP, for upstream calls, tests
//! and the CLI.
//!
//! Must not grow into a general client: no TLS, no redirects, no pooling, no retries —
//! each call is one fresh connection, so what it reports is what that connection saw.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::EchoError;

/// Largest answer body [`get`] reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One HTTP GET to `url` (http:// only, plain TCP, HTTP/1.1), returns (status, body). Used for upstream calls and by tests/CLI.
///
/// `timeout` bounds the whole exchange: connecting, sending, and reading the full body
/// (at most 16 MiB). A body that is not UTF-8 is returned lossily converted.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), EchoError> {
    call("GET", url, &[], timeout).await
}

/// [`get`] with another method and extra request headers (`name`, `value`); no body.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, String), EchoError> {
    let target = Target::parse(url)?;
    match tokio::time::timeout(timeout, fetch(method, url, headers, &target)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(EchoError::Timeout {
            url: url.to_owned(),
            after: timeout,
        }),
    }
}

async fn fetch(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    target: &Target,
) -> Result<(u16, String), EchoError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| EchoError::Connect {
            url: url.to_owned(),
            authority: target.authority.clone(),
            source,
        })?;
    let http_error = |source| EchoError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    // The connection is driven by its own task; the guard stops it however this call ends
    // (answer read, error, or the caller's timeout dropping us).
    let _connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    }));

    let mut request = Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, "bowline-echo");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|error| EchoError::BadUrl {
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|source| EchoError::Body {
            url: url.to_owned(),
            source,
        })?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where an `http://host[:port][/path]` URL points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or IP, without brackets for IPv6.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host:port` as written in the URL (brackets kept), for the Host header and messages.
    pub(crate) authority: String,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, EchoError> {
        let bad = |reason: &str| EchoError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = match url.split_at_checked("http://".len()) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http://") => rest,
            _ => {
                return Err(bad(
                    "only http:// is supported (plain TCP, no TLS; the mesh adds mTLS)",
                ));
            }
        };
        // Fragments are never sent to the server.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let path = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user names and passwords are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("IPv6 address without closing ']'"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("unexpected text after ']'")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}
