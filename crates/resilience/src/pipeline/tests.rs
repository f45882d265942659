//! Tests of the pipeline on a paused tokio clock (no real sleeps).

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::breaker::{State, TransitionReason};

const MS: Duration = Duration::from_millis(1);

fn pipeline(config: PipelineConfig) -> Pipeline {
    Pipeline::with_parts(
        config,
        Arc::new(TokioClock),
        Box::new(StdRng::seed_from_u64(42)),
    )
    .unwrap()
}

fn default_pipeline() -> Pipeline {
    pipeline(PipelineConfig::default())
}

#[test]
fn defaults_match_the_design() {
    let c = PipelineConfig::default();
    assert_eq!(c.attempt_timeout, Duration::from_secs(2));
    assert_eq!(c.deadline, Duration::from_secs(10));
    assert!(!c.open_breaker_on_retry_after);
    assert!(c.retry_after_lengthens_open);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["attempt_timeout_ms"], 2000);
    assert_eq!(v["deadline_ms"], 10000);
    assert_eq!(v["retry"]["max_attempts"], 4);
    assert_eq!(v["budget"]["retry_ratio"], 0.2);
    assert_eq!(v["bulkhead"]["max_concurrent"], 64);
    assert_eq!(v["breaker"]["half_open_probes"], 3);
}

