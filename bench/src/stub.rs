//! `bench serve stub`: a minimal JSON bank. `POST /v1/charges` reads the charge request
//! (`amount`, `currency`, `source`, `reference`) and answers 201 with a succeeded charge, in
//! the same shape as the mock bank's (`payment_types::bank::Charge`: `id` `ch_…`, `reference`,
//! `amount`, `currency`, `status`, `created_at`), so the payment API's bank client accepts it.
//!
//! It is the bank of every phase the ratios compare (`two_hop`, `minimal`, `happy`,
//! `postgres`): no ledger, no idempotency by reference, no chaos, no logging, no auth, so what
//! those phases measure is the server in front of it, not the bank. (The mock bank, with its
//! ledger and JSON logs, stays the one-hop `bank` baseline.) A lookup
//! (`GET /v1/charges/{reference}`, the API's reconciler) answers 404: the stub keeps nothing.

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use payment_types::bank::{Charge, ChargeRequest, ChargeStatus};

pub(crate) fn router() -> Router {
    Router::new().route("/v1/charges", post(charge))
}

async fn charge(Json(request): Json<ChargeRequest>) -> (StatusCode, Json<Charge>) {
    let charge = Charge {
        id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
        reference: request.reference,
        amount: request.amount,
        currency: request.currency,
        status: ChargeStatus::Succeeded,
        decline_code: None,
        created_at: chrono::Utc::now(),
    };
    (StatusCode::CREATED, Json(charge))
}
