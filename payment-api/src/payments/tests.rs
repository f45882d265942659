//! The flow's answer for each pipeline outcome and each store fault, in process: a real SQLite
//! store behind [`FaultyStore`], a [`ScriptedBank`], and the real pipeline (retry, breaker,
//! bulkhead) with short timings. The rule under test throughout: a client hears
//! `charged: "no"` only when nothing was or will be charged under its key.

use std::{sync::Arc, time::Duration};

use payment_store::{KeyState, Store};
use payment_types::{
    bank::ChargeRequest,
    payment::{CreatePayment, PaymentStatus},
};
use resilience::{
    breaker::{BreakerConfig, State as BreakerState},
    bulkhead::BulkheadConfig,
    pipeline::{Pipeline, PipelineConfig},
    retry::RetryConfig,
};
use serde_json::Value;
use uuid::Uuid;

use super::*;
use crate::{
    auth::Tenant,
    bank::{AttemptOutcome, BankGateway},
    domain::{IdempotencyKey, PaymentRequest},
    error::Charged,
    stats::{Counters, Latencies},
    test_doubles::{temp_dir, Fault, FaultyStore, Op, ScriptedBank},
};

pub(crate) const TENANT: &str = "acme";

/// A payment service over a faulty SQLite store and a scripted bank.
pub(crate) struct Harness {
    pub(crate) service: Arc<PaymentService>,
    pub(crate) store: Arc<FaultyStore>,
    /// The first bank (with one bank, the bank).
    pub(crate) bank: Arc<ScriptedBank>,
    /// Every bank, in priority order (`banks[0]` is `bank`).
    pub(crate) banks: Vec<Arc<ScriptedBank>>,
    /// The store's directory, removed when the harness is dropped (after the store: fields
    /// drop in order).
    _dir: tempfile::TempDir,
}

/// Timings short enough for tests: attempts time out in 100 ms, up to 3 attempts, 1 ms backoff.
pub(crate) fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        breaker: BreakerConfig {
            half_open_probes: 1,
            ..BreakerConfig::default()
        },
        retry: RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryConfig::default()
        },
        bulkhead: BulkheadConfig {
            max_concurrent: 4,
            ..BulkheadConfig::default()
        },
        attempt_timeout: Duration::from_millis(100),
        deadline: Duration::from_secs(2),
        ..PipelineConfig::default()
    }
}

impl Harness {
    pub(crate) async fn new() -> Self {
        Self::with_pipeline(pipeline_config()).await
    }

    pub(crate) async fn with_pipeline(config: PipelineConfig) -> Self {
        Self::with_banks(config, &["bank"], &[]).await
    }

    /// A harness over several scripted banks, named `names` in priority order, each with its
    /// own pipeline of `config`; `cascade_decline_codes` as `--cascade-decline-codes`.
    pub(crate) async fn with_banks(
        config: PipelineConfig,
        names: &[&str],
        cascade_decline_codes: &[&str],
    ) -> Self {
        Self::with_routing(
            config,
            names,
            cascade_decline_codes,
            super::Routing::priority(names.len()),
        )
        .await
    }

    /// [`Harness::with_banks`] with `routing` ordering the banks.
    pub(crate) async fn with_routing(
        config: PipelineConfig,
        names: &[&str],
        cascade_decline_codes: &[&str],
        routing: super::Routing,
    ) -> Self {
        let dir = temp_dir("api-flow");
        let inner = payment_store::open(None, dir.path()).await.unwrap();
        let store = Arc::new(FaultyStore::new(inner));
        let counters = Arc::new(Counters::default());
        let mut banks = Vec::new();
        let mut gateways = Vec::new();
        for name in names {
            let bank = ScriptedBank::new();
            gateways.push(Arc::new(
                BankGateway::new(
                    bank.clone(),
                    Pipeline::new(config.clone()).unwrap(),
                    counters.clone(),
                )
                .named(name, &format!("http://{name}.test")),
            ));
            banks.push(bank);
        }
        let bank = banks[0].clone();
        let service = Arc::new(PaymentService {
            store: store.clone(),
            routing,
            banks: gateways,
            cache: ReplayCache::new(100, Duration::from_secs(72 * 3600)),
            counters,
            latencies: Arc::new(Latencies::new(64)),
            settings: FlowSettings {
                lease: Duration::from_secs(30),
                reconcile_after: Duration::from_millis(10),
                cascade_decline_codes: cascade_decline_codes
                    .iter()
                    .map(|code| code.to_string())
                    .collect(),
            },
            instance_id: "test".into(),
        });
        Self {
            service,
            store,
            bank,
            banks,
            _dir: dir,
        }
    }

