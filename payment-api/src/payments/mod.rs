//! The payment flow (docs/contract.md §2 and §3): claim the key, charge through the bank gateway,
//! record the outcome with its response atomically, and answer — or answer from what the key
//! already holds (replay, 409 in flight, 422 reused, 202 pending).
//!
//! The rules that keep money safe live here:
//! - a key is claimed in the store (a unique constraint decides) before the bank is called, and
//!   the payment and its bank reference are created in the same transaction;
//! - every attempt, retry and re-send uses that one bank reference, which the bank dedups;
//! - an outcome the bank may have applied (any ambiguous attempt) is never reported as "not
//!   processed": it is stored as pending and the reconciler settles it;
//! - only when every attempt was definitely refused (or none was made) is the key released, so
//!   the client can retry it;
//! - with several banks (docs/failover.md), a payment moves from its bank to the next only when
//!   every attempt at its bank was definitely not processed (the same condition as a release),
//!   and the move, with the payment's own reference at the next bank, is recorded in the store
//!   before the next bank is called. After any ambiguous attempt the payment stays where it
//!   is: pending, settled there by the reconciler.

mod replay_cache;
pub(crate) mod responses;
pub(crate) mod routing;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use payment_store::{
    ClaimOutcome, KeyRecord, KeyState, NewPayment, PaymentRecord, Settlement, Store, StoredResponse,
};
use payment_types::{bank::ChargeRequest, payment::PaymentStatus};
use resilience::pipeline::{Execution, ExecutionOutcome};
use uuid::Uuid;

pub(crate) use replay_cache::{CachedKey, ReplayCache};
pub use routing::RoutingMode;
pub(crate) use routing::{HealthSettings, Routing};

use crate::{
    auth::Tenant,
    bank::{BankGateway, BankRun, CascadeReason, ChargeOutcome, Refusal},
    domain::{IdempotencyKey, PaymentRequest},
    error::ApiError,
    stats::{Counters, Latencies},
};

/// An answer to a keyed request.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) response: Arc<StoredResponse>,
    /// True when the response is what the key already held.
    pub(crate) replayed: bool,
}

/// What a finished pipeline run means for the payment.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The bank gave an answer that decides the payment.
    Final(Settlement),
    /// The bank may have charged, or may still charge: pending, the bank lookup decides.
    Unknown,
    /// No attempt was made, or every attempt was definitely not processed.
    NotProcessed,
}

/// Classifies a pipeline run (docs/contract.md §3 step 4, seen over the whole run).
///
/// A charge or a decline decides the reference (the bank answers every request with one
/// reference alike). A refusal (a non-decline 4xx) decides it only when no earlier attempt
/// was ambiguous: a refusal of a retry says nothing about a first attempt the bank may still
/// commit. A 409 (`charge_in_progress`) never decides it: a request with this reference is in
/// progress at the bank right now.
pub(crate) fn classify(execution: &Execution<ChargeOutcome>) -> Verdict {
    let answered = match &execution.outcome {
        ExecutionOutcome::Success(outcome)
        | ExecutionOutcome::BusinessRejection(outcome)
        | ExecutionOutcome::ClientError(outcome) => Some(outcome),
        _ => None,
    };
    match answered {
        Some(ChargeOutcome::Charged(charge)) => Verdict::Final(Settlement::Succeeded {
            charge_id: charge.id.clone(),
        }),
        Some(ChargeOutcome::Declined { decline_code }) => Verdict::Final(Settlement::Declined {
            decline_code: decline_code.clone(),
        }),
        Some(ChargeOutcome::Refused { status, .. })
            if execution.any_ambiguous || *status == 409 =>
        {
            Verdict::Unknown
        }
        Some(ChargeOutcome::Refused { status, code }) => Verdict::Final(Settlement::Failed {
            reason: format!("bank answered {status} {code}"),
        }),
        None if execution.any_ambiguous => Verdict::Unknown,
        None => Verdict::NotProcessed,
    }
}

