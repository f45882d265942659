//! `POST /v1/payments`, `GET /v1/payments/{id}` and `GET /v1/payments`.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::Response,
    Json,
};
use chrono::{DateTime, Utc};
use payment_store::PaymentQuery;
use payment_types::{
    headers,
    payment::{CreatePayment, Payment, PaymentStatus},
    Problem,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::AppState;
use crate::{
    auth::{Role, Tenant},
    domain::{IdempotencyKey, PaymentRequest},
    error::ApiError,
    payments::Answer,
};

/// Takes a payment, idempotently: the same `Idempotency-Key` with the same body replays the
/// first answer; with another body it is refused.
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body = CreatePayment,
    params(
        ("Idempotency-Key" = String, Header, description = "1-255 visible ASCII characters; reuse it when you retry"),
    ),
    responses(
        (status = 201, description = "The bank charged the card", body = Payment,
            headers(("Idempotent-Replayed" = String, description = "true when this is a replay"))),
        (status = 202, description = "Outcome unknown yet: pending, settled by the reconciler (`Location` names the payment)", body = Payment),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid` (empty, over 255, not visible ASCII, bad quoting), `malformed_json`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthenticated`: missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`card_declined` with `decline_code`: the bank declined (stored, replayed)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: an operator key; payments are created with a tenant key (nothing is recorded)", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the request took longer than the request timeout; a payment that started is still finished and recorded", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_key_in_use`: the same key is still in flight (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`body_too_large`: a body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_body` (wrong shape, unknown field), `invalid_amount`, `invalid_currency`, `invalid_source`, `invalid_description`, `invalid_metadata` (member `field`), or `idempotency_key_reused` (the key was used with another body)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: this API key is over its rate limit (Retry-After); refused before the key was looked at, so `charged: \"unknown\"`", body = PaymentRefusal, content_type = "application/problem+json"),
        (status = 431, description = "`headers_too_large`: too many or too large request headers", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal_error`: unexpected failure; `charged: \"unknown\"`: retry with the same key", body = PaymentRefusal, content_type = "application/problem+json"),
        (status = 502, description = "`bank_rejected_request`: the bank refused the request itself (final and stored); `charged: \"no\"`", body = PaymentRefusal, content_type = "application/problem+json"),
        (status = 503, description = "Retry-After. `charged: \"no\"` (the key is free): `breaker_open`, `bulkhead_full`, `bank_unavailable`. `charged: \"unknown\"` (retry with the same key, never a new one): `store_unavailable`, `outcome_unknown`, `overloaded` (shed before the key was looked at)", body = PaymentRefusal, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    request_headers: HeaderMap,
    body: Result<Json<CreatePayment>, JsonRejection>,
) -> Result<Response, ApiError> {
    // Everything here is checked before the key is claimed: a rejected request never
    // consumes its key.
    let key = request_headers
        .get(headers::IDEMPOTENCY_KEY)
        .ok_or(ApiError::IdempotencyKeyMissing)?;
    let key = IdempotencyKey::parse(key.as_bytes())?;
    tracing::Span::current().record("idempotency_key", key.as_str());
    let Json(body) = body?;
    let fingerprint =
        payment_store::fingerprint::fingerprint("POST", "/v1/payments", &body.canonical());
    let request = PaymentRequest::parse(body)?;
    let request_id = request_headers
        .get(headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The payment runs as its own task: if this request is dropped (the client disconnects,
    // or the request timeout fires) the payment still finishes and is recorded, and its key
    // replays the outcome, instead of waiting for its lease to expire.
    let payments = state.payments.clone();
    let work = async move {
        payments
            .create(&tenant, &key, fingerprint, request, &request_id)
            .await
    };
    let answer = tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .unwrap_or_else(|join| Err(ApiError::Internal(join.to_string())));
    tracing::Span::current().record("outcome", outcome(&answer).as_str());
    Ok(into_response(answer?))
}

/// A 429 or 5xx answer to `POST /v1/payments` (docs/contract.md §2): a problem body (RFC 9457) that
/// also says what the client may conclude about its money. Documentation only: answers are
/// built as [`Problem`]s with these members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct PaymentRefusal {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    type_uri: String,
    /// A short summary, stable per `code`.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// A human explanation; it agrees with `charged` (only a `"no"` says "not processed").
    detail: String,
    /// The stable code: `rate_limited`, `overloaded`, `breaker_open`, `bulkhead_full`,
    /// `bank_unavailable`, `bank_rejected_request`, `store_unavailable`, `outcome_unknown`,
    /// `internal_error`.
    code: String,
    charged: ChargedMember,
    /// The same wait as the `Retry-After` header, in seconds, where a retry makes sense.
    retry_after_seconds: Option<u64>,
}

/// What the client may conclude about its money.
/// - `no`: no charge exists or will ever be made under this key by this request, and the key is
///   free (refused before the claim, or released after every attempt was definitely not
///   processed and the store confirmed the release).
/// - `unknown`: this key may hold a payment that is, or will be, charged (the store could not
///   be read or written, a lease was lost): retry with the same `Idempotency-Key`, never a new
///   one, to learn its outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub(crate) enum ChargedMember {
    No,
    Unknown,
}

/// A short name of how a payment request ended, for the request's span.
fn outcome(answer: &Result<Answer, ApiError>) -> String {
    match answer {
        Ok(answer) if answer.replayed => "replayed".to_owned(),
        Ok(answer) => match answer.response.status {
            201 => "succeeded",
            202 => "pending",
            402 => "declined",
            _ => "failed",
        }
        .to_owned(),
        Err(error) => error.code(),
    }
}

/// The stored bytes, their headers, and `Idempotent-Replayed`.
fn into_response(answer: Answer) -> Response {
    let stored = &answer.response;
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        headers::IDEMPOTENT_REPLAYED,
        HeaderValue::from_static(if answer.replayed { "true" } else { "false" }),
    );
    response
}

/// One payment: of the caller's tenant with a tenant key; of any tenant with an operator key
/// (support reads).
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(
        ("id" = String, Path, description = "The payment id (UUID)"),
        ("expand" = Option<String>, Query, description = "`routes`: add `routes`, every bank the payment was sent to with its reference there, oldest first"),
    ),
    responses(
        (status = 200, description = "The payment; to an operator key also its `tenant`; with `expand=routes` also its `routes` (`#/components/schemas/PaymentRouteView`, oldest first)", body = Payment),
        (status = 400, description = "`invalid_path`: the id does not decode (bad percent-encoding); `invalid_query`: an `expand` value other than `routes`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`payment_not_found`: no such payment for this tenant (also for an id that is not a UUID, and for another tenant's payment)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (the store could not be read) or `overloaded` (shed); Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    role: Role,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    let Path(id) = id.map_err(|rejection| ApiError::InvalidPath(rejection.body_text()))?;
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    let expand = Expand::parse(params.expand.as_deref())?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::PaymentNotFound)?;
    // A tenant sees its own payments; an operator any tenant's (payment ids are unique).
    let tenant = match &role {
        Role::Tenant(tenant) => Some(tenant.as_str()),
        Role::Operator(_) => None,
    };
    let payments = &state.payments;
    let record = payments
        .store
        .get_payment(tenant, id)
        .await
        .map_err(|e| payments.store_error(e))?
        .ok_or(ApiError::PaymentNotFound)?;
    let mut view = PaymentView::of(&record, &role);
    if expand.routes {
        // Read after the payment, which the tenant check above already scoped: a tenant never
        // sees another tenant's routes.
        view.routes = Some(routes_of(payments, record.id).await?);
    }
    Ok(Json(view))
}

/// Query of `GET /v1/payments/{id}`. Unknown parameters are ignored, as before `expand`
/// existed (a read has nothing to refuse them for).
#[derive(Debug, Deserialize)]
pub(crate) struct GetParams {
    expand: Option<String>,
}

/// What `expand` asks to add to each payment view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Expand {
    /// `routes`: every bank the payment was sent to, oldest first.
    routes: bool,
}

