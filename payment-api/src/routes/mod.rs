//! The API's HTTP surface: the router, its layers and its shared state.

mod health;
mod payments;

use std::sync::Arc;

use axum::{
    http::{header, HeaderName},
    routing::{get, post},
    Router,
};
use tower::ServiceBuilder;
use tower_http::{
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

use crate::{auth::ApiKeys, bank::BankClient, error::ApiError};

/// Largest accepted request body; a payment is a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Configured API keys (digests) and their tenants.
    pub(crate) keys: ApiKeys,
    /// The bank client with its warm connection pool.
    pub(crate) bank: BankClient,
}

/// The router with every layer; pure, so tests drive it with `oneshot` and no socket.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static(payment_types::headers::REQUEST_ID);
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            HeaderName::from_static(payment_types::headers::API_KEY),
        ]))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES));
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/payments", post(payments::create))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(layers)
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    const KEY: &str = "sk_test_0123456789abcdef";

    fn app(bank_url: &str) -> Router {
        let config = Config::for_tests(
            bank_url.parse().unwrap(),
            &format!("acme:{KEY}"),
            std::env::temp_dir(),
        );
        let state = AppState {
            keys: ApiKeys::load(&config).unwrap(),
            bank: BankClient::new(&config).unwrap(),
        };
        router(Arc::new(state))
    }

    async fn send(app: Router, request: Request<Body>) -> (u16, axum::http::HeaderMap, Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn post(auth: Option<&str>, key: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::post("/v1/payments").header("content-type", "application/json");
        if let Some(auth) = auth {
            builder = builder.header("authorization", format!("Bearer {auth}"));
        }
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    const BODY: &str = r#"{"amount":100,"currency":"TRY","source":"tok_visa"}"#;

    #[tokio::test]
    async fn a_request_without_a_valid_key_is_401_problem_json() {
        for auth in [None, Some("sk_wrong_0123456789abcdef")] {
            let (status, headers, body) =
                send(app("http://127.0.0.1:9"), post(auth, Some("k"), BODY)).await;
            assert_eq!(status, 401);
            assert_eq!(headers["content-type"], "application/problem+json");
            assert_eq!(body["code"], "unauthenticated");
        }
    }

    #[tokio::test]
    async fn every_answer_carries_a_request_id_taken_from_the_request_or_made() {
        let request = Request::get("/health")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .unwrap();
        let (_, headers, _) = send(app("http://127.0.0.1:9"), request).await;
        assert_eq!(headers["x-request-id"], "abc-123");
        let (_, headers, _) = send(
            app("http://127.0.0.1:9"),
            Request::get("/health").body(Body::empty()).unwrap(),
        )
        .await;
        assert!(!headers["x-request-id"].is_empty());
    }

    #[tokio::test]
    async fn key_and_body_problems_have_stable_codes() {
        let cases = [
            (post(Some(KEY), None, BODY), 400, "idempotency_key_missing"),
            (
                post(Some(KEY), Some("a b"), BODY),
                400,
                "idempotency_key_invalid",
            ),
            (
                post(Some(KEY), Some("k"), "{not json"),
                400,
                "malformed_json",
            ),
            (
                post(Some(KEY), Some("k"), r#"{"amount":"1"}"#),
                422,
                "invalid_body",
            ),
            (
                post(
                    Some(KEY),
                    Some("k"),
                    r#"{"amount":0,"currency":"TRY","source":"tok_visa"}"#,
                ),
                422,
                "invalid_amount",
            ),
            (
                Request::post("/v1/payments")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("idempotency-key", "k")
                    .body(Body::from(BODY))
                    .unwrap(),
                415,
                "unsupported_media_type",
            ),
            (
                post(Some(KEY), Some("k"), &"x".repeat(MAX_BODY_BYTES + 1)),
                413,
                "body_too_large",
            ),
            (
                Request::get("/nope").body(Body::empty()).unwrap(),
                404,
                "not_found",
            ),
        ];
        for (request, want_status, want_code) in cases {
            let (status, headers, body) = send(app("http://127.0.0.1:9"), request).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (want_status, Some(want_code)),
                "{body}"
            );
            assert_eq!(headers["content-type"], "application/problem+json");
        }
    }

    #[tokio::test]
    async fn a_payment_against_an_in_process_bank_is_201() {
        let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
            .await
            .unwrap();
        let bank_url = format!("http://{}", bank.local_addr());
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bank.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let (status, headers, body) =
            send(app(&bank_url), post(Some(KEY), Some("order-1"), BODY)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "succeeded");
        assert_eq!(headers["idempotent-replayed"], "false");
        assert!(headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/payments/"));
    }

    #[tokio::test]
    async fn an_unreachable_bank_is_503_with_retry_after() {
        let (status, headers, body) =
            send(app("http://127.0.0.1:9"), post(Some(KEY), Some("k"), BODY)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "bank_unavailable");
        assert!(headers.contains_key("retry-after"));
    }
}
