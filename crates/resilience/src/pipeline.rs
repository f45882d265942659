//! The composition helper: runs one logical call (a payment's bank charge) through, outermost
//! first, the deadline → retry (with the retry budget) → circuit breaker → bulkhead → attempt
//! timeout, and reports every attempt.
//!
//! The caller classifies each attempt's result ([`AttemptResult`]); the pipeline maps it onto
//! the breaker (success / slow success / failure / ignored) and the retry policy (retry only
//! what was definitely not processed or is ambiguous).
//!
//! A `Retry-After` on a "not processed" answer (429/503) lengthens the next retry delay (up to
//! `retry.max_retry_after`). By default (`retry_after_lengthens_open`) it also lengthens the
//! breaker's wait when the breaker is open after that answer (it just tripped, or was already
//! open): an opening lasts at least as long as the bank asked. A single `Retry-After` does not
//! open a closed breaker unless `open_breaker_on_retry_after` is set: a flaky bank that sheds a
//! share of its load with 429s must not stop all traffic for a second each time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, CircuitBreaker, Outcome, RejectReason, Rejected, Snapshot};
use crate::budget::{BudgetConfig, BudgetSnapshot, RetryBudget};
use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadFull, BulkheadSnapshot};
use crate::clock::{SharedClock, TokioClock};
use crate::error::{ensure, ConfigError};
use crate::retry::{GiveUpReason, RetryConfig, RetryDecision, RetryPolicy};
use crate::ser;

/// Settings of a [`Pipeline`]: each component's settings plus the two timeouts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineConfig {
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The retry policy.
    pub retry: RetryConfig,
    /// The retry budget.
    pub budget: BudgetConfig,
    /// The bulkhead.
    pub bulkhead: BulkheadConfig,
    /// Each attempt is cut off after this long (and counts as ambiguous). Default 2 s.
    #[serde(rename = "attempt_timeout_ms", serialize_with = "ser::ms")]
    pub attempt_timeout: Duration,
    /// The whole call, retries and delays included, ends by this long after it starts.
    /// Default 10 s.
    #[serde(rename = "deadline_ms", serialize_with = "ser::ms")]
    pub deadline: Duration,
    /// Open the breaker (from any state) for a `Retry-After` received with a "not processed"
    /// answer. Default false.
    pub open_breaker_on_retry_after: bool,
    /// When the breaker is open after a "not processed" answer with a `Retry-After`, keep it
    /// open for at least that (capped) wait. Default true.
    pub retry_after_lengthens_open: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            budget: BudgetConfig::default(),
            bulkhead: BulkheadConfig::default(),
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            open_breaker_on_retry_after: false,
            retry_after_lengthens_open: true,
        }
    }
}

impl PipelineConfig {
    /// Checks every setting's range, the components' included.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.breaker.validate()?;
        self.retry.validate()?;
        self.budget.validate()?;
        self.bulkhead.validate()?;
        ensure(
            !self.attempt_timeout.is_zero(),
            "attempt_timeout",
            "must be positive",
        )?;
        ensure(!self.deadline.is_zero(), "deadline", "must be positive")?;
        Ok(())
    }
}

/// One attempt's result, classified by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult<T> {
    /// The dependency did it (bank charged). Breaker: success (or slow success). Final.
    Success(T),
    /// The dependency answered with a business refusal (card declined). Breaker: success.
    /// Final: never retried.
    BusinessRejection(T),
    /// Definitely not processed (503, 429, connection refused). Breaker: failure. Retried,
    /// after at least the `retry_after` if one was given.
    NotProcessed {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// May or may not have been processed (timeout, reset after send, 500/502/504). Breaker:
    /// failure. Retried (the caller must make retries idempotent, e.g. the same bank
    /// reference).
    Ambiguous,
    /// Our request was wrong (4xx). Breaker: ignored. Final: never retried.
    ClientError(T),
}

