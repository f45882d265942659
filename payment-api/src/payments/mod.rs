//! The payment flow (DESIGN.md §2 and §3): claim the key, charge through the bank gateway,
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
//!   the client can retry it.

mod replay_cache;
pub(crate) mod responses;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use payment_store::{
    ClaimOutcome, KeyRecord, KeyState, NewPayment, PaymentRecord, Settlement, Store, StoredResponse,
};
use payment_types::bank::ChargeRequest;
use resilience::{
    breaker::State as BreakerState,
    pipeline::{Execution, ExecutionOutcome},
};
use uuid::Uuid;

pub(crate) use replay_cache::{CachedKey, ReplayCache};

use crate::{
    auth::Tenant,
    bank::{BankGateway, ChargeOutcome},
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

/// Settings the flow needs.
#[derive(Debug, Clone)]
pub(crate) struct FlowSettings {
    /// How long a handler's claim on its payment lasts; must exceed the payment deadline.
    pub(crate) lease: Duration,
    /// When the reconciler should first look at a payment answered 202.
    pub(crate) reconcile_after: Duration,
}

/// The payment flow, shared by the handlers and the reconciler.
#[derive(Debug)]
pub(crate) struct PaymentService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bank: Arc<BankGateway>,
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

        // 2. Breaker open: a new payment is refused before any store write; a stored key is
        //    still answered.
        if let Err(rejected) = self.breaker_precheck() {
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

        // 3. Claim the key and create the payment with its bank reference, atomically.
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
            bank_reference: format!("pay_{}", id.simple()),
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
        tracing::info!(payment_id = %id, tenant = tenant.as_str(), idempotency_key = key.as_str(), "payment claimed");

        // 4. Charge through the pipeline, then record the outcome.
        let mut record = PaymentRecord::from_new(&new);
        let charge = ChargeRequest {
            amount: record.amount,
            currency: record.currency.clone(),
            source: record.source.clone(),
            reference: record.bank_reference.clone(),
        };
        let execution = self.bank.charge(&charge, request_id).await;
        self.finish(&mut record, &owner, Some(&fingerprint), execution)
            .await
    }

    /// Cheap check before any store write: only an Open/ForcedOpen breaker is asked, and a
    /// permit it grants (its wait is over) is handed back unused, freeing any probe slot.
    fn breaker_precheck(&self) -> Result<(), Duration> {
        let breaker = self.bank.pipeline().breaker();
        if matches!(
            breaker.state(),
            BreakerState::Open | BreakerState::ForcedOpen
        ) {
            if let Err(rejected) = breaker.try_acquire() {
                return Err(rejected.retry_after);
            }
        }
        Ok(())
    }

    /// Records what the pipeline ended with, and answers.
    pub(crate) async fn finish(
        &self,
        record: &mut PaymentRecord,
        owner: &str,
        fingerprint: Option<&str>,
        execution: Execution<ChargeOutcome>,
    ) -> Result<Answer, ApiError> {
        let now = responses::now_ms();
        let attempts = record.attempts + execution.attempts.len() as u32;
        let retry_after = execution.retry_after().unwrap_or(Duration::from_secs(1));
        let any_ambiguous = execution.any_ambiguous;
        let any_sent = !execution.attempts.is_empty();
        let settlement = match &execution.outcome {
            ExecutionOutcome::Success(ChargeOutcome::Charged(charge))
            | ExecutionOutcome::BusinessRejection(ChargeOutcome::Charged(charge))
            | ExecutionOutcome::ClientError(ChargeOutcome::Charged(charge)) => {
                Some(Settlement::Succeeded {
                    charge_id: charge.id.clone(),
                })
            }
            ExecutionOutcome::Success(ChargeOutcome::Declined { decline_code })
            | ExecutionOutcome::BusinessRejection(ChargeOutcome::Declined { decline_code })
            | ExecutionOutcome::ClientError(ChargeOutcome::Declined { decline_code }) => {
                Some(Settlement::Declined {
                    decline_code: decline_code.clone(),
                })
            }
            ExecutionOutcome::Success(ChargeOutcome::Refused { status, code })
            | ExecutionOutcome::BusinessRejection(ChargeOutcome::Refused { status, code })
            | ExecutionOutcome::ClientError(ChargeOutcome::Refused { status, code }) => {
                Some(Settlement::Failed {
                    reason: format!("bank answered {status} {code}"),
                })
            }
            _ => None,
        };
        if let Some(settlement) = settlement {
            return self
                .settle(record, owner, fingerprint, settlement, attempts)
                .await;
        }

        if any_ambiguous {
            // The bank may have charged: never say "not processed". Pending, reconciled later.
            let last_attempt_at = any_sent.then_some(now);
            crate::stats::timed(
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
            .await
            .map_err(|e| self.store_error(e))?;
            record.attempts = attempts;
            record.updated_at = now;
            Counters::inc(&self.counters.pending);
            tracing::warn!(payment_id = %record.id, attempts, "bank outcome unknown; payment pending");
            return Ok(Answer {
                response: Arc::new(responses::for_payment(record)),
                replayed: false,
            });
        }

        // Nothing reached the bank, or the bank definitely refused every attempt: free the key.
        crate::stats::timed("release", self.store.release(record.id, owner))
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::warn!(
            payment_id = %record.id,
            attempts,
            breaker_state = self.bank.pipeline().breaker().state().as_str(),
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
                record.status = payment_types::payment::PaymentStatus::Pending;
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
        tracing::info!(payment_id = %record.id, status = record.status.as_str(), attempts, "payment settled");
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
                self.cache.insert(
                    &record.tenant,
                    &record.key,
                    CachedKey {
                        fingerprint: record.fingerprint.clone(),
                        response: response.clone(),
                    },
                );
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