    /// `POST /v1/payments` with `key` for 1000 TRY from `tok_visa`.
    pub(crate) async fn pay(&self, key: &str) -> Result<Answer, ApiError> {
        let body = CreatePayment {
            amount: 1000,
            currency: "TRY".into(),
            source: "tok_visa".into(),
            description: None,
            metadata: None,
        };
        let fingerprint = payment_store::fingerprint::fingerprint(
            "POST",
            "/v1/payments",
            &serde_json::to_value(&body).unwrap(),
        );
        self.service
            .create(
                &Tenant::for_tests(TENANT),
                &IdempotencyKey::parse(key.as_bytes()).unwrap(),
                fingerprint,
                PaymentRequest::parse(body).unwrap(),
                "req-test",
            )
            .await
    }

    /// The key's record in the store (read past the faults).
    pub(crate) async fn key(&self, key: &str) -> Option<payment_store::KeyRecord> {
        self.store.heal();
        self.store.find_key(TENANT, key).await.unwrap()
    }
}

/// The body of an answer as JSON.
pub(crate) fn body(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.response.body).unwrap()
}

/// The answer an error becomes on the wire: status and problem body.
pub(crate) async fn wire(error: ApiError) -> (u16, Value) {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let response = error.into_response();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn ambiguous() -> AttemptOutcome {
    AttemptOutcome::Ambiguous {
        reason: "bank answered 500".into(),
    }
}

fn not_processed() -> AttemptOutcome {
    AttemptOutcome::NotProcessed {
        status: Some(503),
        retry_after: None,
    }
}

fn refused(status: u16, code: &str) -> AttemptOutcome {
    AttemptOutcome::Refused {
        status,
        code: code.into(),
    }
}

fn charged_placeholder() -> AttemptOutcome {
    // The scripted bank fills in the charge for the request it gets.
    AttemptOutcome::Charged(crate::test_doubles::bank_charge_placeholder())
}

/// Asserts the answer is a 202 pending whose body shows no outcome.
fn assert_pending(answer: &Answer) {
    assert_eq!(answer.response.status, 202, "{:?}", body(answer));
    let body = body(answer);
    assert_eq!(body["status"], "pending");
    assert!(
        body.get("bank_charge_id").is_none_or(Value::is_null),
        "{body}"
    );
    assert!(
        body.get("decline_code").is_none_or(Value::is_null),
        "{body}"
    );
}

// --- the happy answers -------------------------------------------------------------------------

#[tokio::test]
async fn a_charge_is_201_succeeded_and_replays_byte_identical() {
    let h = Harness::new().await;
    h.bank.charge(charged_placeholder());
    let first = h.pay("k1").await.unwrap();
    assert_eq!(first.response.status, 201);
    assert_eq!(body(&first)["status"], "succeeded");
    let replay = h.pay("k1").await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.response.body, first.response.body);
    assert_eq!(h.bank.charge_calls(), 1);
}

#[tokio::test]
async fn a_decline_is_402_and_stored() {
    let h = Harness::new().await;
    h.bank.charge(AttemptOutcome::Declined {
        decline_code: "insufficient_funds".into(),
    });
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 402);
    assert_eq!(body(&answer)["decline_code"], "insufficient_funds");
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::Completed);
}

