//! `GET /health` (the process is up) and `GET /ready` (the store answers: safe to send traffic).

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = Object)))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "service": "payment-api" }))
}

/// The store answers: safe to send traffic.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "The store is unreachable", body = Object),
    ))]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let store = &state.payments.store;
    match store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "store": store.kind() })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({ "status": "not_ready", "store": store.kind(), "reason": "store unreachable" }),
                ),
            )
        }
    }
}
