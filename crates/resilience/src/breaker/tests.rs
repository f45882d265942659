//! Unit tests of every transition and setting, on a manual clock.

use super::*;
use crate::clock::{Clock, ManualClock};
use rand::rngs::StdRng;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> BreakerConfig {
    BreakerConfig {
        open_jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn make(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::with_parts(
        config,
        Arc::new(clock.clone()),
        Box::new(StdRng::seed_from_u64(7)),
    )
    .unwrap();
    (b, clock)
}

fn call(b: &CircuitBreaker, o: Outcome) {
    b.try_acquire().expect("admitted").record(o);
}

/// Trips the default breaker with five consecutive failures.
fn trip(b: &CircuitBreaker) {
    for _ in 0..5 {
        call(b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn starts_closed_and_admits_calls() {
    let (b, _) = make(cfg());
    assert_eq!(b.state(), State::Closed);
    let p = b.try_acquire().unwrap();
    assert!(!p.is_probe());
    p.record(Outcome::Success);
    assert_eq!(b.snapshot().window.calls, 1);
}

#[test]
fn failure_rate_trips_only_once_the_minimum_is_reached() {
    let (b, _) = make(BreakerConfig {
        consecutive_failures: 0,
        ..cfg()
    });
    // 4 failures, 5 successes alternating: 9 calls, below the minimum of 10.
    for i in 0..9 {
        call(
            &b,
            if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        );
    }
    assert_eq!(b.state(), State::Closed);
    let s = b.snapshot();
    assert_eq!(s.failure_rate, None, "not enough calls");
    assert_eq!(
        s.window,
        WindowCounts {
            calls: 9,
            failures: 5,
            slow: 0
        }
    );
    // The 10th call (a failure) makes 6/10 = 60% ≥ 50%.
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    match b.snapshot().trip_reason {
        Some(TransitionReason::FailureRate { rate, calls }) => {
            assert_eq!(calls, 10);
            assert!((rate - 0.6).abs() < 1e-9);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn failure_rate_below_threshold_does_not_trip() {
    let (b, _) = make(BreakerConfig {
        consecutive_failures: 0,
        ..cfg()
    });
    for i in 0..40 {
        call(
            &b,
            if i % 3 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        );
    }
    assert_eq!(b.state(), State::Closed);
    let r = b.snapshot().failure_rate.unwrap();
    assert!(r < 0.5 && r > 0.3, "{r}");
}

#[test]
fn failure_rate_threshold_setting_is_honoured() {
    let (b, _) = make(BreakerConfig {
        consecutive_failures: 0,
        failure_rate_threshold: 0.2,
        ..cfg()
    });
    for i in 0..10 {
        call(
            &b,
            if i < 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        );
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn slow_call_rate_trips() {
    let (b, _) = make(cfg());
    for _ in 0..8 {
        b.try_acquire()
            .unwrap()
            .record_elapsed(Outcome::Success, Duration::from_millis(1500));
    }
    for _ in 0..1 {
        b.try_acquire()
            .unwrap()
            .record_elapsed(Outcome::Success, Duration::from_millis(10));
    }
    assert_eq!(b.state(), State::Closed);
    b.try_acquire()
        .unwrap()
        .record_elapsed(Outcome::Success, Duration::from_millis(10));
    // 8 slow of 10 = 80%.
    assert_eq!(b.state(), State::Open);
    assert!(matches!(
        b.snapshot().trip_reason,
        Some(TransitionReason::SlowCallRate { calls: 10, .. })
    ));
}

#[test]
fn slow_call_duration_setting_decides_slowness() {
    let (b, _) = make(BreakerConfig {
        slow_call_duration: Duration::from_millis(200),
        ..cfg()
    });
    assert_eq!(
        b.classify(Outcome::Success, Duration::from_millis(199)),
        Outcome::Success
    );
    assert_eq!(
        b.classify(Outcome::Success, Duration::from_millis(200)),
        Outcome::SlowSuccess
    );
    assert_eq!(
        b.classify(Outcome::Failure, Duration::from_secs(9)),
        Outcome::Failure
    );
    assert_eq!(
        b.classify(Outcome::Ignored, Duration::from_secs(9)),
        Outcome::Ignored
    );
}

#[test]
fn slow_call_rate_threshold_setting_is_honoured() {
    let (b, _) = make(BreakerConfig {
        slow_call_rate_threshold: 0.5,
        ..cfg()
    });
    for i in 0..10 {
        call(
            &b,
            if i < 5 {
                Outcome::SlowSuccess
            } else {
                Outcome::Success
            },
        );
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn consecutive_failures_trip_without_waiting_for_the_window() {
    let (b, _) = make(cfg());
    for _ in 0..4 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 4);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.snapshot().trip_reason,
        Some(TransitionReason::ConsecutiveFailures { count: 5 })
    );
}

#[test]
fn a_success_breaks_the_run_of_failures_and_ignored_does_not() {
    let (b, _) = make(cfg());
    for _ in 0..4 {
        call(&b, Outcome::Failure);
    }
    call(&b, Outcome::Ignored);
    assert_eq!(b.snapshot().consecutive_failures, 4);
    call(&b, Outcome::Success);
    assert_eq!(b.snapshot().consecutive_failures, 0);
    for _ in 0..4 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn consecutive_failures_zero_disables_the_rule() {
    let (b, _) = make(BreakerConfig {
        consecutive_failures: 0,
        window: WindowKind::CountBased { size: 100 },
        minimum_calls: 100,
        ..cfg()
    });
    for _ in 0..50 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn ignored_outcomes_are_not_recorded() {
    let (b, _) = make(cfg());
    for _ in 0..30 {
        call(&b, Outcome::Ignored);
    }
    drop(b.try_acquire().unwrap());
    let s = b.snapshot();
    assert_eq!(s.window.calls, 0);
    assert_eq!(s.state, State::Closed);
}

#[test]
fn count_window_size_setting_evicts_old_calls() {
    let (b, _) = make(BreakerConfig {
        consecutive_failures: 0,
        window: WindowKind::CountBased { size: 10 },
        minimum_calls: 10,
        ..cfg()
    });
    for _ in 0..4 {
        call(&b, Outcome::Failure);
    }
    for _ in 0..10 {
        call(&b, Outcome::Success);
    }
    let s = b.snapshot();
    assert_eq!(
        s.window,
        WindowCounts {
            calls: 10,
            failures: 0,
            slow: 0
        }
    );
}

#[test]
fn time_based_window_trips_and_forgets_old_calls() {
    let (b, clock) = make(BreakerConfig {
        consecutive_failures: 0,
        window: WindowKind::TimeBased { seconds: 5 },
        minimum_calls: 4,
        ..cfg()
    });
    call(&b, Outcome::Failure);
    call(&b, Outcome::Failure);
    clock.advance(Duration::from_secs(6));
    // The two failures have left the window.
    assert_eq!(b.snapshot().window.calls, 0);
    call(&b, Outcome::Failure);
    call(&b, Outcome::Success);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    clock.advance(Duration::from_secs(1));
    call(&b, Outcome::Failure);
    // 2 failures of 4 = 50%.
    assert_eq!(b.state(), State::Open);
}

#[test]
fn open_rejects_with_the_time_left() {
    let (b, clock) = make(cfg());
    trip(&b);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.reason, RejectReason::Open);
    assert_eq!(r.retry_after, Duration::from_secs(5));
    clock.advance(Duration::from_secs(2));
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.retry_after, Duration::from_secs(3));
    assert_eq!(b.snapshot().open_remaining, Some(Duration::from_secs(3)));
    assert_eq!(b.snapshot().rejected_total, 2);
}

#[test]
fn open_moves_to_half_open_when_the_wait_ends_and_a_call_arrives() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5) - MS);
    assert!(b.try_acquire().is_err());
    clock.advance(MS);
    assert_eq!(b.snapshot().open_remaining, Some(Duration::ZERO));
    assert_eq!(b.state(), State::Open, "snapshot changes nothing");
    let p = b.try_acquire().unwrap();
    assert!(p.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 1);
    drop(p);
}

#[test]
fn half_open_admits_exactly_the_configured_probes() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.reason, RejectReason::HalfOpenFull);
    assert_eq!(
        r.retry_after,
        Duration::from_secs(5),
        "until the half-open bound"
    );
    assert_eq!(b.snapshot().probes_in_flight, 3);
    // A probe that succeeds does not free its slot: only 3 probes per half-open.
    let mut probes = probes.into_iter();
    probes.next().unwrap().record(Outcome::Success);
    assert!(b.try_acquire().is_err());
    let s = b.snapshot();
    assert_eq!((s.probes_in_flight, s.probes_succeeded), (2, 1));
}

#[test]
fn half_open_probes_setting_is_honoured() {
    let (b, clock) = make(BreakerConfig {
        half_open_probes: 1,
        ..cfg()
    });
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    p.record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn all_good_probes_close_and_reset_the_opening_count() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        let p = b.try_acquire().unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        p.record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
    let s = b.snapshot();
    assert_eq!(s.consecutive_openings, 0);
    assert_eq!(s.trip_reason, None);
    assert_eq!(s.window.calls, 0, "a fresh window after closing");
    assert_eq!(
        b.history().last().unwrap().reason,
        TransitionReason::ProbesSucceeded
    );
}

#[test]
fn a_failed_probe_reopens_with_a_longer_wait_up_to_the_cap() {
    let (b, clock) = make(cfg());
    trip(&b);
    let mut expected = Duration::from_secs(5);
    for _ in 0..8 {
        assert_eq!(b.try_acquire().unwrap_err().retry_after, expected);
        clock.advance(expected);
        let p = b.try_acquire().unwrap();
        p.record(Outcome::Failure);
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.snapshot().trip_reason,
            Some(TransitionReason::ProbeFailed)
        );
        expected = (expected * 2).min(Duration::from_secs(60));
    }
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(60)
    );
    assert_eq!(b.snapshot().consecutive_openings, 9);
}

#[test]
fn open_duration_multiplier_and_cap_settings_are_honoured() {
    let (b, clock) = make(BreakerConfig {
        open_duration: Duration::from_secs(1),
        open_backoff_multiplier: 3.0,
        max_open_duration: Duration::from_secs(5),
        ..cfg()
    });
    trip(&b);
    for expected in [1, 3, 5, 5] {
        let wait = b.try_acquire().unwrap_err().retry_after;
        assert_eq!(wait, Duration::from_secs(expected));
        clock.advance(wait);
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
}

#[test]
fn open_wait_jitter_stays_within_bounds_and_is_reproducible() {
    let run = |seed: u64| {
        let clock = ManualClock::new();
        let b = CircuitBreaker::with_parts(
            BreakerConfig {
                open_jitter: 0.25,
                ..BreakerConfig::default()
            },
            Arc::new(clock.clone()),
            Box::new(StdRng::seed_from_u64(seed)),
        )
        .unwrap();
        let mut waits = vec![];
        trip(&b);
        for n in 0..6u32 {
            let wait = b.try_acquire().unwrap_err().retry_after;
            let base = Duration::from_secs(5 * 2u64.pow(n)).min(Duration::from_secs(60));
            assert!(
                wait >= base.mul_f64(0.75)
                    && wait <= base.mul_f64(1.25).min(Duration::from_secs(60)),
                "{wait:?} vs {base:?}"
            );
            waits.push(wait);
            clock.advance(wait);
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
        waits
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn slow_probes_reopen_only_at_the_slow_rate_threshold() {
    // 3 probes, threshold 80%: 2 slow of 3 (67%) closes, 3 of 3 reopens.
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    call(&b, Outcome::SlowSuccess);
    call(&b, Outcome::SlowSuccess);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);

    trip(&b);
    clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        call(&b, Outcome::SlowSuccess);
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().trip_reason, Some(TransitionReason::ProbesSlow));
}

#[test]
fn a_dropped_or_ignored_probe_frees_its_slot() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let p3 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p1);
    assert_eq!(b.snapshot().probes_in_flight, 2);
    let p4 = b.try_acquire().expect("slot released by the drop");
    assert!(b.try_acquire().is_err());
    p2.record(Outcome::Ignored);
    let p5 = b
        .try_acquire()
        .expect("slot released by the ignored verdict");
    for p in [p3, p4, p5] {
        p.record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_without_verdict_times_out_back_to_open() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let leaked = b.try_acquire().unwrap();
    std::mem::forget(leaked); // a probe whose verdict never comes
    let _held: Vec<_> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
    clock.advance(Duration::from_secs(5) - MS);
    assert_eq!(
        b.try_acquire().unwrap_err().reason,
        RejectReason::HalfOpenFull
    );
    assert_eq!(b.snapshot().half_open_remaining, Some(MS));
    clock.advance(MS);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.reason, RejectReason::Open);
    assert_eq!(
        r.retry_after,
        Duration::from_secs(10),
        "timeout counts as an opening"
    );
    assert_eq!(
        b.snapshot().trip_reason,
        Some(TransitionReason::HalfOpenTimeout)
    );
}

#[test]
fn half_open_timeout_setting_and_refresh() {
    let (b, clock) = make(BreakerConfig {
        half_open_timeout: Duration::from_secs(1),
        ..cfg()
    });
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let p = b.try_acquire().unwrap();
    clock.advance(Duration::from_millis(999));
    assert_eq!(b.refresh(), State::HalfOpen);
    clock.advance(MS);
    assert_eq!(b.refresh(), State::Open);
    // The late verdict belongs to the half-open that timed out: dropped.
    p.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_late_verdict_after_the_bound_reopens_instead_of_counting() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let p = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(6));
    p.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.snapshot().trip_reason,
        Some(TransitionReason::HalfOpenTimeout)
    );
}

#[test]
fn verdicts_from_an_earlier_state_are_dropped() {
    let (b, clock) = make(cfg());
    let early: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    trip(&b);
    clock.advance(Duration::from_secs(5));
    let probe = b.try_acquire().unwrap();
    // Failures admitted before the trip must not reopen the half-open.
    for p in early {
        p.record(Outcome::Failure);
    }
    assert_eq!(b.state(), State::HalfOpen);
    probe.record(Outcome::Success);
    assert_eq!(b.snapshot().probes_succeeded, 1);
}

#[test]
fn open_until_holds_the_breaker_open_for_a_retry_after() {
    let (b, clock) = make(cfg());
    assert!(b.open_for(Duration::from_secs(30)));
    assert_eq!(b.state(), State::Open);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.retry_after, Duration::from_secs(30));
    assert_eq!(
        b.snapshot().trip_reason,
        Some(TransitionReason::RetryAfter {
            wait: Duration::from_secs(30)
        })
    );
    assert_eq!(
        b.snapshot().consecutive_openings,
        0,
        "not a failure-driven opening"
    );
    // While open it only lengthens.
    assert!(b.open_for(Duration::from_secs(10)));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(30)
    );
    assert!(b.open_for(Duration::from_secs(40)));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(40)
    );
    // Capped at max_open_duration.
    assert!(b.open_for(Duration::from_secs(3600)));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(60)
    );
    clock.advance(Duration::from_secs(60));
    assert!(b.try_acquire().unwrap().is_probe());
    // From half-open too.
    assert!(b.open_until(clock.now() + Duration::from_secs(2)));
    assert_eq!(b.state(), State::Open);
    // A past instant does nothing.
    assert!(!b.open_until(clock.now()));
}

