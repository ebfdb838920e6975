//! One-shot HTTP/1.1 requests to the mesh's processes — from here or from inside a lab
//! namespace, with the operator token when one is needed — and reading that token.
//!
//! Owns: the client the lab's readiness checks, `bowline status`, the operator commands
//! and the benchmarks share. Must not: know what the answers mean; callers interpret them.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 request; returns the status and body.
pub async fn http(method: &str, url: &str, body: Option<String>) -> Result<(u16, String), String> {
    http_in(None, method, url, body).await
}

/// One HTTP/1.1 request from inside network namespace `ns` (a lab's), or from here.
pub async fn http_in(
    ns: Option<&netns::Namespace>,
    method: &str,
    url: &str,
    body: Option<String>,
) -> Result<(u16, String), String> {
    request(ns, method, url, body, None).await
}

/// One HTTP/1.1 request, with `Authorization: Bearer <token>` when a token is given.
pub async fn request(
    ns: Option<&netns::Namespace>,
    method: &str,
    url: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .collect();
    let answer = exchange(ns, method, url, body, &headers).await?;
    Ok((answer.status, answer.body))
}

/// A response: status, headers (names lower case, in order) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `headers`, from inside `ns` or from here.
pub async fn exchange(
    ns: Option<&netns::Namespace>,
    method: &str,
    url: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host:port"))?
        .to_string();
    let tcp = match ns {
        None => tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot reach {authority}: {e}"))?,
        Some(ns) => {
            let addr: std::net::SocketAddr =
                authority.parse().map_err(|e| format!("{authority}: {e}"))?;
            connect_in(ns, addr).await?
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    send(&mut sender, &authority, method, &path, body, headers).await
}

/// A TCP connection to `addr` made from inside `ns` (5 s to connect).
pub async fn connect_in(
    ns: &netns::Namespace,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpStream, String> {
    let std_tcp = ns
        .run(move || {
            let tcp =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
            tcp.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(tcp)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot reach {addr} in {}: {e}", ns.name()))?;
    tokio::net::TcpStream::from_std(std_tcp).map_err(|e| e.to_string())
}

/// One HTTP/1.1 request over an HTTPS connection to `addr` (`ip:port`), asking for TLS
/// server name `server_name` and trusting only `root_pem`; `Host` is the server name
/// unless `headers` give one.
pub async fn exchange_tls(
    addr: &str,
    server_name: &str,
    root_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("root: {e}"))?;
        roots.add(cert).map_err(|e| format!("root: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(identity::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {addr} as {server_name}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(connection);
    send(&mut sender, server_name, method, path, None, headers).await
}

/// Sends one request on `sender` (`Host: authority` unless `headers` hold one).
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
    authority: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut request = hyper::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request = request.header(hyper::header::HOST, authority);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The operator token in `file` (what the control plane wrote to
/// `<state-dir>/operator-token`).
pub fn read_token(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "the operator token {}: {e} (it is `operator-token` in the control plane's --state-dir)",
            file.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the operator token {} is empty", file.display()));
    }
    Ok(token.to_owned())
}
