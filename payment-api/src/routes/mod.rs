//! The API's HTTP surface: the router, its layers and its shared state.

mod edge;
mod health;
mod logs;
mod metrics;
mod openapi;
mod operator;
mod payments;
mod problems;
mod status;
mod webhooks;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    middleware,
    response::Response,
    Router,
};
use chrono::{DateTime, Utc};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    auth::ApiKeys,
    error::ApiError,
    payments::PaymentService,
    reconciler::{ReconcilerSettings, ReconcilerStats},
};

pub(crate) use edge::EdgeLimits;
pub(crate) use status::effective_config;

/// Largest accepted request body; a payment is a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Webhook endpoints' delivery worker state: settings, client, per-endpoint guards, counters.
    pub(crate) webhooks: Arc<crate::webhook::Webhooks>,
    /// Configured API keys (digests) and their tenants.
    pub(crate) keys: ApiKeys,
    /// The payment flow: store, bank gateway, replay cache, counters.
    pub(crate) payments: Arc<PaymentService>,
    pub(crate) reconciler: ReconcilerSettings,
    pub(crate) reconciler_stats: Arc<ReconcilerStats>,
    /// The effective configuration, as published in `/v1/status` (no secrets).
    pub(crate) effective_config: serde_json::Value,
    pub(crate) instance_id: String,
    pub(crate) started_at: DateTime<Utc>,
    /// The recent log records behind `GET /v1/logs` (bounded; see `telemetry::buffer`).
    pub(crate) logs: Arc<telemetry::LogBuffer>,
    /// Per-API-key rate limits, taken when a request authenticates.
    pub(crate) rate_limits: crate::rate_limit::RateLimits,
    /// Header limits, the in-flight limit and the request timeout.
    pub(crate) edge: EdgeLimits,
    /// Digest of the bearer token `/metrics` requires (`--metrics-token`); `None`: open.
    pub(crate) metrics_token: Option<[u8; 32]>,
}

/// Every route of the API, each registered with its OpenAPI description, so the document at
/// `/openapi.json` lists exactly the routes served (plus `/openapi.json` and `/docs`
/// themselves, served by Swagger UI with its assets compiled in: `/docs` works offline).
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(payments::create, payments::list))
        .routes(routes!(payments::get))
        .routes(routes!(status::status))
        .routes(routes!(logs::logs))
        .routes(routes!(metrics::metrics))
        .routes(routes!(operator::breaker_action))
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(webhooks::get_endpoint, webhooks::delete_endpoint))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_events))
        .routes(routes!(webhooks::get_event))
        .routes(routes!(webhooks::redeliver))
}

/// The routes and the OpenAPI document, with the server's constraints attached
/// ([`openapi::constrain`]) once every route has added its schemas; `banks` are the configured
/// bank names (the values `?bank=` accepts).
fn routes_and_document(banks: &[&str]) -> (Router<Arc<AppState>>, serde_json::Value) {
    let (routes, document) = api_routes().split_for_parts();
    let mut document = serde_json::to_value(&document).expect("the OpenAPI document serialises");
    openapi::constrain(&mut document, banks);
    (routes, document)
}

/// The API's OpenAPI document, as served at `/openapi.json` with one bank (`--bank-url`).
#[cfg(test)]
pub(crate) fn openapi() -> serde_json::Value {
    routes_and_document(&[crate::config::SINGLE_BANK_NAME]).1
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "resilient-payments payment API",
        description = "Idempotent payments through a retry loop and a circuit breaker. Errors are application/problem+json with a stable `code`; every response carries X-Request-Id.",
    ),
    modifiers(&Security),
    components(schemas(payments::PaymentRouteView)),
    tags(
        (name = "payments", description = "Taking and reading payments"),
        (name = "operations", description = "Health, status, logs, metrics and breaker controls"),
        (name = "webhooks", description = "Webhook endpoints and the events delivered to them (docs/webhooks.md)"),
    )
)]
struct ApiDoc;

