//! `POST /v1/charges` and `GET /v1/charges/{reference}`: the bank's API proper, and the only
//! routes chaos applies to.
//!
//! A charge request goes: parse and validate → chaos decision → (hang | refuse | process) →
//! (answer | 500 after commit | lose the answer). Processing claims the reference; with added
//! latency the commit runs in its own task, so the bank finishes a charge even when the client
//! has given up, as a real bank does.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        rejection::{JsonRejection, PathRejection},
        Path, State,
    },
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use payment_types::{
    bank::{Charge, ChargeRequest, ChargeStatus, LostResponseMode},
    headers, Problem,
};
use tracing::Instrument;

use super::{sever, AppState};
use crate::{
    chaos::{Decision, Fault},
    error::ApiError,
    ledger::{self, LedgerError, Lookup, Submission},
    server::{Connection, Severer},
};

/// How long a repeat waits for the first request with its reference to commit before it is
/// answered 409 `charge_in_progress`.
pub(crate) const IN_PROGRESS_WAIT: Duration = Duration::from_secs(30);

/// Largest amount accepted, in minor units (each currency's own bound is lower).
pub(super) const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Longest `reference` and `source`.
pub(super) const MAX_FIELD: usize = 255;

/// What `reference` and `source` may hold: visible ASCII ([`visible_ascii`]).
pub(super) const VISIBLE_ASCII: &str = "^[!-~]+$";

