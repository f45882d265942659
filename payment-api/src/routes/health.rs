//! `GET /health` (the process is up) and `GET /ready` (the store can be read and written: safe
//! to send traffic).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use payment_types::Problem;
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
        (status = 503, description = "`not_ready`: the store cannot be read or written, or did not answer in time (members `store` and `reason`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = &state.payments.store;
    let reason = match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {
            return Json(json!({ "status": "ready", "store": store.kind() })).into_response();
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
    Problem::new(
        503,
        "not_ready",
        "Not ready",
        format!("Not ready: the {reason}; send traffic elsewhere until this answers 200."),
    )
    .with("store", json!(store.kind()))
    .with("reason", reason)
    .into_response()
}
