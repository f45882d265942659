//! `GET /health` (the process is up) and `GET /ready` (the store answers: safe to send traffic).

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use super::AppState;

pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "service": "payment-api" }))
}

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
