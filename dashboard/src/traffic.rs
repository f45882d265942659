//! Payments the page asks for: one, a burst, a replay of the last key, and steady traffic at a
//! chosen rate. Each is bounded (burst size, rate, duration, payments in flight), so a click can
//! never make the dashboard an unbounded load generator.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::upstream::{Key, Upstream, UpstreamError};

/// Largest burst one click may send.
pub(crate) const MAX_BURST: u32 = 200;
/// Payments of one burst sent at once (the rest wait for a slot).
const BURST_CONCURRENCY: usize = 32;
/// Highest steady rate, payments per second.
pub(crate) const MAX_RATE: f64 = 100.0;
/// Longest steady run.
pub(crate) const MAX_DURATION_S: u64 = 600;
/// Steady-traffic payments in flight at once; a tick that finds none free is counted as
/// `dropped` instead of queueing (a stalled bank must not pile up tasks).
const STEADY_IN_FLIGHT: usize = 64;
/// Results the page can see in "last sent".
const RECENT_RESULTS: usize = 20;

/// What the page may choose for a payment; everything has a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentSpec {
    pub(crate) amount: Option<i64>,
    pub(crate) currency: Option<String>,
    pub(crate) source: Option<String>,
}

impl PaymentSpec {
    fn body(&self) -> Value {
        json!({
            "amount": self.amount.unwrap_or(1999),
            "currency": self.currency.as_deref().unwrap_or("TRY"),
            "source": self.source.as_deref().unwrap_or("tok_visa"),
        })
    }
}

/// The outcome of one payment request, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SendResult {
    pub(crate) idempotency_key: String,
    /// HTTP status, or `None` when the API did not answer.
    pub(crate) status: Option<u16>,
    /// The `Idempotent-Replayed` header.
    pub(crate) replayed: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) retry_after: Option<String>,
    pub(crate) latency_ms: u64,
    pub(crate) payment_id: Option<String>,
    /// `status` of the payment in the body, or the problem's `code`.
    pub(crate) outcome: Option<String>,
    pub(crate) error: Option<String>,
}

/// A burst's summary.
#[derive(Debug, Serialize)]
pub(crate) struct BurstSummary {
    pub(crate) count: u32,
    /// Answers by HTTP status (`"error"` when the API did not answer).
    pub(crate) by_status: BTreeMap<String, u32>,
    pub(crate) elapsed_ms: u64,
}

/// A steady run's request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SteadyRequest {
    pub(crate) rate_per_s: f64,
    #[serde(default = "default_duration")]
    pub(crate) duration_s: u64,
    /// Share of payments sent with a declining card, so "declined" moves too.
    #[serde(default)]
    pub(crate) decline_percent: u8,
}

fn default_duration() -> u64 {
    60
}

impl SteadyRequest {
    /// Checks the bounds; the message is shown to the operator.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.rate_per_s > 0.0 && self.rate_per_s <= MAX_RATE) {
            return Err(format!("rate_per_s must be in (0, {MAX_RATE}]"));
        }
        if !(1..=MAX_DURATION_S).contains(&self.duration_s) {
            return Err(format!("duration_s must be in 1..={MAX_DURATION_S}"));
        }
        if self.decline_percent > 100 {
            return Err("decline_percent must be at most 100".to_owned());
        }
        Ok(())
    }
}

/// The steady run as the page shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SteadyState {
    pub(crate) running: bool,
    pub(crate) rate_per_s: f64,
    pub(crate) decline_percent: u8,
    pub(crate) started_at_ms: u64,
    pub(crate) ends_at_ms: u64,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    pub(crate) by_status: BTreeMap<String, u64>,
}

/// Sends payments for the page and remembers the last key for replays.
#[derive(Debug)]
pub(crate) struct Traffic {
    upstream: Arc<Upstream>,
    /// The last key and body sent, for "replay last key".
    last: Mutex<Option<(String, Value)>>,
    /// The newest results first, bounded by [`RECENT_RESULTS`].
    recent: Mutex<Vec<SendResult>>,
    steady: Mutex<Steady>,
    /// Numbers keys within this process; with the start time they are unique across restarts.
    next_key: AtomicU64,
    key_prefix: String,
}

