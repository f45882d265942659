//! The cascade rules (docs/failover.md) in the flow, over two scripted banks `a` and `b` (in
//! that priority order), each behind its own real pipeline: a payment moves from `a` to `b`
//! only when every attempt at `a` was definitely not processed, and the move with `b`'s own
//! reference is in the store before `b` is called.

use payment_store::{KeyState, Store};
use payment_types::payment::PaymentStatus;
use serde_json::Value;

use super::tests::{body, pipeline_config, wire, Harness, TENANT};
use crate::{
    bank::AttemptOutcome,
    error::Charged,
    test_doubles::{bank_charge_placeholder, Fault, Op},
};

async fn two_banks() -> Harness {
    Harness::with_banks(pipeline_config(), &["a", "b"], &[]).await
}

fn not_processed() -> AttemptOutcome {
    AttemptOutcome::NotProcessed {
        status: Some(503),
        retry_after: None,
    }
}

fn ambiguous() -> AttemptOutcome {
    AttemptOutcome::Ambiguous {
        reason: "bank answered 500".into(),
    }
}

fn charged() -> AttemptOutcome {
    AttemptOutcome::Charged(bank_charge_placeholder())
}

fn declined(code: &str) -> AttemptOutcome {
    AttemptOutcome::Declined {
        decline_code: code.into(),
    }
}

/// The payment under `key`, and its routes as (bank, reference).
async fn payment_and_routes(
    h: &Harness,
    key: &str,
) -> (payment_store::PaymentRecord, Vec<(String, String)>) {
    let record = h.key(key).await.expect("the key holds a payment");
    let payment = h
        .store
        .get_payment(Some(TENANT), record.payment_id)
        .await
        .unwrap()
        .unwrap();
    let routes = h
        .store
        .routes(payment.id)
        .await
        .unwrap()
        .into_iter()
        .map(|route| (route.bank, route.reference))
        .collect();
    (payment, routes)
}

#[tokio::test]
async fn not_processed_at_a_is_charged_at_b_under_bs_own_reference_recorded_first() {
    let h = two_banks().await;
    // With b available, a's refusal is not retried at a: the payment moves on at once.
    h.banks[0].charge(not_processed());
    h.banks[1].charge(charged());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 201, "{:?}", body(&answer));
    let first = body(&answer);
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["bank"], "b", "the 201 names the bank that charged");
    let (payment, routes) = payment_and_routes(&h, "k1").await;
    let a_reference = format!("pay_{}", payment.id.simple());
    let b_reference = format!("pay_{}_b", payment.id.simple());
    assert_eq!(first["bank_reference"], b_reference.as_str());
    assert_eq!(
        first["bank_charge_id"],
        format!("ch_{b_reference}").as_str(),
        "charged at b under b's reference"
    );
    assert_eq!(
        (payment.bank.as_str(), payment.bank_reference.as_str()),
        ("b", b_reference.as_str())
    );
    assert_eq!(payment.status, PaymentStatus::Succeeded);
    assert_eq!(
        payment.attempts, 2,
        "the attempt count covers the whole route"
    );
    assert_eq!(
        routes,
        [
            ("a".to_owned(), a_reference),
            ("b".to_owned(), b_reference.clone())
        ]
    );
    assert_eq!(
        (h.banks[0].charge_calls(), h.banks[1].charge_calls()),
        (1, 1)
    );
    assert_eq!(h.service.banks[0].cascades(), 1);
    // The replay is the same answer, byte for byte, and calls no bank.
    let replay = h.pay("k1").await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.response.body, answer.response.body);
    assert_eq!(
        (h.banks[0].charge_calls(), h.banks[1].charge_calls()),
        (1, 1)
    );
}