#[tokio::test]
async fn a_refusal_with_no_ambiguous_attempt_is_502_final_and_not_charged() {
    let h = Harness::new().await;
    h.bank.charge(refused(422, "invalid_charge"));
    let answer = h.pay("k1").await.unwrap();
    assert_eq!(answer.response.status, 502);
    let body = body(&answer);
    assert_eq!(body["code"], "bank_rejected_request");
    assert_eq!(body["charged"], "no");
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::Completed);
}

#[tokio::test]
async fn every_attempt_refused_is_503_bank_unavailable_charged_no_and_the_key_is_free() {
    let h = Harness::new().await;
    h.bank
        .charge(not_processed())
        .charge(not_processed())
        .charge(not_processed());
    let error = h.pay("k1").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::No));
    let (status, problem) = wire(error).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "bank_unavailable");
    assert_eq!(problem["charged"], "no");
    assert!(h.key("k1").await.is_none(), "the key is free to retry");
}

// --- item 2: never "no" after the claim unless the store confirmed the release -----------------

#[tokio::test]
async fn an_ambiguous_attempt_then_a_failed_mark_pending_answers_202_pending_never_no() {
    let h = Harness::new().await;
    h.bank.charge(ambiguous()).charge(ambiguous()).hang();
    h.store.fail_always(Op::MarkPending, Fault::Fail);
    let answer = h.pay("k1").await.expect("a 202, not an error");
    assert_pending(&answer);
    // The payment is still claimed under the handler's lease: the reconciler resumes it when
    // the lease expires (its first reconcile time is the lease's expiry).
    let key = h.key("k1").await.unwrap();
    assert_eq!(key.state, KeyState::InFlight);
    assert_eq!(key.payment_status, PaymentStatus::Pending);
}

#[tokio::test]
async fn a_timeout_then_a_mark_pending_whose_commit_was_not_acknowledged_answers_202() {
    let h = Harness::new().await;
    h.bank
        .hang()
        .charge(not_processed())
        .charge(not_processed());
    h.store
        .fail_always(Op::MarkPending, Fault::FailAfterApplying);
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::Pending);
}

#[tokio::test]
async fn every_attempt_refused_then_a_failed_release_is_unknown_not_no() {
    let h = Harness::new().await;
    h.bank
        .charge(not_processed())
        .charge(not_processed())
        .charge(not_processed());
    h.store.fail_always(Op::Release, Fault::Fail);
    let error = h.pay("k1").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::Unknown));
    let (status, problem) = wire(error).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "store_unavailable");
    assert_eq!(problem["charged"], "unknown");
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains("nothing was processed"), "{detail}");
    assert!(!detail.contains("not processed"), "{detail}");
}

#[tokio::test]
async fn a_release_that_matches_no_row_is_unknown_not_no() {
    let h = Harness::new().await;
    h.bank
        .charge(not_processed())
        .charge(not_processed())
        .charge(not_processed());
    h.store.fail_always(Op::Release, Fault::NoRow);
    // The key still holds the payment here (the no-row release touched nothing): the answer is
    // what it holds (pending) or "unknown", never "no".
    match h.pay("k1").await {
        Ok(answer) => assert_pending(&answer),
        Err(error) => assert_eq!(error.charged(), Some(Charged::Unknown), "{error:?}"),
    }
    assert!(h.key("k1").await.is_some());
}