/// The values `expand` accepts (one per request: there is only one today).
pub(crate) const EXPAND_VALUES: [&str; 1] = ["routes"];

impl Expand {
    /// `expand` as given: absent (nothing added) or one of [`EXPAND_VALUES`]; anything else is
    /// 400 `invalid_query`, so a misspelt value is never taken silently for "no expansion".
    fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None => Ok(Self::default()),
            Some("routes") => Ok(Self { routes: true }),
            Some(other) => Err(ApiError::InvalidQuery(format!(
                "expand: {other:?} is not one of {}",
                EXPAND_VALUES.join(", ")
            ))),
        }
    }
}

/// One bank a payment was sent to (`expand=routes`): the bank's name, the payment's reference
/// there, and when the route was recorded (before that bank was first called).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PaymentRouteView {
    /// The bank's configured name (`--bank NAME=URL`; `bank` for `--bank-url`).
    bank: String,
    /// The payment's reference at that bank (its `Idempotency-Key` there).
    reference: String,
    /// When the route was recorded, before the bank was first called.
    created_at: DateTime<Utc>,
}

/// The routes of payment `id`, oldest first.
async fn routes_of(
    payments: &crate::payments::PaymentService,
    id: Uuid,
) -> Result<Vec<PaymentRouteView>, ApiError> {
    let routes = payments
        .store
        .routes(id)
        .await
        .map_err(|e| payments.store_error(e))?;
    Ok(routes
        .into_iter()
        .map(|route| PaymentRouteView {
            bank: route.bank,
            reference: route.reference,
            created_at: route.created_at,
        })
        .collect())
}

