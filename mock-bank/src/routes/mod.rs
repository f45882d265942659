//! The bank's HTTP surface.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use payment_types::{
    bank::{ChargeRequest, ChargeStatus},
    headers, Problem,
};

use crate::ledger::Ledger;

/// Shared state of the bank's handlers.
#[derive(Debug, Default)]
pub(crate) struct AppState {
    ledger: Ledger,
}

impl AppState {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/charges", post(create_charge))
        .route("/v1/charges/{reference}", get(get_charge))
        .with_state(state)
}

async fn create_charge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ChargeRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return Problem::new(400, "invalid_body", "Invalid body", rejection.body_text())
                .into_response()
        }
    };
    let key = headers
        .get(headers::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok());
    if key != Some(request.reference.as_str()) {
        return Problem::new(
            400,
            "idempotency_key_mismatch",
            "Idempotency-Key must equal reference",
            "Send the charge's reference as its Idempotency-Key header.",
        )
        .into_response();
    }
    let (charge, created) = state.ledger.charge(&request);
    tracing::info!(reference = %charge.reference, created, status = ?charge.status, "charge");
    match charge.status {
        ChargeStatus::Succeeded => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(charge)).into_response()
        }
        ChargeStatus::Declined => {
            let code = charge.decline_code.clone().unwrap_or_default();
            Problem::new(
                402,
                "card_declined",
                "Card declined",
                "The card was declined.",
            )
            .with("decline_code", code)
            .with("charge", serde_json::to_value(&charge).unwrap_or_default())
            .into_response()
        }
    }
}

async fn get_charge(State(state): State<Arc<AppState>>, Path(reference): Path<String>) -> Response {
    match state.ledger.get(&reference) {
        Some(charge) => Json(charge).into_response(),
        None => Problem::new(
            404,
            "charge_not_found",
            "No such charge",
            "The bank never received it.",
        )
        .into_response(),
    }
}
