//! Webhook endpoints and events (docs/webhooks.md): the HTTP surface of the `webhook` module.
//!
//! Who may do what:
//! - **tenant keys** register, list, read, rotate and delete their own tenant's endpoints, and
//!   list, read and redeliver their own events; another tenant's are 404, as if absent;
//! - **operator keys** list, read and delete every tenant's endpoints and list, read and
//!   redeliver every tenant's events (incident response), but neither register an endpoint
//!   (an operator key belongs to no tenant) nor rotate a secret (the new secret is the
//!   tenant's to receive, shown once). Both are 403 `forbidden` to an operator key.
//!
//! A secret appears in exactly two answers: the registration's and the rotation's.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    Json,
};
use chrono::{DateTime, Utc};
use payment_store::{
    webhooks::EVENT_TYPES, DeliveryRecord, DeliveryState, EndpointRecord, EventQuery, EventRecord,
    NewEndpoint, StoreError,
};
use payment_types::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    auth::{Role, Tenant},
    error::ApiError,
    routes::AppState,
    webhook::{DEFAULT_OVERLAP_SECS, MAX_OVERLAP_SECS},
};

fn store_error(error: StoreError) -> ApiError {
    ApiError::WebhookStoreUnavailable(error)
}

/// The tenant a role reads as: its own for a tenant key, every tenant (`None`) for an operator.
fn scope(role: &Role) -> Option<&str> {
    match role {
        Role::Tenant(tenant) => Some(tenant.as_str()),
        Role::Operator(_) => None,
    }
}

/// `POST /v1/webhook-endpoints` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEndpoint {
    url: String,
    /// A subset of the event types; absent: all of them.
    event_types: Option<Vec<String>>,
}

/// An endpoint as answered: with its `secret` only on registration and rotation, and its
/// `tenant` only to an operator key.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointView {
    id: String,
    url: String,
    event_types: Vec<String>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// After a rotation: until when the previous secret still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl EndpointView {
    fn of(record: &EndpointRecord, role: Option<&Role>) -> Self {
        let now = Utc::now();
        Self {
            id: record.id.clone(),
            url: record.url.clone(),
            event_types: record.event_types.clone(),
            created_at: record.created_at,
            tenant: matches!(role, Some(Role::Operator(_))).then(|| record.tenant.clone()),
            secret: None,
            previous_secret_expires_at: record.previous_secret_expires_at.filter(|at| *at > now),
        }
    }
}

