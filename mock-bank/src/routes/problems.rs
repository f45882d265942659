//! The one place where answers that a layer, the router or an extractor gave on its own become
//! `application/problem+json` with a stable `code`, as every other answer of the bank.
//!
//! A body announced (`Content-Length`) over the limit is refused here before it is read. What
//! can answer without our handlers: axum's body limit and extractor rejections not taken
//! as `Result`, the router's 404 and 405 (also given problem bodies by the fallbacks), Swagger
//! UI's own 404s, and any 5xx a layer makes. Every error answer that is not already a problem is
//! re-issued here through [`ApiError::from_layer`] (the re-issuing is
//! `service_runtime::problems`), keeping its status, headers (`Allow`, ...) and extensions.
//! The "no answer" of a severed connection ([`super::NoAnswer`]) is left alone:
//! it is never written.
//!
//! Not covered, because no request reaches any of our code: hyper's own refusals of bytes
//! that are not HTTP/1.1 (400/431 with an empty body, then the connection is closed).

use axum::{
    extract::Request,
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// The middleware: error answers that are not problems become problems.
pub(crate) async fn problem_answers(request: Request, next: Next) -> Response {
    // A body announced over the limit is refused before it is read (the extractors would
    // wait for bytes the client may never send).
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > super::BODY_LIMIT as u64) {
        return ApiError::BodyTooLarge.into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<super::NoAnswer>().is_some() {
        return response;
    }
    service_runtime::problems::reissue_as_problem(response, |status, detail| {
        ApiError::from_layer(status, detail).into_response()
    })
    .await
}
