//! `bench serve proxy`: a minimal proxy. `POST /v1/payments` forwards the request body (and
//! its `Idempotency-Key`) as is to the stub's `POST /v1/charges` over a pooled keep-alive
//! HTTP/1.1 client, and answers the stub's JSON with 201 (502 if the stub did not answer 2xx).
//!
//! This is **the ceiling** of the payment API (ratio 1.00): the same two hops a payment takes
//! (client → server → bank and back), through the same HTTP stack (axum/hyper, tokio,
//! mimalloc), with nothing else: no parsing, no store, no logic. Whatever the API does on top
//! of forwarding shows as its distance below this.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full};

use crate::serve::{http_client, HttpClient};

struct Proxy {
    client: HttpClient,
    charges: Uri,
}

pub(crate) fn router(charges: Uri) -> Router {
    let state = Arc::new(Proxy {
        client: http_client(),
        charges,
    });
    Router::new()
        .route("/v1/payments", post(forward))
        .with_state(state)
}

async fn forward(State(proxy): State<Arc<Proxy>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request =
        Request::post(proxy.charges.clone()).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = headers.get("idempotency-key") {
        request = request.header("idempotency-key", key);
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(response) = proxy.client.request(request).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = response.status();
    let Ok(body) = response.into_body().collect().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = if status.is_success() {
        StatusCode::CREATED
    } else {
        StatusCode::BAD_GATEWAY
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_bytes(),
    )
        .into_response()
}