/// Settings the flow needs.
#[derive(Debug, Clone)]
pub(crate) struct FlowSettings {
    /// How long a handler's claim on its payment lasts; must exceed the payment deadline.
    pub(crate) lease: Duration,
    /// When the reconciler should first look at a payment answered 202.
    pub(crate) reconcile_after: Duration,
    /// Decline codes after which a payment may move to the next bank (none by default).
    pub(crate) cascade_decline_codes: Vec<String>,
}

/// The reference of payment `id` at a bank: `pay_<id>` at the first bank it is sent to (as with
/// one bank), `pay_<id>_<bank>` at each bank it moves to. Each (payment, bank) pair has its own,
/// so no bank ever sees another bank's reference, and a charge in any ledger names its bank.
pub(crate) fn bank_reference(id: Uuid, bank: Option<&str>) -> String {
    match bank {
        None => format!("pay_{}", id.simple()),
        Some(bank) => format!("pay_{}_{bank}", id.simple()),
    }
}

/// The payment flow, shared by the handlers and the reconciler.
#[derive(Debug)]
pub(crate) struct PaymentService {
    pub(crate) store: Arc<dyn Store>,
    /// The banks in priority order (at least one).
    pub(crate) banks: Vec<Arc<BankGateway>>,
    /// The order a new payment considers the banks in (`--routing`), and their scores.
    pub(crate) routing: Routing,
    pub(crate) cache: ReplayCache,
    pub(crate) counters: Arc<Counters>,
    pub(crate) latencies: Arc<Latencies>,
    pub(crate) settings: FlowSettings,
    /// Identifies this process in lease owner tokens (`<instance>/<request>`).
    pub(crate) instance_id: String,
}

impl PaymentService {
    /// `POST /v1/payments` after authentication and parsing.
    pub(crate) async fn create(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        fingerprint: String,
        request: PaymentRequest,
        request_id: &str,
    ) -> Result<Answer, ApiError> {
        let started = tokio::time::Instant::now();
        let answer = self
            .create_inner(tenant, key, fingerprint, request, request_id)
            .await;
        self.latencies.record(started.elapsed());
        answer
    }

