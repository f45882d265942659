//! `GET /health` (the process is up) and `GET /ready` (the store can be read and written: safe
//! to send traffic).

use std::{sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = Object)))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "service": "payment-api" }))
}

/// How long readiness waits for the store: a probe must get its answer before its own timeout
/// (a held SQLite lock would otherwise keep it waiting the whole busy timeout).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The store can be read and written (a heartbeat write): safe to send traffic. A full disk, a
/// held lock or a database that refuses writes makes the API not ready.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "The store cannot be read or written", body = Object),
    ))]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let store = &state.payments.store;
    let reason = match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {
            return (
                StatusCode::OK,
                Json(json!({ "status": "ready", "store": store.kind() })),
            )
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check: the store cannot be read or written");
            "store cannot be read or written"
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = READY_TIMEOUT.as_millis() as u64,
                "readiness check: the store did not answer in time"
            );
            "store did not answer in time"
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not_ready", "store": store.kind(), "reason": reason })),
    )
}
