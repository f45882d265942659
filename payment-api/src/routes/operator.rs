//! Operator controls of the bank breaker: `POST /v1/breaker/{force-open|force-closed|disable|
//! metrics-only|reset}`. Each is logged and shows up as a transition in `/v1/status`.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};

use super::AppState;
use crate::{auth::Tenant, error::ApiError};

pub(crate) async fn breaker_action(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    Path(action): Path<String>,
) -> Result<Json<resilience::breaker::Snapshot>, ApiError> {
    let breaker = state.payments.bank.pipeline().breaker();
    match action.as_str() {
        "force-open" => breaker.force_open(),
        "force-closed" => breaker.force_closed(),
        "disable" => breaker.disable(),
        "metrics-only" => breaker.metrics_only(),
        "reset" => breaker.reset(),
        _ => return Err(ApiError::NotFound),
    }
    tracing::warn!(action = %action, tenant = tenant.as_str(), "operator changed the breaker");
    Ok(Json(breaker.snapshot()))
}