#[tokio::test]
async fn a_lost_lease_whose_payment_another_worker_charged_answers_that_charge() {
    let h = Harness::new().await;
    let store = h.store.clone();
    // While our attempt is at the bank, our lease is lost: another worker (a reconciler whose
    // clock says the lease expired) takes the payment over and the bank charges it for them.
    h.bank.run(move |request: ChargeRequest| async move {
        let id = payment_id_of(&request);
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        assert!(store
            .acquire_lease(
                id,
                "other/reconciler",
                later + chrono::Duration::minutes(1),
                later
            )
            .await
            .unwrap());
        let record = store.get_payment(None, id).await.unwrap().unwrap();
        let mut settled = record.clone();
        settled.status = PaymentStatus::Succeeded;
        settled.bank_charge_id = Some(format!("ch_{}", request.reference));
        let response = responses::for_payment(&settled);
        assert!(store
            .settle(
                id,
                &payment_store::Settlement::Succeeded {
                    charge_id: format!("ch_{}", request.reference)
                },
                1,
                &response,
                responses::now_ms()
            )
            .await
            .unwrap());
        not_processed()
    });
    h.bank.charge(not_processed()).charge(not_processed());
    let answer = h.pay("k1").await.expect("the charge the key now holds");
    assert_eq!(answer.response.status, 201);
    assert_eq!(body(&answer)["status"], "succeeded");
}

#[tokio::test]
async fn a_handler_that_outlived_its_lease_does_not_release_the_key_and_is_never_no() {
    // The store or the bank was so slow that the handler's lease expired before every attempt
    // came back refused. A replay of the key may meanwhile have answered 202 (an expired
    // in-flight lease shows the current state), and the reconciler will resume the payment:
    // deleting it now would turn that 202 into a lie, so the release is refused.
    let mut h = Harness::new().await;
    Arc::get_mut(&mut h.service)
        .expect("not shared yet")
        .settings
        .lease = Duration::ZERO;
    h.bank
        .charge(not_processed())
        .charge(not_processed())
        .charge(not_processed());
    match h.pay("k1").await {
        Ok(answer) => assert_pending(&answer),
        Err(error) => assert_eq!(error.charged(), Some(Charged::Unknown), "{error:?}"),
    }
    let key = h
        .key("k1")
        .await
        .expect("the payment stays for the reconciler");
    assert_eq!(key.payment_status, PaymentStatus::Pending);
    assert_eq!(h.service.counters.snapshot().lease_lost, 1);
}

#[tokio::test]
async fn an_ambiguous_attempt_then_a_409_in_progress_goes_pending_never_failed() {
    let h = Harness::new().await;
    h.bank
        .charge(ambiguous())
        .charge(refused(409, "charge_in_progress"));
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
    let key = h.key("k1").await.unwrap();
    assert_eq!(key.state, KeyState::Pending);
    assert_eq!(key.payment_status, PaymentStatus::Pending);
}

#[tokio::test]
async fn a_timeout_then_another_4xx_goes_pending_never_failed() {
    let h = Harness::new().await;
    h.bank.hang().charge(refused(422, "invalid_charge"));
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
    assert_eq!(
        h.key("k1").await.unwrap().payment_status,
        PaymentStatus::Pending
    );
}

#[tokio::test]
async fn a_409_in_progress_alone_goes_pending() {
    let h = Harness::new().await;
    h.bank.charge(refused(409, "charge_in_progress"));
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
}

#[tokio::test]
async fn a_settle_that_fails_after_a_charge_answers_202_without_the_charge_id() {
    let h = Harness::new().await;
    h.bank.charge(charged_placeholder());
    h.store.fail_always(Op::Settle, Fault::Fail);
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
    // Still claimed under the handler's lease, for the reconciler to settle from the bank.
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::InFlight);
}

#[tokio::test]
async fn a_settle_that_fails_after_a_decline_answers_202_without_the_decline_code() {
    let h = Harness::new().await;
    h.bank.charge(AttemptOutcome::Declined {
        decline_code: "insufficient_funds".into(),
    });
    h.store.fail_always(Op::Settle, Fault::Fail);
    let answer = h.pay("k1").await.unwrap();
    assert_pending(&answer);
}

