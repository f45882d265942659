//! The one layer in front of every route ([`front`]), and the limits every request meets
//! before a handler runs: header count and size (431), the inbound concurrency limit with load
//! shedding (503 `overloaded`), and the request timeout (408). The body size limit (413, tower-
//! http's, inside this layer) and the per-key rate limit (429, in `auth`) sit beside these.
//!
//! [`front`] does in one future what seven layers did (sensitive headers, the request id set and
//! echoed, the request's span, the limits, problem answers, the finished line and the HTTP
//! metrics): each layer boxed, cloned and moved a future of its own per request, which showed as
//! allocation and `memmove` in the API's profile (docs/performance.md).
//!
//! Shedding refuses at once rather than queueing: under overload a queue only turns into
//! latency, and a client holding a Retry-After can back off while the ones admitted finish.
//! Probes, scrapes and `/v1/status` are never shed, so an overloaded instance is still seen as
//! alive, and seen to be overloaded.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderName, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;
use tracing::Instrument;

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

/// The middleware in front of every route, outermost first:
/// 1. marks the credentials' headers sensitive (never shown by a `Debug` of the request);
/// 2. gives the request an `X-Request-Id` unless it came with one;
/// 3. opens the request's span ([`super::request_span`]), in which everything below runs;
/// 4. enforces the limits ([`limit`]);
/// 5. turns an error answer that is not a problem into one ([`super::problems`]);
/// 6. echoes the request id on the answer;
/// 7. writes the "request finished" line and records the HTTP metrics ([`super::observe`]).
pub(crate) async fn front(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers_mut();
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static(payment_types::headers::API_KEY),
    ] {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
    let request_id_header = HeaderName::from_static(payment_types::headers::REQUEST_ID);
    let request_id = match headers.get(&request_id_header) {
        Some(id) => id.clone(),
        None => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            let id = HeaderValue::from_str(id).expect("a uuid is a valid header value");
            headers.insert(request_id_header.clone(), id.clone());
            id
        }
    };
    let span = super::request_span(&request);
    async move {
        let started = std::time::Instant::now();
        let method = request.method().clone();
        // A clone of the matched path is a reference count, not a copy of the text.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
        let response = limit(&state, request, next).await;
        let mut response = super::problems::as_problem(response).await;
        if !response.headers().contains_key(&request_id_header) {
            response.headers_mut().insert(request_id_header, request_id);
        }
        super::observe(&method, route, started.elapsed(), &response);
        response
    }
    .instrument(span)
    .await
}

/// The limits: checks the headers, takes an in-flight slot (or sheds), and bounds the
/// request's time.
async fn limit(state: &AppState, request: Request, next: Next) -> Response {
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
