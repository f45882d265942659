//! The payment API: takes payments idempotently and charges them through the bank, so that a
//! payment is never charged twice, never lost, and never left pending forever.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - `auth`: API keys (from the environment or a file), their tenants, constant-time checks.
//! - `domain`: parsed request values (amount, currency, source token, idempotency key).
//! - `bank`: the bank's HTTP client, the classification of each attempt, and the gateway that
//!   runs every charge through the resilience pipeline (deadline, retry, breaker, bulkhead).
//! - `payments`: the payment flow: claim, charge, record, answer, replay.
//! - `reconciler`: the background task that settles pending payments and reaps old keys.
//! - `webhook`: webhook endpoints' delivery worker (leased, signed, retried, one breaker and
//!   bulkhead per endpoint) and its shared state (docs/webhooks.md).
//! - `rate_limit`: the per-API-key token buckets behind 429 `rate_limited`.
//! - `stats`: counters and recent latencies for `/v1/status`.
//! - `routes`: the HTTP surface; `error` maps every failure to a problem+json answer in one place.

pub mod config;

mod auth;
mod bank;
mod domain;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod metric_handles;
mod payments;
mod rate_limit;
mod reconciler;
mod routes;
mod stats;
#[cfg(test)]
mod test_doubles;
mod webhook;

use std::{future::Future, net::SocketAddr, sync::Arc};

use chrono::Utc;
use secrecy::ExposeSecret;

pub use config::{Cli, Config};

/// A bound, not yet serving, payment API.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    state: Arc<routes::AppState>,
    /// How long a shutdown waits for requests and payments in progress.
    drain_timeout: std::time::Duration,
}

