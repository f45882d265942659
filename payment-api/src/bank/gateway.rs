//! The bank gateway: every charge goes through the pipeline of docs/contract.md §3, outermost first:
//! payment deadline → retry (backoff with full jitter, `Retry-After`, retry budget) → circuit
//! breaker → bulkhead → attempt timeout → HTTP, always with the payment's bank reference as the
//! bank's `Idempotency-Key`, so retries and re-sends can never charge twice.

use std::sync::Arc;

use payment_types::bank::{Charge, ChargeRequest};
use resilience::pipeline::{AttemptResult, Classification, Execution, Pipeline};
use tracing::Instrument;

use super::{AttemptOutcome, BankApi, Lookup};
use crate::stats::Counters;

/// A final answer from the bank.
#[derive(Debug, Clone)]
pub(crate) enum ChargeOutcome {
    Charged(Charge),
    Declined {
        decline_code: String,
    },
    /// The bank refused the request itself (a 4xx that is not a decline).
    Refused {
        status: u16,
        code: String,
    },
}

/// Why a payment moved away from a bank (every attempt there definitely not processed): the
/// reasons `/v1/status` (`banks[].cascades`), `bank_cascaded_away_total{bank,reason}` and the
/// `payment moved to the next bank` log line use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CascadeReason {
    /// The bank's breaker refused the attempt: nothing was sent.
    BreakerOpen,
    /// The bank's bulkhead was full: nothing was sent.
    BulkheadFull,
    /// The connection was refused before the request was sent.
    ConnectRefused,
    /// The bank answered 503 or 429, which its contract says leaves nothing.
    BankRefused,
    /// The bank declined with a code configured as cascadable (`--cascade-decline-codes`).
    Decline,
}

impl CascadeReason {
    /// Every reason, in the order `/v1/status` lists them.
    pub(crate) const ALL: [Self; 5] = [
        Self::BreakerOpen,
        Self::BulkheadFull,
        Self::ConnectRefused,
        Self::BankRefused,
        Self::Decline,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::ConnectRefused => "connect_refused",
            Self::BankRefused => "bank_refused",
            Self::Decline => "decline",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the last "not processed" attempt of a run at one bank was: the connection refused, or
/// a 503/429 from the bank. The pipeline keeps only the classification; the cascade's reason
/// needs the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ConnectRefused,
    ByBank,
}

/// A charge run at one bank: the pipeline's execution, and how its last "not processed"
/// attempt was refused (`None` if none was).
#[derive(Debug)]
pub(crate) struct BankRun {
    pub(crate) execution: Execution<ChargeOutcome>,
    pub(crate) last_refusal: Option<Refusal>,
}

/// One bank's client behind its own resilience pipeline; one per bank per process, shared.
#[derive(Debug)]
pub(crate) struct BankGateway {
    /// The name the operator configured the bank under (`--bank NAME=URL`; `bank` for
    /// `--bank-url`): what payments, logs, metrics and `/v1/status` call it.
    name: String,
    /// Its base URL, for `/v1/status`.
    url: String,
    client: Arc<dyn BankApi>,
    /// Attempts made at this bank (charges; lookups are not counted), for its share in
    /// `/v1/status`.
    attempts: std::sync::atomic::AtomicU64,
    /// Payments moved away from this bank to the next one (every attempt here definitely not
    /// processed), by [`CascadeReason`] (indexed as [`CascadeReason::ALL`]).
    cascades: [std::sync::atomic::AtomicU64; 5],
    /// The breaker, retry policy, budget and bulkhead for this bank (per instance, as in
    /// Envoy and Hystrix: each instance judges the bank by what it sees).
    pipeline: Pipeline,
    counters: Arc<Counters>,
}

impl BankGateway {
    pub(crate) fn new(client: impl BankApi, pipeline: Pipeline, counters: Arc<Counters>) -> Self {
        Self {
            name: "bank".to_owned(),
            url: String::new(),
            client: Arc::new(client),
            attempts: Default::default(),
            cascades: Default::default(),
            pipeline,
            counters,
        }
    }

