//! `GET /v1/logs`: the recent log records of this process, read with a cursor
//! (`after`, `limit`, `level`, `payment_id`, `request_id`); see `telemetry::buffer` for the
//! contract and `docs/observability.md` for the numbers. Operator keys only: the records name
//! every tenant's payments (a tenant key is 403 `forbidden`). Records never hold credentials
//! (they are never logged, and credential-named fields are redacted by the telemetry layer).

use std::sync::Arc;

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use telemetry::{LogPage, LogParams};

use payment_types::Problem;

use super::AppState;
use crate::{auth::Operator, error::ApiError};

/// Recent log records of this process, read with a cursor. Operator keys only; never holds
/// credentials.
#[utoipa::path(get, path = "/v1/logs", tag = "operations",
    params(
        ("after" = Option<u64>, Query, description = "Only records with a greater `seq` (pass the last `next_after`)"),
        ("limit" = Option<u32>, Query, description = "At most this many records (default 100, max 1000)"),
        ("level" = Option<String>, Query, description = "Minimum level: error, warn, info, debug or trace"),
        ("payment_id" = Option<String>, Query, description = "Only records of this payment"),
        ("request_id" = Option<String>, Query, description = "Only records of this request id"),
    ),
    responses(
        (status = 200, description = "`{records: [{seq, timestamp, level, service, target, message, fields}], next_after, oldest_seq, latest_seq, missed, capacity}`", body = Object),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a tenant key; the logs need an operator key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    _operator: Operator,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    // The buffer would take more as its maximum; refused, as the document says.
    if params
        .limit
        .is_some_and(|limit| limit > telemetry::buffer::MAX_LIMIT)
    {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {}",
            telemetry::buffer::MAX_LIMIT
        )));
    }
    let query = params.into_query().map_err(ApiError::InvalidQuery)?;
    Ok(Json(state.logs.query(&query)))
}