/// The event types asked for: known names, no repeats, at least one; absent: all.
fn event_types(asked: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let invalid = |detail: String| ApiError::WebhookInvalid {
        code: "invalid_event_types",
        detail,
    };
    let Some(asked) = asked else {
        return Ok(EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect());
    };
    if asked.is_empty() {
        return Err(invalid(
            "event_types must name at least one event type (or be left out for all)".into(),
        ));
    }
    let mut types = Vec::with_capacity(asked.len());
    for name in asked {
        if !EVENT_TYPES.contains(&name.as_str()) {
            return Err(invalid(format!(
                "{name:?} is not an event type; the types are {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if types.contains(&name) {
            return Err(invalid(format!("{name:?} is listed twice")));
        }
        types.push(name);
    }
    Ok(types)
}

/// Registers an endpoint of the key's tenant; the answer carries its signing secret, shown only
/// here (and on rotation).
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks",
    description = "Body `{\"url\": \"https://...\", \"event_types\": [...]}` (`event_types` optional: a non-empty subset of `payment.succeeded`, `payment.declined`, `payment.failed`, `payment.pending`, all four when absent; unknown fields are refused). The URL must be http(s), without credentials or fragment, at most 2048 characters, and not on a private, loopback or link-local address unless the API runs with `--webhook-allow-private-urls` (docs/webhooks.md).",
    responses(
        (status = 201, description = "`{id, url, event_types, created_at, secret}`: the secret (`whsec_...`) is shown only here and on rotation", body = Object),
        (status = 400, description = "`malformed_json`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: an operator key (an endpoint belongs to a tenant)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_url`, `invalid_event_types`, `invalid_body` (a missing or unknown field, a wrong type)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = [])))]
pub(crate) async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    Json(body): Json<CreateEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let url = state
        .webhooks
        .settings
        .policy
        .check_url(&body.url)
        .map_err(|error| ApiError::WebhookInvalid {
            code: "invalid_url",
            detail: error.to_string(),
        })?;
    let event_types = event_types(body.event_types)?;
    let secret = ::webhooks::Secret::generate().expose();
    let new = NewEndpoint {
        id: format!("we_{}", uuid::Uuid::new_v4().simple()),
        tenant: tenant.as_str().to_owned(),
        url: url.to_string(),
        event_types,
        secret: secret.clone(),
        // Stored at millisecond precision: answer what a read will show.
        now: DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default(),
    };
    state
        .webhooks
        .store
        .create_endpoint(&new)
        .await
        .map_err(store_error)?;
    // The host only: a URL's path or query may carry a token of the receiver's.
    tracing::info!(endpoint_id = %new.id, host = url.host_str().unwrap_or_default(), "webhook endpoint registered");
    let view = EndpointView {
        id: new.id,
        url: new.url,
        event_types: new.event_types,
        created_at: new.now,
        tenant: None,
        secret: Some(secret),
        previous_secret_expires_at: None,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// `{"data": [...]}`: every endpoint the key may see, oldest first.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointList {
    data: Vec<EndpointView>,
}

/// The endpoints a key may see, oldest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses(
        (status = 200, description = "`{data: [{id, url, event_types, created_at}]}`: the tenant's own; to an operator key every tenant's, each with `tenant`. Never a secret", body = Object),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn list_endpoints(
    State(state): State<Arc<AppState>>,
    role: Role,
) -> Result<Json<EndpointList>, ApiError> {
    let records = state
        .webhooks
        .store
        .list_endpoints(scope(&role))
        .await
        .map_err(store_error)?;
    Ok(Json(EndpointList {
        data: records
            .iter()
            .map(|r| EndpointView::of(r, Some(&role)))
            .collect(),
    }))
}

/// One endpoint (never its secret).
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id (`we_...`)")),
    responses(
        (status = 200, description = "`{id, url, event_types, created_at}` (and `previous_secret_expires_at` during a rotation's overlap)", body = Object),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this key (another tenant's is not found either)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn get_endpoint(
    State(state): State<Arc<AppState>>,
    role: Role,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let record = state
        .webhooks
        .store
        .get_endpoint(scope(&role), &id)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::WebhookEndpointNotFound)?;
    Ok(Json(EndpointView::of(&record, Some(&role))))
}

/// Deletes an endpoint and its pending deliveries.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id (`we_...`)")),
    responses(
        (status = 204, description = "Deleted; its pending deliveries are dropped, its delivered and failed ones stay as history"),
        (status = 404, description = "`webhook_endpoint_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    role: Role,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = state
        .webhooks
        .store
        .delete_endpoint(scope(&role), &id)
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(ApiError::WebhookEndpointNotFound);
    }
    state.webhooks.guards.remove(&id);
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/webhook-endpoints/{id}/rotate-secret` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the previous secret keeps signing, 0 to 604800 (a week); default 86400.
    overlap_seconds: Option<u64>,
}

/// Gives an endpoint a new secret; the previous one keeps signing during the overlap.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    description = "Optional body `{\"overlap_seconds\": N}`, 0 to 604800 (default 86400): how long the previous secret also signs each delivery (both signatures, the new one first).",
    params(("id" = String, Path, description = "The endpoint id (`we_...`)")),
    responses(
        (status = 200, description = "The endpoint with its new `secret` (shown only here) and `previous_secret_expires_at`", body = Object),
        (status = 403, description = "`forbidden`: an operator key (the secret is the tenant's to receive)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`webhook_endpoint_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_overlap`: overlap_seconds over 604800, or a body that is not that object", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = [])))]
pub(crate) async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndpointView>, ApiError> {
    let invalid = |detail: String| ApiError::WebhookInvalid {
        code: "invalid_overlap",
        detail,
    };
    let rotate: Rotate = if body.iter().all(u8::is_ascii_whitespace) {
        Rotate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            invalid(format!(
                "the body must be {{\"overlap_seconds\": N}} or empty: {e}"
            ))
        })?
    };
    let overlap = rotate.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(invalid(format!(
            "overlap_seconds must be between 0 and {MAX_OVERLAP_SECS}"
        )));
    }
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
    let until = now + chrono::Duration::seconds(overlap as i64);
    let secret = ::webhooks::Secret::generate().expose();
    let record = state
        .webhooks
        .store
        .rotate_endpoint_secret(Some(tenant.as_str()), &id, &secret, until, now)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::WebhookEndpointNotFound)?;
    tracing::info!(endpoint_id = %id, overlap_seconds = overlap, "webhook endpoint secret rotated");
    let mut view = EndpointView::of(&record, None);
    view.secret = Some(secret);
    view.previous_secret_expires_at = (overlap > 0).then_some(until);
    Ok(Json(view))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    delivery_state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// An event as answered: its payload's members (`id`, `type`, `timestamp`, `data`), plus its
/// `tenant` to an operator key, plus its `deliveries` when read alone.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    #[serde(flatten)]
    payload: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<Vec<DeliveryView>>,
}

impl EventView {
    fn of(record: &EventRecord, role: &Role) -> Result<Self, ApiError> {
        let payload = serde_json::from_str(&record.payload).map_err(|e| {
            ApiError::Internal(format!("stored event {} does not parse: {e}", record.id))
        })?;
        Ok(Self {
            payload,
            tenant: matches!(role, Role::Operator(_)).then(|| record.tenant.clone()),
            deliveries: None,
        })
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct DeliveryView {
    endpoint_id: String,
    state: DeliveryState,
    next_attempt_at: Option<DateTime<Utc>>,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AttemptView {
    at: DateTime<Utc>,
    status: Option<u16>,
    latency_ms: u64,
    error: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            endpoint_id: d.endpoint_id,
            state: d.state,
            next_attempt_at: d.next_attempt_at,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    at: a.at,
                    status: a.status,
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct EventPage {
    data: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

pub(crate) const MAX_EVENT_PAGE: u32 = 100;

/// What `cursor` of `GET /v1/events` accepts: an event id, as `next_cursor` hands it out.
pub(crate) const EVENT_CURSOR_PATTERN: &str = "^evt_[0-9a-f]{32}$";

/// Events, newest first, with cursor paging.
#[utoipa::path(get, path = "/v1/events", tag = "webhooks",
    params(
        ("type" = Option<String>, Query, description = "Only events of this type"),
        ("delivery_state" = Option<String>, Query, description = "Only events with a delivery in this state"),
        ("limit" = Option<u32>, Query, description = "Events per page"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "`{data: [event], next_cursor}`: each event `{id, type, timestamp, data: {payment}}` (to an operator key with `tenant`)", body = Object),
        (status = 400, description = "`invalid_query`: a bad or unknown parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn list_events(
    State(state): State<Arc<AppState>>,
    role: Role,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=MAX_EVENT_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_EVENT_PAGE}"
        )));
    }
    if let Some(event_type) = &params.event_type {
        if !EVENT_TYPES.contains(&event_type.as_str()) {
            return Err(ApiError::InvalidQuery(format!(
                "type must be one of {}",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    let delivery_state = params
        .delivery_state
        .as_deref()
        .map(|text| {
            DeliveryState::parse(text).ok_or_else(|| {
                ApiError::InvalidQuery(
                    "delivery_state must be one of pending, delivered, failed".into(),
                )
            })
        })
        .transpose()?;
    if let Some(cursor) = &params.cursor {
        let valid = cursor.len() == 36
            && cursor.starts_with("evt_")
            && cursor[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(ApiError::InvalidQuery(
                "cursor is not one this API returned".into(),
            ));
        }
    }
    let query = EventQuery {
        tenant: scope(&role).map(str::to_owned),
        event_type: params.event_type,
        delivery_state,
        before: params.cursor,
        limit,
    };
    let records = state
        .webhooks
        .store
        .list_events(&query)
        .await
        .map_err(store_error)?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.id.clone()))
        .flatten();
    let data = records
        .iter()
        .map(|r| EventView::of(r, &role))
        .collect::<Result<_, _>>()?;
    Ok(Json(EventPage { data, next_cursor }))
}

/// One event with every delivery and every attempt.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The event id (`evt_...`, the `webhook-id` of its deliveries)")),
    responses(
        (status = 200, description = "The event plus `deliveries: [{endpoint_id, state, next_attempt_at, attempts: [{at, status, latency_ms, error}]}]`", body = Object),
        (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn get_event(
    State(state): State<Arc<AppState>>,
    role: Role,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let store = &state.webhooks.store;
    let record = store
        .get_event(scope(&role), &id)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::EventNotFound)?;
    let deliveries = store.deliveries(&id).await.map_err(store_error)?;
    let mut view = EventView::of(&record, &role)?;
    view.deliveries = Some(deliveries.into_iter().map(DeliveryView::from).collect());
    Ok(Json(view))
}

#[derive(Debug, Serialize)]
pub(crate) struct Redelivery {
    id: String,
    /// Deliveries queued (one per matching endpoint of the event's tenant).
    queued: u64,
}

/// Queues an event again for every matching endpoint of its tenant.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path, description = "The event id (`evt_...`)")),
    responses(
        (status = 202, description = "`{id, queued}`: the deliveries queued, due now, at the start of the retry schedule", body = Object),
        (status = 404, description = "`event_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable` (Retry-After) or `overloaded`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("tenant_key" = []), ("operator_key" = [])))]
pub(crate) async fn redeliver(
    State(state): State<Arc<AppState>>,
    role: Role,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let queued = state
        .webhooks
        .store
        .redeliver(scope(&role), &id, Utc::now())
        .await
        .map_err(store_error)?
        .ok_or(ApiError::EventNotFound)?;
    tracing::info!(event_id = %id, queued, "event queued for redelivery");
    Ok((StatusCode::ACCEPTED, Json(Redelivery { id, queued })))
}
