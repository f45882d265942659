//! Every way a request can fail, and the one place that maps each to an HTTP answer.
//!
//! Variants are the distinct outcomes a client can act on; each has a stable `code`. 4xx bodies
//! say what to fix; 5xx bodies are opaque and the cause goes to the log instead.
//!
//! Every 429 and 5xx body also says what the client may conclude about its money, in the
//! member `charged` (docs/contract.md §2): `"no"` only where the API knows no charge exists or will
//! be made under the key by this request and the key is free; `"unknown"` everywhere else. The
//! `detail` text agrees with it: only a `"no"` answer says "not processed".

use std::time::Duration;

use axum::{
    extract::rejection::JsonRejection,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use payment_types::Problem;

use crate::domain::{IdempotencyKeyError, ValidationError};

/// A request that did not produce a payment outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or unknown API key")]
    Unauthenticated,
    /// A valid key without the permission this route needs (a tenant key on the operator
    /// surface, an operator key creating a payment, a tenant naming another tenant).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("the Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    #[error(transparent)]
    IdempotencyKeyInvalid(#[from] IdempotencyKeyError),
    #[error(transparent)]
    Body(#[from] JsonRejection),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in flight")]
    IdempotencyKeyInUse { retry_after: Duration },
    #[error("the circuit breaker is open")]
    BreakerOpen { retry_after: Duration },
    #[error("too many concurrent bank calls")]
    BulkheadFull { retry_after: Duration },
    #[error("the bank did not process the payment")]
    BankUnavailable { retry_after: Duration },
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] payment_store::StoreError),
    /// The payment was claimed but its fate under this key could not be confirmed (the
    /// lease was lost before the key could be released): the client must not assume "no".
    #[error("the outcome of the payment under this key is not known yet")]
    OutcomeUnknown { retry_after: Duration },
    #[error("no such payment")]
    PaymentNotFound,
    /// Webhook routes: the store could not be read or written. No money is involved, so no
    /// `charged` member.
    #[error("store unavailable: {0}")]
    WebhookStoreUnavailable(#[source] payment_store::StoreError),
    #[error("no such webhook endpoint")]
    WebhookEndpointNotFound,
    #[error("no such event")]
    EventNotFound,
    /// A webhook endpoint request that cannot be carried out as sent: `invalid_url`,
    /// `invalid_event_types`, `invalid_overlap`.
    #[error("invalid webhook request ({code}): {detail}")]
    WebhookInvalid { code: &'static str, detail: String },
    /// `?bank=NAME` names no configured bank (operator breaker controls).
    #[error("no bank is configured under {0:?}")]
    BankNotFound(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("this API key is over its rate limit")]
    RateLimited { retry_after: Duration },
    #[error("too many requests in progress; shed")]
    Overloaded { retry_after: Duration },
    #[error("request headers over the limit: {0}")]
    HeadersTooLarge(String),
    #[error("the request took longer than {0:?}")]
    RequestTimeout(Duration),
    #[error("internal error: {0}")]
    Internal(String),
    /// A path parameter that does not decode (bad percent-encoding, not UTF-8).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// An answer a layer or the router produced on its own (tower-http's body limit, an
    /// extractor's rejection, ...), re-issued as a problem by [`ApiError::from_layer`].
    #[error("{status}: {detail}")]
    Layer { status: StatusCode, detail: String },
}

/// What a client may conclude about its money from an error answer (docs/contract.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charged {
    /// No charge exists or will be made under this key by this request; the key is free.
    No,
    /// This key may hold a payment that is (or will be) charged: retry with the same key.
    Unknown,
}

impl Charged {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Unknown => "unknown",
        }
    }
}

impl ApiError {
    /// What the client may conclude about its money; `None` for answers that are neither 429
    /// nor 5xx (a 4xx that says what to fix never touched the key).
    pub(crate) fn charged(&self) -> Option<Charged> {
        use ApiError::*;
        match self {
            // Refused before the key was claimed, or released after every attempt was
            // definitely not processed and the store confirmed the release.
            BreakerOpen { .. } | BulkheadFull { .. } | BankUnavailable { .. } => Some(Charged::No),
            // Refused at the edge before the key was looked at: this request did nothing, but
            // the key may already hold a payment from an earlier request, and the API cannot
            // say it is free without reading it.
            RateLimited { .. } | Overloaded { .. } => Some(Charged::Unknown),
            // The store could not be read or written (a claim may have committed), the lease
            // was lost, or the work failed in an unexpected way.
            StoreUnavailable(_) | OutcomeUnknown { .. } | Internal(_) => Some(Charged::Unknown),
            // A layer's own 5xx: nothing says what happened to the key.
            Layer { status, .. } if status.is_server_error() => Some(Charged::Unknown),
            _ => None,
        }
    }