    async fn create_inner(
        &self,
        tenant: &Tenant,
        key: &IdempotencyKey,
        fingerprint: String,
        request: PaymentRequest,
        request_id: &str,
    ) -> Result<Answer, ApiError> {
        // 1. A hot completed key is answered from memory.
        if let Some(cached) = self.cache.get(tenant.as_str(), key.as_str()) {
            return self.replay_cached(cached, &fingerprint);
        }

        // 2. Every bank's breaker refuses: a new payment is refused before any store write; a
        //    stored key is still answered. `order` is the routing's (priority or health); the
        //    positions below are positions in it.
        let order = self.routing.order();
        let first = match self.route_from(&order, 0) {
            Ok(first) => first,
            Err(rejected) => {
                let existing = crate::stats::timed(
                    "find_key",
                    self.store.find_key(tenant.as_str(), key.as_str()),
                )
                .await
                .map_err(|e| self.store_error(e))?;
                return match existing {
                    Some(record) => self.answer_existing(record, &fingerprint).await,
                    None => {
                        Counters::inc(&self.counters.rejected_breaker);
                        Err(ApiError::BreakerOpen {
                            retry_after: rejected,
                        })
                    }
                };
            }
        };

        // 3. Claim the key and create the payment with its bank and reference there (its first
        //    route), atomically.
        let now = responses::now_ms();
        let id = Uuid::now_v7();
        let owner = format!("{}/{}", self.instance_id, Uuid::new_v4().simple());
        let new = NewPayment {
            id,
            tenant: tenant.as_str().to_owned(),
            idempotency_key: key.as_str().to_owned(),
            fingerprint: fingerprint.clone(),
            amount: request.amount,
            currency: request.currency,
            source: request.source,
            description: request.description,
            metadata: request.metadata,
            bank_reference: bank_reference(id, None),
            bank: self.banks[order[first]].name().to_owned(),
            lease_owner: owner.clone(),
            lease_expires_at: now + self.settings.lease,
            now,
        };
        match crate::stats::timed("claim", self.store.claim(&new))
            .await
            .map_err(|e| self.store_error(e))?
        {
            ClaimOutcome::Existing(record) => {
                return self.answer_existing(record, &fingerprint).await
            }
            ClaimOutcome::Claimed => {}
        }
        tracing::Span::current().record("payment_id", tracing::field::display(id));
        // Step lines are DEBUG: at INFO a payment's story is its canonical line (docs/observability.md).
        tracing::debug!(payment_id = %id, tenant = tenant.as_str(), idempotency_key = key.as_str(), bank = new.bank, "payment claimed");

        // 4. Charge through the bank's pipeline; move to the next bank only while every attempt
        //    was definitely not processed; then record the outcome. The payment's deadline
        //    covers its whole route.
        let deadline =
            tokio::time::Instant::now() + self.banks[order[first]].pipeline().config().deadline;
        let mut record = PaymentRecord::from_new(&new);
        let mut current = first;
        // When the latest route was recorded. Each next route is recorded at least a
        // millisecond later (the store's resolution), so the routes read back oldest first in
        // the order they were taken, even when a bank refused within the same millisecond.
        let mut route_at = new.now;
        loop {
            let gateway = &self.banks[order[current]];
            let charge = ChargeRequest {
                amount: record.amount,
                currency: record.currency.clone(),
                source: record.source.clone(),
                reference: record.bank_reference.clone(),
            };
            // Another bank would take the payment if every attempt here is refused: then a
            // refusal here is not retried here (a cascading retry, not a second attempt).
            let fail_over = self.route_from(&order, current + 1).is_ok();
            let BankRun {
                execution,
                last_refusal,
            } = gateway
                .charge_until(&charge, request_id, deadline, fail_over, record.attempts)
                .await;
            self.routing.record(order[current], &execution);
            let next = match self.may_cascade(&execution, last_refusal) {
                Some(reason) if tokio::time::Instant::now() < deadline => self
                    .route_from(&order, current + 1)
                    .ok()
                    .map(|next| (next, reason)),
                _ => None,
            };
            let Some((next, reason)) = next else {
                return self
                    .finish(&mut record, &owner, Some(&fingerprint), gateway, execution)
                    .await;
            };
            let to = &self.banks[order[next]];
            let attempts = record.attempts + execution.attempts.len() as u32;
            let reference = bank_reference(record.id, Some(to.name()));
            let moved_at = responses::now_ms().max(route_at + chrono::Duration::milliseconds(1));
            // The route is durable before the next bank is called: after a crash, the
            // reconciler asks the bank the payment is with, by the reference it has there.
            let moved = crate::stats::timed(
                "switch_bank",
                self.store.switch_bank(
                    record.id,
                    &owner,
                    to.name(),
                    &reference,
                    attempts,
                    moved_at,
                ),
            )
            .await;
            match moved {
                Ok(true) => {
                    gateway.count_cascade(reason);
                    metrics::counter!("bank_cascades_total", "from" => gateway.name().to_owned(), "to" => to.name().to_owned()).increment(1);
                    tracing::warn!(
                        payment_id = %record.id,
                        from = gateway.name(),
                        to = to.name(),
                        reason = reason.as_str(),
                        attempts,
                        reference = %reference,
                        "every attempt at the bank was definitely not processed; payment moved to the next bank"
                    );
                    record.bank = to.name().to_owned();
                    record.bank_reference = reference;
                    record.attempts = attempts;
                    route_at = moved_at;
                    current = next;
                }
                Ok(false) => {
                    // Our lease was lost: what the key holds now is the truth.
                    tracing::warn!(payment_id = %record.id, attempts, "lease lost before moving to the next bank; answering what the key holds");
                    Counters::inc(&self.counters.lease_lost);
                    tracing::Span::current().record("bank", gateway.name());
                    return self.answer_after_lost_lease(&record).await;
                }
                Err(error) => {
                    // The move is not recorded, so the next bank is not called: the payment is
                    // still with this bank, where nothing was processed; release it if the
                    // store lets us, or leave it to its lease.
                    tracing::error!(payment_id = %record.id, %error, "cannot record the move to the next bank; not calling it");
                    return self
                        .finish(&mut record, &owner, Some(&fingerprint), gateway, execution)
                        .await;
                }
            }
        }
    }

