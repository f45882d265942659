//! `GET /health`, `GET /v1/status` (counters, chaos, instance) and `GET /metrics`
//! (the same counters as Prometheus text).

use std::sync::Arc;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use payment_types::bank::{BankHealth, BankStatus};

use super::AppState;
use crate::metrics::{self, MetricsSnapshot};

/// The process is up; names this bank instance.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = BankHealth)))]
pub(super) async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(BankHealth {
        status: "ok".to_owned(),
        instance_id: state.instance_id.clone(),
        started_at: state.started_at,
    })
    .into_response()
}

/// Counters by outcome and fault, the chaos in effect, the ledger's size.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "The bank's status", body = Object)))]
pub(super) async fn status(State(state): State<Arc<AppState>>) -> Response {
    Json(BankStatus {
        instance_id: state.instance_id.clone(),
        started_at: state.started_at,
        uptime_s: state.started.elapsed().as_secs(),
        chaos_requests: state.chaos.requests(),
        outcomes: state.counters.snapshot(),
        faults: state.faults.snapshot(),
        ledger_charges: state.ledger.len() as u64,
        in_flight: state.ledger.in_flight() as u64,
        held: state.held_now() as u64,
        chaos: state.chaos.state(),
    })
    .into_response()
}

/// Prometheus text: answers by outcome, injected faults, ledger size, held connections.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = metrics::render(&MetricsSnapshot {
        outcomes: state.counters.snapshot(),
        faults: state.faults.snapshot(),
        chaos_requests: state.chaos.requests(),
        ledger_charges: state.ledger.len() as u64,
        in_flight: state.ledger.in_flight() as u64,
        held: state.held_now() as u64,
        uptime_s: state.started.elapsed().as_secs(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
