//! The dashboard's HTTP surface: the page (embedded at compile time) and `/health`.
//!
//! Every page answer carries a content security policy that allows only this origin, so the page
//! can load nothing from elsewhere even if a payment description contained markup.

use axum::{
    http::{header, HeaderName, HeaderValue},
    response::Html,
    routing::get,
    Json, Router,
};
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::Config;

const INDEX: &str = include_str!("assets/index.html");
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub(crate) fn router(config: &Config) -> Router {
    let links = json!({ "api_url": config.api_url.as_str(), "bank_url": config.bank_url.as_str() });
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/health",
            get(|| async { Json(json!({ "status": "ok", "service": "dashboard" })) }),
        )
        .route("/api/links", get(move || async move { Json(links) }))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        router(&Config::for_tests(
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:2".parse().unwrap(),
        ))
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_same_origin_content_security_policy() {
        let response = app()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("<title>resilient-payments dashboard</title>"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "the page must load nothing from elsewhere"
        );
    }

    #[tokio::test]
    async fn health_answers_ok() {
        let response = app()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}
