//! `POST /api/apply` and `/api/delete`: the body within limits, parsed and applied off
//! the async runtime, so xDS streams and readiness keep being served whatever the body.
//!
//! - A body over [`MAX_BODY`] is refused with 413 before it is read whole; the documents
//!   within [`config::Limits::API`] (10,000 documents, nesting depth 64, 1 MiB scalars,
//!   1,000,000 values): 413, or 400 for the depth, naming the limit.
//! - At most [`MAX_CONCURRENT_PARSES`] requests are parsed at once; beyond that 503 "busy,
//!   retry" (with `Retry-After`).
//! - The parse (and the store's change) runs on the blocking pool. When the client goes
//!   away, hyper drops the handler; a guard then raises the request's cancellation flag,
//!   which the parse checks between documents: nothing is applied, and its slot is freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{HttpState, json_response, query, save_applied};
use crate::store::{Origin, Report};

/// Largest request body (4 MiB).
pub const MAX_BODY: usize = 4 << 20;
/// Requests parsed at once; more are answered 503.
pub const MAX_CONCURRENT_PARSES: usize = 2;

/// Raises its flag when dropped: the request's handler went away (or finished).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why a request was not applied, as it is answered.
enum Refusal {
    Parse(config::ParseError),
    Cancelled,
}

pub(super) async fn handle(
    state: &HttpState,
    req: Request<Incoming>,
    delete: bool,
) -> Response<Full<Bytes>> {
    let dry_run = query(&req, "dryRun").is_some_and(|v| v == "true" || v.is_empty());
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large_body();
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large_body(),
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": format!("cannot read the request: {e}") }),
            );
        }
    };
    let Ok(permit) = state.parses.clone().try_acquire_owned() else {
        state.metrics.apply_busy.inc();
        let mut response = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": format!("busy: {MAX_CONCURRENT_PARSES} applies are being parsed; retry in a moment"),
            }),
        );
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        return response;
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let work = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            parse_and_change(&state, &body, delete, dry_run, &cancelled)
        })
    };
    let source = if delete { "delete" } else { "apply" };
    match work.await {
        Ok(Ok(report)) => {
            // The notes, in the state this request made (or, dry, would make), on the
            // objects it touched.
            let status: std::collections::BTreeMap<&String, &Vec<String>> = report
                .status
                .iter()
                .filter(|(object, _)| report.changes.iter().any(|c| c.object == **object))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "dryRun": dry_run,
                    "version": state.store.load().version,
                    "changes": report.changes,
                    "warnings": report.warnings,
                    "status": status,
                }),
            )
        }
        Ok(Err(Refusal::Parse(e))) => {
            state.metrics.config_errors.inc();
            tracing::warn!(error = %e, "refused a {source} request; nothing changed");
            let (code, limit) = match &e {
                config::ParseError::Limit { limit, .. } => (
                    if *limit == config::Limit::Depth {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::PAYLOAD_TOO_LARGE
                    },
                    Some(*limit),
                ),
                _ => (StatusCode::BAD_REQUEST, None),
            };
            json_response(code, &json!({ "error": e.to_string(), "limit": limit }))
        }
        Ok(Err(Refusal::Cancelled)) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "cancelled; nothing changed" }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "the {source} request's parse failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": "internal error while parsing; nothing changed" }),
            )
        }
    }
}

fn too_large_body() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({
            "error": format!("the body is larger than {MAX_BODY} bytes (4 MiB), the limit of one request; split it into several applies"),
            "limit": "bodyBytes",
        }),
    )
}

/// Runs on the blocking pool: parses (stopping when `cancelled`), then changes the store
/// and keeps what the API applied.
fn parse_and_change(
    state: &HttpState,
    body: &[u8],
    delete: bool,
    dry_run: bool,
    cancelled: &AtomicBool,
) -> Result<Report, Refusal> {
    let source = if delete { "delete" } else { "apply" };
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Refusal::Parse(config::ParseError::Invalid(
            config::ConfigError {
                source_name: source.into(),
                document: 0,
                object: None,
                path: String::new(),
                message: "the body must be UTF-8 YAML".into(),
            },
        )));
    };
    let started = std::time::Instant::now();
    let parsed = config::parse_documents_with(text, source, &config::Limits::API, &|| {
        cancelled.load(Ordering::Relaxed)
    })
    .map_err(|e| match e {
        config::ParseError::Cancelled { documents, .. } => {
            tracing::info!(
                documents,
                "the client of a {source} request went away while it was parsed; nothing changed"
            );
            state.metrics.apply_cancelled.inc();
            Refusal::Cancelled
        }
        e => Refusal::Parse(e),
    })?;
    if cancelled.load(Ordering::Relaxed) {
        tracing::info!("the client of a {source} request went away; nothing changed");
        state.metrics.apply_cancelled.inc();
        return Err(Refusal::Cancelled);
    }
    let unused_note = parsed.unused_note();
    let resources = parsed.resources;
    tracing::debug!(
        documents = resources.len(),
        parse_ms = started.elapsed().as_secs_f64() * 1e3,
        "{source} request parsed"
    );
    let mut report = if delete {
        let keys = resources.iter().map(config::Resource::key).collect();
        state.store.delete(keys, dry_run)
    } else {
        state.store.apply(resources, &Origin::Api, dry_run)
    };
    // What was set aside is said once, with the rest of what the operator should know.
    report.warnings.extend(unused_note);
    if !dry_run {
        for change in &report.changes {
            tracing::info!(object = %change.object, outcome = ?change.outcome, "{source}");
        }
        if let Some(file) = &state.applied_file
            && let Err(e) = save_applied(&state.store, file)
        {
            tracing::error!(file = %file.display(), error = %e, "cannot save applied objects; they are in force but will not survive a restart");
        }
    }
    Ok(report)
}
