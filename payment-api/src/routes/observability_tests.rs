//! In-process tests of the observability routes: `/v1/logs`, `/metrics`, `/openapi.json`.

use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use super::*;
use crate::config::Config;

async fn app() -> (Router, Arc<AppState>) {
    let dir = std::env::temp_dir().join(format!("api-obs-{}", Uuid::new_v4().simple()));
    let config = Config::for_tests(
        "http://127.0.0.1:9".parse().unwrap(),
        "acme:sk_test_0123456789abcdef",
        dir.clone(),
    );
    let store = payment_store::open(None, &dir).await.unwrap();
    let state = test_state(&config, store);
    (router(state.clone()), state)
}

async fn get(app: Router, uri: &str) -> (u16, String) {
    let response = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn logs_answers_a_page_with_its_cursor_and_refuses_a_bad_level() {
    let (app, state) = app().await;
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
    let (status, _) = get(app, "/v1/logs?limit=0").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn metrics_render_prometheus_text_with_the_scrape_time_series() {
    // As `Application::build` does: the recorder is in place before any request.
    let _ = telemetry::metrics::prometheus();
    let (app, _) = app().await;
    let _ = get(app.clone(), "/health").await;
    let (status, body) = get(app, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE payments_total counter"), "{body}");
    assert!(body.contains("breaker_state{state=\"closed\"} 1"), "{body}");
    assert!(body.contains("http_requests_total{"), "{body}");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_the_payment_routes() {
    let (app, _) = app().await;
    let (status, body) = get(app, "/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc, openapi());
    assert!(doc["paths"]["/v1/payments"]["post"].is_object());
    assert!(doc["paths"]["/v1/payments"]["get"].is_object());
    assert!(doc["components"]["schemas"]["Payment"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
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