/// An attempt's classification, as reported (no payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classification {
    /// See [`AttemptResult::Success`].
    Success,
    /// See [`AttemptResult::BusinessRejection`].
    BusinessRejection,
    /// See [`AttemptResult::NotProcessed`].
    NotProcessed {
        /// The server's `Retry-After`, if any (uncapped, as received).
        #[serde(rename = "retry_after_ms", serialize_with = "ser::opt_ms")]
        retry_after: Option<Duration>,
    },
    /// See [`AttemptResult::Ambiguous`].
    Ambiguous {
        /// Whether the pipeline's attempt timeout cut it off (rather than the caller saying so).
        timed_out: bool,
    },
    /// See [`AttemptResult::ClientError`].
    ClientError,
}

/// The report of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub number: u32,
    /// How the attempt ended.
    pub classification: Classification,
    /// How long it took.
    #[serde(rename = "duration_ms", serialize_with = "ser::ms")]
    pub duration: Duration,
    /// The delay slept before the next attempt (`None` for the last one).
    #[serde(rename = "delay_before_next_ms", serialize_with = "ser::opt_ms")]
    pub delay_before_next: Option<Duration>,
    /// Whether the breaker admitted it as a half-open probe.
    pub probe: bool,
}

/// How the whole call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionOutcome<T> {
    /// An attempt succeeded.
    Success(T),
    /// An attempt got a business refusal.
    BusinessRejection(T),
    /// An attempt got a client error.
    ClientError(T),
    /// Retries stopped with no final answer: `last` is the last attempt's classification
    /// (`None` if the deadline passed before any attempt).
    GaveUp {
        /// Why the loop stopped.
        reason: GiveUpReason,
        /// The last attempt's classification.
        last: Option<Classification>,
    },
    /// The breaker refused an attempt (never retried).
    BreakerRejected(Rejected),
    /// The bulkhead refused an attempt (never retried).
    BulkheadFull(BulkheadFull),
}

/// The result of [`Pipeline::execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution<T> {
    /// How it ended.
    pub outcome: ExecutionOutcome<T>,
    /// Every attempt made, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Whether any attempt was ambiguous: if so, and the outcome is not a success or a
    /// business rejection, the operation may have been applied (a payment must then be
    /// reported pending and reconciled, never "not processed").
    pub any_ambiguous: bool,
    /// Total time, delays included.
    pub elapsed: Duration,
}

impl<T> Execution<T> {
    /// The wait to advertise (`Retry-After`) when the call was refused or gave up without
    /// processing: the breaker's retry-after, or the last `Retry-After` received.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.outcome {
            ExecutionOutcome::BreakerRejected(r) => Some(r.retry_after),
            ExecutionOutcome::GaveUp {
                last: Some(Classification::NotProcessed { retry_after }),
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

/// A read-only view of every component, for a status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSnapshot {
    /// The breaker.
    pub breaker: Snapshot,
    /// The retry budget.
    pub budget: BudgetSnapshot,
    /// The bulkhead.
    pub bulkhead: BulkheadSnapshot,
}

/// The pipeline. Build one per dependency and share it; `breaker()` etc. give the shared
/// components (e.g. for a reconciler that must respect the same breaker, or operator actions).
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    breaker: Arc<CircuitBreaker>,
    retry: RetryPolicy,
    budget: Arc<RetryBudget>,
    bulkhead: Arc<Bulkhead>,
    clock: SharedClock,
    /// Draws retry jitter; behind a mutex held only while drawing, never across an await.
    rng: Mutex<RngBox>,
}

/// A boxed random source with a `Debug` impl.
struct RngBox(Box<dyn RngCore + Send>);

impl std::fmt::Debug for RngBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RngBox")
    }
}

impl Pipeline {
    /// A pipeline on the tokio clock with entropy-seeded jitter.
    pub fn new(config: PipelineConfig) -> Result<Self, ConfigError> {
        Self::with_parts(
            config,
            Arc::new(TokioClock),
            Box::new(StdRng::from_entropy()),
        )
    }

