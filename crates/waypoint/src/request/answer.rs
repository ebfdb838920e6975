//! What a rule answers itself, before any backend is called: a CORS preflight from an
//! allowed origin (200 with the allow headers), an injected fault (a delay, then an abort
//! with an HTTP or gRPC status — flags `DI` and `FI`, as Envoy's), a direct response. And
//! the CORS headers an allowed origin's actual request gets on its response.

use super::*;
use crate::routes::{Abort, Cors, Fault, MILLION};

/// Whether a draw falls in a share of `per_million`.
fn drawn(per_million: u32) -> bool {
    random() % u64::from(MILLION) < u64::from(per_million)
}

fn origin<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}

/// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
/// origin the rule allows is answered here; any other goes on (to the backend, as Envoy
/// forwards preflights it does not match): `Err` with the answer.
pub(super) fn preflight(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    cors: &Cors,
    req: &Request<Incoming>,
) -> Result<Exchange, Box<Response<ResponseBody>>> {
    let preflight = req.method() == http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let Some(origin) = origin(req).filter(|o| preflight && cors.allows(o)) else {
        return Ok(exchange);
    };
    exchange.labels.response_code = "200".into();
    exchange.detail = Some("CORS preflight".into());
    let body = http_body_util::Empty::new().map_err(|never| match never {});
    let mut response = Response::new(finishing(shared, exchange, body));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    if let Some(methods) = &cors.allow_methods {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
    }
    if let Some(allowed) = &cors.allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
    }
    if let Some(age) = &cors.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
    }
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Err(Box::new(response))
}

/// The CORS headers on the response to an allowed origin's request (none for others).
pub(super) fn cors_headers(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    response: &mut http::HeaderMap,
) {
    let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| cors.allows(o))) else {
        return;
    };
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Some(exposed) = &cors.expose_headers {
        response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
    }
    if cors.allow_credentials {
        response.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Applies the rule's fault: sleeps for a drawn delay (flag `DI`), then answers a drawn
/// abort (flag `FI`): `Err` with the abort's answer.
pub(super) async fn inject(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    fault: &Fault,
) -> Result<Exchange, Box<Response<ResponseBody>>> {
    if let Some((delay, share)) = fault.delay
        && drawn(share)
    {
        tokio::time::sleep(delay).await;
        add_flag(&mut exchange, "DI");
    }
    let Some((abort, share)) = fault.abort.filter(|(_, share)| drawn(*share)) else {
        return Ok(exchange);
    };
    let _ = share;
    add_flag(&mut exchange, "FI");
    exchange.detail = Some("fault injected".into());
    let body = Full::new(Bytes::from_static(b"fault filter abort")).map_err(|never| match never {});
    let response = match abort {
        Abort::Http(status) => {
            exchange.labels.response_code = status.as_u16().to_string();
            let mut response = Response::new(finishing(shared, exchange, body));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            response
        }
        Abort::Grpc(status) => {
            // Trailers-only: the status in the head, no body.
            exchange.labels.response_code = "200".into();
            exchange.labels.grpc_response_status = status.to_string();
            let empty = http_body_util::Empty::new().map_err(|never| match never {});
            let mut response = Response::new(finishing(shared, exchange, empty));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(status));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            response
        }
    };
    Err(Box::new(response))
}

/// The rule's direct response.
pub(super) fn direct(
    shared: &Arc<Shared>,
    mut exchange: Exchange,
    status: StatusCode,
    body: &Bytes,
) -> Response<ResponseBody> {
    exchange.labels.response_code = status.as_u16().to_string();
    exchange.detail = Some("direct response".into());
    let body = Full::new(body.clone()).map_err(|never| match never {});
    let mut response = Response::new(finishing(shared, exchange, body));
    *response.status_mut() = status;
    response
}
