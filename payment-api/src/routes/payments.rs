//! `POST /v1/payments`: authenticate, check the key and the body, charge through the bank.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{rejection::JsonRejection, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::Utc;
use payment_types::{
    bank::ChargeRequest,
    headers,
    payment::{CreatePayment, Payment, PaymentStatus},
    Problem,
};
use uuid::Uuid;

use super::AppState;
use crate::{
    auth::Tenant,
    bank::AttemptOutcome,
    domain::{IdempotencyKey, PaymentRequest},
    error::ApiError,
};

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    request_headers: HeaderMap,
    body: Result<Json<CreatePayment>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = request_headers
        .get(headers::IDEMPOTENCY_KEY)
        .ok_or(ApiError::IdempotencyKeyMissing)?;
    let key = IdempotencyKey::parse(key.as_bytes())?;
    let Json(body) = body?;
    let request = PaymentRequest::parse(body)?;
    let request_id = request_headers
        .get(headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();

    let id = Uuid::now_v7();
    let reference = format!("pay_{}", id.simple());
    tracing::info!(payment_id = %id, tenant = tenant.as_str(), idempotency_key = key.as_str(), "payment accepted");
    let charge = ChargeRequest {
        amount: request.amount,
        currency: request.currency.clone(),
        source: request.source.clone(),
        reference: reference.clone(),
    };
    let outcome = state.bank.charge(&charge, request_id).await;
    let now = Utc::now();
    let mut payment = Payment {
        id,
        status: PaymentStatus::Pending,
        amount: request.amount,
        currency: request.currency,
        source: request.source,
        description: request.description,
        metadata: request.metadata,
        bank_reference: reference,
        bank_charge_id: None,
        decline_code: None,
        attempts: 1,
        created_at: now,
        updated_at: now,
    };
    let status = match outcome {
        AttemptOutcome::Charged(charge) => {
            payment.status = PaymentStatus::Succeeded;
            payment.bank_charge_id = Some(charge.id);
            StatusCode::CREATED
        }
        AttemptOutcome::Declined { decline_code } => {
            payment.status = PaymentStatus::Declined;
            payment.decline_code = Some(decline_code.clone());
            let problem = Problem::new(
                402,
                "card_declined",
                "Card declined",
                "The bank declined the card.",
            )
            .with("decline_code", decline_code)
            .with(
                "payment",
                serde_json::to_value(&payment).unwrap_or_default(),
            );
            return Ok(keyed(problem.into_response(), &payment));
        }
        AttemptOutcome::NotProcessed {
            status,
            retry_after,
        } => {
            tracing::warn!(payment_id = %id, bank_status = ?status, "bank did not process the charge");
            return Err(ApiError::BankUnavailable {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            });
        }
        AttemptOutcome::Ambiguous { reason } => {
            return Err(ApiError::BankOutcomeUnknown { reason })
        }
        AttemptOutcome::Refused { status, code } => {
            return Err(ApiError::BankRefused { status, code })
        }
    };
    tracing::info!(payment_id = %payment.id, status = payment.status.as_str(), "payment answered");
    Ok(keyed((status, Json(&payment)).into_response(), &payment))
}

/// Adds the headers every answer to a keyed request carries.
fn keyed(mut response: Response, payment: &Payment) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        headers::IDEMPOTENT_REPLAYED,
        HeaderValue::from_static("false"),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/payments/{}", payment.id)) {
        headers.insert(header::LOCATION, location);
    }
    response
}