#[tokio::test]
async fn a_claim_whose_commit_was_not_acknowledged_is_unknown_and_the_key_holds_the_payment() {
    let h = Harness::new().await;
    h.store.fail_next(Op::Claim, Fault::FailAfterApplying, 1);
    let error = h.pay("k1").await.unwrap_err();
    assert_eq!(error.charged(), Some(Charged::Unknown));
    assert_eq!(h.bank.charge_calls(), 0);
    // The claim did commit: the payment exists and the reconciler will charge it once the
    // lease expires, which is why the answer could never be "no".
    assert_eq!(h.key("k1").await.unwrap().state, KeyState::InFlight);
}

#[tokio::test]
async fn a_store_that_cannot_be_read_before_the_claim_is_unknown() {
    let h = Harness::new().await;
    h.service.bank().pipeline().breaker().force_open();
    h.store.fail_always(Op::FindKey, Fault::Fail);
    let (status, problem) = wire(h.pay("k1").await.unwrap_err()).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "store_unavailable");
    assert_eq!(problem["charged"], "unknown");
}

// --- item 5: the breaker refuses before the claim -----------------------------------------------

#[tokio::test]
async fn an_open_breaker_refuses_a_new_payment_without_a_claim_charged_no() {
    let h = Harness::new().await;
    h.service.bank().pipeline().breaker().force_open();
    let error = h.pay("k1").await.unwrap_err();
    let (status, problem) = wire(error).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "breaker_open");
    assert_eq!(problem["charged"], "no");
    assert_eq!(h.store.calls(Op::Claim), 0);
}

#[tokio::test]
async fn a_half_open_breaker_whose_probes_are_taken_refuses_without_a_claim_and_a_release() {
    let h = Harness::new().await;
    let breaker = h.service.bank().pipeline().breaker().clone();
    // Open for a moment, then let the wait pass: the next call becomes the half-open probe.
    assert!(breaker.open_for(Duration::from_millis(1)));
    let probe = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(permit) = breaker.try_acquire() {
                break permit;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the open wait ends");
    assert!(probe.is_probe());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let (status, problem) = wire(h.pay("k1").await.unwrap_err()).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "breaker_open");
    assert_eq!(problem["charged"], "no");
    assert_eq!(
        h.store.calls(Op::Claim),
        0,
        "refused before any store write"
    );
    assert_eq!(h.store.calls(Op::Release), 0);
    assert_eq!(h.bank.charge_calls(), 0);
    drop(probe);
}

#[tokio::test]
async fn a_full_bulkhead_is_503_bulkhead_full_charged_no_and_the_key_is_free() {
    let h = Harness::with_pipeline(PipelineConfig {
        bulkhead: BulkheadConfig {
            max_concurrent: 1,
            ..BulkheadConfig::default()
        },
        ..pipeline_config()
    })
    .await;
    let slot = h.service.bank().pipeline().bulkhead().try_enter().unwrap();
    let (status, problem) = wire(h.pay("k1").await.unwrap_err()).await;
    assert_eq!(status, 503);
    assert_eq!(problem["code"], "bulkhead_full");
    assert_eq!(problem["charged"], "no");
    assert!(h.key("k1").await.is_none());
    drop(slot);
}

// --- the verdict of a pipeline run ---------------------------------------------------------------

pub(crate) fn payment_id_of(request: &ChargeRequest) -> Uuid {
    Uuid::parse_str(request.reference.trim_start_matches("pay_")).unwrap()
}

#[tokio::test]
async fn refusals_at_the_edge_never_say_no_because_the_key_was_not_looked_at() {
    // A client whose first request was charged, and whose retry is rate limited or shed, must
    // not read "no charge" into the refusal (found by the chaos audit's final replay).
    for error in [
        ApiError::RateLimited {
            retry_after: Duration::from_secs(1),
        },
        ApiError::Overloaded {
            retry_after: Duration::from_secs(1),
        },
    ] {
        let (status, problem) = wire(error).await;
        assert!(status == 429 || status == 503, "{status}");
        assert_eq!(problem["charged"], "unknown", "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.contains("nothing was processed"), "{detail}");
        assert!(detail.contains("same Idempotency-Key"), "{detail}");
    }
}