/// A payment as a read answers it: to an operator key (reading across tenants) with the
/// tenant it belongs to; to a tenant key exactly the [`Payment`].
#[derive(Debug, Serialize)]
pub(crate) struct PaymentView {
    #[serde(flatten)]
    payment: Payment,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// With `expand=routes` only: every bank the payment was sent to, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<PaymentRouteView>>,
}

impl PaymentView {
    fn of(record: &payment_store::PaymentRecord, role: &Role) -> Self {
        Self {
            payment: record.to_api(),
            tenant: matches!(role, Role::Operator(_)).then(|| record.tenant.clone()),
            routes: None,
        }
    }
}

/// Query of `GET /v1/payments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Operator keys: only this tenant's payments (absent: every tenant's). A tenant key may
    /// name only its own tenant.
    tenant: Option<String>,
    status: Option<PaymentStatus>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// `routes`: each payment also lists its `routes`.
    expand: Option<String>,
}

/// A page of payments, newest first.
#[derive(Debug, Serialize)]
pub(crate) struct PaymentPage {
    data: Vec<PaymentView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    next_cursor: Option<String>,
}

pub(crate) const MAX_PAGE: u32 = 100;

/// Payments, newest first, with cursor paging: the caller's tenant's with a tenant key; with
/// an operator key, those of the tenant named by `tenant`, or of every tenant without it.
#[utoipa::path(get, path = "/v1/payments", tag = "payments",
    params(
        ("tenant" = Option<String>, Query, description = "Operator keys: only this tenant's payments (absent: every tenant's). A tenant key may name only its own tenant (another is 403 `forbidden`)"),
        ("status" = Option<PaymentStatus>, Query, description = "Only payments in this status"),
        ("limit" = Option<u32>, Query, description = "1-100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("expand" = Option<String>, Query, description = "`routes`: each payment also lists its `routes` (`#/components/schemas/PaymentRouteView`, oldest first)"),
    ),
    responses(
        (status = 200, description = "`{data: [Payment], next_cursor}`; with `expand=routes` each payment also has `routes`", body = Object),
        (status = 400, description = "`invalid_query`: a bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: a tenant key naming another tenant in `tenant`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (the store could not be read) or `overloaded` (shed); Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    role: Role,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<PaymentPage>, ApiError> {
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let before = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let expand = Expand::parse(params.expand.as_deref())?;
    if let Some(named) = params.tenant.as_deref() {
        if !crate::auth::valid_name(named) {
            return Err(ApiError::InvalidQuery(format!(
                "tenant must match {}",
                crate::auth::NAME_PATTERN
            )));
        }
    }
    let tenant = match &role {
        Role::Tenant(own) => {
            if params
                .tenant
                .as_deref()
                .is_some_and(|named| named != own.as_str())
            {
                return Err(ApiError::Forbidden(
                    "A tenant key reads its own tenant's payments only; naming another tenant needs an operator key.",
                ));
            }
            Some(own.as_str().to_owned())
        }
        Role::Operator(_) => params.tenant.clone(),
    };
    let query = PaymentQuery {
        tenant,
        status: params.status,
        before,
        limit,
    };
    let payments = &state.payments;
    let records = payments
        .store
        .list_payments(&query)
        .await
        .map_err(|e| payments.store_error(e))?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| {
            records
                .last()
                .map(|r| format!("{}_{}", r.created_at.timestamp_micros(), r.id))
        })
        .flatten();
    let mut data: Vec<PaymentView> = records.iter().map(|r| PaymentView::of(r, &role)).collect();
    if expand.routes {
        // One indexed read per payment (at most MAX_PAGE), a few at a time so one page does
        // not take every connection of the store's pool.
        use futures_util::{StreamExt, TryStreamExt};
        let ids: Vec<Uuid> = records.iter().map(|record| record.id).collect();
        let service: &crate::payments::PaymentService = payments;
        let routes: Vec<Vec<PaymentRouteView>> = futures_util::stream::iter(ids)
            .map(move |id| routes_of(service, id))
            .buffered(4)
            .try_collect()
            .await?;
        for (view, routes) in data.iter_mut().zip(routes) {
            view.routes = Some(routes);
        }
    }
    Ok(Json(PaymentPage { data, next_cursor }))
}

/// What `parse_cursor` accepts, and nothing else: microseconds since the epoch (up to 18
/// digits, always a valid time), `_`, the payment id as a lower-case hyphenated UUID; exactly
/// the form `list` hands out.
pub(crate) const CURSOR_PATTERN: &str =
    "^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::InvalidQuery("cursor is not one this API returned".to_owned());
    let (micros, id) = cursor.split_once('_').ok_or_else(invalid)?;
    if micros.is_empty() || micros.len() > 18 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = Uuid::parse_str(id)
        .ok()
        .filter(|parsed| parsed.hyphenated().to_string() == id)
        .ok_or_else(invalid)?;
    Ok((at, id))
}
