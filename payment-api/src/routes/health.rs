//! `GET /health`: the process is up and serving.

use axum::Json;
use serde_json::{json, Value};

pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "service": "payment-api" }))
}