/// The two kinds of key, each a scheme, so every route says which it takes: `tenant_key`
/// (payments of its own tenant) and `operator_key` (the operator surface and reads across
/// tenants). Both are sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "tenant_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant key (`tenant:key` in --api-keys): creates and reads its own tenant's payments. Also accepted as `X-API-Key: <key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator key (--operator-keys, or `operator:NAME:key` in the keys file): breaker controls, /v1/status, /v1/logs, reads of every tenant's payments; creates no payments. A tenant key on an operator route is 403 `forbidden`. Also accepted as `X-API-Key: <key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "GET /metrics: required only when the API runs with --metrics-token (an operator key is accepted too); open otherwise.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The router with every layer; pure, so tests drive it with `oneshot` and no socket.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    // One layer of ours (request id, span, limits, problems, the finished line: `edge::front`)
    // and the body limit inside it.
    let layers = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(state.clone(), edge::front))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES));
    let banks: Vec<&str> = state
        .payments
        .banks
        .iter()
        .map(|bank| bank.name())
        .collect();
    let (routes, openapi) = routes_and_document(&banks);
    routes
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", openapi))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(layers)
}

/// The span every log line of a request happens in. `tenant`, `idempotency_key`,
/// `payment_id`, `outcome` (and for a payment `attempts`, `bank_ms`, `breaker_state`, `bank`) are
/// recorded on it once known, so later lines carry them too, and a payment's "request finished"
/// line is its canonical line: everything about it on one line.
/// Headers are not recorded (the credentials among them must never reach a log).
fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(payment_types::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        route,
        path = request.uri().path(),
        tenant = tracing::field::Empty,
        operator = tracing::field::Empty,
        idempotency_key = tracing::field::Empty,
        payment_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        // A payment's canonical "request finished" line also says how the bank call went.
        attempts = tracing::field::Empty,
        bank_ms = tracing::field::Empty,
        breaker_state = tracing::field::Empty,
        // The bank the payment ended with (the one that charged it, when it succeeded).
        bank = tracing::field::Empty,
    )
}

/// Routes polled continuously (by the dashboard, probes and scrapers): a successful read of
/// one logs its "request finished" line at DEBUG, so an idle system writes no line a second
/// (nor fills `/v1/logs` with lines about reading `/v1/logs`). Reads of payments are here too:
/// the dashboard polls the list and the payment it shows. Payments taken, operator actions and
/// every error answer stay at INFO or above.
const QUIET_ROUTES: &[&str] = &[
    "/health",
    "/ready",
    "/v1/status",
    "/v1/logs",
    "/metrics",
    "/openapi.json",
    "/v1/payments",
    "/v1/payments/{id}",
    // The dashboard's webhook card polls these.
    "/v1/events",
    "/v1/events/{id}",
    "/v1/webhook-endpoints",
    "/v1/webhook-endpoints/{id}",
];

/// The level of a request's "request finished" line: WARN for a 5xx, INFO for a 4xx and for
/// anything that changes state, DEBUG for a successful polling read.
fn finished_level(method: &axum::http::Method, route: &str, status: u16) -> tracing::Level {
    let polling_read = (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && (QUIET_ROUTES.contains(&route) || route.starts_with("/docs"));
    match status {
        500.. => tracing::Level::WARN,
        400.. => tracing::Level::INFO,
        _ if polling_read => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    }
}

/// A request's "request finished" line, at [`finished_level`], and the HTTP metrics by route
/// and status; in the request's span (`edge::front` runs it there).
fn observe(
    method: &axum::http::Method,
    route: &str,
    elapsed: std::time::Duration,
    response: &Response,
) {
    let status = response.status().as_u16();
    // Whole microseconds, as `bank_ms`: `as_secs_f64() * 1000.0` printed digits like
    // 2.4507909999999997 that only the float's binary expansion put there.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    match finished_level(method, route, status) {
        tracing::Level::WARN => tracing::warn!(status, latency_ms, "request finished"),
        tracing::Level::INFO => tracing::info!(status, latency_ms, "request finished"),
        _ => tracing::debug!(status, latency_ms, "request finished"),
    }
    crate::metric_handles::record_request(method, route, status, elapsed);
}

