//! The reconciler over a faulty SQLite store and a scripted bank: lookups that settle, re-sends
//! after the grace period, rescheduling while the breaker is open or the bank unavailable, a
//! settlement the store cannot record, and the reaper.

use std::time::Duration;

use payment_store::{KeyState, Store};
use payment_types::{bank::ChargeStatus, payment::PaymentStatus};

use super::*;
use crate::{
    bank::AttemptOutcome,
    payments::tests::{Harness, TENANT},
    test_doubles::{bank_charge_placeholder, Fault, Op},
};

fn settings(grace: Duration) -> ReconcilerSettings {
    ReconcilerSettings {
        interval: Duration::from_millis(50),
        grace,
        lease: Duration::from_secs(30),
        key_retention: Duration::from_secs(3600),
        event_retention: None,
        batch: 10,
    }
}

/// A harness whose payment under `k1` is pending (the bank timed out on every attempt), due
/// for the reconciler at once.
async fn pending() -> Harness {
    let mut h = Harness::new().await;
    std::sync::Arc::get_mut(&mut h.service)
        .expect("not shared yet")
        .settings
        .reconcile_after = Duration::ZERO;
    h.bank.hang().hang().hang();
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 202);
    h
}

async fn run_pass(h: &Harness, settings: &ReconcilerSettings) -> ReconcilerStats {
    let stats = ReconcilerStats::default();
    pass(&h.service, settings, &stats, "test/reconciler")
        .await
        .unwrap();
    stats
}

async fn status(h: &Harness) -> PaymentStatus {
    h.key("k1").await.unwrap().payment_status
}

fn found(status: ChargeStatus) -> Lookup {
    let mut charge = bank_charge_placeholder();
    charge.id = "ch_found".into();
    charge.status = status;
    if status == ChargeStatus::Declined {
        charge.decline_code = Some("insufficient_funds".into());
    }
    Lookup::Found(charge)
}

#[tokio::test]
async fn a_charge_the_bank_holds_is_settled_succeeded_and_replayed_as_201() {
    let h = pending().await;
    h.bank.lookup(found(ChargeStatus::Succeeded));
    let stats = run_pass(&h, &settings(Duration::from_secs(60))).await;
    assert_eq!(stats.settled.load(Ordering::Relaxed), 1);
    assert_eq!(status(&h).await, PaymentStatus::Succeeded);
    let replay = h.pay("k1").await.unwrap();
    assert_eq!(replay.response.status, 201);
    assert_eq!(h.bank.charge_calls(), 3, "no re-send: the bank had it");
}

#[tokio::test]
async fn a_decline_the_bank_holds_is_settled_declined() {
    let h = pending().await;
    h.bank.lookup(found(ChargeStatus::Declined));
    run_pass(&h, &settings(Duration::from_secs(60))).await;
    assert_eq!(status(&h).await, PaymentStatus::Declined);
    assert_eq!(h.pay("k1").await.unwrap().response.status, 402);
}

#[tokio::test]
async fn no_record_within_the_grace_period_reschedules_without_a_re_send() {
    let h = pending().await;
    h.bank.lookup(Lookup::NotFound);
    run_pass(&h, &settings(Duration::from_secs(60))).await;
    assert_eq!(h.bank.charge_calls(), 3);
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    let payment = pending_payment(&h).await;
    assert!(
        payment.next_reconcile_at.unwrap() > chrono::Utc::now() + chrono::Duration::seconds(30)
    );
    assert!(payment.lease_owner.is_none(), "the lease is released");
}

#[tokio::test]
async fn no_record_after_the_grace_period_re_sends_with_the_same_reference_and_settles() {
    let h = pending().await;
    let reference = pending_payment(&h).await.bank_reference;
    h.bank.lookup(Lookup::NotFound);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    h.bank.run(move |request| async move {
        *sink.lock().unwrap() = request.reference.clone();
        AttemptOutcome::Charged(crate::test_doubles::bank_charge_placeholder())
    });
    let stats = run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(stats.resent.load(Ordering::Relaxed), 1);
    assert_eq!(*seen.lock().unwrap(), reference);
    assert_eq!(status(&h).await, PaymentStatus::Succeeded);
}

#[tokio::test]
async fn a_re_send_answered_409_in_progress_after_a_timeout_stays_pending_never_failed() {
    let h = pending().await;
    h.bank.lookup(Lookup::NotFound);
    h.bank.hang().charge(AttemptOutcome::Refused {
        status: 409,
        code: "charge_in_progress".into(),
    });
    run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    // The next lookup decides.
    h.bank.lookup(found(ChargeStatus::Succeeded));
    force_due(&h).await;
    run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(status(&h).await, PaymentStatus::Succeeded);
}

#[tokio::test]
async fn an_open_breaker_reschedules_without_asking_the_bank() {
    let h = pending().await;
    h.service.bank().pipeline().breaker().force_open();
    let lookups = h.bank.lookup_calls();
    run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(h.bank.lookup_calls(), lookups);
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    let payment = pending_payment(&h).await;
    assert!(payment.next_reconcile_at.unwrap() > chrono::Utc::now());
    assert!(payment.lease_owner.is_none());
}

