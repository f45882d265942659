//! The edge limits through the real router: the per-key rate limit (429), header limits (431),
//! load shedding (503 `overloaded`) and the request timeout (408). Every refusal is
//! problem+json, happens before any work, and leaves the store untouched.

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use axum::{body::Body, http::Request, Router};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::{config::Config, test_doubles::temp_dir};

const ACME: &str = "sk_test_acme_0123456789abcdef";
const BETA: &str = "sk_test_beta_0123456789abcdef";
const BODY: &str = r#"{"amount":100,"currency":"TRY","source":"tok_visa"}"#;

struct Api {
    router: Router,
    state: Arc<AppState>,
    /// The store's directory, removed when the `Api` is dropped (after the router and the
    /// state: fields drop in order).
    _dir: tempfile::TempDir,
}

async fn api(edit: impl FnOnce(&mut Config)) -> Api {
    // Nothing listens on port 9: no test here may reach the bank.
    api_with_bank("http://127.0.0.1:9", edit).await
}

async fn api_with_bank(bank_url: &str, edit: impl FnOnce(&mut Config)) -> Api {
    let dir = temp_dir("api-edge");
    let mut config = Config::for_tests(
        bank_url.parse().unwrap(),
        &format!("acme:{ACME},beta:{BETA}"),
        dir.path().to_path_buf(),
    );
    edit(&mut config);
    let store = payment_store::open(None, dir.path()).await.unwrap();
    let state = test_state(&config, store);
    Api {
        router: router(state.clone()),
        state,
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, request: Request<Body>) -> (u16, axum::http::HeaderMap, Value) {
        super::tests::send(self.router.clone(), request).await
    }

    async fn key_exists(&self, tenant: &str, key: &str) -> bool {
        self.state
            .payments
            .store
            .find_key(tenant, key)
            .await
            .unwrap()
            .is_some()
    }
}

fn list(api_key: &str) -> Request<Body> {
    Request::get("/v1/payments")
        .header("authorization", format!("Bearer {api_key}"))
        .body(Body::empty())
        .unwrap()
}

fn post(api_key: &str, idempotency_key: &str, body: Body) -> Request<Body> {
    Request::post("/v1/payments")
        .header("authorization", format!("Bearer {api_key}"))
        .header("content-type", "application/json")
        .header("idempotency-key", idempotency_key)
        .body(body)
        .unwrap()
}

/// A body that never arrives: the client opened the request and stalls (slowloris).
fn stalled_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>())
}