#[tokio::test]
async fn an_ambiguous_attempt_at_a_keeps_the_payment_pending_at_a_and_b_is_never_called() {
    // A 500, then refusals: the first attempt may still be committed at a.
    let h = two_banks().await;
    h.banks[0]
        .charge(ambiguous())
        .charge(not_processed())
        .charge(not_processed());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 202);
    assert_eq!(body(&answer)["bank"], "a");
    let (payment, routes) = payment_and_routes(&h, "k1").await;
    assert_eq!(payment.status, PaymentStatus::Pending);
    assert_eq!(payment.bank, "a");
    assert_eq!(routes.len(), 1, "no route to b: {routes:?}");
    assert_eq!(h.banks[1].charge_calls(), 0);
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::Pending);
}

#[tokio::test]
async fn timeouts_and_a_409_in_progress_at_a_never_cascade() {
    let h = two_banks().await;
    // Every attempt times out (the bank may have committed any of them).
    h.banks[0].hang().hang().hang();
    let answer = h.pay("timeouts").await.unwrap();
    assert_eq!(answer.response.status, 202);
    // A request with this reference is in progress at a right now.
    h.banks[0].charge(AttemptOutcome::Refused {
        status: 409,
        code: "charge_in_progress".into(),
    });
    let answer = h.pay("in-progress").await.unwrap();
    assert_eq!(answer.response.status, 202);
    for key in ["timeouts", "in-progress"] {
        let (payment, routes) = payment_and_routes(&h, key).await;
        assert_eq!((payment.bank.as_str(), routes.len()), ("a", 1), "{key}");
    }
    assert_eq!(h.banks[1].charge_calls(), 0);
}

#[tokio::test]
async fn a_hard_decline_at_a_is_final_and_never_cascades() {
    let h = two_banks().await;
    h.banks[0].charge(declined("insufficient_funds"));
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 402);
    assert_eq!(body(&answer)["decline_code"], "insufficient_funds");
    assert_eq!(body(&answer)["payment"]["bank"], "a");
    assert_eq!(h.banks[1].charge_calls(), 0);
}

#[tokio::test]
async fn a_decline_code_configured_as_cascadable_moves_the_payment_on() {
    let h = Harness::with_banks(pipeline_config(), &["a", "b"], &["do_not_honor"]).await;
    h.banks[0].charge(declined("do_not_honor"));
    h.banks[1].charge(charged());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["bank"], "b");
    // Any other code stays final.
    h.banks[0].charge(declined("insufficient_funds"));
    let answer = h.pay("k2").await.unwrap();
    assert_eq!(answer.response.status, 402);
    assert_eq!(h.banks[1].charge_calls(), 1);
}

#[tokio::test]
async fn a_bank_whose_breaker_is_open_is_skipped_and_the_payment_starts_at_b() {
    let h = two_banks().await;
    h.service.banks[0].pipeline().breaker().force_open();
    h.banks[1].charge(charged());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["bank"], "b");
    let (payment, routes) = payment_and_routes(&h, "k1").await;
    // b is its first bank: it has the first bank's reference, and a has no route.
    let reference = format!("pay_{}", payment.id.simple());
    assert_eq!(routes, [("b".to_owned(), reference)]);
    assert_eq!(h.banks[0].charge_calls(), 0);
}

#[tokio::test]
async fn a_full_bulkhead_at_a_sends_the_payment_to_b() {
    let h = two_banks().await;
    let bulkhead = h.service.banks[0].pipeline().bulkhead().clone();
    let slots: Vec<_> = (0..4).map(|_| bulkhead.try_enter().unwrap()).collect();
    h.banks[1].charge(charged());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["bank"], "b");
    assert_eq!(h.banks[0].charge_calls(), 0);
    drop(slots);
}