#[cfg(test)]
mod banks_tests;
#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod observability_tests;
#[cfg(test)]
mod roles_tests;
#[cfg(test)]
mod tests;

/// Builds the state for in-process tests, over `store`.
#[cfg(test)]
pub(crate) fn test_state(
    config: &crate::config::Config,
    store: Arc<dyn payment_store::Store>,
) -> Arc<AppState> {
    use crate::{bank, payments, stats};
    let counters = Arc::new(stats::Counters::default());
    let banks = bank::gateways(&config.bank_list().unwrap(), &counters).unwrap();
    let keys = ApiKeys::load(config).unwrap();
    Arc::new(AppState {
        webhooks: Arc::new(
            crate::webhook::Webhooks::new(
                store.clone(),
                crate::webhook::WebhookSettings::from_args(&config.webhooks),
                "test".into(),
            )
            .unwrap(),
        ),
        rate_limits: crate::rate_limit::RateLimits::new(
            keys.len(),
            config.edge.rate_limit,
            config.edge.rate_limit_burst,
        ),
        keys,
        payments: Arc::new(PaymentService {
            store,
            routing: payments::Routing::new(
                config.routing.mode,
                config.routing.health().unwrap(),
                banks.len(),
                payments::routing::random_draw(),
            ),
            banks,
            cache: payments::ReplayCache::new(100, config.key_retention()),
            counters,
            latencies: Arc::new(stats::Latencies::new(64)),
            settings: payments::FlowSettings {
                lease: config.lease(),
                reconcile_after: config.reconcile_interval(),
                cascade_decline_codes: Vec::new(),
            },
            instance_id: "test".into(),
        }),
        reconciler: ReconcilerSettings {
            interval: config.reconcile_interval(),
            grace: config.reconcile_grace(),
            lease: config.lease(),
            key_retention: config.key_retention(),
            event_retention: config.event_retention(),
            batch: 10,
        },
        reconciler_stats: Arc::default(),
        effective_config: effective_config(config),
        instance_id: "test".into(),
        started_at: Utc::now(),
        logs: Arc::new(telemetry::LogBuffer::new(1000)),
        edge: EdgeLimits::new(&config.edge),
        metrics_token: None,
    })
}

#[cfg(test)]
mod quiet_tests {
    use axum::http::Method;
    use tracing::Level;

    use super::finished_level;

    #[test]
    fn polling_reads_are_debug_and_everything_else_is_info_or_above() {
        for route in [
            "/health",
            "/ready",
            "/v1/status",
            "/v1/logs",
            "/metrics",
            "/openapi.json",
            "/v1/payments",
            "/v1/payments/{id}",
            "/docs/index.html",
        ] {
            assert_eq!(
                finished_level(&Method::GET, route, 200),
                Level::DEBUG,
                "{route}"
            );
            // An error answer on a polled route is still worth a line.
            assert_eq!(
                finished_level(&Method::GET, route, 401),
                Level::INFO,
                "{route}"
            );
            assert_eq!(
                finished_level(&Method::GET, route, 503),
                Level::WARN,
                "{route}"
            );
        }
        // Payments and operator actions are never quiet.
        assert_eq!(
            finished_level(&Method::POST, "/v1/payments", 201),
            Level::INFO
        );
        assert_eq!(
            finished_level(&Method::POST, "/v1/payments", 200),
            Level::INFO
        );
        assert_eq!(
            finished_level(&Method::POST, "/v1/breaker/{action}", 200),
            Level::INFO
        );
        assert_eq!(finished_level(&Method::GET, "unmatched", 404), Level::INFO);
        assert_eq!(
            finished_level(&Method::POST, "/v1/payments", 502),
            Level::WARN
        );
    }
}