    /// The stable `code` of this error's problem body.
    pub(crate) fn code(&self) -> String {
        self.problem().0.code
    }

    fn problem(&self) -> (Problem, Option<Duration>) {
        use ApiError::*;
        match self {
            Unauthenticated => (
                Problem::new(401, "unauthenticated", "Unauthenticated", "Send a valid API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."),
                None,
            ),
            Forbidden(detail) => (
                Problem::new(403, "forbidden", "Forbidden", *detail),
                None,
            ),
            IdempotencyKeyMissing => (
                Problem::new(400, "idempotency_key_missing", "Idempotency-Key required", "POST /v1/payments needs an Idempotency-Key header (1-255 visible ASCII characters); reuse it when you retry."),
                None,
            ),
            IdempotencyKeyInvalid(error) => (
                Problem::new(400, "idempotency_key_invalid", "Invalid Idempotency-Key", error.to_string()),
                None,
            ),
            Body(rejection) => (body_problem(rejection), None),
            Validation(error) => (
                Problem::new(422, error.code, "Invalid payment", error.detail.clone()).with("field", error.field),
                None,
            ),
            IdempotencyKeyReused => (
                Problem::new(422, "idempotency_key_reused", "Idempotency-Key reused", "This Idempotency-Key was already used with a different request body; use a new key for a new payment."),
                None,
            ),
            IdempotencyKeyInUse { retry_after } => (
                Problem::new(409, "idempotency_key_in_use", "Request in progress", "A request with this Idempotency-Key is still being processed; retry after a moment to get its outcome."),
                Some(*retry_after),
            ),
            BreakerOpen { retry_after } => (
                Problem::new(503, "breaker_open", "Bank temporarily unavailable", "The circuit breaker is open after repeated bank failures; the payment was not processed and the key is free. Retry later with the same Idempotency-Key."),
                Some(*retry_after),
            ),
            BulkheadFull { retry_after } => (
                Problem::new(503, "bulkhead_full", "Too many payments in progress", "Too many bank calls are in progress; the payment was not processed and the key is free. Retry later with the same Idempotency-Key."),
                Some(*retry_after),
            ),
            BankUnavailable { retry_after } => (
                Problem::new(503, "bank_unavailable", "Bank unavailable", "The bank definitely did not process the payment (every attempt was refused) and the key is free; retry later with the same Idempotency-Key."),
                Some(*retry_after),
            ),
            StoreUnavailable(_) => (
                Problem::new(503, "store_unavailable", "Service unavailable", "The payment store could not be read or written, so this key may already hold a payment that is or will be charged: its outcome is unknown. Retry later with the same Idempotency-Key, never a new one."),
                Some(Duration::from_secs(1)),
            ),
            OutcomeUnknown { retry_after } => (
                Problem::new(503, "outcome_unknown", "Outcome unknown", "The payment under this key could not be confirmed as not processed; it may be charged. Retry later with the same Idempotency-Key, never a new one, to get its outcome."),
                Some(*retry_after),
            ),
            PaymentNotFound => (
                Problem::new(404, "payment_not_found", "No such payment", "No payment with this id exists for your API key."),
                None,
            ),
            WebhookStoreUnavailable(_) => (
                Problem::new(503, "store_unavailable", "Service unavailable", "The store could not be read or written; nothing changed unless a retry shows otherwise. Retry later."),
                Some(Duration::from_secs(1)),
            ),
            WebhookEndpointNotFound => (
                Problem::new(404, "webhook_endpoint_not_found", "No such webhook endpoint", "No webhook endpoint with this id exists for your API key."),
                None,
            ),
            EventNotFound => (
                Problem::new(404, "event_not_found", "No such event", "No event with this id exists for your API key."),
                None,
            ),
            WebhookInvalid { code, detail } => (
                Problem::new(422, *code, "Invalid webhook endpoint request", detail.clone()),
                None,
            ),
            BankNotFound(name) => (
                Problem::new(404, "bank_not_found", "No such bank", format!("No bank is configured under the name {name:?}; /v1/status lists the banks (`banks[].name`).")),
                None,
            ),
            InvalidQuery(detail) => (
                Problem::new(400, "invalid_query", "Invalid query", detail.clone()),
                None,
            ),
            NotFound => (
                Problem::new(404, "not_found", "Not found", "No such resource."),
                None,
            ),
            MethodNotAllowed => (
                Problem::new(405, "method_not_allowed", "Method not allowed", "This route does not accept this HTTP method; see /openapi.json."),
                None,
            ),
            RateLimited { retry_after } => (
                Problem::new(429, "rate_limited", "Too many requests", "This API key is over its rate limit, so this request was refused before its Idempotency-Key was looked at: if the key was sent before, it may hold a payment. Retry after Retry-After seconds with the same Idempotency-Key, never a new one."),
                Some(*retry_after),
            ),
            Overloaded { retry_after } => (
                Problem::new(503, "overloaded", "Service overloaded", "Too many requests are in progress, so this one was shed before its Idempotency-Key was looked at: if the key was sent before, it may hold a payment. Retry after Retry-After seconds with the same Idempotency-Key, never a new one."),
                Some(*retry_after),
            ),
            HeadersTooLarge(detail) => (
                Problem::new(431, "headers_too_large", "Request headers too large", detail.clone()),
                None,
            ),
            RequestTimeout(limit) => (
                Problem::new(408, "request_timeout", "Request timeout", format!("The request was not completed within {} ms. A payment that had started is still finished and recorded: retry with the same Idempotency-Key to get its outcome.", limit.as_millis())),
                None,
            ),
            Internal(_) => (
                Problem::new(500, "internal_error", "Internal error", "Something went wrong on our side; it has been logged. A payment under this key may exist: retry with the same Idempotency-Key, never a new one."),
                None,
            ),
            InvalidPath(detail) => (
                Problem::new(400, "invalid_path", "Invalid path", detail.clone()),
                None,
            ),
            Layer { status, detail } => (layer_problem(*status, detail), None),
        }
    }