#[tokio::test]
async fn when_every_bank_refuses_without_processing_the_key_is_released_and_charged_is_no() {
    let h = two_banks().await;
    // a is tried once (b would take the payment); b, the last bank, is retried as one bank is,
    // with what the route has left of --max-attempts (3): two attempts, not a fresh three.
    h.banks[0].charge(not_processed());
    h.banks[1].charge(not_processed()).charge(not_processed());
    let error = h.pay("k1").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::No), "{error:?}");
    let (status, problem) = wire(error).await;
    assert_eq!(status, 503);
    assert_eq!(problem["charged"], "no");
    assert!(h.key("k1").await.is_none(), "the key is free to retry");
    assert_eq!(
        (h.banks[0].charge_calls(), h.banks[1].charge_calls()),
        (1, 2),
        "the route shares one --max-attempts"
    );

    // Every breaker open: refused before any store write.
    for bank in &h.service.banks {
        bank.pipeline().breaker().force_open();
    }
    let claims = h.store.calls(Op::Claim);
    let error = h.pay("k2").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::No));
    assert_eq!(wire(error).await.1["code"], "breaker_open");
    assert_eq!(h.store.calls(Op::Claim), claims);
}

#[tokio::test]
async fn a_move_the_store_cannot_record_never_calls_b() {
    let h = two_banks().await;
    // With b available, a's refusal is not retried at a: the payment moves on at once.
    h.banks[0].charge(not_processed());
    h.store.fail_next(Op::SwitchBank, Fault::Fail, 1);
    let error = h.pay("k1").await.unwrap_err();
    // Nothing was processed at a and b was not called: released, and truthfully "no".
    assert_eq!(error.charged(), Some(Charged::No), "{error:?}");
    assert_eq!(h.banks[1].charge_calls(), 0);
    assert!(h.key("k1").await.is_none());
}

#[tokio::test]
async fn an_ambiguous_attempt_at_b_after_a_cascade_stays_pending_at_b() {
    let h = two_banks().await;
    // With b available, a's refusal is not retried at a: the payment moves on at once.
    h.banks[0].charge(not_processed());
    h.banks[1].hang().hang().hang();
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 202);
    let shown: Value = body(&answer);
    assert_eq!(shown["bank"], "b");
    let (payment, routes) = payment_and_routes(&h, "k1").await;
    assert_eq!(payment.bank, "b");
    assert_eq!(
        payment.bank_reference,
        format!("pay_{}_b", payment.id.simple())
    );
    assert_eq!(routes.len(), 2);
}

#[tokio::test]
async fn with_no_other_bank_to_take_it_a_refusal_is_retried_at_a_as_with_one_bank() {
    let h = two_banks().await;
    h.service.banks[1].pipeline().breaker().force_open();
    h.banks[0].charge(not_processed()).charge(charged());
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["bank"], "a");
    assert_eq!(body(&answer)["attempts"], 2);
    assert_eq!(h.banks[1].charge_calls(), 0);
}

/// Each bank's cascade counts, by reason, as `/v1/status` lists them.
fn cascades(h: &Harness, bank: usize) -> Vec<(&'static str, u64)> {
    h.service.banks[bank]
        .cascades_by_reason()
        .iter()
        .map(|(reason, n)| (reason.as_str(), *n))
        .collect()
}

fn counts(connect: u64, bank: u64, decline: u64, bulkhead: u64) -> Vec<(&'static str, u64)> {
    vec![
        ("breaker_open", 0),
        ("bulkhead_full", bulkhead),
        ("connect_refused", connect),
        ("bank_refused", bank),
        ("decline", decline),
    ]
}

#[tokio::test]
async fn each_cascade_is_counted_at_the_bank_moved_away_from_by_its_reason() {
    let h = Harness::with_banks(pipeline_config(), &["a", "b"], &["do_not_honor"]).await;
    // A refused connection (no status), a 503, a cascadable decline: three moves from a.
    h.banks[0]
        .charge(AttemptOutcome::NotProcessed {
            status: None,
            retry_after: None,
        })
        .charge(AttemptOutcome::NotProcessed {
            status: Some(429),
            retry_after: None,
        })
        .charge(declined("do_not_honor"));
    h.banks[1]
        .charge(charged())
        .charge(charged())
        .charge(charged());
    for key in ["k1", "k2", "k3"] {
        let answer = h.pay(key).await.unwrap();
        assert_eq!(answer.response.status, 201, "{key}: {:?}", body(&answer));
        assert_eq!(body(&answer)["bank"], "b");
    }
    assert_eq!(cascades(&h, 0), counts(1, 1, 1, 0));
    assert_eq!(h.service.banks[0].cascades(), 3, "the sum");
    assert_eq!(cascades(&h, 1), counts(0, 0, 0, 0), "b never moved one on");
}

