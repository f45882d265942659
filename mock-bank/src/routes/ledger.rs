//! `GET /v1/ledger?after=CURSOR&limit=N`: every charge in commit order, paged, with totals and
//! the bank instance's identity. The audits read it as ground truth.

use std::sync::Arc;

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    response::{IntoResponse, Response},
    Json,
};
use payment_types::{bank::LedgerPage, Problem};
use serde::Deserialize;

use super::AppState;
use crate::error::ApiError;

const DEFAULT_LIMIT: usize = 100;
/// Most charges per page.
pub(super) const MAX_LIMIT: usize = 1000;
/// What `after` may be: a cursor is a decimal position (19 digits always fit in a `u64`).
pub(super) const CURSOR_PATTERN: &str = "^[0-9]{0,19}$";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    /// The `next_cursor` or `last_cursor` of an earlier page; absent reads from the start.
    after: Option<String>,
    limit: Option<usize>,
}

/// Every charge in commit order, paged, with totals: the ground truth of every audit.
#[utoipa::path(get, path = "/v1/ledger", tag = "charges",
    params(
        ("after" = Option<String>, Query, description = "`next_cursor` or `last_cursor` of an earlier page"),
        ("limit" = Option<u32>, Query, description = "1-1000, default 100"),
    ),
    responses(
        (status = 200, description = "A page of the ledger", body = LedgerPage),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    match build(&state, query) {
        Ok(page) => Json(page).into_response(),
        Err(error) => error.into_response(),
    }
}

fn build(
    state: &AppState,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<LedgerPage, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::InvalidQuery(r.body_text()))?;
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(cursor) => cursor
            .parse::<u64>()
            .map_err(|_| ApiError::InvalidQuery(format!("after: not a cursor: {cursor}")))?,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let page = state.ledger.page(after, limit);
    Ok(LedgerPage {
        instance_id: state.instance_id.clone(),
        started_at: state.started_at,
        charges: page.charges,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
        last_cursor: page.last_cursor.to_string(),
        totals: page.totals,
    })
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use payment_types::bank::ChargeRequest;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        ledger::Submission,
        routes::{router, test_support::state_with},
    };

    async fn get(state: &Arc<AppState>, uri: &str) -> (u16, serde_json::Value) {
        let response = router(state.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn pages_carry_a_cursor_totals_and_the_instance() {
        let state = state_with(None);
        for i in 0..3 {
            let request = ChargeRequest {
                amount: 10,
                currency: "EUR".into(),
                source: "tok_visa".into(),
                reference: format!("r{i}"),
            };
            let Ok(Submission::Claimed(claim)) = state.ledger.submit(&request) else {
                panic!()
            };
            claim.commit();
        }
        let (status, page) = get(&state, "/v1/ledger?limit=2").await;
        assert_eq!(status, 200);
        let page: LedgerPage = serde_json::from_value(page).unwrap();
        assert_eq!(page.charges.len(), 2);
        assert_eq!(page.instance_id, state.instance_id);
        assert_eq!(page.totals.count, 3);
        let next = page.next_cursor.unwrap();
        let (_, rest) = get(&state, &format!("/v1/ledger?after={next}&limit=2")).await;
        assert_eq!(rest["charges"][0]["reference"], "r2");
        assert!(rest["next_cursor"].is_null());
        assert_eq!(rest["last_cursor"], "3");
    }

    #[tokio::test]
    async fn a_bad_cursor_or_limit_is_400() {
        let state = state_with(None);
        assert_eq!(get(&state, "/v1/ledger?after=xyz").await.0, 400);
        assert_eq!(get(&state, "/v1/ledger?limit=100000").await.0, 400);
    }
}
