//! Operator controls of the bank breaker: `POST /v1/breaker/{force-open|force-closed|disable|
//! metrics-only|reset}`, for operator keys only (a tenant key is 403 `forbidden` and nothing
//! changes). Each action is logged with the operator's name and kept in the breaker's
//! transition history (`/v1/status` `transitions[].reason.actor`), never with the key.

use std::sync::Arc;

use axum::{
    extract::{rejection::PathRejection, Path, State},
    Json,
};

use payment_types::Problem;

use super::AppState;
use resilience::breaker::OperatorAction;

use crate::{auth::Operator, error::ApiError};

/// Operator control of the bank breaker; answers the breaker's snapshot.
#[utoipa::path(post, path = "/v1/breaker/{action}", tag = "operations",
    params(("action" = String, Path, description = "force-open, force-closed, disable, metrics-only or reset")),
    responses(
        (status = 200, description = "The breaker after the action", body = Object),
        (status = 400, description = "`invalid_path`: the action does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a tenant key; breaker controls need an operator key (nothing changes)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: unknown action", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub(crate) async fn breaker_action(
    State(state): State<Arc<AppState>>,
    operator: Operator,
    action: Result<Path<String>, PathRejection>,
) -> Result<Json<resilience::breaker::Snapshot>, ApiError> {
    let Path(action) = action.map_err(|rejection| ApiError::InvalidPath(rejection.body_text()))?;
    let breaker = state.payments.bank().pipeline().breaker();
    let what = match action.as_str() {
        "force-open" => OperatorAction::ForceOpen,
        "force-closed" | "disable" => OperatorAction::Disable,
        "metrics-only" => OperatorAction::MetricsOnly,
        "reset" => OperatorAction::Reset,
        _ => return Err(ApiError::NotFound),
    };
    breaker.operate(what, Some(operator.id()));
    tracing::warn!(action = %action, operator = operator.id(), "operator changed the breaker");
    Ok(Json(breaker.snapshot()))
}