    /// A pipeline on the given clock and random source (the breaker's jitter generator is
    /// seeded from it). The clock must follow tokio time (delays and timeouts are tokio
    /// timers): use [`TokioClock`], with `tokio::time::pause()` in tests.
    pub fn with_parts(
        config: PipelineConfig,
        clock: SharedClock,
        mut rng: Box<dyn RngCore + Send>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let breaker_rng = StdRng::seed_from_u64(rng.next_u64());
        Ok(Self {
            breaker: Arc::new(CircuitBreaker::with_parts(
                config.breaker.clone(),
                clock.clone(),
                Box::new(breaker_rng),
            )?),
            retry: RetryPolicy::new(config.retry.clone())?,
            budget: Arc::new(RetryBudget::with_clock(
                config.budget.clone(),
                clock.clone(),
            )?),
            bulkhead: Arc::new(Bulkhead::new(config.bulkhead.clone())?),
            clock,
            rng: Mutex::new(RngBox(rng)),
            config,
        })
    }

    /// The effective settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The shared retry budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The shared bulkhead.
    pub fn bulkhead(&self) -> &Arc<Bulkhead> {
        &self.bulkhead
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// A read-only view of every component.
    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            breaker: self.breaker.snapshot(),
            budget: self.budget.snapshot(),
            bulkhead: self.bulkhead.snapshot(),
        }
    }

    /// Runs `attempt` (called with the 1-based attempt number) until a final answer, within
    /// the configured deadline from now.
    pub async fn execute<F, Fut, T>(&self, attempt: F) -> Execution<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = AttemptResult<T>>,
    {
        let deadline = self.clock.now() + self.config.deadline;
        self.execute_until(deadline, attempt).await
    }

    /// Like [`execute`](Self::execute), with an explicit deadline (e.g. one that started
    /// earlier, or a resumed payment's).
    pub async fn execute_until<F, Fut, T>(&self, deadline: Instant, attempt: F) -> Execution<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = AttemptResult<T>>,
    {
        self.execute_until_with(deadline, false, 0, attempt).await
    }

    /// Like [`execute_until`](Self::execute_until), as one leg of a route over several
    /// dependencies (banks). With `fail_over` set, a "not processed" answer while no attempt
    /// was ambiguous ends the call at once (`GaveUp` with [`GiveUpReason::NotRetryable`])
    /// instead of retrying here: the caller has somewhere else to send the operation (another
    /// bank), and nothing was applied here. `attempts_before` is how many attempts earlier legs
    /// of the route made: the route shares one `max_attempts` (and its backoff keeps growing),
    /// so a leg after a move gets what is left, and always at least its first attempt.
    pub async fn execute_until_with<F, Fut, T>(
        &self,
        deadline: Instant,
        fail_over: bool,
        attempts_before: u32,
        mut attempt: F,
    ) -> Execution<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = AttemptResult<T>>,
    {
        let start = self.clock.now();
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut any_ambiguous = false;
        let mut previous_delay = Duration::ZERO;
        let mut last: Option<Classification> = None;
        self.budget.deposit();

        let finish = |outcome, attempts, any_ambiguous| Execution {
            outcome,
            attempts,
            any_ambiguous,
            elapsed: self.clock.now().saturating_duration_since(start),
        };

        for number in 1u32.. {
            let now = self.clock.now();
            if now >= deadline {
                let outcome = ExecutionOutcome::GaveUp {
                    reason: GiveUpReason::DeadlineExceeded,
                    last,
                };
                return finish(outcome, attempts, any_ambiguous);
            }
            let permit = match self.breaker.try_acquire() {
                Ok(p) => p,
                Err(r) => {
                    return finish(
                        ExecutionOutcome::BreakerRejected(r),
                        attempts,
                        any_ambiguous,
                    )
                }
            };
            let probe = permit.is_probe();
            let slot = match self.bulkhead.try_enter() {
                Ok(s) => s,
                Err(full) => {
                    // Our own limit, not the bank's health.
                    permit.record(Outcome::Ignored);
                    return finish(
                        ExecutionOutcome::BulkheadFull(full),
                        attempts,
                        any_ambiguous,
                    );
                }
            };
            let limit = self.config.attempt_timeout.min(deadline - now);
            let started = self.clock.now();
            let result = tokio::time::timeout(limit, attempt(number)).await;
            let duration = self.clock.now().saturating_duration_since(started);
            drop(slot);

            let (classification, value, breaker_outcome) = match result {
                Err(_elapsed) => (
                    Classification::Ambiguous { timed_out: true },
                    None,
                    Outcome::Failure,
                ),
                Ok(AttemptResult::Success(v)) => {
                    (Classification::Success, Some(Ok(v)), Outcome::Success)
                }
                Ok(AttemptResult::BusinessRejection(v)) => (
                    Classification::BusinessRejection,
                    Some(Err(Ok(v))),
                    Outcome::Success,
                ),
                Ok(AttemptResult::ClientError(v)) => (
                    Classification::ClientError,
                    Some(Err(Err(v))),
                    Outcome::Ignored,
                ),
                Ok(AttemptResult::NotProcessed { retry_after }) => (
                    Classification::NotProcessed { retry_after },
                    None,
                    Outcome::Failure,
                ),
                Ok(AttemptResult::Ambiguous) => (
                    Classification::Ambiguous { timed_out: false },
                    None,
                    Outcome::Failure,
                ),
            };
            permit.record_elapsed(breaker_outcome, duration);
            let retry_after = match classification {
                Classification::NotProcessed { retry_after } => retry_after,
                _ => None,
            };
            if let Some(ra) = retry_after {
                let open = self.breaker.state() == crate::breaker::State::Open;
                if self.config.open_breaker_on_retry_after
                    || (open && self.config.retry_after_lengthens_open)
                {
                    self.breaker
                        .open_for(ra.min(self.config.retry.max_retry_after));
                }
            }
            any_ambiguous |= matches!(classification, Classification::Ambiguous { .. });
            attempts.push(AttemptRecord {
                number,
                classification,
                duration,
                delay_before_next: None,
                probe,
            });
            last = Some(classification);

            match value {
                Some(Ok(v)) => {
                    return finish(ExecutionOutcome::Success(v), attempts, any_ambiguous)
                }
                Some(Err(Ok(v))) => {
                    return finish(
                        ExecutionOutcome::BusinessRejection(v),
                        attempts,
                        any_ambiguous,
                    )
                }
                Some(Err(Err(v))) => {
                    return finish(ExecutionOutcome::ClientError(v), attempts, any_ambiguous)
                }
                None => {}
            }

            if fail_over
                && !any_ambiguous
                && matches!(classification, Classification::NotProcessed { .. })
            {
                let outcome = ExecutionOutcome::GaveUp {
                    reason: GiveUpReason::NotRetryable,
                    last,
                };
                return finish(outcome, attempts, any_ambiguous);
            }

            let decision = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                self.retry.decide(
                    number.saturating_add(attempts_before),
                    true,
                    retry_after,
                    previous_delay,
                    self.clock.now(),
                    deadline,
                    &mut *rng.0,
                )
            };
            let delay = match decision {
                RetryDecision::Retry { delay } => delay,
                RetryDecision::GiveUp { reason } => {
                    return finish(
                        ExecutionOutcome::GaveUp { reason, last },
                        attempts,
                        any_ambiguous,
                    )
                }
            };
            // Sleeping into a certain rejection helps nobody: stop now with the breaker's answer.
            if let Some(r) = self.breaker.peek_rejection() {
                if r.reason == RejectReason::ForcedOpen || r.retry_after > delay {
                    return finish(
                        ExecutionOutcome::BreakerRejected(r),
                        attempts,
                        any_ambiguous,
                    );
                }
            }
            if !self.budget.try_withdraw() {
                let outcome = ExecutionOutcome::GaveUp {
                    reason: GiveUpReason::BudgetExhausted,
                    last,
                };
                return finish(outcome, attempts, any_ambiguous);
            }
            if let Some(rec) = attempts.last_mut() {
                rec.delay_before_next = Some(delay);
            }
            tokio::time::sleep(delay).await;
            previous_delay = delay;
        }
        unreachable!("the attempt loop only ends by returning")
    }
}

#[cfg(test)]
mod tests;
