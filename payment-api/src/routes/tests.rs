//! In-process router tests (tower `oneshot`, no socket for the API): authentication, parsing,
//! problem codes, and failing closed when the store is down.

use std::sync::Arc;

use async_trait::async_trait;
use axum::{body::Body, http::Request, Router};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use payment_store::{
    ClaimOutcome, KeyRecord, NewPayment, PaymentQuery, PaymentRecord, Settlement, Store,
    StoreError, StoreKind, StoredResponse,
};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use super::*;
use crate::{config::Config, test_doubles::temp_dir};

const KEY: &str = "sk_test_0123456789abcdef";
const BODY: &str = r#"{"amount":100,"currency":"TRY","source":"tok_visa"}"#;

fn config(bank_url: &str, dir: &std::path::Path) -> Config {
    Config::for_tests(
        bank_url.parse().unwrap(),
        &format!("acme:{KEY}"),
        dir.to_path_buf(),
    )
}

/// The router over a fresh store, and the store's directory (removed when dropped: keep it for
/// as long as the router is used).
async fn app(bank_url: &str) -> (Router, tempfile::TempDir) {
    let dir = temp_dir("api-routes");
    let config = config(bank_url, dir.path());
    let store = payment_store::open(None, dir.path()).await.unwrap();
    (router(test_state(&config, store)), dir)
}

/// Sends `request` through `app`; the status, the headers and the body as JSON (`Null` if not).
pub(super) async fn send(
    app: Router,
    request: Request<Body>,
) -> (u16, axum::http::HeaderMap, Value) {
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

#[tokio::test]
async fn a_request_without_a_valid_key_is_401_problem_json() {
    for auth in [None, Some("sk_wrong_0123456789abcdef")] {
        let (router, _dir) = app("http://127.0.0.1:9").await;
        let (status, headers, body) = send(router, post(auth, Some("k"), BODY)).await;
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
    let (router, _dir) = app("http://127.0.0.1:9").await;
    let (_, headers, _) = send(router, request).await;
    assert_eq!(headers["x-request-id"], "abc-123");
    let (router, _dir) = app("http://127.0.0.1:9").await;
    let (_, headers, _) = send(router, Request::get("/health").body(Body::empty()).unwrap()).await;
    let made = headers["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(made).is_ok(),
        "a made id is a uuid: {made}"
    );
    // A 404 (the router's fallback) and a layer's refusal carry one too.
    let (router, _dir) = app("http://127.0.0.1:9").await;
    let (status, headers, _) = send(
        router,
        Request::get("/nowhere")
            .header("x-request-id", "lost-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-request-id"], "lost-1");
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
        (
            Request::get("/v1/payments?limit=0")
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
            400,
            "invalid_query",
        ),
        (
            Request::get(format!("/v1/payments/{}", Uuid::new_v4()))
                .header("authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
            404,
            "payment_not_found",
        ),
    ];
    for (request, want_status, want_code) in cases {
        let (router, _dir) = app("http://127.0.0.1:9").await;
        let (status, headers, body) = send(router, request).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (want_status, Some(want_code)),
            "{body}"
        );
        assert_eq!(headers["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn a_payment_against_an_in_process_bank_is_201_and_replays() {
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let bank_url = format!("http://{}", bank.local_addr());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bank.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let (app, _dir) = app(&bank_url).await;
    let (status, headers, body) = send(app.clone(), post(Some(KEY), Some("order-1"), BODY)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(headers["idempotent-replayed"], "false");
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .starts_with("/v1/payments/"));
    let (status, headers, again) = send(app, post(Some(KEY), Some("order-1"), BODY)).await;
    assert_eq!((status, &again), (201, &body));
    assert_eq!(headers["idempotent-replayed"], "true");
}

#[tokio::test]
async fn an_unreachable_bank_is_503_with_retry_after_and_frees_the_key() {
    let (router, _dir) = app("http://127.0.0.1:9").await;
    let (status, headers, body) = send(router, post(Some(KEY), Some("k"), BODY)).await;
    assert_eq!(status, 503, "{body}");
    assert!(["bank_unavailable", "breaker_open"].contains(&body["code"].as_str().unwrap()));
    assert!(headers.contains_key("retry-after"));
}

/// A store that is down: every call fails.
#[derive(Debug)]
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Config("the test store is down".into()))
}

#[async_trait]
impl Store for DownStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }
    async fn ping(&self) -> Result<(), StoreError> {
        down()
    }
    async fn claim(&self, _: &NewPayment) -> Result<ClaimOutcome, StoreError> {
        down()
    }
    async fn find_key(&self, _: &str, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        down()
    }
    async fn acquire_lease(
        &self,
        _: Uuid,
        _: &str,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        down()
    }
    async fn settle(
        &self,
        _: Uuid,
        _: &Settlement,
        _: u32,
        _: &StoredResponse,
        _: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        down()
    }
    async fn mark_pending(
        &self,
        _: Uuid,
        _: &str,
        _: u32,
        _: Option<DateTime<Utc>>,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn release(&self, _: Uuid, _: &str, _: DateTime<Utc>) -> Result<bool, StoreError> {
        down()
    }
    async fn get_payment(
        &self,
        _: Option<&str>,
        _: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        down()
    }
    async fn list_payments(&self, _: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        down()
    }
    async fn due_for_reconcile(
        &self,
        _: DateTime<Utc>,
        _: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        down()
    }
    async fn reschedule(
        &self,
        _: Uuid,
        _: &str,
        _: Option<DateTime<Utc>>,
        _: u32,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        down()
    }
    async fn reap_keys(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        down()
    }
    async fn pending_count(&self) -> Result<u64, StoreError> {
        down()
    }
}

#[tokio::test]
async fn an_unreachable_store_fails_closed_with_503_and_an_opaque_body() {
    let dir = std::env::temp_dir();
    let app = router(test_state(
        &config("http://127.0.0.1:9", &dir),
        Arc::new(DownStore),
    ));
    let (status, headers, body) = send(app.clone(), post(Some(KEY), Some("k"), BODY)).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "store_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(
        !body.to_string().contains("test store is down"),
        "5xx bodies never reveal internals: {body}"
    );
    let (status, _, _) = send(app, Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 503, "not ready while the store is down");
}

#[tokio::test]
async fn ready_is_503_when_the_store_cannot_write_or_does_not_answer_in_time() {
    use crate::test_doubles::{Fault, FaultyStore, Op};
    let dir = temp_dir("api-ready");
    let inner = payment_store::open(None, dir.path()).await.unwrap();
    let store = Arc::new(FaultyStore::new(inner));
    let app = router(test_state(
        &config("http://127.0.0.1:1", dir.path()),
        store.clone(),
    ));
    let ready = || Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(send(app.clone(), ready()).await.0, 200);
    // A heartbeat write that fails (disk full, read-only database).
    store.fail_always(Op::Ping, Fault::Fail);
    let (status, headers, body) = send(app.clone(), ready()).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], "store cannot be read or written");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(headers["content-type"], "application/problem+json");
    // A store that never answers (a lock held past the busy timeout): the probe still gets
    // its answer, within the readiness timeout.
    store.fail_always(Op::Ping, Fault::Hang);
    let (status, _, body) = send(app.clone(), ready()).await;
    assert_eq!(status, 503);
    assert_eq!(body["reason"], "store did not answer in time");
    store.heal();
    assert_eq!(send(app, ready()).await.0, 200);
}