impl Application {
    /// Loads the API keys, opens (and migrates) the store, builds the bank pipeline and binds
    /// the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Settings that constrain each other (lease vs deadline, request timeout vs deadline)
        // are checked in one place, before anything is opened.
        config.validate()?;
        let keys = auth::ApiKeys::load(&config)?;
        let metrics_token = metrics_token(&config)?;
        // Metrics recorded from here on reach `/metrics`, whether or not `telemetry::init` ran.
        let _ = telemetry::metrics::prometheus();
        let database_url = config
            .database_url
            .as_ref()
            .map(|url| url.expose_secret().to_owned());
        let store = payment_store::open(database_url.as_deref(), &config.data_dir).await?;
        let counters = Arc::new(stats::Counters::default());
        // One gateway per bank, in priority order: each its own breaker, retry budget and
        // bulkhead, with the shared settings and its own overrides.
        let bank_list = config.bank_list()?;
        let banks = bank::gateways(&bank_list, &counters)?;
        let instance_id = format!("api-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let service = Arc::new(payments::PaymentService {
            store: store.clone(),
            routing: payments::Routing::new(
                config.routing.mode,
                config.routing.health()?,
                banks.len(),
                payments::routing::random_draw(),
            ),
            banks,
            cache: payments::ReplayCache::new(10_000, config.key_retention()),
            counters,
            latencies: Arc::new(stats::Latencies::new(2048)),
            settings: payments::FlowSettings {
                lease: config.lease(),
                reconcile_after: config.reconcile_interval(),
                cascade_decline_codes: config
                    .cascade_decline_codes
                    .iter()
                    .map(|code| code.trim().to_owned())
                    .filter(|code| !code.is_empty())
                    .collect(),
            },
            instance_id: instance_id.clone(),
        });
        let reconciler = reconciler::ReconcilerSettings {
            interval: config.reconcile_interval(),
            grace: config.reconcile_grace(),
            lease: config.lease(),
            key_retention: config.key_retention(),
            event_retention: config.event_retention(),
            batch: 100,
        };
        let keys_count = keys.len();
        let webhooks = Arc::new(webhook::Webhooks::new(
            store.clone(),
            webhook::WebhookSettings::from_args(&config.webhooks),
            instance_id.clone(),
        )?);
        let state = Arc::new(routes::AppState {
            webhooks,
            keys,
            payments: service,
            reconciler,
            reconciler_stats: Arc::default(),
            effective_config: routes::effective_config(&config),
            instance_id,
            started_at: Utc::now(),
            logs: telemetry::log_buffer(),
            rate_limits: rate_limit::RateLimits::new(
                keys_count,
                config.edge.rate_limit,
                config.edge.rate_limit_burst,
            ),
            edge: routes::EdgeLimits::new(&config.edge),
            metrics_token: metrics_token.as_deref().map(auth::token_digest),
        });
        let listener =
            service_runtime::bind(config.listen, "--listen (PAYMENT_API_LISTEN)").await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            banks = %bank_list
                .iter()
                .map(|bank| format!("{}={}", bank.name, bank.url))
                .collect::<Vec<_>>()
                .join(","),
            store = ?store.kind(),
            instance_id = %state.instance_id,
            "payment API listening"
        );
        if metrics_token.is_none() && !listener.local_addr()?.ip().is_loopback() {
            tracing::warn!(
                addr = %listener.local_addr()?,
                "/metrics is open to anyone who can reach this non-loopback address: set --metrics-token (PAYMENT_API_METRICS_TOKEN) and give Prometheus the same token"
            );
        }
        Ok(Self {
            listener,
            router: routes::router(state.clone()),
            state,
            drain_timeout: config.drain_timeout(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Runs the reconciler and serves until `shutdown` resolves, then shuts down gracefully
    /// within the drain time (`--drain-timeout-ms`), counted from the signal:
    /// 1. the listener closes (new connections are refused) and the reconciler is told to stop
    ///    (it finishes its current pass and starts no new one);
    /// 2. each open connection gets the answer to its request in progress, then closes;
    /// 3. the reconciler's last pass is waited for;
    /// 4. payments whose client went away (each runs as its own task) are waited for too.
    ///
    /// Whatever is still running when the drain time is over is dropped where it stands: its
    /// payment keeps its lease in the store, and once the lease expires the next process's
    /// reconciler resumes it (asks the bank by reference, re-sends with the same reference).
    /// Nothing is lost: every step of a payment is durable before the next one starts (the
    /// store answers a write only once it is committed, so no acknowledged write waits in a
    /// buffer), and the store is closed last: its queued writes commit first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            state,
            drain_timeout,
        } = self;
        // What holds the payment service while nothing is in progress (the state). The
        // reconciler and each payment in progress hold one more while they run.
        let idle_holders = Arc::strong_count(&state.payments);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut reconciler = tokio::spawn(reconciler::run(
            state.payments.clone(),
            state.reconciler.clone(),
            state.reconciler_stats.clone(),
            stop_rx,
        ));
        // The webhook worker stops with the reconciler: a batch in progress finishes (or, cut
        // at the end of the drain time, its deliveries are due again once their lease expires).
        let mut webhook_worker = tokio::spawn(webhook::worker::run(
            state.webhooks.clone(),
            stop_tx.subscribe(),
        ));
        let breaker_events: Vec<_> = state
            .payments
            .banks
            .iter()
            .map(|bank| {
                tokio::spawn(watch_breaker(
                    bank.name().to_owned(),
                    bank.pipeline().breaker().subscribe(),
                    stop_tx.subscribe(),
                ))
            })
            .collect();
        // The drain clock starts with the signal; the reconciler stops starting passes then.
        let (began_tx, began_rx) = tokio::sync::oneshot::channel();
        let signalled = {
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                let _ = began_tx.send(tokio::time::Instant::now());
                let _ = stop_tx.send(true);
            }
        };
        let served =
            service_runtime::serve_with_drain(listener, router, signalled, drain_timeout).await;
        let began = began_rx
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now());
        let drain_until = began + drain_timeout;
        let _ = stop_tx.send(true);

        // The reconciler finishes its current pass (its payments keep their leases if it is
        // cut at the end of the drain time).
        let reconciler_done = tokio::time::timeout_at(drain_until, &mut reconciler)
            .await
            .is_ok();
        if !reconciler_done {
            reconciler.abort();
        }
        if tokio::time::timeout_at(drain_until, &mut webhook_worker)
            .await
            .is_err()
        {
            webhook_worker.abort();
        }
        // Payments whose request is gone still run as their own tasks; give them the rest of
        // the drain time. Each holds the payment service, so its count says how many remain.
        let in_progress = || Arc::strong_count(&state.payments).saturating_sub(idle_holders);
        let mut remaining = in_progress();
        if remaining > 0 && reconciler_done {
            tracing::info!(
                payments = remaining,
                "waiting for payments in progress without a client"
            );
        }
        while remaining > 0 && tokio::time::Instant::now() < drain_until {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            remaining = in_progress();
        }
        if matches!(served, Ok(service_runtime::Drain::TimedOut))
            || remaining > 0
            || !reconciler_done
        {
            tracing::warn!(
                payments_left = remaining,
                reconciler_stopped = reconciler_done,
                drain_timeout_ms = drain_timeout.as_millis() as u64,
                "drain time over with work in progress: each such payment keeps its lease and is resumed by the next process once the lease expires"
            );
        } else {
            tracing::info!(
                drain_ms = began.elapsed().as_millis() as u64,
                "drained: every request answered, every payment recorded"
            );
        }
        // Queued writes commit, then the connections close (SQLite checkpoints its WAL).
        state.payments.store.close().await;
        for watcher in breaker_events {
            let _ = watcher.await;
        }
        served.map(|_| ())
    }
}

