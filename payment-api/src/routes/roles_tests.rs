//! In-process tests of roles (docs/security.md, "Who may call what"): two tenant keys and one
//! operator key against the router. The same checks run over real processes in
//! `tests/tests/roles.rs`.

use axum::{body::Body, http::Request, Router};
use serde_json::Value;

use super::{tests::send, *};
use crate::{config::Config, test_doubles::temp_dir};

const ACME: &str = "sk_test_acme_0123456789";
const BETA: &str = "sk_test_beta_0123456789";
const OPS: &str = "sk_test_ops_0123456789";
const BODY: &str = r#"{"amount":100,"currency":"TRY","source":"tok_visa"}"#;

/// The router, its state and the store's directory (removed when dropped: keep it while the
/// router is used).
async fn app() -> (Router, Arc<AppState>, tempfile::TempDir) {
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let bank_url = format!("http://{}", bank.local_addr());
    tokio::spawn(bank.run_until_stopped(std::future::pending()));
    let dir = temp_dir("api-roles");
    let mut config = Config::for_tests(
        bank_url.parse().unwrap(),
        &format!("acme:{ACME},beta:{BETA}"),
        dir.path().to_path_buf(),
    );
    config.operator_keys = Some(secrecy::SecretString::from(format!("alice:{OPS}")));
    let store = payment_store::open(None, dir.path()).await.unwrap();
    let state = test_state(&config, store);
    (router(state.clone()), state, dir)
}

fn request(method: &str, uri: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(Body::empty()).unwrap()
}

fn pay(key: &str, idempotency_key: &str) -> Request<Body> {
    Request::post("/v1/payments")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", idempotency_key)
        .body(Body::from(BODY))
        .unwrap()
}

const OPERATOR_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/status"),
    ("GET", "/v1/logs"),
    ("POST", "/v1/breaker/force-open"),
    ("POST", "/v1/breaker/force-closed"),
    ("POST", "/v1/breaker/disable"),
    ("POST", "/v1/breaker/metrics-only"),
    ("POST", "/v1/breaker/reset"),
];

#[tokio::test]
async fn tenant_keys_are_forbidden_on_the_operator_surface_and_change_nothing() {
    let (app, state, _dir) = app().await;
    let breaker = state.payments.bank().pipeline().breaker();
    let before = breaker.history().len();
    for (method, uri) in OPERATOR_ROUTES {
        for key in [ACME, BETA] {
            let (status, headers, body) = send(app.clone(), request(method, uri, Some(key))).await;
            assert_eq!(status, 403, "{method} {uri}: {body}");
            assert_eq!(body["code"], "forbidden", "{method} {uri}");
            assert_eq!(headers["content-type"], "application/problem+json");
        }
        let (status, _, body) = send(app.clone(), request(method, uri, None)).await;
        assert_eq!(status, 401, "{method} {uri} without a key: {body}");
        assert_eq!(body["code"], "unauthenticated");
    }
    assert_eq!(
        breaker.history().len(),
        before,
        "a refused action changed the breaker"
    );
    assert_eq!(breaker.state(), resilience::breaker::State::Closed);
}

#[tokio::test]
async fn the_operator_key_works_on_every_operator_route_and_is_named_in_the_history() {
    let (app, state, _dir) = app().await;
    for (method, uri) in OPERATOR_ROUTES {
        let (status, _, body) = send(app.clone(), request(method, uri, Some(OPS))).await;
        assert_eq!(status, 200, "{method} {uri}: {body}");
    }
    let (_, _, status) = send(app.clone(), request("GET", "/v1/status", Some(OPS))).await;
    let transitions = status["transitions"].as_array().unwrap();
    let operator_actions: Vec<&Value> = transitions
        .iter()
        .filter(|t| t["reason"]["kind"] == "operator")
        .collect();
    // force-open, force-closed (disable), disable again (no change), metrics-only, reset.
    assert_eq!(operator_actions.len(), 4, "{transitions:?}");
    for t in operator_actions {
        assert_eq!(t["reason"]["actor"], "alice", "{t}");
    }
    assert_eq!(
        state.payments.bank().pipeline().breaker().state(),
        resilience::breaker::State::Closed
    );
    let text = status.to_string();
    for key in [ACME, BETA, OPS] {
        assert!(!text.contains(key), "a key in /v1/status");
    }
}

#[tokio::test]
async fn an_operator_key_reads_every_tenant_and_creates_nothing_while_tenants_see_only_their_own() {
    let (app, _, _dir) = app().await;
    let (status, _, acme) = send(app.clone(), pay(ACME, "order-1")).await;
    assert_eq!(status, 201, "{acme}");
    let (status, _, beta) = send(app.clone(), pay(BETA, "order-1")).await;
    assert_eq!(status, 201, "{beta}");
    let acme_id = acme["id"].as_str().unwrap();
    let beta_id = beta["id"].as_str().unwrap();

    // An operator key creates no payment, and nothing is recorded.
    let (status, _, body) = send(app.clone(), pay(OPS, "order-2")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");

    // Tenants: their own payment, never the other's.
    let get = |key, id: &str| request("GET", &format!("/v1/payments/{id}"), Some(key));
    assert_eq!(send(app.clone(), get(ACME, acme_id)).await.0, 200);
    assert_eq!(send(app.clone(), get(ACME, beta_id)).await.0, 404);
    assert_eq!(send(app.clone(), get(BETA, acme_id)).await.0, 404);
    let (_, _, own) = send(app.clone(), get(ACME, acme_id)).await;
    assert!(own.get("tenant").is_none(), "{own}");
    let list = |key, query: &str| request("GET", &format!("/v1/payments{query}"), Some(key));
    let (status, _, page) = send(app.clone(), list(ACME, "")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_id]);
    let (status, _, body) = send(app.clone(), list(ACME, "?tenant=beta")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert_eq!(send(app.clone(), list(ACME, "?tenant=acme")).await.0, 200);

    // The operator: either tenant's payment, named with its tenant; every tenant, or one.
    let (status, _, read) = send(app.clone(), get(OPS, beta_id)).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["tenant"], "beta");
    assert_eq!(read["id"], beta_id);
    let (_, _, all) = send(app.clone(), list(OPS, "")).await;
    let mut tenants: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tenant"].as_str().unwrap())
        .collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["acme", "beta"]);
    let (_, _, one) = send(app.clone(), list(OPS, "?tenant=acme")).await;
    let ids: Vec<&str> = one["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_id]);
}
