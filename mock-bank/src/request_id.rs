//! Request ids: every request runs inside a span carrying `request_id` (taken from the caller's
//! `X-Request-Id` or generated), so every log line of that request names it, and the id is
//! echoed on the response.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use payment_types::headers::REQUEST_ID;
use tracing::Instrument;

/// Longest request id accepted from a caller; longer or non-printable ids are replaced.
const MAX_LEN: usize = 200;

/// Paths whose "request finished" line is DEBUG.
const QUIET_PATHS: &[&str] = &[
    "/health",
    "/v1/status",
    "/v1/logs",
    "/metrics",
    "/openapi.json",
];

/// The middleware: span, one summary log line per request, echo the id.
pub(crate) async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    // Polled continuously (dashboard, probes, scrapers): DEBUG, so polling does not flood the
    // log, nor `/v1/logs` with lines about reading `/v1/logs`.
    let path = request.uri().path();
    let quiet = QUIET_PATHS.contains(&path) || path.starts_with("/docs");
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        let status = response.status().as_u16();
        if quiet {
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