#[derive(Debug, Default)]
struct Steady {
    state: SteadyState,
    /// The generator task; aborting it stops the run (payments in flight finish).
    task: Option<tokio::task::AbortHandle>,
    /// Which run the shared state belongs to: a stopped run's late answers are not counted.
    run: u64,
}

impl Traffic {
    pub(crate) fn new(upstream: Arc<Upstream>) -> Self {
        Self {
            upstream,
            last: Mutex::new(None),
            recent: Mutex::new(Vec::new()),
            steady: Mutex::new(Steady::default()),
            next_key: AtomicU64::new(1),
            key_prefix: format!("dash-{}", crate::now_ms()),
        }
    }

    fn new_key(&self) -> String {
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.key_prefix)
    }

    /// Sends one payment under a fresh key and remembers it as the last.
    pub(crate) async fn send_one(&self, spec: &PaymentSpec) -> Result<SendResult, UpstreamError> {
        let key = self.new_key();
        let body = spec.body();
        *self.last.lock().expect("traffic lock") = Some((key.clone(), body.clone()));
        let result = self.send(key, &body).await?;
        self.remember(&result);
        Ok(result)
    }

    /// Sends the last payment again with the same key: the API answers with a replay.
    pub(crate) async fn replay_last(&self) -> Option<Result<SendResult, UpstreamError>> {
        let (key, body) = self.last.lock().expect("traffic lock").clone()?;
        let result = self.send(key, &body).await;
        if let Ok(result) = &result {
            self.remember(result);
        }
        Some(result)
    }

    /// Sends `count` payments (at most [`MAX_BURST`]), [`BURST_CONCURRENCY`] at a time.
    pub(crate) async fn burst(
        self: &Arc<Self>,
        count: u32,
        spec: &PaymentSpec,
    ) -> Result<BurstSummary, UpstreamError> {
        let count = count.clamp(1, MAX_BURST);
        let started = std::time::Instant::now();
        let slots = Arc::new(Semaphore::new(BURST_CONCURRENCY));
        let body = spec.body();
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            let this = Arc::clone(self);
            let slots = Arc::clone(&slots);
            let key = self.new_key();
            let body = body.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                this.send(key, &body).await
            });
        }
        let mut by_status = BTreeMap::new();
        let mut last = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.expect("a payment task does not panic")?;
            *by_status.entry(status_label(result.status)).or_insert(0) += 1;
            last = Some(result);
        }
        if let Some(last) = last {
            *self.last.lock().expect("traffic lock") = Some((last.idempotency_key.clone(), body));
            self.remember(&last);
        }
        Ok(BurstSummary {
            count,
            by_status,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Starts (or replaces) the steady run.
    pub(crate) fn start_steady(self: &Arc<Self>, request: SteadyRequest) -> SteadyState {
        let now = crate::now_ms();
        let mut steady = self.steady.lock().expect("traffic lock");
        if let Some(task) = steady.task.take() {
            task.abort();
        }
        steady.run += 1;
        let run = steady.run;
        steady.state = SteadyState {
            running: true,
            rate_per_s: request.rate_per_s,
            decline_percent: request.decline_percent,
            started_at_ms: now,
            ends_at_ms: now + request.duration_s * 1000,
            ..SteadyState::default()
        };
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.steady_loop(run, request).await });
        steady.task = Some(task.abort_handle());
        steady.state.clone()
    }

    /// Stops the steady run (payments in flight finish but are no longer counted).
    pub(crate) fn stop_steady(&self) -> SteadyState {
        let mut steady = self.steady.lock().expect("traffic lock");
        if let Some(task) = steady.task.take() {
            task.abort();
        }
        steady.run += 1;
        steady.state.running = false;
        steady.state.clone()
    }

    pub(crate) fn steady_state(&self) -> SteadyState {
        self.steady.lock().expect("traffic lock").state.clone()
    }

    /// The last results, newest first.
    pub(crate) fn recent(&self) -> Vec<SendResult> {
        self.recent.lock().expect("traffic lock").clone()
    }

    async fn steady_loop(self: Arc<Self>, run: u64, request: SteadyRequest) {
        let period = Duration::from_secs_f64(1.0 / request.rate_per_s);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slots = Arc::new(Semaphore::new(STEADY_IN_FLIGHT));
        let end = tokio::time::Instant::now() + Duration::from_secs(request.duration_s);
        let mut n: u64 = 0;
        while tokio::time::Instant::now() < end {
            ticks.tick().await;
            n += 1;
            // Every k-th payment declines, k chosen so the share matches the request.
            let declines = request.decline_percent > 0
                && (n * u64::from(request.decline_percent)) % 100
                    < u64::from(request.decline_percent);
            let spec = PaymentSpec {
                source: declines.then(|| "tok_decline".to_owned()),
                ..PaymentSpec::default()
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                self.update_steady(run, |s| s.dropped += 1);
                continue;
            };
            self.update_steady(run, |s| s.sent += 1);
            let this = Arc::clone(&self);
            let key = self.new_key();
            tokio::spawn(async move {
                let _slot = slot;
                let result = this.send(key, &spec.body()).await;
                let label = match &result {
                    Ok(r) => status_label(r.status),
                    Err(_) => "error".to_owned(),
                };
                this.update_steady(run, |s| *s.by_status.entry(label).or_insert(0) += 1);
            });
        }
        self.update_steady(run, |s| s.running = false);
    }

    fn update_steady(&self, run: u64, change: impl FnOnce(&mut SteadyState)) {
        let mut steady = self.steady.lock().expect("traffic lock");
        if steady.run == run {
            change(&mut steady.state);
        }
    }

    fn remember(&self, result: &SendResult) {
        let mut recent = self.recent.lock().expect("traffic lock");
        recent.insert(0, result.clone());
        recent.truncate(RECENT_RESULTS);
    }

    async fn send(&self, key: String, body: &Value) -> Result<SendResult, UpstreamError> {
        match self
            .upstream
            .api_post(
                "/v1/payments",
                Key::Tenant,
                Some(body),
                &[("idempotency-key", &key)],
            )
            .await
        {
            Ok(answer) => Ok(SendResult {
                idempotency_key: key,
                status: Some(answer.status),
                replayed: answer.header(payment_types::headers::IDEMPOTENT_REPLAYED),
                request_id: answer.header(payment_types::headers::REQUEST_ID),
                retry_after: answer.header("retry-after"),
                latency_ms: answer.latency.as_millis() as u64,
                payment_id: answer.body["id"]
                    .as_str()
                    .or_else(|| answer.body["payment_id"].as_str())
                    .or_else(|| answer.body["payment"]["id"].as_str())
                    .map(str::to_owned),
                outcome: answer.body["status"]
                    .as_str()
                    .or_else(|| answer.body["code"].as_str())
                    .map(str::to_owned),
                error: None,
            }),
            Err(UpstreamError::NoApiKey) => Err(UpstreamError::NoApiKey),
            Err(UpstreamError::NoOperatorKey) => Err(UpstreamError::NoOperatorKey),
            // An unanswered payment is an outcome the operator should see, not a page error.
            Err(error) => Ok(SendResult {
                idempotency_key: key,
                status: None,
                replayed: None,
                request_id: None,
                retry_after: None,
                latency_ms: 0,
                payment_id: None,
                outcome: None,
                error: Some(error.to_string()),
            }),
        }
    }
}

fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_owned(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_requests_are_bounded() {
        let ok = SteadyRequest {
            rate_per_s: 5.0,
            duration_s: 60,
            decline_percent: 10,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            SteadyRequest {
                rate_per_s: 0.0,
                ..ok.clone()
            },
            SteadyRequest {
                rate_per_s: 1000.0,
                ..ok.clone()
            },
            SteadyRequest {
                rate_per_s: f64::NAN,
                ..ok.clone()
            },
            SteadyRequest {
                duration_s: 0,
                ..ok.clone()
            },
            SteadyRequest {
                duration_s: 3600,
                ..ok.clone()
            },
            SteadyRequest {
                decline_percent: 101,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_payment_spec_fills_in_defaults() {
        let body = PaymentSpec {
            source: Some("tok_decline".to_owned()),
            ..PaymentSpec::default()
        }
        .body();
        assert_eq!(
            body,
            json!({"amount": 1999, "currency": "TRY", "source": "tok_decline"})
        );
    }
}