#[tokio::test]
async fn a_payment_that_finds_every_bulkhead_full_moves_on_for_bulkhead_full_and_is_released() {
    let h = two_banks().await;
    // Every bank full: the payment starts at a (its breaker admits), is refused there without a
    // call, moves to b, is refused there too, and its key is released.
    let slots: Vec<_> = h
        .service
        .banks
        .iter()
        .flat_map(|bank| {
            let bulkhead = bank.pipeline().bulkhead().clone();
            (0..4)
                .map(|_| bulkhead.try_enter().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let error = h.pay("k1").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::No));
    assert_eq!(wire(error).await.1["code"], "bulkhead_full");
    assert_eq!(cascades(&h, 0), counts(0, 0, 0, 1));
    assert_eq!(
        (h.banks[0].charge_calls(), h.banks[1].charge_calls()),
        (0, 0)
    );
    drop(slots);
}

#[tokio::test]
async fn the_reason_of_a_move_is_what_ended_the_run_and_nothing_ambiguous_ever_has_one() {
    use std::time::Duration;

    use resilience::{
        breaker::{RejectReason, Rejected},
        bulkhead::BulkheadFull,
        pipeline::{Classification, Execution, ExecutionOutcome},
        retry::GiveUpReason,
    };

    use crate::bank::{CascadeReason, ChargeOutcome, Refusal};

    let h = Harness::with_banks(pipeline_config(), &["a", "b"], &["do_not_honor"]).await;
    let run = |outcome, any_ambiguous| Execution::<ChargeOutcome> {
        outcome,
        attempts: Vec::new(),
        any_ambiguous,
        elapsed: Duration::ZERO,
    };
    let gave_up = || ExecutionOutcome::GaveUp {
        reason: GiveUpReason::AttemptsExhausted,
        last: Some(Classification::NotProcessed { retry_after: None }),
    };
    let breaker = ExecutionOutcome::BreakerRejected(Rejected {
        reason: RejectReason::Open,
        retry_after: Duration::from_secs(1),
    });
    let bulkhead = ExecutionOutcome::BulkheadFull(BulkheadFull { max_concurrent: 1 });
    let decline = |code: &str| {
        ExecutionOutcome::BusinessRejection(ChargeOutcome::Declined {
            decline_code: code.into(),
        })
    };
    for (execution, refusal, expected) in [
        (run(breaker, false), None, Some(CascadeReason::BreakerOpen)),
        // The breaker opened after a refused connection: the refusal that ended the run names it.
        (
            run(
                ExecutionOutcome::BreakerRejected(Rejected {
                    reason: RejectReason::Open,
                    retry_after: Duration::from_secs(1),
                }),
                false,
            ),
            Some(Refusal::ConnectRefused),
            Some(CascadeReason::BreakerOpen),
        ),
        (
            run(bulkhead, false),
            None,
            Some(CascadeReason::BulkheadFull),
        ),
        (
            run(gave_up(), false),
            Some(Refusal::ConnectRefused),
            Some(CascadeReason::ConnectRefused),
        ),
        (
            run(gave_up(), false),
            Some(Refusal::ByBank),
            Some(CascadeReason::BankRefused),
        ),
        (
            run(decline("do_not_honor"), false),
            None,
            Some(CascadeReason::Decline),
        ),
        // Never: an ambiguous attempt, a decline not configured, a cascadable decline after an
        // ambiguous attempt.
        (run(gave_up(), true), Some(Refusal::ByBank), None),
        (run(decline("insufficient_funds"), false), None, None),
        (run(decline("do_not_honor"), true), None, None),
    ] {
        assert_eq!(
            h.service.may_cascade(&execution, refusal),
            expected,
            "{:?} / {refusal:?}",
            execution.outcome
        );
    }
}

/// Health routing over `a` then `b` (window 10, judged after 4 attempts, dropped below 0.5,
/// exploration 0.1), whose draws are what the returned cell holds (as f64 bits).
async fn health_routed() -> (Harness, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::{atomic::AtomicU64, Arc};

    use super::routing::{Draw, HealthSettings, Routing, RoutingMode};

    let next = Arc::new(AtomicU64::new(0.99f64.to_bits()));
    let source = next.clone();
    let draw: Draw =
        Box::new(move || f64::from_bits(source.load(std::sync::atomic::Ordering::SeqCst)));
    let routing = Routing::new(
        RoutingMode::Health,
        HealthSettings {
            window: 10,
            min_samples: 4,
            min_success: 0.5,
            exploration: 0.1,
        },
        2,
        draw,
    );
    let h = Harness::with_routing(pipeline_config(), &["a", "b"], &[], routing).await;
    (h, next)
}

#[tokio::test]
async fn health_routing_starts_payments_at_the_healthier_bank_and_explores_the_dropped_one() {
    use std::sync::atomic::Ordering;

    let (h, next) = health_routed().await;
    // a refuses four payments: each moves to b (the cascade rule), and a's score falls to 0.
    for key in ["k1", "k2", "k3", "k4"] {
        h.banks[0].charge(not_processed());
        h.banks[1].charge(charged());
        let answer = h.pay(key).await.unwrap();
        assert_eq!(body(&answer)["bank"], "b", "{key}");
    }
    assert_eq!(h.service.routing.score(0).score, Some(0.0));
    assert!(h.service.routing.score(0).dropped);
    assert_eq!(h.service.routing.score(1).score, Some(1.0));

    // Now payments start at b: a is not called, and the payment's only route is b.
    h.banks[1].charge(charged());
    let answer = h.pay("k5").await.unwrap();
    assert_eq!(body(&answer)["bank"], "b");
    assert_eq!(h.banks[0].charge_calls(), 4, "a was not called");
    let (payment, routes) = payment_and_routes(&h, "k5").await;
    assert_eq!(
        routes,
        [("b".to_owned(), format!("pay_{}", payment.id.simple()))]
    );

    // An exploring payment (draw under 0.1) tries a first; a has recovered and charges it.
    next.store(0.05f64.to_bits(), Ordering::SeqCst);
    h.banks[0].charge(charged());
    let answer = h.pay("k6").await.unwrap();
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["bank"], "a");
    assert_eq!(h.banks[1].charge_calls(), 5);
}