#[test]
fn open_until_defers_to_operator_states() {
    let (b, _) = make(cfg());
    for op in [
        CircuitBreaker::disable,
        CircuitBreaker::metrics_only,
        CircuitBreaker::force_open,
    ] {
        op(&b);
        let before = b.state();
        assert!(!b.open_for(Duration::from_secs(5)));
        assert_eq!(b.state(), before);
    }
}

#[test]
fn force_open_rejects_everything_until_reset() {
    let (b, clock) = make(cfg());
    b.force_open();
    assert_eq!(b.state(), State::ForcedOpen);
    clock.advance(Duration::from_secs(3600));
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.reason, RejectReason::ForcedOpen);
    assert_eq!(r.retry_after, Duration::from_secs(5));
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert!(b.try_acquire().is_ok());
}

#[test]
fn disabled_admits_everything_and_records_nothing() {
    let (b, _) = make(cfg());
    b.force_closed();
    assert_eq!(b.state(), State::Disabled);
    for _ in 0..100 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.snapshot().window.calls, 0);
}

#[test]
fn metrics_only_records_but_never_trips() {
    let (b, _) = make(cfg());
    b.metrics_only();
    for _ in 0..30 {
        call(&b, Outcome::Failure);
    }
    let s = b.snapshot();
    assert_eq!(s.state, State::MetricsOnly);
    assert_eq!(s.failure_rate, Some(1.0));
    assert_eq!(s.consecutive_failures, 30);
    assert_eq!(s.window.calls, 20);
}

