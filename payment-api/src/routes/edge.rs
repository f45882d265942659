//! Limits every request meets before a handler runs: header count and size (431), the inbound
//! concurrency limit with load shedding (503 `overloaded`), and the request timeout (408).
//! The body size limit (413) and the per-key rate limit (429, in `auth`) sit beside these.
//!
//! Shedding refuses at once rather than queueing: under overload a queue only turns into
//! latency, and a client holding a Retry-After can back off while the ones admitted finish.
//! Probes, scrapes and `/v1/status` are never shed, so an overloaded instance is still seen as
//! alive, and seen to be overloaded.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use super::AppState;
use crate::{config::EdgeArgs, error::ApiError, stats::Counters};

/// Paths never shed or counted against the concurrency limit: probes, the scrape, and the
/// status document the dashboard draws (an operator must see the overload).
pub(crate) const NEVER_SHED: &[&str] = &["/health", "/ready", "/metrics", "/v1/status"];

/// How long a shed client is told to wait.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The edge limits in force, and the requests in progress.
#[derive(Debug)]
pub(crate) struct EdgeLimits {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    request_timeout: Duration,
    max_headers: usize,
    max_header_bytes: usize,
}

impl EdgeLimits {
    pub(crate) fn new(args: &EdgeArgs) -> Self {
        let max_in_flight = args.max_in_flight.max(1) as usize;
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            max_headers: args.max_headers,
            max_header_bytes: args.max_header_bytes,
        }
    }

    /// Requests in progress (excluding probes), for `/v1/status`.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// The middleware: checks the headers, takes an in-flight slot (or sheds), and bounds the
/// request's time.
pub(crate) async fn enforce(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.edge;
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return ApiError::HeadersTooLarge(format!(
            "The request carries {} header fields; at most {} are accepted.",
            headers.len(),
            limits.max_headers
        ))
        .into_response();
    }
    // As on the wire: `name: value\r\n`.
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return ApiError::HeadersTooLarge(format!(
            "The request headers take {header_bytes} bytes; at most {} are accepted.",
            limits.max_header_bytes
        ))
        .into_response();
    }

    let _slot = if NEVER_SHED.contains(&request.uri().path()) {
        None
    } else {
        match limits.in_flight.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                Counters::inc(&state.payments.counters.shed);
                return ApiError::Overloaded {
                    retry_after: SHED_RETRY_AFTER,
                }
                .into_response();
            }
        }
    };

    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            Counters::inc(&state.payments.counters.timed_out);
            let mut response = ApiError::RequestTimeout(limits.request_timeout).into_response();
            // The client may still be sending a body we will never read.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}