fn assert_problem(headers: &axum::http::HeaderMap, body: &Value, status: u16, code: &str) {
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_while_another_key_is_served() {
    let api = api(|c| {
        c.edge.rate_limit = 1;
        c.edge.rate_limit_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(api.send(list(ACME)).await.0, 200);
    }
    let (status, headers, body) = api.send(list(ACME)).await;
    assert_eq!(status, 429);
    assert_problem(&headers, &body, 429, "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(headers.contains_key("x-request-id"));

    // A payment refused by the limit never reaches the store: its key is not consumed.
    let (status, _, _) = api.send(post(ACME, "rl-key-1", Body::from(BODY))).await;
    assert_eq!(status, 429);
    assert!(!api.key_exists("acme", "rl-key-1").await);

    // The other key has its own bucket.
    assert_eq!(api.send(list(BETA)).await.0, 200);
    let counters = api.state.payments.counters.snapshot();
    assert_eq!(counters.rate_limited, 2);
}

#[tokio::test]
async fn an_unknown_key_is_401_and_never_spends_a_real_keys_budget() {
    let api = api(|c| {
        c.edge.rate_limit = 1;
        c.edge.rate_limit_burst = 1;
    })
    .await;
    for _ in 0..5 {
        assert_eq!(api.send(list("sk_wrong_0123456789abcdef")).await.0, 401);
    }
    assert_eq!(api.send(list(ACME)).await.0, 200);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_problem_json() {
    let api = api(|c| {
        c.edge.max_headers = 20;
        c.edge.max_header_bytes = 2048;
    })
    .await;
    let mut request = list(ACME);
    for i in 0..20 {
        request.headers_mut().insert(
            axum::http::HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
            "1".parse().unwrap(),
        );
    }
    let (status, headers, body) = api.send(request).await;
    assert_eq!(status, 431);
    assert_problem(&headers, &body, 431, "headers_too_large");

    let mut request = list(ACME);
    request
        .headers_mut()
        .insert("x-big", "a".repeat(3000).parse().unwrap());
    let (status, headers, body) = api.send(request).await;
    assert_eq!(status, 431);
    assert_problem(&headers, &body, 431, "headers_too_large");

    // Within both limits: served.
    let mut request = list(ACME);
    for i in 0..10 {
        request.headers_mut().insert(
            axum::http::HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
            "a".repeat(100).parse().unwrap(),
        );
    }
    assert_eq!(api.send(request).await.0, 200);
}

/// Waits (bounded) until `n` requests hold in-flight slots.
async fn until_in_flight(api: &Api, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while api.state.edge.in_flight() != n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("in-flight never reached {n}"));
}

#[tokio::test]
async fn over_the_in_flight_limit_requests_are_shed_with_503_and_probes_still_answer() {
    let api = api(|c| c.edge.max_in_flight = 2).await;
    let stalled: Vec<_> = (0..2)
        .map(|i| {
            let request = post(ACME, &format!("stalled-{i}"), stalled_body());
            tokio::spawn(api.router.clone().oneshot(request))
        })
        .collect();
    until_in_flight(&api, 2).await;

    let (status, headers, body) = api.send(post(ACME, "shed-1", Body::from(BODY))).await;
    assert_eq!(status, 503);
    assert_problem(&headers, &body, 503, "overloaded");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        !api.key_exists("acme", "shed-1").await,
        "a shed payment never claims its key"
    );

    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(api.send(health).await.0, 200, "probes are never shed");
    let metrics = Request::get("/metrics").body(Body::empty()).unwrap();
    assert_eq!(api.send(metrics).await.0, 200);

    for task in stalled {
        task.abort();
    }
    until_in_flight(&api, 0).await;
    assert_eq!(api.send(list(ACME)).await.0, 200, "slots come back");
    assert_eq!(api.state.payments.counters.snapshot().shed, 1);
}

#[tokio::test]
async fn a_stalled_upload_is_cut_by_the_request_timeout_with_408_and_no_key_claimed() {
    let api = api(|c| c.edge.request_timeout_ms = 200).await;
    let (status, headers, body) = api.send(post(ACME, "slow-1", stalled_body())).await;
    assert_eq!(status, 408);
    assert_problem(&headers, &body, 408, "request_timeout");
    assert_eq!(headers["connection"], "close");
    assert!(!api.key_exists("acme", "slow-1").await);
    assert_eq!(api.state.payments.counters.snapshot().timed_out, 1);
    assert_eq!(api.state.edge.in_flight(), 0, "the slot is released");
}

/// A bank whose every charge takes `latency_ms`; stops when the returned sender drops.
async fn slow_bank(latency_ms: u64) -> (String, tokio::sync::oneshot::Sender<()>) {
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let url = format!("http://{}", bank.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bank.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let response = reqwest::Client::new()
        .put(format!("{url}/v1/chaos"))
        .json(&serde_json::json!({"latency": {"base_ms": latency_ms}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    (url, stop)
}

#[tokio::test]
async fn a_payment_cut_by_the_request_timeout_is_still_finished_and_recorded() {
    // (The binary refuses a request timeout under the payment deadline; the router does not,
    // which lets this test cut a payment mid-charge.)
    let (bank_url, _bank) = slow_bank(400).await;
    let api = api_with_bank(&bank_url, |c| c.edge.request_timeout_ms = 100).await;
    let (status, _, body) = api.send(post(ACME, "cut-1", Body::from(BODY))).await;
    assert_eq!(status, 408, "{body}");

    // The payment went on without its request: its key answers the recorded outcome well
    // before its 15 s lease could have expired.
    let replay = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = api
                .router
                .clone()
                .oneshot(post(ACME, "cut-1", Body::from(BODY)));
            let response = response.await.unwrap();
            if response.status() == 201 {
                return response;
            }
            assert_eq!(response.status(), 409, "in flight until the bank answers");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the payment was recorded");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}
