//! RFC 9457 problem details: the one error body every service answers with.
//!
//! `code` is the stable, machine-readable part (clients branch on it); `detail` is for humans and
//! may change. Extra members (for example a bank's `decline_code`) are flattened into the body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem type; we use `about:blank`-style relative references per code.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type (stable per `code`).
    pub title: String,
    /// The HTTP status code, repeated in the body for clients that lose the status line.
    pub status: u16,
    /// A human explanation of this occurrence.
    pub detail: String,
    /// The stable code clients branch on, e.g. `idempotency_key_missing`.
    pub code: String,
    /// Extra members specific to the problem (e.g. `decline_code`, `retry_after_seconds`).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with the given status, stable code, title and detail.
    pub fn new(
        status: u16,
        code: impl Into<String>,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let code = code.into();
        Self {
            type_uri: format!("/problems/{}", code.replace('_', "-")),
            title: title.into(),
            status,
            detail: detail.into(),
            code,
            extensions: Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }
}

#[cfg(feature = "axum")]
mod axum_impl {
    use super::Problem;
    use axum::response::{IntoResponse, Response};
    use http::{header, HeaderValue, StatusCode};

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            let status =
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // Serialising a struct of strings and a JSON map cannot fail.
            let body = serde_json::to_vec(&self).unwrap_or_default();
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::headers::PROBLEM_JSON),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_rfc9457_member_names_and_flattened_extensions() {
        let p = Problem::new(
            402,
            "card_declined",
            "Card declined",
            "The card was declined.",
        )
        .with("decline_code", "insufficient_funds");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "/problems/card-declined");
        assert_eq!(v["status"], 402);
        assert_eq!(v["code"], "card_declined");
        assert_eq!(v["decline_code"], "insufficient_funds");
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
