//! The one place where answers that a layer, the router or an extractor gave on its own become
//! `application/problem+json` with a stable `code` (docs/contract.md §2: every error is a problem).
//!
//! What can answer without our handlers: tower-http's `RequestBodyLimitLayer` (413 `text/plain`
//! "length limit exceeded" as soon as `Content-Length` is over the limit), axum's extractor
//! rejections not taken as `Result` (400 for a path that does not decode, ...), the router's
//! 404 and 405 (also given problem bodies by the fallbacks), Swagger UI's own 404s, and any
//! 5xx a layer makes. Every error answer that is not already a problem is re-issued here through
//! [`ApiError::from_layer`], keeping its status and headers (`Allow`, `Connection`, ...).
//!
//! Not covered, because no request reaches any of our code: hyper's own refusals of bytes
//! that are not HTTP/1.1 (400/431 with an empty body, then the connection is closed).

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// How much of a layer's own body is read, for the problem's `detail`.
const LAYER_BODY_BYTES: usize = 1024;

/// The middleware: error answers that are not problems become problems.
pub(crate) async fn problem_answers(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !is_foreign_error(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, LAYER_BODY_BYTES)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .unwrap_or_default();
    let problem = ApiError::from_layer(parts.status, detail.trim()).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.status = problem_parts.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// A 4xx or 5xx whose body is not `application/problem+json`.
fn is_foreign_error(response: &Response<Body>) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let problem = HeaderValue::from_static(payment_types::headers::PROBLEM_JSON);
    response.headers().get(header::CONTENT_TYPE) != Some(&problem)
}