#[tokio::test]
async fn an_unavailable_bank_reschedules() {
    let h = pending().await;
    h.bank.lookup(Lookup::Unavailable);
    run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    assert_eq!(h.bank.charge_calls(), 3, "no re-send without an answer");
    assert!(pending_payment(&h).await.next_reconcile_at.unwrap() > chrono::Utc::now());
}

#[tokio::test]
async fn a_settlement_the_store_cannot_record_is_retried_by_a_later_pass() {
    let h = pending().await;
    h.bank.lookup(found(ChargeStatus::Succeeded));
    h.store.fail_next(Op::Settle, Fault::Fail, 1);
    let stats = ReconcilerStats::default();
    pass(
        &h.service,
        &settings(Duration::ZERO),
        &stats,
        "test/reconciler",
    )
    .await
    .unwrap();
    assert_eq!(stats.settled.load(Ordering::Relaxed), 0);
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    // The lease it holds expires; a later pass (here: another reconciler) settles.
    expire_lease(&h).await;
    h.bank.lookup(found(ChargeStatus::Succeeded));
    let stats = ReconcilerStats::default();
    pass(
        &h.service,
        &settings(Duration::ZERO),
        &stats,
        "other/reconciler",
    )
    .await
    .unwrap();
    assert_eq!(stats.settled.load(Ordering::Relaxed), 1);
    assert_eq!(status(&h).await, PaymentStatus::Succeeded);
}

#[tokio::test]
async fn the_reaper_deletes_old_keys_and_clears_the_replay_cache() {
    let h = Harness::new().await;
    h.bank
        .charge(AttemptOutcome::Charged(bank_charge_placeholder()));
    assert_eq!(h.pay("k1").await.unwrap().response.status, 201);
    assert!(h.service.cache.get(TENANT, "k1").is_some());
    let settings = ReconcilerSettings {
        key_retention: Duration::ZERO,
        ..settings(Duration::ZERO)
    };
    let stats = ReconcilerStats::default();
    // Times are stored in whole milliseconds, and the reaper's cutoff is too: let the clock
    // reach the millisecond after the completed one, so the cutoff is past it.
    let completed = h.key("k1").await.unwrap().completed_at.unwrap();
    while chrono::Utc::now() < completed + chrono::Duration::milliseconds(1) {
        tokio::task::yield_now().await;
    }
    reap(&h.service, &settings, &stats).await;
    assert_eq!(stats.reaped.load(Ordering::Relaxed), 1);
    assert!(h.key("k1").await.is_none());
    assert!(h.service.cache.get(TENANT, "k1").is_none());
    // The key is new again: a payment under it is a new payment.
    h.bank
        .charge(AttemptOutcome::Charged(bank_charge_placeholder()));
    let again = h.pay("k1").await.unwrap();
    assert!(!again.replayed);
    assert_eq!(h.bank.charge_calls(), 2);
}

