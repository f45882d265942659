//! `GET /v1/status`: everything an operator (or the dashboard) needs in one JSON document: the
//! breaker and its recent transitions, retry budget and bulkhead, counters by outcome, recent
//! latency percentiles, the reconciler's backlog, the store, and the effective configuration.
//! The schema is documented in `docs/status.md`.

use std::sync::Arc;

use axum::{extract::State, Json};
use chrono::Utc;
use serde_json::{json, Value};

use super::AppState;
use payment_types::Problem;

use crate::{auth::Operator, config::Config};

/// Everything the dashboard draws, in one document (schema: `docs/status.md`). Operator keys
/// only: it covers every tenant's traffic and the shared breaker.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses(
        (status = 200, description = "The operator's snapshot: breaker, transitions (an operator's action names the operator in `reason.actor`), retry budget, bulkhead, counters, latency, reconciler, store, config", body = Object),
        (status = 403, description = "`forbidden`: a tenant key; the status needs an operator key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub(crate) async fn status(State(state): State<Arc<AppState>>, _operator: Operator) -> Json<Value> {
    let payments = &state.payments;
    // The top-level breaker, budget and bulkhead are the first bank's (with one bank, the
    // bank's); `banks` has every bank's.
    let pipeline = payments.bank().pipeline();
    let total_attempts: u64 = payments.banks.iter().map(|bank| bank.attempts()).sum();
    let routing = &payments.routing;
    let banks: Vec<Value> = payments
        .banks
        .iter()
        .enumerate()
        .map(|(index, bank)| {
            let score = routing.score(index);
            let attempts = bank.attempts();
            let breaker = bank.pipeline().breaker().snapshot();
            // Every reason, 0 when none, so a reader never has to tell "none" from "unknown".
            let cascades: serde_json::Map<String, Value> = bank
                .cascades_by_reason()
                .iter()
                .map(|(reason, n)| (reason.as_str().to_owned(), json!(n)))
                .collect();
            json!({
                "name": bank.name(),
                "url": bank.url(),
                "breaker_state": breaker.state,
                "breaker": breaker,
                "retry_budget": bank.pipeline().budget().snapshot(),
                "bulkhead": bank.pipeline().bulkhead().snapshot(),
                "attempts": attempts,
                // This bank's share of every bank attempt made by this instance (0 before any).
                "share": if total_attempts == 0 { 0.0 } else { attempts as f64 / total_attempts as f64 },
                "cascaded_away": bank.cascades(),
                "cascades": cascades,
                // Its success rate over its last `routing.window` attempts (null until it has
                // `routing.min_samples`), in either routing mode; `dropped`: health routing
                // tries it after every other bank.
                "score": score.score,
                "score_samples": score.samples,
                "dropped": score.dropped,
                "transitions": bank.pipeline().breaker().history(),
                // The effective settings of this bank's pipeline: the shared flags with its
                // `--bank-setting` overrides.
                "settings": bank.pipeline().config(),
            })
        })
        .collect();
    let (backlog, store_ok) = match payments.store.pending_count().await {
        Ok(n) => (Some(n), true),
        Err(_) => (None, false),
    };
    let webhooks = state
        .webhooks
        .snapshot(state.webhooks.store.delivery_backlog().await.ok());
    Json(json!({
        "service": "payment-api",
        "instance_id": state.instance_id,
        "started_at": state.started_at,
        "uptime_seconds": (Utc::now() - state.started_at).num_seconds(),
        "store": { "kind": payments.store.kind(), "reachable": store_ok },
        "routing": {
            "mode": routing.mode().as_str(),
            "window": routing.settings().window,
            "min_samples": routing.settings().min_samples,
            "min_success": routing.settings().min_success,
            "exploration": routing.settings().exploration,
            "cascade_decline_codes": payments.settings.cascade_decline_codes,
        },
        "banks": banks,
        "breaker": pipeline.breaker().snapshot(),
        "transitions": pipeline.breaker().history(),
        "retry_budget": pipeline.budget().snapshot(),
        "bulkhead": pipeline.bulkhead().snapshot(),
        "counters": payments.counters.snapshot(),
        "latency": payments.latencies.summary(),
        "reconciler": {
            "backlog": backlog,
            "stats": state.reconciler_stats.snapshot(&state.reconciler),
        },
        "webhooks": webhooks,
        "replay_cache_entries": payments.cache.len(),
        "edge": {
            "in_flight": state.edge.in_flight(),
            "max_in_flight": state.edge.max_in_flight(),
        },
        "logs": log_cursor(&state.logs),
        "config": state.effective_config,
    }))
}

/// Where `/v1/logs` stands: a new poller can start at `latest_seq` to see only what comes next.
fn log_cursor(logs: &telemetry::LogBuffer) -> Value {
    let (oldest_seq, latest_seq) = logs.bounds();
    json!({
        "oldest_seq": oldest_seq,
        "latest_seq": latest_seq,
        "capacity": logs.capacity(),
    })
}

/// The effective configuration, without secrets (no keys, no database URL).
pub(crate) fn effective_config(config: &Config) -> Value {
    json!({
        "bank_url": config.bank_list().ok().and_then(|banks| banks.first().map(|b| b.url.to_string())),
        "banks": config.bank_list().unwrap_or_default().iter().map(|b| json!({"name": b.name, "url": b.url.as_str()})).collect::<Vec<_>>(),
        "pipeline": config.pipeline(),
        "bank_settings": config.bank_settings.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        "lease_ms": config.reconciler.lease_ms,
        "reconcile_interval_ms": config.reconciler.reconcile_interval_ms,
        "reconcile_grace_ms": config.reconciler.reconcile_grace_ms,
        "key_retention_hours": config.reconciler.key_retention_hours,
        "max_body_bytes": super::MAX_BODY_BYTES,
        "webhooks": {
            "allow_private_urls": config.webhooks.webhook_allow_private_urls,
            "retry_scale": config.webhooks.webhook_retry_scale,
            "timeout_ms": config.webhooks.webhook_timeout_ms,
            "poll_ms": config.webhooks.webhook_poll_ms,
            "endpoint_concurrency": config.webhooks.webhook_endpoint_concurrency,
        },
        "edge": {
            "max_in_flight": config.edge.max_in_flight,
            "rate_limit_per_key": config.edge.rate_limit,
            "rate_limit_burst": config.edge.rate_limit_burst,
            "request_timeout_ms": config.edge.request_timeout_ms,
            "max_headers": config.edge.max_headers,
            "max_header_bytes": config.edge.max_header_bytes,
        },
    })
}
