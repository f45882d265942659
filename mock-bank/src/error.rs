//! Every error a client of the bank can see, and the one place that maps them to
//! `application/problem+json` answers.
//!
//! Injected chaos errors are here too: to a client they must look exactly like real ones.

use axum::{
    extract::rejection::JsonRejection,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use payment_types::Problem;

/// The distinct error outcomes of the bank's endpoints.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("invalid body: {0}")]
    InvalidBody(String),
    /// The body is not `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than the bank accepts.
    #[error("the body is too large")]
    BodyTooLarge,
    /// No `Idempotency-Key` header.
    #[error("the Idempotency-Key header is required")]
    KeyMissing,
    /// `Idempotency-Key` differs from the body's `reference`.
    #[error("Idempotency-Key must equal the body's reference")]
    KeyMismatch,
    /// The body parsed but a field is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    /// The reference is known with a different amount, currency or source.
    #[error("reference {reference} was already used for a different charge")]
    ReferenceReused { reference: String },
    /// The first request for this reference is still being processed after the wait bound.
    #[error("a charge with this reference is still being processed")]
    InProgress,
    /// `GET /v1/charges/{reference}` for a reference the bank never committed.
    #[error("no charge with this reference")]
    ChargeNotFound,
    /// Too many charges in flight (`--max-in-flight`).
    #[error("too many charges in flight")]
    Busy,
    /// The in-memory ledger is full (`--max-charges`).
    #[error("the ledger is full")]
    LedgerFull,
    /// Missing or wrong admin token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// A chaos update that parses but makes no sense (rates out of range, unsorted scenario).
    #[error("invalid chaos update: {0}")]
    InvalidChaos(String),
    /// A query string that does not parse.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Chaos: 503, definitely not processed.
    #[error("injected 503")]
    InjectedUnavailable { retry_after_s: u32 },
    /// Chaos: 429, definitely not processed.
    #[error("injected 429")]
    InjectedRateLimited { retry_after_s: u32 },
    /// Chaos: 500; the charge may or may not have committed (the body never says which).
    #[error("injected 500")]
    InjectedServerError,
    /// No route at this path.
    #[error("no such route")]
    NotFound,
    /// The route does not take this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A path parameter that does not decode (bad percent-encoding, not UTF-8).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// An answer a layer or an extractor gave on its own, re-issued as a problem
    /// ([`ApiError::from_layer`]).
    #[error("{detail}")]
    Layer { status: StatusCode, detail: String },
}

