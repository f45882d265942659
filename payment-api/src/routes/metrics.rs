//! `GET /metrics`: Prometheus text from the process-wide recorder (`telemetry::metrics`).
//!
//! Two kinds of series meet here. Events are recorded where they happen (HTTP requests and
//! their latency, bank attempts by classification, breaker transitions, store latency). Figures
//! the service already keeps for `/v1/status` (payment outcomes, idempotency counters, retry
//! budget, bulkhead, breaker state, reconciler) are copied into the recorder at each scrape, so
//! `/metrics` and `/v1/status` can never disagree. `docs/observability.md` lists every series.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};
use metrics::{counter, gauge};
use resilience::breaker::State as BreakerState;

use super::AppState;

/// Prometheus text exposition (series listed in `docs/observability.md`). Open unless the API
/// runs with `--metrics-token`; then the token (or an operator key) is required.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthenticated`: with --metrics-token, no token (or operator key) was sent", body = payment_types::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: with --metrics-token, a tenant key was sent", body = payment_types::Problem, content_type = "application/problem+json"),
    ),
    security((), ("metrics_token" = [])))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = crate::auth::check_metrics(&headers, &state) {
        return refused.into_response();
    }
    // Installs the recorder if nothing has yet (in-process tests), before anything is copied in.
    let prometheus = telemetry::metrics::prometheus();
    publish(&state).await;
    (
        [(header::CONTENT_TYPE, telemetry::metrics::CONTENT_TYPE)],
        prometheus.render(),
    )
        .into_response()
}

/// Copies the service's own figures into the recorder.
async fn publish(state: &AppState) {
    let payments = &state.payments;
    let c = payments.counters.snapshot();
    for (outcome, n) in [
        ("succeeded", c.succeeded),
        ("declined", c.declined),
        ("pending", c.pending),
        ("failed", c.failed),
        ("rejected_breaker", c.rejected_breaker),
        ("rejected_bulkhead", c.rejected_bulkhead),
        ("bank_unavailable", c.bank_unavailable),
    ] {
        counter!("payments_total", "outcome" => outcome).absolute(n);
    }
    counter!("idempotency_replays_total").absolute(c.replayed);
    counter!("idempotency_conflicts_total").absolute(c.in_flight_conflicts);
    counter!("idempotency_mismatches_total").absolute(c.key_mismatches);
    counter!("store_errors_total").absolute(c.store_unavailable);
    counter!("bank_retries_total").absolute(c.bank_retries);
    for (reason, n) in [
        ("rate_limited", c.rate_limited),
        ("overloaded", c.shed),
        ("request_timeout", c.timed_out),
    ] {
        counter!("edge_rejections_total", "reason" => reason).absolute(n);
    }

    // Per bank: its breaker state and its attempts (the unlabelled breaker, budget and bulkhead
    // series below are the first bank's, as with one bank).
    for (index, bank) in payments.banks.iter().enumerate() {
        // The routing score (absent until the bank is judged: no series rather than a 1 or a 0
        // that was never measured).
        if let Some(score) = payments.routing.score(index).score {
            gauge!("bank_routing_score", "bank" => bank.name().to_owned()).set(score);
        }
        let state = bank.pipeline().breaker().state();
        gauge!("bank_breaker_open", "bank" => bank.name().to_owned()).set(
            if matches!(state, BreakerState::Open | BreakerState::ForcedOpen) {
                1.0
            } else {
                0.0
            },
        );
        for (reason, n) in bank.cascades_by_reason() {
            counter!("bank_cascaded_away_total", "bank" => bank.name().to_owned(), "reason" => reason.as_str())
                .absolute(n);
        }
    }

    let pipeline = payments.bank().pipeline();
    let breaker = pipeline.breaker().snapshot();
    for s in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::Disabled,
        BreakerState::MetricsOnly,
    ] {
        let on = if s == breaker.state { 1.0 } else { 0.0 };
        gauge!("breaker_state", "state" => s.as_str()).set(on);
    }
    gauge!("breaker_failure_rate").set(breaker.failure_rate.unwrap_or(0.0));
    gauge!("breaker_slow_call_rate").set(breaker.slow_call_rate.unwrap_or(0.0));
    counter!("breaker_rejections_total").absolute(breaker.rejected_total);

    let budget = pipeline.budget().snapshot();
    gauge!("retry_budget_balance").set(budget.balance);
    counter!("retry_budget_deposits_total").absolute(budget.deposits);
    counter!("retry_budget_withdrawals_total").absolute(budget.withdrawals);
    counter!("retry_budget_exhausted_total").absolute(budget.exhausted_total);

    let bulkhead = pipeline.bulkhead().snapshot();
    gauge!("bulkhead_permits_in_use").set(f64::from(bulkhead.in_use));
    gauge!("bulkhead_permits_max").set(f64::from(bulkhead.max_concurrent));
    gauge!("bulkhead_waiting").set(f64::from(bulkhead.waiting));
    counter!("bulkhead_rejections_total").absolute(bulkhead.rejected_total);

    let reconciler = state.reconciler_stats.snapshot(&state.reconciler);
    counter!("reconciler_runs_total").absolute(reconciler.runs);
    counter!("reconciler_settled_total").absolute(reconciler.settled);
    counter!("reconciler_resent_total").absolute(reconciler.resent);
    counter!("reconciler_reaped_keys_total").absolute(reconciler.reaped_keys);
    // The backlog is a store query; an unreachable store leaves the last value and says so.
    let started = std::time::Instant::now();
    let backlog = payments.store.pending_count().await;
    crate::stats::record_store_latency("pending_count", started.elapsed());
    match backlog {
        Ok(n) => {
            gauge!("reconciler_backlog").set(n as f64);
            gauge!("store_up").set(1.0);
        }
        Err(_) => gauge!("store_up").set(0.0),
    }
    gauge!("replay_cache_entries").set(payments.cache.len() as f64);
    // Webhook deliveries: this instance's counters, the store's backlog (every instance's),
    // and each endpoint's breaker as this instance sees it.
    let hooks = state
        .webhooks
        .snapshot(state.webhooks.store.delivery_backlog().await.ok());
    if let Some(backlog) = hooks.backlog {
        gauge!("webhook_backlog").set(backlog as f64);
    }
    counter!("webhook_attempts_total").absolute(hooks.attempts);
    counter!("webhook_attempt_failures_total").absolute(hooks.attempt_failures);
    counter!("webhook_deliveries_total", "state" => "delivered").absolute(hooks.delivered);
    counter!("webhook_deliveries_total", "state" => "failed").absolute(hooks.failed);
    counter!("webhook_postponed_total").absolute(hooks.postponed);
    counter!("webhook_store_errors_total").absolute(hooks.store_errors);
    for endpoint in &hooks.endpoints {
        gauge!("webhook_endpoint_breaker_open", "endpoint" => endpoint.id.clone()).set(
            if matches!(endpoint.breaker_state, "open" | "forced_open" | "half_open") {
                1.0
            } else {
                0.0
            },
        );
    }
    // SQLite's group commit: writes per transaction is the ratio of the two counters' rates.
    if let Some(writer) = payments.store.writer_stats() {
        counter!("store_writer_batches_total").absolute(writer.batches);
        counter!("store_writer_writes_total").absolute(writer.writes);
        counter!("store_writer_transactions_total").absolute(writer.transactions);
        counter!("store_writer_whole_database_failures_total")
            .absolute(writer.whole_database_failures);
        counter!("store_writer_writes_rerun_alone_total").absolute(writer.writes_rerun_alone);
        counter!("store_writer_reopens_total").absolute(writer.reopens);
    }
}
