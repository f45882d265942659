//! Every way a request can fail, and the one place that maps each to an HTTP answer.
//!
//! Variants are the distinct outcomes a client can act on; each has a stable `code`. 4xx bodies
//! say what to fix; 5xx bodies are opaque and the cause goes to the log instead.

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
    #[error("the Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    #[error(transparent)]
    IdempotencyKeyInvalid(#[from] IdempotencyKeyError),
    #[error(transparent)]
    Body(#[from] JsonRejection),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("the bank did not process the payment")]
    BankUnavailable { retry_after: Duration },
    #[error("the bank's answer was lost: {reason}")]
    BankOutcomeUnknown { reason: String },
    #[error("the bank refused our request with {status} {code}")]
    BankRefused { status: u16, code: String },
    #[error("no such route")]
    NotFound,
}

impl ApiError {
    fn problem(&self) -> (Problem, Option<Duration>) {
        use ApiError::*;
        match self {
            Unauthenticated => (
                Problem::new(401, "unauthenticated", "Unauthenticated", "Send a valid API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`."),
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
            BankUnavailable { retry_after } => (
                Problem::new(503, "bank_unavailable", "Bank unavailable", "The bank did not process the payment; retry later with the same Idempotency-Key.")
                    .with("retry_after_seconds", retry_after.as_secs()),
                Some(*retry_after),
            ),
            BankOutcomeUnknown { .. } => (
                Problem::new(504, "bank_outcome_unknown", "Bank outcome unknown", "The bank's answer did not arrive in time."),
                None,
            ),
            BankRefused { .. } => (
                Problem::new(502, "bank_error", "Bank error", "The bank refused the request."),
                None,
            ),
            NotFound => (
                Problem::new(404, "not_found", "Not found", "No such resource."),
                None,
            ),
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
        let (problem, retry_after) = self.problem();
        if problem.status >= 500 {
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