#[tokio::test]
async fn under_health_routing_the_cascade_rule_is_unchanged() {
    let (h, _) = health_routed().await;
    for key in ["k1", "k2", "k3", "k4"] {
        h.banks[0].charge(not_processed());
        h.banks[1].charge(charged());
        h.pay(key).await.unwrap();
    }
    // b first now. A refusal at b moves the payment to a (b's own reference first, a's next).
    h.banks[1].charge(not_processed());
    h.banks[0].charge(charged());
    let answer = h.pay("k5").await.unwrap();
    assert_eq!(body(&answer)["bank"], "a");
    let (payment, routes) = payment_and_routes(&h, "k5").await;
    let id = payment.id.simple();
    assert_eq!(
        routes,
        [
            ("b".to_owned(), format!("pay_{id}")),
            ("a".to_owned(), format!("pay_{id}_a"))
        ]
    );
    // An ambiguous attempt at b keeps the payment at b: pending, a never called.
    let a_calls = h.banks[0].charge_calls();
    h.banks[1]
        .charge(ambiguous())
        .charge(not_processed())
        .charge(not_processed());
    let answer = h.pay("k6").await.unwrap();
    assert_eq!(answer.response.status, 202);
    assert_eq!(body(&answer)["bank"], "b");
    assert_eq!(h.banks[0].charge_calls(), a_calls);
}
