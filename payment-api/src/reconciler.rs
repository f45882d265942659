//! The reconciler: a background task that makes sure no payment stays pending.
//!
//! Every interval it takes the pending payments that are due (answered 202, or left in flight
//! by a handler whose lease expired because its process died), leases each one (so two
//! instances never work on the same payment), asks the bank for the charge by its reference,
//! and settles it. When the bank has no record and the grace period since the last charge
//! attempt has passed, it re-sends the charge with the same reference (the bank dedups, so this
//! can never charge twice). It goes through the same breaker as the request path: while the
//! breaker is open it only reschedules. It also reaps expired idempotency keys.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use payment_store::{PaymentRecord, Settlement};
use payment_types::bank::{ChargeRequest, ChargeStatus};
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    bank::Lookup,
    payments::{PaymentService, Verdict},
    stats::Counters,
};

/// How the reconciler is tuned.
#[derive(Debug, Clone)]
pub(crate) struct ReconcilerSettings {
    pub(crate) interval: Duration,
    pub(crate) grace: Duration,
    pub(crate) lease: Duration,
    pub(crate) key_retention: Duration,
    /// How long webhook events are kept once nothing waits on them (`None`: forever).
    pub(crate) event_retention: Option<Duration>,
    /// Payments handled per pass.
    pub(crate) batch: u32,
}

/// What the reconciler has done, for `/v1/status`.
#[derive(Debug, Default)]
pub(crate) struct ReconcilerStats {
    runs: AtomicU64,
    settled: AtomicU64,
    resent: AtomicU64,
    reaped: AtomicU64,
    reaped_events: AtomicU64,
    last_run: Mutex<Option<DateTime<Utc>>>,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`ReconcilerStats`] plus the backlog.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReconcilerSnapshot {
    pub(crate) interval_ms: u64,
    pub(crate) grace_ms: u64,
    pub(crate) runs: u64,
    pub(crate) settled: u64,
    pub(crate) resent: u64,
    pub(crate) reaped_keys: u64,
    pub(crate) reaped_events: u64,
    pub(crate) last_run_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
}

