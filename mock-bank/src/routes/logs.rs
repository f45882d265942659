//! `GET /v1/logs`: the bank's recent log records, read with a cursor (`after`, `limit`,
//! `level`, `payment_id`, `request_id`), with the same contract as the payment API's
//! (`telemetry::buffer`). Filter by `request_id` to see what the bank did for one API request.

use std::sync::Arc;

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    response::{IntoResponse, Response},
    Json,
};
use payment_types::Problem;
use telemetry::LogParams;

use super::AppState;
use crate::error::ApiError;

/// Recent log records of the bank, read with a cursor (same contract as the payment API's).
#[utoipa::path(get, path = "/v1/logs", tag = "operations",
    params(
        ("after" = Option<u64>, Query, description = "Only records with a greater `seq` (pass the last `next_after`)"),
        ("limit" = Option<u32>, Query, description = "At most this many records (default 100, max 1000)"),
        ("level" = Option<String>, Query, description = "Minimum level: error, warn, info, debug or trace"),
        ("payment_id" = Option<String>, Query, description = "Only records with this payment_id field"),
        ("request_id" = Option<String>, Query, description = "Only records of this request id"),
    ),
    responses(
        (status = 200, description = "`{records, next_after, oldest_seq, latest_seq, missed, capacity}`", body = Object),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn logs(
    State(state): State<Arc<AppState>>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Response {
    let query = params
        .map_err(|rejection| rejection.body_text())
        .and_then(|Query(params)| {
            // The buffer would take more as its maximum; refused, as the document says.
            if params
                .limit
                .is_some_and(|limit| limit > telemetry::buffer::MAX_LIMIT)
            {
                return Err(format!(
                    "limit must be between 1 and {}",
                    telemetry::buffer::MAX_LIMIT
                ));
            }
            params.into_query()
        });
    match query {
        Ok(query) => Json(state.logs.query(&query)).into_response(),
        Err(detail) => ApiError::InvalidQuery(detail).into_response(),
    }
}