#[tokio::test]
async fn the_reaper_deletes_webhook_events_past_their_retention_and_keeps_them_without_one() {
    let h = Harness::new().await;
    h.bank
        .charge(AttemptOutcome::Charged(bank_charge_placeholder()));
    assert_eq!(h.pay("k1").await.unwrap().response.status, 201);
    let events = || async {
        h.store
            .list_events(&payment_store::EventQuery {
                tenant: Some(TENANT.to_owned()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    assert_eq!(
        events().await,
        1,
        "the payment.succeeded event (no endpoint waits on it)"
    );
    let stats = ReconcilerStats::default();
    // Without a retention (`--event-retention-days 0`) nothing is reaped.
    reap(&h.service, &settings(Duration::ZERO), &stats).await;
    assert_eq!(events().await, 1);
    // The cutoff is a millisecond event id bound: let the clock pass the event's millisecond.
    let created = chrono::Utc::now();
    while chrono::Utc::now() < created + chrono::Duration::milliseconds(2) {
        tokio::task::yield_now().await;
    }
    let settings = ReconcilerSettings {
        event_retention: Some(Duration::ZERO),
        ..settings(Duration::ZERO)
    };
    reap(&h.service, &settings, &stats).await;
    assert_eq!(events().await, 0);
    assert_eq!(stats.snapshot(&settings).reaped_events, 1);
    assert!(h.key("k1").await.is_some(), "keys have their own retention");
}

async fn pending_payment(h: &Harness) -> payment_store::PaymentRecord {
    let key = h.key("k1").await.unwrap();
    assert_ne!(key.state, KeyState::Completed);
    h.store
        .get_payment(None, key.payment_id)
        .await
        .unwrap()
        .unwrap()
}

/// Makes the payment due now, as the passing of its reschedule time would.
async fn force_due(h: &Harness) {
    let payment = pending_payment(h).await;
    let now = crate::payments::responses::now_ms();
    assert!(h
        .store
        .acquire_lease(payment.id, "clock", now, now)
        .await
        .unwrap());
    h.store
        .reschedule(payment.id, "clock", None, payment.attempts, now, now)
        .await
        .unwrap();
}

/// Expires the current lease, as the passing of time would.
async fn expire_lease(h: &Harness) {
    let payment = pending_payment(h).await;
    let later = payment.lease_expires_at.unwrap() + chrono::Duration::milliseconds(1);
    assert!(h
        .store
        .acquire_lease(payment.id, "clock", later, later)
        .await
        .unwrap());
    let now = crate::payments::responses::now_ms();
    h.store
        .reschedule(payment.id, "clock", None, payment.attempts, now, now)
        .await
        .unwrap();
}

#[tokio::test]
async fn after_a_crash_past_the_move_to_b_the_reconciler_asks_b_by_bs_reference_and_never_a() {
    let h = Harness::with_banks(crate::payments::tests::pipeline_config(), &["a", "b"], &[]).await;
    // A handler claimed the payment at a, saw every attempt there refused, recorded the move
    // to b, and died before b answered (or before it was called at all).
    let id = uuid::Uuid::now_v7();
    let now = crate::payments::responses::now_ms();
    let new = payment_store::NewPayment {
        id,
        tenant: TENANT.to_owned(),
        idempotency_key: "k1".to_owned(),
        fingerprint: "fp".to_owned(),
        amount: 1000,
        currency: "TRY".to_owned(),
        source: "tok_visa".to_owned(),
        description: None,
        metadata: None,
        bank_reference: crate::payments::bank_reference(id, None),
        bank: "a".to_owned(),
        lease_owner: "dead-handler".to_owned(),
        lease_expires_at: now + chrono::Duration::seconds(30),
        now,
    };
    assert_eq!(
        h.store.claim(&new).await.unwrap(),
        payment_store::ClaimOutcome::Claimed
    );
    let b_reference = crate::payments::bank_reference(id, Some("b"));
    assert!(h
        .store
        .switch_bank(id, "dead-handler", "b", &b_reference, 3, now)
        .await
        .unwrap());
    expire_lease(&h).await;

    // b has no record of it: after the grace period the reconciler re-sends it there, with b's
    // reference.
    h.banks[1].lookup(Lookup::NotFound);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    h.banks[1].run(move |request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(request.reference.clone());
            AttemptOutcome::Charged(crate::test_doubles::bank_charged(&request))
        }
    });
    run_pass(&h, &settings(Duration::ZERO)).await;
    let payment = h.store.get_payment(None, id).await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(payment.bank, "b");
    assert_eq!(
        payment.bank_charge_id.as_deref(),
        Some(format!("ch_{b_reference}").as_str())
    );
    assert_eq!(*seen.lock().unwrap(), std::slice::from_ref(&b_reference));
    assert_eq!(
        (h.banks[0].lookup_calls(), h.banks[0].charge_calls()),
        (0, 0),
        "a was known not to have processed it: never asked again"
    );
    let replay = h.key("k1").await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&replay.response.unwrap().body).unwrap();
    assert_eq!(body["bank"], "b");
}

#[tokio::test]
async fn a_payment_at_a_bank_no_longer_configured_stays_pending_and_calls_no_bank() {
    let h = pending().await;
    let payment = pending_payment(&h).await;
    // Rename the bank the payment is with to one this process does not have.
    let now = crate::payments::responses::now_ms();
    assert!(h
        .store
        .acquire_lease(payment.id, "clock", now + chrono::Duration::seconds(5), now)
        .await
        .unwrap());
    assert!(h
        .store
        .switch_bank(
            payment.id,
            "clock",
            "gone",
            "ref-gone",
            payment.attempts,
            now
        )
        .await
        .unwrap());
    expire_lease(&h).await;
    let (lookups, charges) = (h.bank.lookup_calls(), h.bank.charge_calls());
    run_pass(&h, &settings(Duration::ZERO)).await;
    assert_eq!(status(&h).await, PaymentStatus::Pending);
    assert_eq!(
        (h.bank.lookup_calls(), h.bank.charge_calls()),
        (lookups, charges)
    );
}

/// Webhooks' outbox through the reconciler: the 202 announced `payment.pending`, and the
/// reconciler's settlement writes the final state's event with it (docs/webhooks.md), each
/// carrying the payment as it was in that state.
#[tokio::test]
async fn a_payment_the_reconciler_settles_announces_pending_then_its_final_state() {
    let h = pending().await;
    let events = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .list_events(&payment_store::EventQuery {
                    tenant: Some(TENANT.to_owned()),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let before = events(&h).await;
    assert_eq!(
        before
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["payment.pending"]
    );
    h.bank.lookup(found(ChargeStatus::Succeeded));
    run_pass(&h, &settings(Duration::from_secs(60))).await;
    let after = events(&h).await;
    assert_eq!(
        after
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["payment.succeeded", "payment.pending"]
    );
    let payload: serde_json::Value = serde_json::from_str(&after[0].payload).unwrap();
    assert_eq!(payload["data"]["payment"]["status"], "succeeded");
    assert_eq!(payload["data"]["payment"]["bank_charge_id"], "ch_found");
    let pending: serde_json::Value = serde_json::from_str(&after[1].payload).unwrap();
    assert_eq!(pending["data"]["payment"]["status"], "pending");
}