    /// The same gateway under the bank's configured name and URL.
    pub(crate) fn named(mut self, name: &str, url: &str) -> Self {
        self.name = name.to_owned();
        self.url = url.to_owned();
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Charge attempts made at this bank so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Payments moved from this bank to the next so far, whatever the reason.
    pub(crate) fn cascades(&self) -> u64 {
        self.cascades_by_reason().iter().map(|(_, n)| n).sum()
    }

    /// Payments moved from this bank to the next so far, for each reason (every reason, in
    /// the order of [`CascadeReason::ALL`], 0 when none).
    pub(crate) fn cascades_by_reason(&self) -> [(CascadeReason, u64); 5] {
        CascadeReason::ALL.map(|reason| {
            (
                reason,
                self.cascades[reason.index()].load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// Counts a payment moved from this bank to the next.
    pub(crate) fn count_cascade(&self, reason: CascadeReason) {
        self.cascades[reason.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Whether a new payment's first attempt here would be refused before any call: the
    /// breaker would refuse it (`Err` with its retry-after; only a breaker that is not closed
    /// is asked, and a permit it grants is handed back unused, freeing any probe slot it
    /// reserved), or the bulkhead is full right now (`Ok(false)`).
    pub(crate) fn precheck(&self) -> Result<bool, std::time::Duration> {
        let breaker = self.pipeline.breaker();
        if matches!(
            breaker.state(),
            resilience::breaker::State::Open
                | resilience::breaker::State::ForcedOpen
                | resilience::breaker::State::HalfOpen
        ) {
            if let Err(rejected) = breaker.try_acquire() {
                return Err(rejected.retry_after);
            }
        }
        let bulkhead = self.pipeline.bulkhead().snapshot();
        Ok(bulkhead.in_use < bulkhead.max_concurrent)
    }

    /// Charges through the whole pipeline, within this bank's own deadline from now.
    pub(crate) async fn charge(
        &self,
        request: &ChargeRequest,
        request_id: &str,
    ) -> Execution<ChargeOutcome> {
        let deadline = tokio::time::Instant::now() + self.pipeline.config().deadline;
        self.charge_until(request, request_id, deadline, false, 0)
            .await
            .execution
    }

    /// Charges through the whole pipeline within `deadline`: a payment's deadline covers its
    /// whole route, so a payment that moved here from another bank has what is left of it.
    /// With `fail_over` (another bank would take the payment), a "not processed" answer is not
    /// retried here while no attempt was ambiguous: the payment moves on at once instead of
    /// waiting out this bank's backoff and `Retry-After`. `attempts_before` is how many
    /// attempts the payment made at earlier banks: the route shares one `--max-attempts`.
    pub(crate) async fn charge_until(
        &self,
        request: &ChargeRequest,
        request_id: &str,
        deadline: tokio::time::Instant,
        fail_over: bool,
        attempts_before: u32,
    ) -> BankRun {
        let bank = self.name.as_str();
        // How the latest "not processed" attempt was refused (attempts run one at a time).
        let last_refusal = std::sync::Mutex::new(None);
        let last_refusal_ref = &last_refusal;
        let execution = self
            .pipeline
            .execute_until_with(deadline, fail_over, attempts_before, |attempt| {
                if attempt > 1 {
                    Counters::inc(&self.counters.bank_retries);
                }
                Counters::inc(&self.counters.bank_attempts);
                self.attempts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The lines inside an attempt name it when DEBUG is on (the span is DEBUG: at
                // INFO a span per attempt costs more than the lines it would label).
                let span = tracing::debug_span!("bank_attempt", attempt);
                async move {
                    let outcome = self.client.charge(request, request_id).await;
                    // An attempt the bank decided is a step of the payment's story (DEBUG; the
                    // canonical line has `attempts` and `bank_ms`); any other is worth a WARN.
                    let breaker_state = self.pipeline.breaker().state().as_str();
                    let kind = outcome.kind();
                    if matches!(outcome, AttemptOutcome::Charged(_) | AttemptOutcome::Declined { .. }) {
                        tracing::debug!(attempt, bank, reference = %request.reference, outcome = kind, breaker_state, "bank attempt");
                    } else {
                        tracing::warn!(attempt, bank, reference = %request.reference, outcome = kind, breaker_state, "bank attempt");
                    }
                    match outcome {
                        AttemptOutcome::Charged(charge) => AttemptResult::Success(ChargeOutcome::Charged(charge)),
                        AttemptOutcome::Declined { decline_code } => {
                            AttemptResult::BusinessRejection(ChargeOutcome::Declined { decline_code })
                        }
                        AttemptOutcome::NotProcessed { status, retry_after } => {
                            tracing::debug!(bank_status = ?status, ?retry_after, "bank did not process the attempt");
                            let refusal = match status {
                                None => Refusal::ConnectRefused,
                                Some(_) => Refusal::ByBank,
                            };
                            *last_refusal_ref.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
                            Counters::inc(&self.counters.bank_errors);
                            AttemptResult::NotProcessed { retry_after }
                        }
                        AttemptOutcome::Ambiguous { reason } => {
                            if reason == "timeout" {
                                Counters::inc(&self.counters.bank_timeouts);
                            } else {
                                Counters::inc(&self.counters.bank_errors);
                            }
                            AttemptResult::Ambiguous
                        }
                        AttemptOutcome::Refused { status, code } => {
                            AttemptResult::ClientError(ChargeOutcome::Refused { status, code })
                        }
                    }
                }
                .instrument(span)
            })
            .await;
        for attempt in &execution.attempts {
            let classification = match attempt.classification {
                Classification::Success => "success",
                Classification::BusinessRejection => "business_rejection",
                Classification::NotProcessed { .. } => "not_processed",
                Classification::Ambiguous { timed_out: true } => "timeout",
                Classification::Ambiguous { timed_out: false } => "ambiguous",
                Classification::ClientError => "client_error",
            };
            crate::metric_handles::record_bank_attempt(
                &self.name,
                classification,
                attempt.duration,
            );
            if classification == "timeout" {
                // The pipeline cut the attempt off, so it could not log itself.
                tracing::warn!(
                    attempt = attempt.number,
                    bank,
                    reference = %request.reference,
                    outcome = "timeout",
                    duration_ms = attempt.duration.as_millis() as u64,
                    breaker_state = self.pipeline.breaker().state().as_str(),
                    "bank attempt timed out"
                );
            }
        }
        let timeouts = execution
            .attempts
            .iter()
            .filter(|a| {
                matches!(
                    a.classification,
                    Classification::Ambiguous { timed_out: true }
                )
            })
            .count();
        for _ in 0..timeouts {
            Counters::inc(&self.counters.bank_timeouts);
        }
        BankRun {
            execution,
            last_refusal: last_refusal.into_inner().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Asks the bank about a reference, through the breaker (the reconciler respects it): a
    /// rejected permit means "not now" and nothing is sent.
    pub(crate) async fn lookup(
        &self,
        reference: &str,
        request_id: &str,
    ) -> Result<Lookup, resilience::breaker::Rejected> {
        let permit = self.pipeline.breaker().try_acquire()?;
        let started = tokio::time::Instant::now();
        let lookup = self.client.lookup(reference, request_id).await;
        let outcome = match lookup {
            Lookup::Found(_) | Lookup::NotFound => resilience::breaker::Outcome::Success,
            Lookup::Unavailable => resilience::breaker::Outcome::Failure,
        };
        permit.record_elapsed(outcome, started.elapsed());
        Ok(lookup)
    }
}