    /// The position in `order` (bank indices, the routing's order), from `start` on, of the
    /// first bank that would take a new payment's first attempt now: its breaker admits it and
    /// its bulkhead has room; failing that, the first whose breaker admits it (its full
    /// bulkhead then refuses the attempt without a call, as with one bank). `Err` with the
    /// shortest breaker retry-after when every breaker refuses.
    fn route_from(&self, order: &[usize], start: usize) -> Result<usize, Duration> {
        let mut admitted = None;
        let mut retry_after: Option<Duration> = None;
        for (position, &index) in order.iter().enumerate().skip(start) {
            match self.banks[index].precheck() {
                Ok(true) => return Ok(position),
                Ok(false) => {
                    admitted.get_or_insert(position);
                }
                Err(wait) => retry_after = Some(retry_after.map_or(wait, |w| w.min(wait))),
            }
        }
        admitted.ok_or(retry_after.unwrap_or(Duration::from_secs(1)))
    }

    /// Whether a payment may move on from the bank `execution` ran at, and why: every attempt
    /// there was definitely not processed (or none was made), or the bank declined with a code
    /// configured as cascadable and no attempt was ambiguous. Anything the bank may have
    /// applied keeps the payment there (`None`). `last_refusal` tells a refused connection
    /// from a 503/429 when the run ended on such attempts.
    fn may_cascade(
        &self,
        execution: &Execution<ChargeOutcome>,
        last_refusal: Option<Refusal>,
    ) -> Option<CascadeReason> {
        match classify(execution) {
            Verdict::NotProcessed => Some(match (&execution.outcome, last_refusal) {
                (ExecutionOutcome::BreakerRejected(_), _) => CascadeReason::BreakerOpen,
                (ExecutionOutcome::BulkheadFull(_), _) => CascadeReason::BulkheadFull,
                (_, Some(Refusal::ConnectRefused)) => CascadeReason::ConnectRefused,
                // A 503/429, or (no attempt at all: the deadline passed first, and then nothing
                // moves on anyway) the bank's answer is the closest description.
                (_, Some(Refusal::ByBank) | None) => CascadeReason::BankRefused,
            }),
            Verdict::Final(Settlement::Declined { decline_code }) => (!execution.any_ambiguous
                && self.settings.cascade_decline_codes.contains(&decline_code))
            .then_some(CascadeReason::Decline),
            Verdict::Final(_) | Verdict::Unknown => None,
        }
    }

    /// The first bank: the one whose breaker the operator controls and `/v1/status` shows at
    /// its top level.
    pub(crate) fn bank(&self) -> &Arc<BankGateway> {
        &self.banks[0]
    }

    /// The bank configured under `name`.
    pub(crate) fn bank_named(&self, name: &str) -> Option<&Arc<BankGateway>> {
        self.banks.iter().find(|bank| bank.name() == name)
    }

    /// Records what the pipeline ended with, and answers.
    ///
    /// The rule behind every branch: the client hears "not processed" (`charged: "no"`) only
    /// when every attempt was definitely not processed **and** the store confirmed that the
    /// key was released. Anything the bank may still apply goes pending, and a store that
    /// cannot record what happened leaves the payment under its lease for the reconciler.
    pub(crate) async fn finish(
        &self,
        record: &mut PaymentRecord,
        owner: &str,
        fingerprint: Option<&str>,
        gateway: &BankGateway,
        execution: Execution<ChargeOutcome>,
    ) -> Result<Answer, ApiError> {
        let attempts = record.attempts + execution.attempts.len() as u32;
        let retry_after = execution.retry_after().unwrap_or(Duration::from_secs(1));
        // For the request's canonical line (fields of the request span; the reconciler's span
        // has none of them, and recording them there does nothing).
        let span = tracing::Span::current();
        span.record("attempts", attempts);
        let bank_time: Duration = execution.attempts.iter().map(|a| a.duration).sum();
        // Whole microseconds, in milliseconds: 1.976, not 1.9760049999999998.
        span.record("bank_ms", bank_time.as_micros() as f64 / 1000.0);
        span.record(
            "breaker_state",
            gateway.pipeline().breaker().state().as_str(),
        );
        span.record("bank", gateway.name());
        match classify(&execution) {
            Verdict::Final(settlement) => {
                self.settle(record, owner, fingerprint, settlement, attempts)
                    .await
            }
            Verdict::Unknown => {
                let sent = !execution.attempts.is_empty();
                Ok(self.mark_pending(record, owner, attempts, sent).await)
            }
            Verdict::NotProcessed => {
                self.release(record, owner, attempts, gateway, execution, retry_after)
                    .await
            }
        }
    }