#[test]
fn invalid_settings_are_refused() {
    let c = PipelineConfig {
        attempt_timeout: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(Pipeline::new(c).unwrap_err().setting, "attempt_timeout");
    let c = PipelineConfig {
        deadline: Duration::ZERO,
        ..Default::default()
    };
    assert!(Pipeline::new(c).is_err());
}

#[test]
fn the_execute_future_is_send() {
    fn assert_send<F: Future + Send>(_: F) {}
    let p = default_pipeline();
    assert_send(p.execute(|_| async { AttemptResult::Success(1) }));
}

#[tokio::test(start_paused = true)]
async fn a_first_success_is_one_attempt() {
    let p = default_pipeline();
    let ex = p
        .execute(|n| async move { AttemptResult::Success(n) })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::Success(1));
    assert_eq!(ex.attempts.len(), 1);
    assert_eq!(ex.attempts[0].classification, Classification::Success);
    assert_eq!(ex.attempts[0].delay_before_next, None);
    assert!(!ex.any_ambiguous);
    assert_eq!(p.budget().snapshot().deposits, 1);
    assert_eq!(p.breaker().snapshot().window.calls, 1);
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_attempt_is_retried_and_reported() {
    let p = default_pipeline();
    let ex = p
        .execute(|n| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if n == 1 {
                AttemptResult::Ambiguous
            } else {
                AttemptResult::Success("charged")
            }
        })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::Success("charged"));
    assert!(ex.any_ambiguous);
    assert_eq!(ex.attempts.len(), 2);
    let first = ex.attempts[0];
    assert_eq!(
        first.classification,
        Classification::Ambiguous { timed_out: false }
    );
    assert_eq!(first.duration, Duration::from_millis(30));
    let delay = first.delay_before_next.unwrap();
    assert!(delay <= Duration::from_millis(100));
    // Tokio timers have millisecond resolution: the sleep may end up to 1 ms late.
    let expected = Duration::from_millis(60) + delay;
    assert!(
        ex.elapsed >= expected && ex.elapsed <= expected + MS,
        "{:?}",
        ex.elapsed
    );
    assert_eq!(p.budget().snapshot().withdrawals, 1);
    let w = p.breaker().snapshot().window;
    assert_eq!((w.calls, w.failures), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_business_rejection_is_final_and_a_breaker_success() {
    let p = default_pipeline();
    let ex = p
        .execute(|_| async { AttemptResult::BusinessRejection("card_declined") })
        .await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::BusinessRejection("card_declined")
    );
    assert_eq!(ex.attempts.len(), 1);
    let w = p.breaker().snapshot().window;
    assert_eq!((w.calls, w.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_final_and_ignored_by_the_breaker() {
    let p = default_pipeline();
    let ex = p
        .execute(|_| async { AttemptResult::ClientError(422) })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::ClientError(422));
    assert_eq!(ex.attempts.len(), 1);
    assert_eq!(p.breaker().snapshot().window.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn not_processed_is_retried_up_to_max_attempts_with_capped_backoff() {
    let p = default_pipeline();
    let ex = p
        .execute(|_| async { AttemptResult::<()>::NotProcessed { retry_after: None } })
        .await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::GaveUp {
            reason: GiveUpReason::AttemptsExhausted,
            last: Some(Classification::NotProcessed { retry_after: None })
        }
    );
    assert_eq!(ex.attempts.len(), 4);
    assert!(!ex.any_ambiguous);
    for (i, a) in ex.attempts.iter().enumerate() {
        assert_eq!(a.number, i as u32 + 1);
        if i < 3 {
            assert!(a.delay_before_next.unwrap() <= p.retry().ceiling(i as u32 + 1));
        } else {
            assert_eq!(a.delay_before_next, None);
        }
    }
    // 4 consecutive failures: not yet the 5 that trip.
    assert_eq!(p.breaker().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn with_fail_over_a_not_processed_answer_ends_the_call_at_once_unless_one_was_ambiguous() {
    let p = default_pipeline();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ex = p
        .execute_until_with(deadline, true, 0, |_| async {
            AttemptResult::<()>::NotProcessed { retry_after: None }
        })
        .await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::GaveUp {
            reason: GiveUpReason::NotRetryable,
            last: Some(Classification::NotProcessed { retry_after: None })
        }
    );
    assert_eq!(ex.attempts.len(), 1);
    assert_eq!(ex.attempts[0].delay_before_next, None);
    assert_eq!(p.budget().snapshot().withdrawals, 0);
    assert_eq!(
        p.breaker().snapshot().window.failures,
        1,
        "still a failure here"
    );

    // After an ambiguous attempt the operation may have been applied here: retried here.
    let ex = p
        .execute_until_with(deadline, true, 0, |n| async move {
            match n {
                1 => AttemptResult::Ambiguous,
                2 => AttemptResult::NotProcessed { retry_after: None },
                _ => AttemptResult::Success("charged"),
            }
        })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::Success("charged"));
    assert_eq!(ex.attempts.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_leg_of_a_route_gets_the_attempts_the_route_has_left_and_at_least_one() {
    // max_attempts is 4 by default; every attempt is refused, nothing processed.
    let refused = |_| async { AttemptResult::<()>::NotProcessed { retry_after: None } };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let alone = default_pipeline()
        .execute_until_with(deadline, false, 0, refused)
        .await;
    assert_eq!(alone.attempts.len(), 4);
    let after_one = default_pipeline()
        .execute_until_with(deadline, false, 1, refused)
        .await;
    assert_eq!(after_one.attempts.len(), 3, "the route made one already");
    for before in [3, 4, 9] {
        let last_leg = default_pipeline()
            .execute_until_with(deadline, false, before, refused)
            .await;
        assert_eq!(last_leg.attempts.len(), 1, "{before} before: one attempt");
        assert_eq!(
            last_leg.outcome,
            ExecutionOutcome::GaveUp {
                reason: GiveUpReason::AttemptsExhausted,
                last: Some(Classification::NotProcessed { retry_after: None })
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_cuts_an_attempt_off_as_ambiguous() {
    let p = pipeline(PipelineConfig {
        retry: RetryConfig {
            max_attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    });
    let ex = p
        .execute(|_| std::future::pending::<AttemptResult<()>>())
        .await;
    assert_eq!(
        ex.attempts[0].classification,
        Classification::Ambiguous { timed_out: true }
    );
    assert_eq!(ex.attempts[0].duration, Duration::from_secs(2));
    assert!(ex.any_ambiguous);
    assert_eq!(p.breaker().snapshot().window.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_whole_call() {
    let p = pipeline(PipelineConfig {
        retry: RetryConfig {
            max_attempts: 100,
            ..Default::default()
        },
        breaker: BreakerConfig {
            consecutive_failures: 0,
            ..Default::default()
        },
        deadline: Duration::from_secs(5),
        ..Default::default()
    });
    let ex = p
        .execute(|_| std::future::pending::<AttemptResult<()>>())
        .await;
    assert!(ex.elapsed <= Duration::from_secs(5), "{:?}", ex.elapsed);
    assert!(matches!(
        ex.outcome,
        ExecutionOutcome::GaveUp {
            reason: GiveUpReason::DeadlineExceeded,
            ..
        }
    ));
    assert!(ex.attempts.len() >= 2);
    let total: Duration = ex
        .attempts
        .iter()
        .map(|a| a.duration + a.delay_before_next.unwrap_or_default())
        .sum();
    assert!(total <= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_explicit_deadline_in_the_past_makes_no_attempt() {
    let p = default_pipeline();
    let calls = AtomicU32::new(0);
    let ex = p
        .execute_until(Instant::now(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { AttemptResult::Success(()) }
        })
        .await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::GaveUp {
            reason: GiveUpReason::DeadlineExceeded,
            last: None
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_lengthens_the_delay_and_holds_the_breaker_open_when_asked_to() {
    let p = pipeline(PipelineConfig {
        open_breaker_on_retry_after: true,
        ..Default::default()
    });
    let mut rx = p.breaker().subscribe();
    let ex = p
        .execute(|n| async move {
            if n == 1 {
                AttemptResult::NotProcessed {
                    retry_after: Some(Duration::from_secs(3)),
                }
            } else {
                AttemptResult::Success(n)
            }
        })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::Success(2));
    assert_eq!(
        ex.attempts[0].delay_before_next,
        Some(Duration::from_secs(3))
    );
    assert!(
        ex.attempts[1].probe,
        "the retry arrives as the breaker admits probes"
    );
    let t = rx.try_recv().unwrap();
    assert_eq!(
        t.reason,
        TransitionReason::RetryAfter {
            wait: Duration::from_secs(3)
        }
    );
    assert_eq!(rx.try_recv().unwrap().to, State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn by_default_one_retry_after_leaves_a_closed_breaker_closed() {
    let p = default_pipeline();
    let ex = p
        .execute(|n| async move {
            if n == 1 {
                AttemptResult::NotProcessed {
                    retry_after: Some(Duration::from_secs(1)),
                }
            } else {
                AttemptResult::Success(())
            }
        })
        .await;
    assert_eq!(ex.outcome, ExecutionOutcome::Success(()));
    assert_eq!(
        ex.attempts[0].delay_before_next,
        Some(Duration::from_secs(1))
    );
    assert_eq!(p.breaker().history().len(), 0, "no transition");
}

#[tokio::test(start_paused = true)]
async fn by_default_a_retry_after_lengthens_an_opening_it_coincides_with() {
    // Consecutive-failure rule trips on the first failure; the bank says "wait 4 s", longer than
    // the 100 ms open duration: the breaker stays open for the 4 s.
    let p = pipeline(PipelineConfig {
        breaker: BreakerConfig {
            consecutive_failures: 1,
            open_duration: Duration::from_millis(100),
            open_jitter: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let ex = p
        .execute(|_| async move {
            AttemptResult::<()>::NotProcessed {
                retry_after: Some(Duration::from_secs(4)),
            }
        })
        .await;
    assert!(
        matches!(ex.outcome, ExecutionOutcome::BreakerRejected(_))
            || matches!(ex.outcome, ExecutionOutcome::GaveUp { .. })
    );
    let Err(rejected) = p.breaker().try_acquire() else {
        panic!("the breaker should still be open")
    };
    assert!(
        rejected.retry_after > Duration::from_secs(3),
        "{:?}",
        rejected.retry_after
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_capped() {
    let p = default_pipeline();
    let ex = p
        .execute(|n| async move {
            if n == 1 {
                AttemptResult::NotProcessed {
                    retry_after: Some(Duration::from_secs(120)),
                }
            } else {
                AttemptResult::Success(())
            }
        })
        .await;
    assert_eq!(
        ex.attempts[0].delay_before_next,
        Some(Duration::from_secs(5))
    );
    assert_eq!(ex.outcome, ExecutionOutcome::Success(()));
}

#[tokio::test(start_paused = true)]
async fn retry_after_can_leave_the_breaker_alone() {
    let p = pipeline(PipelineConfig {
        open_breaker_on_retry_after: false,
        ..Default::default()
    });
    let ex = p
        .execute(|n| async move {
            if n == 1 {
                AttemptResult::NotProcessed {
                    retry_after: Some(Duration::from_secs(1)),
                }
            } else {
                AttemptResult::Success(())
            }
        })
        .await;
    assert_eq!(
        ex.attempts[0].delay_before_next,
        Some(Duration::from_secs(1))
    );
    assert!(!ex.attempts[1].probe);
    assert_eq!(p.breaker().history().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_rejection_is_never_retried_and_says_when() {
    let p = default_pipeline();
    p.breaker().force_open();
    let calls = AtomicU32::new(0);
    let ex = p
        .execute(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { AttemptResult::Success(()) }
        })
        .await;
    match ex.outcome {
        ExecutionOutcome::BreakerRejected(r) => assert_eq!(r.reason, RejectReason::ForcedOpen),
        ref other => panic!("{other:?}"),
    }
    assert_eq!(ex.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(ex.attempts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_trip_during_retries_stops_at_once_with_the_breaker_answer() {
    let p = pipeline(PipelineConfig {
        breaker: BreakerConfig {
            consecutive_failures: 2,
            open_jitter: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let ex = p
        .execute(|_| async { AttemptResult::<()>::Ambiguous })
        .await;
    assert_eq!(ex.attempts.len(), 2);
    assert_eq!(ex.attempts[1].delay_before_next, None);
    match ex.outcome {
        ExecutionOutcome::BreakerRejected(r) => {
            assert_eq!(r.reason, RejectReason::Open);
            assert_eq!(r.retry_after, Duration::from_secs(5));
        }
        ref other => panic!("{other:?}"),
    }
    assert!(
        ex.any_ambiguous,
        "the caller must know the payment may have been applied"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_fails_fast_and_is_not_a_bank_failure() {
    let p = pipeline(PipelineConfig {
        bulkhead: BulkheadConfig {
            max_concurrent: 1,
            ..Default::default()
        },
        ..Default::default()
    });
    let _held = p.bulkhead().try_enter().unwrap();
    let ex = p.execute(|_| async { AttemptResult::Success(()) }).await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::BulkheadFull(BulkheadFull { max_concurrent: 1 })
    );
    assert_eq!(ex.elapsed, Duration::ZERO);
    assert_eq!(p.breaker().snapshot().window.calls, 0);
    assert_eq!(p.snapshot().bulkhead.rejected_total, 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let p = pipeline(PipelineConfig {
        budget: BudgetConfig {
            retry_ratio: 0.0,
            min_retries_per_second: 0,
            ..Default::default()
        },
        ..Default::default()
    });
    let ex = p
        .execute(|_| async {
            AttemptResult::<()>::NotProcessed {
                retry_after: Some(MS),
            }
        })
        .await;
    assert_eq!(
        ex.outcome,
        ExecutionOutcome::GaveUp {
            reason: GiveUpReason::BudgetExhausted,
            last: Some(Classification::NotProcessed {
                retry_after: Some(MS)
            })
        }
    );
    assert_eq!(ex.attempts.len(), 1);
    assert_eq!(ex.retry_after(), Some(MS));
    assert_eq!(p.budget().snapshot().exhausted_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_success_counts_toward_the_slow_call_rate() {
    let p = default_pipeline();
    for _ in 0..10 {
        let ex = p
            .execute(|_| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                AttemptResult::Success(())
            })
            .await;
        assert_eq!(ex.outcome, ExecutionOutcome::Success(()));
    }
    assert_eq!(p.breaker().state(), State::Open);
    assert!(matches!(
        p.breaker().snapshot().trip_reason,
        Some(TransitionReason::SlowCallRate { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn attempt_records_serialise_in_milliseconds() {
    let p = default_pipeline();
    let ex = p
        .execute(|n| async move {
            tokio::time::sleep(Duration::from_millis(7)).await;
            if n == 1 {
                AttemptResult::NotProcessed {
                    retry_after: Some(Duration::from_millis(500)),
                }
            } else {
                AttemptResult::Success(())
            }
        })
        .await;
    let v = serde_json::to_value(&ex.attempts).unwrap();
    assert_eq!(v[0]["classification"]["kind"], "not_processed");
    assert_eq!(v[0]["classification"]["retry_after_ms"], 500);
    assert_eq!(v[0]["duration_ms"], 7);
    assert_eq!(v[0]["delay_before_next_ms"], 500);
    assert_eq!(v[1]["delay_before_next_ms"], serde_json::Value::Null);
    let s = serde_json::to_value(p.snapshot()).unwrap();
    assert!(s["breaker"]["state"].is_string());
}
