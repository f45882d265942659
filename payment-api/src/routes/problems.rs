//! The one place where answers that a layer, the router or an extractor gave on its own become
//! `application/problem+json` with a stable `code` (docs/contract.md §2: every error is a problem).
//!
//! What can answer without our handlers: tower-http's `RequestBodyLimitLayer` (413 `text/plain`
//! "length limit exceeded" as soon as `Content-Length` is over the limit), axum's extractor
//! rejections not taken as `Result` (400 for a path that does not decode, ...), the router's
//! 404 and 405 (also given problem bodies by the fallbacks), Swagger UI's own 404s, and any
//! 5xx a layer makes. Every error answer that is not already a problem is re-issued here through
//! [`ApiError::from_layer`] (the re-issuing is `service_runtime::problems`), keeping its status
//! and headers (`Allow`, `Connection`, ...).
//!
//! Not covered, because no request reaches any of our code: hyper's own refusals of bytes
//! that are not HTTP/1.1 (400/431 with an empty body, then the connection is closed).

use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// `response`, or the problem it becomes if it is an error answer that is not a problem (run by
/// the layer in front of every route, `edge::front`).
pub(crate) async fn as_problem(response: Response) -> Response {
    service_runtime::problems::reissue_as_problem(response, |status, detail| {
        ApiError::from_layer(status, detail).into_response()
    })
    .await
}