    /// The bank may have charged: the payment is pending and the reconciler settles it. If the
    /// store cannot record that, the payment is still pending under our lease (claimed as
    /// in flight, with the lease's expiry as its first reconcile time), so the answer is the
    /// same 202: the reconciler resumes it once the lease expires.
    async fn mark_pending(
        &self,
        record: &mut PaymentRecord,
        owner: &str,
        attempts: u32,
        sent: bool,
    ) -> Answer {
        let now = responses::now_ms();
        let last_attempt_at = sent.then_some(now);
        let marked = crate::stats::timed(
            "mark_pending",
            self.store.mark_pending(
                record.id,
                owner,
                attempts,
                last_attempt_at,
                now + self.settings.reconcile_after,
                now,
            ),
        )
        .await;
        if let Err(error) = marked {
            Counters::inc(&self.counters.store_unavailable);
            tracing::error!(payment_id = %record.id, %error, "cannot mark a payment pending; the reconciler resumes it when its lease expires");
        }
        record.attempts = attempts;
        record.updated_at = now;
        Counters::inc(&self.counters.pending);
        tracing::warn!(payment_id = %record.id, attempts, bank = record.bank, "bank outcome unknown; payment pending");
        Answer {
            response: Arc::new(responses::for_payment(record)),
            replayed: false,
        }
    }

    /// Nothing reached the bank, or the bank definitely refused every attempt: free the key,
    /// and say "not processed" only once the store confirmed it.
    async fn release(
        &self,
        record: &PaymentRecord,
        owner: &str,
        attempts: u32,
        gateway: &BankGateway,
        execution: Execution<ChargeOutcome>,
        retry_after: Duration,
    ) -> Result<Answer, ApiError> {
        let released = crate::stats::timed(
            "release",
            self.store.release(record.id, owner, responses::now_ms()),
        )
            .await
            .map_err(|e| {
                tracing::error!(payment_id = %record.id, error = %e, "cannot release a key whose payment was not processed; its outcome stays unknown");
                self.store_error(e)
            })?;
        if !released {
            // Our lease was lost (it expired and another worker took the payment over): what
            // the key holds now is the truth, and it may be a charge.
            tracing::warn!(payment_id = %record.id, attempts, "lease lost before the key was released; answering what the key holds");
            Counters::inc(&self.counters.lease_lost);
            return self.answer_after_lost_lease(record).await;
        }
        tracing::warn!(
            payment_id = %record.id,
            attempts,
            bank = gateway.name(),
            breaker_state = gateway.pipeline().breaker().state().as_str(),
            "payment not processed; key released"
        );
        Err(match execution.outcome {
            ExecutionOutcome::BreakerRejected(_) => {
                Counters::inc(&self.counters.rejected_breaker);
                ApiError::BreakerOpen { retry_after }
            }
            ExecutionOutcome::BulkheadFull(_) => {
                Counters::inc(&self.counters.rejected_bulkhead);
                ApiError::BulkheadFull {
                    retry_after: Duration::from_secs(1),
                }
            }
            _ => {
                Counters::inc(&self.counters.bank_unavailable);
                ApiError::BankUnavailable { retry_after }
            }
        })
    }