impl ReconcilerStats {
    pub(crate) fn snapshot(&self, settings: &ReconcilerSettings) -> ReconcilerSnapshot {
        ReconcilerSnapshot {
            interval_ms: settings.interval.as_millis() as u64,
            grace_ms: settings.grace.as_millis() as u64,
            runs: self.runs.load(Ordering::Relaxed),
            settled: self.settled.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            reaped_keys: self.reaped.load(Ordering::Relaxed),
            reaped_events: self.reaped_events.load(Ordering::Relaxed),
            last_run_at: *self.last_run.lock().unwrap_or_else(|p| p.into_inner()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Runs passes until `stop` fires.
pub(crate) async fn run(
    service: Arc<PaymentService>,
    settings: ReconcilerSettings,
    stats: Arc<ReconcilerStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let owner = format!("{}/reconciler", service.instance_id);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reap_every =
        (Duration::from_secs(60).as_millis() / settings.interval.as_millis().max(1)).max(1) as u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let run = stats.runs.fetch_add(1, Ordering::Relaxed);
        let result = pass(&service, &settings, &stats, &owner).await;
        if run.is_multiple_of(reap_every) {
            reap(&service, &settings, &stats).await;
        }
        *stats.last_run.lock().unwrap_or_else(|p| p.into_inner()) = Some(Utc::now());
        *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = result.err();
    }
}

/// One pass over the due payments. Errors are reported, never fatal: the next pass retries.
async fn pass(
    service: &PaymentService,
    settings: &ReconcilerSettings,
    stats: &ReconcilerStats,
    owner: &str,
) -> Result<(), String> {
    let due = service
        .store
        .due_for_reconcile(crate::payments::responses::now_ms(), settings.batch)
        .await
        .map_err(|e| e.to_string())?;
    for payment in due {
        // Each payment's lease runs from when it is taken, not from the start of the pass: a
        // pass that spends a while on earlier payments must not hand out leases that are
        // already partly spent (or expired) when their work begins.
        let now = crate::payments::responses::now_ms();
        let leased = service
            .store
            .acquire_lease(payment.id, owner, now + settings.lease, now)
            .await
            .map_err(|e| e.to_string())?;
        if !leased {
            continue; // another instance has it
        }
        // The reconciler's own request id travels to the bank like a handler's does, so the
        // bank's lines for this settlement are found by it (and by the payment id here).
        let request_id = format!("reconcile-{}", Uuid::new_v4().simple());
        let span = tracing::info_span!(
            "reconcile",
            request_id = %request_id,
            payment_id = %payment.id,
        );
        if let Err(error) = reconcile_one(service, settings, stats, owner, payment, &request_id)
            .instrument(span)
            .await
        {
            tracing::warn!(%error, "reconciling a payment failed; it will be retried");
        }
    }
    Ok(())
}

async fn reconcile_one(
    service: &PaymentService,
    settings: &ReconcilerSettings,
    stats: &ReconcilerStats,
    owner: &str,
    mut payment: PaymentRecord,
    request_id: &str,
) -> Result<(), String> {
    let now = crate::payments::responses::now_ms();
    let reschedule =
        |next: DateTime<Utc>, last_attempt_at: Option<DateTime<Utc>>, attempts: u32| {
            let store = service.store.clone();
            let id = payment.id;
            let owner = owner.to_owned();
            async move {
                store
                    .reschedule(id, &owner, last_attempt_at, attempts, next, Utc::now())
                    .await
                    .map_err(|e| e.to_string())
            }
        };
    // The payment is settled at the bank it is with (the only one that may have charged it:
    // it moved there only after every attempt at the previous bank was definitely not
    // processed), with the reference it has there.
    let Some(bank) = service.bank_named(&payment.bank) else {
        tracing::error!(payment_id = %payment.id, bank = %payment.bank, "the payment's bank is not configured (--bank); it stays pending until that bank is configured again");
        let next = now + settings.interval * 10;
        return reschedule(next, payment.last_attempt_at, payment.attempts).await;
    };
    let lookup = match bank.lookup(&payment.bank_reference, request_id).await {
        Ok(lookup) => lookup,
        Err(rejected) => {
            // The breaker is open: do not add load to a failing bank.
            let next = now + rejected.retry_after.max(settings.interval);
            return reschedule(next, payment.last_attempt_at, payment.attempts).await;
        }
    };
    match lookup {
        Lookup::Found(charge) => {
            let settlement = match charge.status {
                ChargeStatus::Succeeded => Settlement::Succeeded {
                    charge_id: charge.id,
                },
                ChargeStatus::Declined => Settlement::Declined {
                    decline_code: charge
                        .decline_code
                        .unwrap_or_else(|| "card_declined".to_owned()),
                },
            };
            settle(service, stats, &mut payment, settlement).await
        }
        Lookup::NotFound => {
            let last = payment
                .last_attempt_at
                .or(payment.lease_expires_at)
                .unwrap_or(payment.created_at);
            let grace = chrono::Duration::from_std(settings.grace).unwrap_or_default();
            if now < last + grace {
                return reschedule(last + grace, payment.last_attempt_at, payment.attempts).await;
            }
            // The bank never got it (or lost it before committing): send it again, same reference.
            tracing::info!(payment_id = %payment.id, bank = %payment.bank, reference = %payment.bank_reference, "re-sending a charge the bank has no record of");
            stats.resent.fetch_add(1, Ordering::Relaxed);
            Counters::inc(&service.counters.reconcile_resent);
            let charge = ChargeRequest {
                amount: payment.amount,
                currency: payment.currency.clone(),
                source: payment.source.clone(),
                reference: payment.bank_reference.clone(),
            };
            let execution = bank.charge(&charge, request_id).await;
            let sent = !execution.attempts.is_empty();
            let attempts = payment.attempts + execution.attempts.len() as u32;
            match crate::payments::classify(&execution) {
                Verdict::Final(settlement) => {
                    payment.attempts = attempts;
                    settle(service, stats, &mut payment, settlement).await
                }
                // Not processed, or unknown (an ambiguous attempt, a refusal after one, a
                // charge still in progress at the bank): the next lookup decides.
                Verdict::Unknown | Verdict::NotProcessed => {
                    let last_attempt_at = if sent {
                        Some(Utc::now())
                    } else {
                        payment.last_attempt_at
                    };
                    reschedule(Utc::now() + settings.interval, last_attempt_at, attempts).await
                }
            }
        }
        Lookup::Unavailable => {
            reschedule(
                now + settings.interval * 2,
                payment.last_attempt_at,
                payment.attempts,
            )
            .await
        }
    }
}

async fn settle(
    service: &PaymentService,
    stats: &ReconcilerStats,
    payment: &mut PaymentRecord,
    settlement: Settlement,
) -> Result<(), String> {
    let now = crate::payments::responses::now_ms();
    payment.status = settlement.status();
    payment.updated_at = now;
    match &settlement {
        Settlement::Succeeded { charge_id } => payment.bank_charge_id = Some(charge_id.clone()),
        Settlement::Declined { decline_code } => payment.decline_code = Some(decline_code.clone()),
        Settlement::Failed { reason } => payment.failure_reason = Some(reason.clone()),
    }
    let response = crate::payments::responses::for_payment(payment);
    let settled = service
        .store
        .settle(payment.id, &settlement, payment.attempts, &response, now)
        .await
        .map_err(|e| e.to_string())?;
    if settled {
        stats.settled.fetch_add(1, Ordering::Relaxed);
        Counters::inc(&service.counters.reconciled);
        tracing::info!(payment_id = %payment.id, bank = %payment.bank, status = payment.status.as_str(), "reconciler settled a payment");
    }
    Ok(())
}

async fn reap(service: &PaymentService, settings: &ReconcilerSettings, stats: &ReconcilerStats) {
    let before =
        Utc::now() - chrono::Duration::from_std(settings.key_retention).unwrap_or_default();
    match service.store.reap_keys(before).await {
        Ok(0) => {}
        Ok(reaped) => {
            stats.reaped.fetch_add(reaped, Ordering::Relaxed);
            // A reaped key must not be replayed from memory either.
            service.cache.clear();
            tracing::info!(reaped, "reaped expired idempotency keys");
        }
        Err(error) => tracing::warn!(%error, "reaping idempotency keys failed"),
    }
    let Some(retention) = settings.event_retention else {
        return;
    };
    let before = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    match service.store.reap_events(before).await {
        Ok(0) => {}
        Ok(reaped) => {
            stats.reaped_events.fetch_add(reaped, Ordering::Relaxed);
            tracing::info!(reaped, "reaped expired webhook events");
        }
        Err(error) => tracing::warn!(%error, "reaping webhook events failed"),
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
