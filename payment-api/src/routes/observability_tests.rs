//! In-process tests of the observability routes: `/v1/logs`, `/metrics`, `/openapi.json`.

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::{config::Config, test_doubles::temp_dir};

const OPERATOR_KEY: &str = "sk_test_operator_0123456789";

/// The router, its state and the store's directory (removed when dropped: keep it while the
/// router is used).
async fn app() -> (Router, Arc<AppState>, tempfile::TempDir) {
    let dir = temp_dir("api-obs");
    let config = Config::for_tests(
        "http://127.0.0.1:9".parse().unwrap(),
        &format!("acme:sk_test_0123456789abcdef,operator:ops:{OPERATOR_KEY}"),
        dir.path().to_path_buf(),
    );
    let store = payment_store::open(None, dir.path()).await.unwrap();
    let state = test_state(&config, store);
    (router(state.clone()), state, dir)
}

/// A GET with the operator key (every route here is operator surface or open).
async fn get(app: Router, uri: &str) -> (u16, String) {
    get_with(app, uri, Some(OPERATOR_KEY)).await
}

async fn get_with(app: Router, uri: &str, key: Option<&str>) -> (u16, String) {
    let mut request = Request::get(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn logs_answers_a_page_with_its_cursor_and_refuses_a_bad_level() {
    let (app, state, _dir) = app().await;
    let (status, body) = get(app.clone(), "/v1/logs?after=0&limit=5").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    for member in [
        "records",
        "next_after",
        "oldest_seq",
        "latest_seq",
        "missed",
    ] {
        assert!(!page[member].is_null(), "{member}: {body}");
    }
    assert_eq!(page["capacity"], state.logs.capacity());
    let (status, body) = get(app.clone(), "/v1/logs?level=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_query"), "{body}");
    let (status, _) = get(app.clone(), "/v1/logs?limit=0").await;
    assert_eq!(status, 400);
    // The operator surface: a tenant key is 403 `forbidden`, no key 401.
    let (status, body) = get_with(app.clone(), "/v1/logs", Some("sk_test_0123456789abcdef")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (status, body) = get_with(app, "/v1/logs", None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn metrics_with_a_token_need_the_token_or_an_operator_key() {
    let _ = telemetry::metrics::prometheus();
    let dir = temp_dir("api-obs");
    let config = Config::for_tests(
        "http://127.0.0.1:9".parse().unwrap(),
        &format!("acme:sk_test_0123456789abcdef,operator:ops:{OPERATOR_KEY}"),
        dir.path().to_path_buf(),
    );
    let store = payment_store::open(None, dir.path()).await.unwrap();
    let mut state = test_state(&config, store);
    Arc::get_mut(&mut state).unwrap().metrics_token =
        Some(crate::auth::token_digest("metrics_token_0123456789"));
    let app = router(state);
    for (key, expected) in [
        (None, 401),
        (Some("wrong_token_0123456789"), 401),
        (Some("sk_test_0123456789abcdef"), 403),
        (Some("metrics_token_0123456789"), 200),
        (Some(OPERATOR_KEY), 200),
    ] {
        let (status, body) = get_with(app.clone(), "/metrics", key).await;
        assert_eq!(status, expected, "{key:?}: {body}");
        if expected == 200 {
            assert!(body.contains("# TYPE payments_total counter"), "{body}");
        }
    }
}

#[tokio::test]
async fn metrics_render_prometheus_text_with_the_scrape_time_series() {
    // As `Application::build` does: the recorder is in place before any request.
    let _ = telemetry::metrics::prometheus();
    let (app, _, _dir) = app().await;
    let _ = get(app.clone(), "/health").await;
    let (status, body) = get(app, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE payments_total counter"), "{body}");
    assert!(body.contains("breaker_state{state=\"closed\"} 1"), "{body}");
    assert!(body.contains("http_requests_total{"), "{body}");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_the_payment_routes() {
    let (app, _, _dir) = app().await;
    let (status, body) = get(app, "/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc, openapi());
    assert!(doc["paths"]["/v1/payments"]["post"].is_object());
    assert!(doc["paths"]["/v1/payments"]["get"].is_object());
    assert!(doc["components"]["schemas"]["Payment"].is_object());
    for scheme in ["tenant_key", "operator_key", "metrics_token"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    // Each route says which key it takes.
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    let tenant = serde_json::json!([{"tenant_key": []}]);
    let operator = serde_json::json!([{"operator_key": []}]);
    let either = serde_json::json!([{"tenant_key": []}, {"operator_key": []}]);
    assert_eq!(security("/v1/payments", "post"), tenant);
    assert_eq!(security("/v1/payments", "get"), either);
    assert_eq!(security("/v1/payments/{id}", "get"), either);
    for (path, method) in [
        ("/v1/status", "get"),
        ("/v1/logs", "get"),
        ("/v1/breaker/{action}", "post"),
    ] {
        assert_eq!(security(path, method), operator, "{method} {path}");
        assert!(doc["paths"][path][method]["responses"]["403"].is_object());
    }
    for path in ["/health", "/ready"] {
        assert!(security(path, "get").is_null(), "{path} is open");
    }
    // Every 429 and 5xx answer to a payment documents what the client may conclude.
    let post = &doc["paths"]["/v1/payments"]["post"]["responses"];
    for status in ["429", "500", "502", "503"] {
        let schema = &post[status]["content"]["application/problem+json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/PaymentRefusal", "{status}");
    }
    let charged = &doc["components"]["schemas"]["ChargedMember"]["enum"];
    assert_eq!(charged, &serde_json::json!(["no", "unknown"]));
    assert!(doc["components"]["schemas"]["PaymentRefusal"]["required"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("charged")));
}