    /// The answer once a lease was lost: a final response the key now holds, or its current
    /// (pending) state; `outcome_unknown` when the key cannot be read or holds nothing to show.
    async fn answer_after_lost_lease(&self, record: &PaymentRecord) -> Result<Answer, ApiError> {
        let unknown = ApiError::OutcomeUnknown {
            retry_after: Duration::from_secs(1),
        };
        let key = crate::stats::timed(
            "find_key",
            self.store.find_key(&record.tenant, &record.idempotency_key),
        )
        .await
        .map_err(|e| self.store_error(e))?;
        match key {
            Some(key) if key.payment_id == record.id => match (key.state, key.response) {
                (KeyState::Completed, Some(stored)) => Ok(Answer {
                    response: Arc::new(stored),
                    replayed: false,
                }),
                _ => {
                    let payment = crate::stats::timed(
                        "get_payment",
                        self.store.get_payment(Some(&record.tenant), record.id),
                    )
                    .await
                    .map_err(|e| self.store_error(e))?;
                    match payment {
                        Some(payment) if payment.status == PaymentStatus::Pending => Ok(Answer {
                            response: Arc::new(responses::for_payment(&payment)),
                            replayed: false,
                        }),
                        _ => Err(unknown),
                    }
                }
            },
            // Another payment under the key, or none: nothing this request can vouch for.
            _ => Err(unknown),
        }
    }

    /// Records a final outcome and its response; caches it for replays.
    async fn settle(
        &self,
        record: &mut PaymentRecord,
        owner: &str,
        fingerprint: Option<&str>,
        settlement: Settlement,
        attempts: u32,
    ) -> Result<Answer, ApiError> {
        let now = responses::now_ms();
        // What the client sees if the outcome cannot be recorded: the payment as the store
        // holds it (pending), without the outcome we could not record.
        let mut unrecorded = record.clone();
        unrecorded.attempts = attempts;
        unrecorded.updated_at = now;
        record.status = settlement.status();
        record.attempts = attempts;
        record.updated_at = now;
        record.lease_owner = None;
        match &settlement {
            Settlement::Succeeded { charge_id } => record.bank_charge_id = Some(charge_id.clone()),
            Settlement::Declined { decline_code } => {
                record.decline_code = Some(decline_code.clone())
            }
            Settlement::Failed { reason } => record.failure_reason = Some(reason.clone()),
        }
        let response = responses::for_payment(record);
        let settled = match crate::stats::timed(
            "settle",
            self.store
                .settle(record.id, &settlement, attempts, &response, now),
        )
        .await
        {
            Ok(settled) => settled,
            Err(error) => {
                // The bank has answered but we cannot record it: the payment stays pending under
                // our (expiring) lease and the reconciler will settle it from the bank's record.
                tracing::error!(payment_id = %record.id, %error, owner, "cannot record a bank outcome; the reconciler will settle it");
                Counters::inc(&self.counters.store_unavailable);
                *record = unrecorded;
                return Ok(Answer {
                    response: Arc::new(responses::for_payment(record)),
                    replayed: false,
                });
            }
        };
        if !settled {
            // Someone (the reconciler, after our lease expired) settled it first: answer with
            // what the store holds, which is the one truth replays will also see.
            return match crate::stats::timed(
                "find_key",
                self.store.find_key(&record.tenant, &record.idempotency_key),
            )
            .await
            .map_err(|e| self.store_error(e))?
            {
                Some(KeyRecord {
                    response: Some(stored),
                    ..
                }) => Ok(Answer {
                    response: Arc::new(stored),
                    replayed: false,
                }),
                _ => Ok(Answer {
                    response: Arc::new(response),
                    replayed: false,
                }),
            };
        }
        self.count_final(record.status);
        tracing::debug!(payment_id = %record.id, status = record.status.as_str(), attempts, bank = record.bank, "payment settled");
        let response = Arc::new(response);
        // Only a request handler knows the fingerprint; the reconciler's settlements are cached
        // on their first replay instead.
        if let Some(fingerprint) = fingerprint {
            self.cache.insert(
                &record.tenant,
                &record.idempotency_key,
                CachedKey {
                    fingerprint: fingerprint.to_owned(),
                    response: response.clone(),
                    completed_at: now,
                },
            );
        }
        Ok(Answer {
            response,
            replayed: false,
        })
    }

