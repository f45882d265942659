//! The API's HTTP surface: the router, its layers and its shared state.

mod health;
mod operator;
mod payments;
mod status;

use std::sync::Arc;

use axum::{
    http::{header, HeaderName},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use tower::ServiceBuilder;
use tower_http::{
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

use crate::{
    auth::ApiKeys,
    error::ApiError,
    payments::PaymentService,
    reconciler::{ReconcilerSettings, ReconcilerStats},
};

pub(crate) use status::effective_config;

/// Largest accepted request body; a payment is a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
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
        .route("/ready", get(health::ready))
        .route("/v1/payments", post(payments::create).get(payments::list))
        .route("/v1/payments/{id}", get(payments::get))
        .route("/v1/status", get(status::status))
        .route("/v1/breaker/{action}", post(operator::breaker_action))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(layers)
}

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
    let pipeline = resilience::pipeline::Pipeline::new(config.pipeline()).unwrap();
    let bank = Arc::new(bank::BankGateway::new(
        bank::BankClient::new(config).unwrap(),
        pipeline,
        counters.clone(),
    ));
    Arc::new(AppState {
        keys: ApiKeys::load(config).unwrap(),
        payments: Arc::new(PaymentService {
            store,
            bank,
            cache: payments::ReplayCache::new(100),
            counters,
            latencies: Arc::new(stats::Latencies::new(64)),
            settings: payments::FlowSettings {
                lease: config.lease(),
                reconcile_after: config.reconcile_interval(),
            },
            instance_id: "test".into(),
        }),
        reconciler: ReconcilerSettings {
            interval: config.reconcile_interval(),
            grace: config.reconcile_grace(),
            lease: config.lease(),
            key_retention: config.key_retention(),
            batch: 10,
        },
        reconciler_stats: Arc::default(),
        effective_config: effective_config(config),
        instance_id: "test".into(),
        started_at: Utc::now(),
    })
}