    /// The error for an answer that a layer, the router or an extractor gave on its own (not a
    /// problem body): the one place such answers get their stable `code`. `detail` is the
    /// layer's own text, used where it helps the client (a malformed request).
    pub(crate) fn from_layer(status: StatusCode, detail: &str) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            status if status.is_server_error() => Self::Internal(format!("{status}: {detail}")),
            status => Self::Layer {
                status,
                detail: detail.chars().take(300).collect(),
            },
        }
    }
}

/// The problem for a layer's own 4xx answer ([`ApiError::from_layer`]); codes are the same as
/// where our own code refuses the same thing (`body_too_large`, `unsupported_media_type`, ...).
fn layer_problem(status: StatusCode, detail: &str) -> Problem {
    let detail = if detail.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("Request refused")
            .to_owned()
    } else {
        detail.to_owned()
    };
    match status {
        StatusCode::BAD_REQUEST => {
            Problem::new(400, "malformed_request", "Malformed request", detail)
        }
        StatusCode::REQUEST_TIMEOUT => Problem::new(
            408,
            "request_timeout",
            "Request timeout",
            "The request was not completed in time.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            413,
            "body_too_large",
            "Body too large",
            format!(
                "The request body is larger than the limit of {} bytes.",
                crate::routes::MAX_BODY_BYTES
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            Problem::new(422, "invalid_body", "Invalid body", detail)
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Problem::new(
            431,
            "headers_too_large",
            "Request headers too large",
            detail,
        ),
        status => {
            let reason = status.canonical_reason().unwrap_or("Request refused");
            let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
            Problem::new(status.as_u16(), code, reason, detail)
        }
    }
}

fn body_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            400,
            "malformed_json",
            "Malformed JSON",
            rejection.body_text(),
        ),
        JsonRejection::JsonDataError(_) => {
            Problem::new(422, "invalid_body", "Invalid body", rejection.body_text())
        }
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                413,
                "body_too_large",
                "Body too large",
                "The request body is larger than the limit.",
            )
        }
        _ => Problem::new(400, "invalid_body", "Invalid body", rejection.body_text()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use ApiError::*;
        let (mut problem, retry_after) = self.problem();
        if let Some(charged) = self.charged() {
            problem = problem.with("charged", charged.as_str());
        }
        if let Some(retry_after) = retry_after {
            problem = problem.with("retry_after_seconds", retry_after_seconds(retry_after));
        }
        // A refusal that protects the service (breaker open, bulkhead full, shed) is routine
        // under an outage and counted in the metrics; its "request finished" line says enough.
        let refusal = matches!(
            self,
            BreakerOpen { .. } | BulkheadFull { .. } | Overloaded { .. }
        );
        if problem.status >= 500 && !refusal {
            tracing::warn!(error = %self, code = %problem.code, "request failed");
        } else {
            tracing::debug!(error = %self, code = %problem.code, "request rejected");
        }
        let mut response = problem.into_response();
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `Retry-After` is in whole seconds; never advertise 0 (clients would spin).
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}