    fn count_final(&self, status: payment_types::payment::PaymentStatus) {
        use payment_types::payment::PaymentStatus::*;
        match status {
            Succeeded => Counters::inc(&self.counters.succeeded),
            Declined => Counters::inc(&self.counters.declined),
            Failed => Counters::inc(&self.counters.failed),
            Pending => Counters::inc(&self.counters.pending),
        }
    }

    fn replay_cached(&self, cached: CachedKey, fingerprint: &str) -> Result<Answer, ApiError> {
        if cached.fingerprint != fingerprint {
            Counters::inc(&self.counters.key_mismatches);
            return Err(ApiError::IdempotencyKeyReused);
        }
        Counters::inc(&self.counters.replayed);
        Ok(Answer {
            response: cached.response,
            replayed: true,
        })
    }

    /// The key exists: 422 if the body differs (checked first), then replay, 409 or 202.
    async fn answer_existing(
        &self,
        record: KeyRecord,
        fingerprint: &str,
    ) -> Result<Answer, ApiError> {
        tracing::Span::current().record("payment_id", tracing::field::display(record.payment_id));
        if record.fingerprint != fingerprint {
            Counters::inc(&self.counters.key_mismatches);
            return Err(ApiError::IdempotencyKeyReused);
        }
        match record.state {
            KeyState::Completed => {
                let response = Arc::new(record.response.clone().ok_or_else(|| {
                    self.store_error(payment_store::StoreError::Corrupt(
                        "completed key without a response".into(),
                    ))
                })?);
                if let Some(completed_at) = record.completed_at {
                    self.cache.insert(
                        &record.tenant,
                        &record.key,
                        CachedKey {
                            fingerprint: record.fingerprint.clone(),
                            response: response.clone(),
                            completed_at,
                        },
                    );
                }
                Counters::inc(&self.counters.replayed);
                Ok(Answer {
                    response,
                    replayed: true,
                })
            }
            KeyState::InFlight
                if record
                    .lease_expires_at
                    .is_some_and(|until| until > Utc::now()) =>
            {
                Counters::inc(&self.counters.in_flight_conflicts);
                let left = record
                    .lease_expires_at
                    .map(|until| (until - Utc::now()).to_std().unwrap_or_default());
                // Suggest a short wait: most in-flight requests end well before their lease.
                let retry_after = left
                    .unwrap_or_default()
                    .min(Duration::from_secs(1))
                    .max(Duration::from_secs(1));
                Err(ApiError::IdempotencyKeyInUse { retry_after })
            }
            // Pending, or in flight with an expired lease (the handler died): the current state,
            // which the reconciler will settle.
            KeyState::InFlight | KeyState::Pending => {
                let payment = crate::stats::timed(
                    "get_payment",
                    self.store
                        .get_payment(Some(&record.tenant), record.payment_id),
                )
                .await
                .map_err(|e| self.store_error(e))?
                .ok_or_else(|| {
                    self.store_error(payment_store::StoreError::Corrupt(
                        "key without payment".into(),
                    ))
                })?;
                Counters::inc(&self.counters.replayed);
                // Settled between the two reads: the stored response is the one truth.
                if payment.status.is_final() {
                    if let Ok(Some(KeyRecord {
                        response: Some(stored),
                        ..
                    })) = self.store.find_key(&record.tenant, &record.key).await
                    {
                        return Ok(Answer {
                            response: Arc::new(stored),
                            replayed: true,
                        });
                    }
                }
                Ok(Answer {
                    response: Arc::new(responses::for_payment(&payment)),
                    replayed: true,
                })
            }
        }
    }

    pub(crate) fn store_error(&self, error: payment_store::StoreError) -> ApiError {
        Counters::inc(&self.counters.store_unavailable);
        ApiError::StoreUnavailable(error)
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod failover_tests;
