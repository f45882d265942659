//! Operator controls of a bank's breaker: `POST /v1/breaker/{force-open|force-closed|disable|
//! metrics-only|reset}?bank=NAME` (without `bank`: the first bank's, as with one bank), for
//! operator keys only (a tenant key is 403 `forbidden` and nothing changes). Each action is
//! logged with the operator's name and the bank, and kept in that breaker's transition history
//! (`/v1/status` `banks[].transitions[].reason.actor`), never with the key.

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    Json,
};
use serde::Deserialize;

use payment_types::Problem;

use super::AppState;
use resilience::breaker::OperatorAction;

use crate::{auth::Operator, error::ApiError};

/// Query of `POST /v1/breaker/{action}`. Unknown parameters are refused: a misspelt `bank`
/// must not act on the first bank's breaker instead.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakerParams {
    bank: Option<String>,
}

/// Operator control of a bank's breaker; answers the breaker's snapshot.
#[utoipa::path(post, path = "/v1/breaker/{action}", tag = "operations",
    params(
        ("action" = String, Path, description = "force-open, force-closed, disable, metrics-only or reset"),
        ("bank" = Option<String>, Query, description = "The bank whose breaker to act on, by its configured name; absent: the first bank"),
    ),
    responses(
        (status = 200, description = "The breaker after the action", body = Object),
        (status = 400, description = "`invalid_path`: the action does not decode; `invalid_query`: a parameter other than `bank`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a tenant key; breaker controls need an operator key (nothing changes)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: unknown action; `bank_not_found`: no bank is configured under `bank` (nothing changes)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub(crate) async fn breaker_action(
    State(state): State<Arc<AppState>>,
    operator: Operator,
    action: Result<Path<String>, PathRejection>,
    params: Result<Query<BreakerParams>, QueryRejection>,
) -> Result<Json<resilience::breaker::Snapshot>, ApiError> {
    let Path(action) = action.map_err(|rejection| ApiError::InvalidPath(rejection.body_text()))?;
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    let what = match action.as_str() {
        "force-open" => OperatorAction::ForceOpen,
        "force-closed" | "disable" => OperatorAction::Disable,
        "metrics-only" => OperatorAction::MetricsOnly,
        "reset" => OperatorAction::Reset,
        _ => return Err(ApiError::NotFound),
    };
    let bank = match params.bank.as_deref() {
        None => state.payments.bank(),
        Some(name) => state
            .payments
            .bank_named(name)
            .ok_or_else(|| ApiError::BankNotFound(name.chars().take(100).collect()))?,
    };
    let breaker = bank.pipeline().breaker();
    breaker.operate(what, Some(operator.id()));
    tracing::warn!(action = %action, bank = bank.name(), operator = operator.id(), "operator changed the breaker");
    Ok(Json(breaker.snapshot()))
}