#[test]
fn reset_clears_everything_and_is_recorded() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_secs(5));
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.snapshot().consecutive_openings, 2);
    b.reset();
    let s = b.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(s.consecutive_openings, 0);
    assert_eq!(s.window.calls, 0);
    b.reset();
    let h = b.history();
    assert_eq!(h.last().unwrap().from, State::Closed);
    assert_eq!(
        h.last().unwrap().reason,
        TransitionReason::Operator {
            action: OperatorAction::Reset,
            actor: None,
        }
    );
    // Repeating a non-reset operator action is not a transition.
    let n = b.history().len();
    b.force_open();
    b.force_open();
    assert_eq!(b.history().len(), n + 1);
}

#[test]
fn an_operator_action_keeps_its_actor_in_the_history_and_the_snapshot() {
    let (b, _) = make(cfg());
    b.operate(OperatorAction::ForceOpen, Some("alice"));
    let expected = TransitionReason::Operator {
        action: OperatorAction::ForceOpen,
        actor: Some("alice".to_owned()),
    };
    assert_eq!(b.history().last().unwrap().reason, expected);
    assert_eq!(b.snapshot().trip_reason, Some(expected));
    let v = serde_json::to_value(b.history()).unwrap();
    assert_eq!(v[0]["reason"]["kind"], "operator");
    assert_eq!(v[0]["reason"]["action"], "force_open");
    assert_eq!(v[0]["reason"]["actor"], "alice");
    b.operate(OperatorAction::Reset, Some("bob"));
    let h = b.history();
    assert_eq!(h.last().unwrap().to, State::Closed);
    assert_eq!(
        h.last().unwrap().reason,
        TransitionReason::Operator {
            action: OperatorAction::Reset,
            actor: Some("bob".to_owned()),
        }
    );
    // Without an actor the member is absent, not null.
    b.force_open();
    let v = serde_json::to_value(b.history().last().unwrap()).unwrap();
    assert!(v["reason"].get("actor").is_none(), "{v}");
}