/// The `/metrics` token from `--metrics-token` or `--metrics-token-file` (trimmed), if any.
fn metrics_token(config: &Config) -> anyhow::Result<Option<String>> {
    let token = match (&config.metrics_token, &config.metrics_token_file) {
        (Some(token), _) => token.expose_secret().trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                anyhow::anyhow!("cannot read --metrics-token-file {}: {e}", path.display())
            })?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    anyhow::ensure!(
        token.len() >= 16,
        "the /metrics token (--metrics-token or --metrics-token-file) must be 16 characters or more"
    );
    Ok(Some(token))
}

/// Logs every breaker transition (with its reason) and counts it in
/// `breaker_transitions_total{bank,from,to,reason}`, until `stop` fires.
async fn watch_breaker(
    bank: String,
    mut events: tokio::sync::broadcast::Receiver<resilience::breaker::Transition>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let transition = tokio::select! {
            event = events.recv() => match event {
                Ok(transition) => transition,
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "breaker transitions came faster than they were logged");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            _ = stop.changed() => return,
        };
        // An operator's action names the operator (its key's configured name, never the key).
        let operator = match &transition.reason {
            resilience::breaker::TransitionReason::Operator { actor, .. } => actor.clone(),
            _ => None,
        };
        let reason = serde_json::to_value(transition.reason).unwrap_or_default();
        let reason_kind = reason["kind"].as_str().unwrap_or("unknown").to_owned();
        metrics::counter!(
            "breaker_transitions_total",
            "bank" => bank.clone(),
            "from" => transition.from.as_str(),
            "to" => transition.to.as_str(),
            "reason" => reason_kind.clone(),
        )
        .increment(1);
        let open = matches!(
            transition.to,
            resilience::breaker::State::Open | resilience::breaker::State::ForcedOpen
        );
        let reason = reason.to_string();
        if open {
            tracing::warn!(
                bank = %bank,
                from = transition.from.as_str(),
                breaker_state = transition.to.as_str(),
                reason = %reason,
                reason_kind = %reason_kind,
                operator = operator.as_deref(),
                open_for_ms = transition.open_for.map(|d| d.as_millis() as u64),
                "breaker transition"
            );
        } else {
            tracing::info!(
                bank = %bank,
                from = transition.from.as_str(),
                breaker_state = transition.to.as_str(),
                reason = %reason,
                reason_kind = %reason_kind,
                operator = operator.as_deref(),
                "breaker transition"
            );
        }
    }
}
