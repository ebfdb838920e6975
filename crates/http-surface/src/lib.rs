//! The small HTTP/1 surfaces operators, scrapers and probes talk to — ztunnel's admin
//! (15000), metrics (15020) and readiness (15021), the control plane's metrics and
//! readiness (15014) and management API (15015): one serve loop and one way to build a
//! response, so every surface accepts, serves and answers alike.
//!
//! [`serve`] accepts through [`hbone::accept::accept`]: out of file descriptors, a
//! waiting connection is refused at once instead of the loop spinning. Each connection is
//! served in a task of its own; the handler maps a request to a whole response.
//!
//! Owns: accepting, HTTP/1 framing, response building. Must not: route or choose
//! statuses — each surface's handler does that.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use hbone::FdReserve;

/// The body of every response: whole, in memory.
pub type Body = Full<Bytes>;

/// Serves HTTP/1 on `listener` until the task is dropped, answering every request with
/// `handler`. Accepting shares `fd_reserve` with the process's other accept loops.
pub async fn serve<H, F>(listener: TcpListener, fd_reserve: Arc<FdReserve>, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (tcp, _) = hbone::accept::accept(&listener, &fd_reserve).await;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            // A client that goes away mid-request is no error of ours.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Binds `addr` and [`serve`]s there in the background; returns the bound address (the
/// port chosen when `addr` asks for port 0) and the task.
pub async fn spawn<H, F>(
    addr: SocketAddr,
    fd_reserve: Arc<FdReserve>,
    handler: H,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(serve(listener, fd_reserve, handler))))
}

/// A response with `status`, a `content-type` and `body`.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// A JSON response: `value` pretty-printed, with a final newline.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    respond(status, "application/json", text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_surface_answers_with_its_handlers_status_type_and_body() {
        let (addr, task) = spawn(
            "127.0.0.1:0".parse().unwrap(),
            Arc::default(),
            |req: Request<Incoming>| async move {
                match req.uri().path() {
                    "/ready" => respond(StatusCode::OK, "text/plain", "ready\n"),
                    _ => json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": "no such path"}),
                    ),
                }
            },
        )
        .await
        .unwrap();
        for (path, head, body) in [
            ("/ready", "HTTP/1.1 200 OK", "ready\n"),
            (
                "/other",
                "HTTP/1.1 404 Not Found",
                "{\n  \"error\": \"no such path\"\n}\n",
            ),
        ] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut text = String::new();
            tcp.read_to_string(&mut text).await.unwrap();
            assert!(text.starts_with(head), "{text}");
            assert!(text.ends_with(body), "{text}");
            let kind = if path == "/ready" {
                "text/plain"
            } else {
                "application/json"
            };
            assert!(text.contains(&format!("content-type: {kind}")), "{text}");
        }
        task.abort();
    }
}
