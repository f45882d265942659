//! Request ids: every request runs inside a span carrying `request_id` (taken from the caller's
//! `X-Request-Id` or generated), so every log line of that request names it, and the id is
//! echoed on the response.

use axum::{
    extract::Request,
    http::{HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use payment_types::headers::REQUEST_ID;
use tracing::Instrument;

/// Longest request id accepted from a caller; longer or non-printable ids are replaced.
const MAX_LEN: usize = 200;

/// Paths polled continuously (the dashboard, probes, scrapers): a successful `GET` of one logs
/// its "request finished" line at DEBUG, so an idle bank writes no line a second (nor fills
/// `/v1/logs` with lines about reading `/v1/logs`). Charges, chaos changes and error answers
/// stay at INFO.
const QUIET_PATHS: &[&str] = &[
    "/health",
    "/v1/status",
    "/v1/logs",
    "/metrics",
    "/openapi.json",
    "/v1/chaos",
    "/v1/chaos/presets",
    "/v1/ledger",
];

/// Whether a request's "request finished" line is DEBUG: a successful read of a polled path.
fn quiet(method: &Method, path: &str, status: u16) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && status < 400
        && (QUIET_PATHS.contains(&path) || path.starts_with("/docs"))
}

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
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        let status = response.status().as_u16();
        if quiet(&method, &path, status) {
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

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::quiet;

    #[test]
    fn successful_reads_of_polled_paths_are_quiet_and_nothing_else_is() {
        for path in [
            "/health",
            "/v1/status",
            "/v1/logs",
            "/metrics",
            "/openapi.json",
            "/v1/chaos",
            "/v1/chaos/presets",
            "/v1/ledger",
            "/docs/",
        ] {
            assert!(quiet(&Method::GET, path, 200), "{path}");
            assert!(!quiet(&Method::GET, path, 400), "{path}");
            assert!(!quiet(&Method::GET, path, 503), "{path}");
        }
        // A chaos change, a charge and a charge lookup are logged at INFO.
        assert!(!quiet(&Method::PUT, "/v1/chaos", 200));
        assert!(!quiet(&Method::POST, "/v1/charges", 201));
        assert!(!quiet(&Method::GET, "/v1/charges/ref-1", 200));
    }
}