#[test]
fn every_transition_is_broadcast_with_its_reason() {
    let (b, clock) = make(cfg());
    let mut rx = b.subscribe();
    trip(&b);
    clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        call(&b, Outcome::Success);
    }
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let seen: Vec<_> = got.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        seen,
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert_eq!(
        got[0].reason,
        TransitionReason::ConsecutiveFailures { count: 5 }
    );
    assert_eq!(got[0].open_for, Some(Duration::from_secs(5)));
    assert_eq!(got[1].at_unix_ms, 5000);
    assert_eq!(b.history(), got);
}

#[test]
fn history_keeps_only_the_last_transitions() {
    let (b, _) = make(BreakerConfig {
        history_len: 3,
        ..cfg()
    });
    for _ in 0..5 {
        b.force_open();
        b.reset();
    }
    let h = b.history();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2].to, State::Closed);
}

#[test]
fn snapshot_serialises_durations_as_milliseconds() {
    let (b, clock) = make(cfg());
    trip(&b);
    clock.advance(Duration::from_millis(1250));
    let v = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(v["state"], "open");
    assert_eq!(v["open_remaining_ms"], 3750);
    // The manual clock's wall time is the epoch plus its elapsed time: 1250 + 3750.
    assert_eq!(v["next_probe_at_unix_ms"], 5000);
    assert_eq!(v["in_state_ms"], 1250);
    assert_eq!(v["trip_reason"]["kind"], "consecutive_failures");
    assert_eq!(v["failure_rate"], serde_json::Value::Null);
    let t = serde_json::to_value(&b.history()[0]).unwrap();
    assert_eq!(t["from"], "closed");
    assert_eq!(t["open_for_ms"], 5000);
    let r = serde_json::to_value(b.try_acquire().unwrap_err()).unwrap();
    assert_eq!(r["reason"], "open");
    assert_eq!(r["retry_after_ms"], 3750);
}

#[test]
fn invalid_config_is_refused() {
    let r = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 0,
        ..cfg()
    });
    assert_eq!(r.unwrap_err().setting, "half_open_probes");
}