impl ApiError {
    /// The error for a body the `Json` extractor refused.
    pub(crate) fn from_json(rejection: &JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::PAYLOAD_TOO_LARGE => Self::BodyTooLarge,
            _ => Self::InvalidBody(rejection.body_text()),
        }
    }

    /// The error for an answer that a layer, the router or an extractor gave on its own (not a
    /// problem body): the one place such answers get their stable `code`.
    pub(crate) fn from_layer(status: StatusCode, detail: &str) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::BodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            status => Self::Layer {
                status,
                detail: detail.chars().take(300).collect(),
            },
        }
    }

    /// The counter name of this outcome in `/v1/status`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidBody(_)
            | Self::UnsupportedMediaType
            | Self::BodyTooLarge
            | Self::KeyMissing
            | Self::KeyMismatch
            | Self::InvalidField { .. }
            | Self::InvalidQuery(_)
            | Self::InvalidPath(_)
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::Layer { .. } => "invalid",
            Self::ReferenceReused { .. } => "reference_reused",
            Self::InProgress => "in_progress",
            Self::ChargeNotFound => "not_found",
            Self::Busy => "busy",
            Self::LedgerFull => "ledger_full",
            Self::Unauthorized => "unauthorized",
            Self::InvalidChaos(_) => "invalid_chaos",
            Self::InjectedUnavailable { .. } => "injected_503",
            Self::InjectedRateLimited { .. } => "injected_429",
            Self::InjectedServerError => "injected_500",
        }
    }

    fn problem(&self) -> (Problem, Option<u32>) {
        let detail = self.to_string();
        match self {
            Self::InvalidBody(_) => (
                Problem::new(400, "invalid_body", "Invalid body", detail),
                None,
            ),
            Self::UnsupportedMediaType => (
                Problem::new(
                    415,
                    "unsupported_media_type",
                    "Unsupported media type",
                    detail,
                ),
                None,
            ),
            Self::BodyTooLarge => (
                Problem::new(413, "body_too_large", "Body too large", detail),
                None,
            ),
            Self::KeyMissing => (
                Problem::new(
                    400,
                    "idempotency_key_missing",
                    "Idempotency-Key missing",
                    "Send the charge's reference as its Idempotency-Key header.",
                ),
                None,
            ),
            Self::KeyMismatch => (
                Problem::new(
                    400,
                    "idempotency_key_mismatch",
                    "Idempotency-Key must equal reference",
                    "Send the charge's reference as its Idempotency-Key header.",
                ),
                None,
            ),
            Self::InvalidField { field, .. } => (
                Problem::new(422, "invalid_request", "Invalid request", detail)
                    .with("field", *field),
                None,
            ),
            Self::ReferenceReused { reference } => (
                Problem::new(409, "reference_reused", "Reference reused", detail)
                    .with("reference", reference.as_str()),
                None,
            ),
            Self::InProgress => (
                Problem::new(409, "charge_in_progress", "Charge in progress", detail)
                    .with("retry_after_seconds", 1),
                Some(1),
            ),
            Self::ChargeNotFound => (
                Problem::new(
                    404,
                    "charge_not_found",
                    "No such charge",
                    "The bank never received a charge with this reference.",
                ),
                None,
            ),
            Self::Busy => (
                Problem::new(503, "bank_busy", "Bank busy", detail).with("retry_after_seconds", 1),
                Some(1),
            ),
            Self::LedgerFull => (
                Problem::new(507, "ledger_full", "Ledger full", detail),
                None,
            ),
            Self::Unauthorized => (
                Problem::new(401, "unauthorized", "Unauthorized", detail),
                None,
            ),
            Self::InvalidChaos(_) => (
                Problem::new(422, "invalid_chaos", "Invalid chaos update", detail),
                None,
            ),
            Self::InvalidQuery(_) => (
                Problem::new(400, "invalid_query", "Invalid query", detail),
                None,
            ),
            Self::InjectedUnavailable { retry_after_s } => (
                Problem::new(
                    503,
                    "bank_unavailable",
                    "Bank unavailable",
                    "The bank is unavailable; nothing was processed. Retry later.",
                )
                .with("retry_after_seconds", *retry_after_s),
                Some(*retry_after_s),
            ),
            Self::InjectedRateLimited { retry_after_s } => (
                Problem::new(
                    429,
                    "rate_limited",
                    "Too many requests",
                    "The bank is rate limiting; nothing was processed. Retry later.",
                )
                .with("retry_after_seconds", *retry_after_s),
                Some(*retry_after_s),
            ),
            Self::InjectedServerError => (
                Problem::new(
                    500,
                    "internal_error",
                    "Internal error",
                    "The bank failed; the charge may or may not have been made.",
                ),
                None,
            ),
            Self::NotFound => (
                Problem::new(404, "not_found", "Not found", "No such resource."),
                None,
            ),
            Self::MethodNotAllowed => (
                Problem::new(
                    405,
                    "method_not_allowed",
                    "Method not allowed",
                    "This route does not accept this HTTP method; see /openapi.json.",
                ),
                None,
            ),
            Self::InvalidPath(_) => (
                Problem::new(400, "invalid_path", "Invalid path", detail),
                None,
            ),
            Self::Layer { status, .. } => {
                let (code, title) = match *status {
                    StatusCode::BAD_REQUEST => ("malformed_request", "Malformed request"),
                    StatusCode::REQUEST_TIMEOUT => ("request_timeout", "Request timeout"),
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                        ("headers_too_large", "Request headers too large")
                    }
                    status if status.is_server_error() => ("internal_error", "Internal error"),
                    _ => ("request_refused", "Request refused"),
                };
                (Problem::new(status.as_u16(), code, title, detail), None)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (problem, retry_after) = self.problem();
        let mut response = problem.into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_refusals_carry_retry_after() {
        for error in [
            ApiError::InjectedUnavailable { retry_after_s: 3 },
            ApiError::InjectedRateLimited { retry_after_s: 3 },
        ] {
            let response = error.into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        }
    }

    #[test]
    fn every_error_is_problem_json() {
        let response = ApiError::ChargeNotFound.into_response();
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
