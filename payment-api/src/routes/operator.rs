//! Operator controls of the bank breaker: `POST /v1/breaker/{force-open|force-closed|disable|
//! metrics-only|reset}`. Each is logged and shows up as a transition in `/v1/status`.

use std::sync::Arc;

use axum::{
    extract::{rejection::PathRejection, Path, State},
    Json,
};

use payment_types::Problem;

use super::AppState;
use crate::{auth::Tenant, error::ApiError};

/// Operator control of the bank breaker; answers the breaker's snapshot.
#[utoipa::path(post, path = "/v1/breaker/{action}", tag = "operations",
    params(("action" = String, Path, description = "force-open, force-closed, disable, metrics-only or reset")),
    responses(
        (status = 200, description = "The breaker after the action", body = Object),
        (status = 400, description = "`invalid_path`: the action does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: unknown action", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub(crate) async fn breaker_action(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    action: Result<Path<String>, PathRejection>,
) -> Result<Json<resilience::breaker::Snapshot>, ApiError> {
    let Path(action) = action.map_err(|rejection| ApiError::InvalidPath(rejection.body_text()))?;
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