/// Charges a card, idempotently by reference: the first request with a reference decides, every
/// later one gets the same answer. Chaos applies.
#[utoipa::path(post, path = "/v1/charges", tag = "charges",
    request_body = ChargeRequest,
    params(("Idempotency-Key" = String, Header, description = "The charge's reference")),
    responses(
        (status = 201, description = "Charged", body = Charge),
        (status = 200, description = "A repeat of a charged reference", body = Charge),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_mismatch` (not the body's reference), `invalid_body` (not JSON of this shape, unknown fields)", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Declined (`decline_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`charge_in_progress`: the first request with this reference is still in progress; `reference_reused`: the reference was used for another charge", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`body_too_large`: a body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_request` (member `field`): a field out of range", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Injected rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Injected server error (maybe after commit)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Injected unavailability or bank busy (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`ledger_full`: the in-memory ledger holds --max-charges charges", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Connection(severer): Connection,
    headers: HeaderMap,
    body: Result<Json<ChargeRequest>, JsonRejection>,
) -> Response {
    let request = match parse(&headers, body) {
        Ok(request) => request,
        Err(error) => return refuse(&state, error),
    };
    let span = tracing::info_span!("charge", reference = %request.reference);
    create_charge(state, severer, request)
        .instrument(span)
        .await
}

async fn create_charge(
    state: Arc<AppState>,
    severer: Option<Severer>,
    request: ChargeRequest,
) -> Response {
    let decision = decide(&state);
    // Faults that never process the charge.
    match decision.fault {
        Fault::Hang { hold } => {
            tracing::info!(
                hold_ms = hold.as_millis() as u64,
                "chaos: hang, nothing processed"
            );
            return state.hold_then_sever(severer, hold).await;
        }
        Fault::Unavailable { retry_after_s } => {
            delay(decision.latency).await;
            return refuse(&state, ApiError::InjectedUnavailable { retry_after_s });
        }
        Fault::RateLimited { retry_after_s } => {
            delay(decision.latency).await;
            return refuse(&state, ApiError::InjectedRateLimited { retry_after_s });
        }
        Fault::ServerError { committed: false } => {
            delay(decision.latency).await;
            tracing::info!("chaos: 500 before processing");
            return refuse(&state, ApiError::InjectedServerError);
        }
        Fault::None | Fault::ServerError { committed: true } | Fault::LostResponse { .. } => {}
    }
    let (charge, created) = match process(&state, &request, decision.latency).await {
        Ok(outcome) => outcome,
        Err(error) => return refuse(&state, error),
    };
    tracing::info!(
        charge_id = %charge.id,
        created,
        status = charge.status.as_str(),
        "charge processed"
    );
    // Faults after the commit.
    match decision.fault {
        Fault::ServerError { committed: true } => {
            tracing::info!(charge_id = %charge.id, "chaos: 500 after commit");
            refuse(&state, ApiError::InjectedServerError)
        }
        Fault::LostResponse {
            mode: LostResponseMode::Drop,
            ..
        } => {
            tracing::info!(charge_id = %charge.id, "chaos: response lost, connection dropped");
            state.counters.incr("lost");
            sever(severer)
        }
        Fault::LostResponse {
            mode: LostResponseMode::Withhold,
            hold,
        } => {
            tracing::info!(charge_id = %charge.id, "chaos: response withheld");
            state.counters.incr("lost");
            state.hold_then_sever(severer, hold).await
        }
        _ => answer(&state, &charge, created),
    }
}

/// What the bank knows of a reference. Chaos applies.
#[utoipa::path(get, path = "/v1/charges/{reference}", tag = "charges",
    params(("reference" = String, Path, description = "The charge's reference")),
    responses(
        (status = 200, description = "The charge", body = Charge),
        (status = 400, description = "`invalid_path`: the reference does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No charge with this reference", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`charge_in_progress`: the first request with this reference is still in progress", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Injected rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Injected server error", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Injected unavailability (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn lookup(
    State(state): State<Arc<AppState>>,
    Connection(severer): Connection,
    reference: Result<Path<String>, PathRejection>,
) -> Response {
    let reference = match reference {
        Ok(Path(reference)) => reference,
        Err(rejection) => return refuse(&state, ApiError::InvalidPath(rejection.body_text())),
    };
    let decision = decide(&state);
    match decision.fault {
        Fault::Hang { hold } => return state.hold_then_sever(severer, hold).await,
        Fault::Unavailable { retry_after_s } => {
            delay(decision.latency).await;
            return refuse(&state, ApiError::InjectedUnavailable { retry_after_s });
        }
        Fault::RateLimited { retry_after_s } => {
            delay(decision.latency).await;
            return refuse(&state, ApiError::InjectedRateLimited { retry_after_s });
        }
        Fault::ServerError { .. } => {
            delay(decision.latency).await;
            return refuse(&state, ApiError::InjectedServerError);
        }
        Fault::LostResponse { .. } | Fault::None => {}
    }
    delay(decision.latency).await;
    let found = match state.ledger.lookup(&reference) {
        Lookup::Found(charge) => Some(charge),
        Lookup::Missing => None,
        Lookup::InProgress(done) => match ledger::wait(done, IN_PROGRESS_WAIT).await {
            Some(charge) => Some(charge),
            None => match state.ledger.lookup(&reference) {
                Lookup::Found(charge) => Some(charge),
                Lookup::Missing => None,
                Lookup::InProgress(_) => return refuse(&state, ApiError::InProgress),
            },
        },
    };
    let Some(charge) = found else {
        return refuse(&state, ApiError::ChargeNotFound);
    };
    if let Fault::LostResponse { mode, hold } = decision.fault {
        return match mode {
            LostResponseMode::Drop => sever(severer),
            LostResponseMode::Withhold => state.hold_then_sever(severer, hold).await,
        };
    }
    state.counters.incr("found");
    Json(&*charge).into_response()
}

/// Draws this request's chaos decision and counts its faults.
fn decide(state: &AppState) -> Decision {
    let (index, preset, decision) = state.chaos.decide();
    if let Some(name) = decision.fault.name() {
        state.faults.incr(name);
    }
    if decision.slow_tail {
        state.faults.incr("slow_tail");
    }
    if decision.fault != Fault::None || !decision.latency.is_zero() {
        tracing::debug!(
            chaos_index = index,
            preset = preset.map(|p| p.as_str()),
            fault = decision.fault.name(),
            latency_ms = decision.latency.as_millis() as u64,
            "chaos decision"
        );
    }
    decision
}

/// Sleeps only when there is latency to add: the healthy path never touches the timer.
async fn delay(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Claims and commits the charge, or replays / waits for the one already claimed.
/// Returns the charge and whether this request created it.
async fn process(
    state: &AppState,
    request: &ChargeRequest,
    latency: Duration,
) -> Result<(Arc<Charge>, bool), ApiError> {
    // A claim abandoned while we waited frees the reference; try again a couple of times.
    for _ in 0..3 {
        let submission = state.ledger.submit(request).map_err(|error| match error {
            LedgerError::ReferenceReused => ApiError::ReferenceReused {
                reference: request.reference.clone(),
            },
            LedgerError::Busy => ApiError::Busy,
            LedgerError::Full => ApiError::LedgerFull,
        })?;
        match submission {
            Submission::Claimed(claim) => {
                if latency.is_zero() {
                    return Ok((claim.commit(), true));
                }
                let commit = async move {
                    tokio::time::sleep(latency).await;
                    claim.commit()
                };
                // Spawned so the charge commits even if the client hangs up meanwhile.
                let task = tokio::spawn(commit.in_current_span());
                return task
                    .await
                    .map(|charge| (charge, true))
                    .map_err(|_| ApiError::InProgress);
            }
            Submission::Replay(charge) => {
                delay(latency).await;
                return Ok((charge, false));
            }
            Submission::Wait(done) => {
                tracing::info!("waiting for the first request with this reference");
                if let Some(charge) = ledger::wait(done, IN_PROGRESS_WAIT).await {
                    return Ok((charge, false));
                }
                if let Lookup::InProgress(_) = state.ledger.lookup(&request.reference) {
                    return Err(ApiError::InProgress);
                }
            }
        }
    }
    Err(ApiError::InProgress)
}

/// The business answer: 201 (new) / 200 (replay) with the charge, or 402 for a decline.
fn answer(state: &AppState, charge: &Charge, created: bool) -> Response {
    let mut response = match charge.status {
        ChargeStatus::Succeeded => {
            state
                .counters
                .incr(if created { "created" } else { "replayed" });
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(charge)).into_response()
        }
        ChargeStatus::Declined => {
            state.counters.incr(if created {
                "declined"
            } else {
                "declined_replayed"
            });
            let code = charge.decline_code.clone().unwrap_or_default();
            Problem::new(
                402,
                "card_declined",
                "Card declined",
                "The card was declined.",
            )
            .with("decline_code", code)
            .with("charge", serde_json::to_value(charge).unwrap_or_default())
            .into_response()
        }
    };
    let replayed = HeaderValue::from_static(if created { "false" } else { "true" });
    response
        .headers_mut()
        .insert(headers::IDEMPOTENT_REPLAYED, replayed);
    response
}

fn refuse(state: &AppState, error: ApiError) -> Response {
    state.counters.incr(error.outcome());
    if matches!(
        error,
        ApiError::InvalidBody(_) | ApiError::InvalidField { .. }
    ) {
        tracing::info!(%error, "charge request refused");
    }
    error.into_response()
}

/// Parses the body and checks it against the `Idempotency-Key` header and the field ranges.
fn parse(
    headers: &HeaderMap,
    body: Result<Json<ChargeRequest>, JsonRejection>,
) -> Result<ChargeRequest, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError::from_json(&rejection))?;
    let key = headers
        .get(headers::IDEMPOTENCY_KEY)
        .ok_or(ApiError::KeyMissing)?
        .to_str()
        .map_err(|_| ApiError::KeyMismatch)?;
    // Accept the key bare or as an RFC 8941 quoted string (a reference that itself begins and
    // ends with `"` is accepted bare too).
    let unquoted = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    if key != request.reference && unquoted != request.reference {
        return Err(ApiError::KeyMismatch);
    }
    let invalid = |field, reason| Err(ApiError::InvalidField { field, reason });
    if !visible_ascii(&request.reference, MAX_FIELD) {
        return invalid("reference", "must be 1 to 255 visible ASCII characters");
    }
    // A real bank refuses a currency it does not know, and bounds amounts in major units.
    let Some(currency) = payment_types::currency::Currency::from_code(&request.currency) else {
        return invalid(
            "currency",
            "must be an active ISO 4217 code such as TRY, EUR, USD, JPY or KWD",
        );
    };
    if !(1..=currency.max_amount().min(MAX_AMOUNT)).contains(&request.amount) {
        return invalid(
            "amount",
            "must be a positive integer of minor units, at most 10^8 major units of the currency",
        );
    }
    if !visible_ascii(&request.source, MAX_FIELD) {
        return invalid("source", "must be 1 to 255 visible ASCII characters");
    }
    Ok(request)
}

fn visible_ascii(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::routes::{router, test_support::state_with, NoAnswer};

    fn charge_request(key: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::post("/v1/charges").header("content-type", "application/json");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    async fn send(
        state: &Arc<AppState>,
        request: Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    const VISA: &str =
        r#"{"amount":1999,"currency":"TRY","source":"tok_visa","reference":"ref-1"}"#;

    #[tokio::test]
    async fn a_new_charge_is_201_and_its_repeat_is_200_with_the_same_body() {
        let state = state_with(None);
        let (first, body1) = send(&state, charge_request(Some("ref-1"), VISA)).await;
        let (second, body2) = send(&state, charge_request(Some("ref-1"), VISA)).await;
        assert_eq!((first, second), (StatusCode::CREATED, StatusCode::OK));
        assert_eq!(body1, body2);
        assert_eq!(body1["status"], "succeeded");
    }

    #[tokio::test]
    async fn a_quoted_idempotency_key_is_accepted() {
        let state = state_with(None);
        let (status, _) = send(&state, charge_request(Some("\"ref-1\""), VISA)).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn a_missing_or_different_key_is_400_and_nothing_is_charged() {
        let state = state_with(None);
        let (status, body) = send(&state, charge_request(None, VISA)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("idempotency_key_missing"))
        );
        let (status, body) = send(&state, charge_request(Some("other"), VISA)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("idempotency_key_mismatch"))
        );
        assert_eq!(state.ledger.len(), 0);
    }

    #[tokio::test]
    async fn bad_fields_are_4xx_never_5xx() {
        let state = state_with(None);
        let bodies = [
            r#"{"amount":0,"currency":"TRY","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":-5,"currency":"TRY","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":5,"currency":"try","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":5,"currency":"ABC","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":5,"currency":"XTS","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":100000001,"currency":"JPY","source":"tok_visa","reference":"r"}"#,
            r#"{"amount":5,"currency":"TRY","source":"","reference":"r"}"#,
            r#"{"amount":5,"currency":"TRY","source":"tok_visa","reference":"r","extra":1}"#,
            r#"{"amount":"5","currency":"TRY","source":"tok_visa","reference":"r"}"#,
            "not json",
        ];
        for body in bodies {
            let (status, problem) = send(&state, charge_request(Some("r"), body)).await;
            assert!(status.is_client_error(), "{body}: {status}");
            assert!(problem["code"].is_string(), "{body}: {problem}");
        }
        assert_eq!(state.ledger.len(), 0, "nothing invalid is charged");
        for (i, body) in [
            r#"{"amount":1999,"currency":"JPY","source":"tok_visa","reference":"jpy"}"#,
            r#"{"amount":1999,"currency":"KWD","source":"tok_visa","reference":"kwd"}"#,
            r#"{"amount":1999,"currency":"EUR","source":"tok_visa","reference":"eur"}"#,
        ]
        .into_iter()
        .enumerate()
        {
            let reference = ["jpy", "kwd", "eur"][i];
            let (status, problem) = send(&state, charge_request(Some(reference), body)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}: {problem}");
        }
        let no_type = Request::post("/v1/charges")
            .header("idempotency-key", "ref-1")
            .body(Body::from(VISA))
            .unwrap();
        assert_eq!(
            send(&state, no_type).await.0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(state.ledger.len(), 3, "only the three valid charges");
    }

    #[tokio::test]
    async fn decline_tokens_answer_402_with_their_decline_code() {
        let state = state_with(None);
        for (source, code) in [
            ("tok_decline", "card_declined"),
            ("tok_insufficient_funds", "insufficient_funds"),
        ] {
            let body = format!(
                r#"{{"amount":5,"currency":"TRY","source":"{source}","reference":"{source}"}}"#
            );
            let (status, problem) = send(&state, charge_request(Some(source), &body)).await;
            assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
            assert_eq!(problem["code"], "card_declined");
            assert_eq!(problem["decline_code"], code);
            assert_eq!(problem["charge"]["status"], "declined");
            let (again, replay) = send(&state, charge_request(Some(source), &body)).await;
            assert_eq!((again, &replay), (StatusCode::PAYMENT_REQUIRED, &problem));
        }
    }

    #[tokio::test]
    async fn a_reused_reference_with_another_amount_is_409_and_not_charged_twice() {
        let state = state_with(None);
        send(&state, charge_request(Some("ref-1"), VISA)).await;
        let other = VISA.replace("1999", "2000");
        let (status, problem) = send(&state, charge_request(Some("ref-1"), &other)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("reference_reused"))
        );
        assert_eq!(state.ledger.len(), 1);
    }

    #[tokio::test]
    async fn lookup_finds_a_charge_or_answers_404() {
        let state = state_with(None);
        let (_, created) = send(&state, charge_request(Some("ref-1"), VISA)).await;
        let (status, found) = send(
            &state,
            Request::get("/v1/charges/ref-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!((status, &found), (StatusCode::OK, &created));
        let (status, problem) = send(
            &state,
            Request::get("/v1/charges/nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("charge_not_found"))
        );
    }

    #[tokio::test]
    async fn without_a_socket_a_lost_response_is_marked_no_answer_and_still_commits() {
        let state = state_with(None);
        state
            .chaos
            .apply(payment_types::bank::ChaosUpdate::Profile(
                payment_types::bank::ChaosProfile {
                    lost_response_rate: 1.0,
                    ..Default::default()
                },
            ))
            .unwrap();
        let response = router(state.clone())
            .oneshot(charge_request(Some("ref-1"), VISA))
            .await
            .unwrap();
        assert!(response.extensions().get::<NoAnswer>().is_some());
        assert_eq!(state.ledger.len(), 1);
    }
}
