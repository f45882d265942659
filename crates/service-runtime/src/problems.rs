//! Error answers that a layer, the router or an extractor gave on its own, re-issued as
//! `application/problem+json` (every error a service answers is a problem): the part every
//! service shares. Each service supplies its own mapping from a status and the layer's text to
//! its problem, and decides which answers to leave alone.

use axum::{
    body::Body,
    http::{header, HeaderValue, StatusCode},
    response::Response,
};

/// How much of a layer's own body is read, for the problem's `detail`.
const LAYER_BODY_BYTES: usize = 1024;

/// `response` itself unless it is a 4xx or 5xx whose body is not a problem; else the problem
/// `problem(status, layer's body text)` makes, keeping the original's headers (`Allow`,
/// `Connection`, ...) and extensions under the problem's status, content type and body.
pub async fn reissue_as_problem(
    response: Response,
    problem: impl FnOnce(StatusCode, &str) -> Response,
) -> Response {
    if !is_foreign_error(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, LAYER_BODY_BYTES)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .unwrap_or_default();
    let (problem_parts, body) = problem(parts.status, detail.trim()).into_parts();
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

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    /// A stand-in for a service's mapping: a problem-typed 400 whatever the layer said.
    fn to_problem(status: StatusCode, detail: &str) -> Response {
        let mut response = (StatusCode::BAD_REQUEST, format!("{status}|{detail}")).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(payment_types::headers::PROBLEM_JSON),
        );
        response
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_layer_error_becomes_the_problem_keeping_its_other_headers() {
        let mut layer = (StatusCode::METHOD_NOT_ALLOWED, " not allowed ").into_response();
        layer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        let answer = reissue_as_problem(layer, to_problem).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers()[header::ALLOW], "GET");
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            payment_types::headers::PROBLEM_JSON
        );
        assert_eq!(text(answer).await, "405 Method Not Allowed|not allowed");
    }

    #[tokio::test]
    async fn successes_and_problems_are_left_alone() {
        let ok = reissue_as_problem("fine".into_response(), to_problem).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(text(ok).await, "fine");
        let problem = to_problem(StatusCode::NOT_FOUND, "own");
        let answer = reissue_as_problem(problem, |_, _| unreachable!()).await;
        assert_eq!(text(answer).await, "404 Not Found|own");
    }
}
