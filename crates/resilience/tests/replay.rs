//! Replays of failure stories from other libraries' issue trackers, and the many-task
//! contention test of half-open probe admission.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use resilience::breaker::{
    BreakerConfig, CircuitBreaker, Outcome, RejectReason, State, TransitionReason,
};
use resilience::clock::{ManualClock, TokioClock};
use resilience::pipeline::{AttemptResult, ExecutionOutcome, Pipeline, PipelineConfig};

fn breaker(config: BreakerConfig) -> (Arc<CircuitBreaker>, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::with_parts(
        config,
        Arc::new(clock.clone()),
        Box::new(StdRng::seed_from_u64(3)),
    )
    .unwrap();
    (Arc::new(b), clock)
}

fn no_jitter() -> BreakerConfig {
    BreakerConfig {
        open_jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn trip_and_wait(b: &CircuitBreaker, clock: &ManualClock) {
    for _ in 0..5 {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(60));
}

/// resilience4j #343 and #1090, Polly #216: when the open wait ends, every waiting caller
/// rushes in as a "probe". Here a burst of threads hits the breaker the instant it may probe;
/// exactly `half_open_probes` get through, round after round.
#[test]
fn half_open_stampede_admits_exactly_n_probes_under_heavy_contention() {
    const THREADS: usize = 16;
    const CALLS_PER_THREAD: usize = 200;
    let (b, clock) = breaker(no_jitter());
    for round in 0..20 {
        trip_and_wait(&b, &clock);
        let admitted = AtomicU32::new(0);
        let rejected_full = AtomicU32::new(0);
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    let mut held = Vec::new();
                    for _ in 0..CALLS_PER_THREAD {
                        match b.try_acquire() {
                            Ok(p) => {
                                assert!(p.is_probe());
                                admitted.fetch_add(1, Ordering::SeqCst);
                                held.push(p); // verdict still pending
                            }
                            Err(r) => {
                                assert_eq!(r.reason, RejectReason::HalfOpenFull);
                                rejected_full.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    // Keep the probes until every thread is done, so no slot is freed early.
                    barrier.wait();
                    for p in held {
                        p.record(Outcome::Success);
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 3, "round {round}");
        assert_eq!(
            rejected_full.load(Ordering::SeqCst) as usize,
            THREADS * CALLS_PER_THREAD - 3
        );
        assert_eq!(
            b.state(),
            State::Closed,
            "round {round}: three good probes close"
        );
    }
}

/// The same on tokio's multi-threaded runtime with a thousand tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_stampede_with_a_thousand_tasks() {
    let (b, clock) = breaker(no_jitter());
    trip_and_wait(&b, &clock);
    let admitted = Arc::new(AtomicU32::new(0));
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_in_flight = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (b, admitted, in_flight, max_in_flight) = (
            b.clone(),
            admitted.clone(),
            in_flight.clone(),
            max_in_flight.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Ok(p) = b.try_acquire() {
                admitted.fetch_add(1, Ordering::SeqCst);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                drop(p); // no verdict: the slot is released and may be reused
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(max_in_flight.load(Ordering::SeqCst) <= 3);
    assert!(admitted.load(Ordering::SeqCst) >= 3);
    assert!(b.snapshot().probes_in_flight == 0);
}

/// resilience4j #903 and #935: probes whose outcome is never recorded (an exception path that
/// skips recording, a cancelled call) leave the breaker half-open with every slot taken,
/// rejecting all traffic forever. Here a cancelled probe frees its slot at once, and leaked
/// probes are bounded by `half_open_timeout`: the breaker reopens and then recovers.
#[test]
fn stuck_half_open_recovers() {
    let (b, clock) = breaker(no_jitter());
    trip_and_wait(&b, &clock);
    // Three probes whose verdicts never come.
    for _ in 0..3 {
        std::mem::forget(b.try_acquire().unwrap());
    }
    assert_eq!(
        b.try_acquire().unwrap_err().reason,
        RejectReason::HalfOpenFull
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        b.refresh(),
        State::Open,
        "never stuck: back to open after the bound"
    );
    assert_eq!(
        b.snapshot().trip_reason,
        Some(TransitionReason::HalfOpenTimeout)
    );
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        b.try_acquire().unwrap().record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_releases_its_slot() {
    let (b, clock) = breaker(no_jitter());
    trip_and_wait(&b, &clock);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let _p = b.try_acquire().unwrap();
            std::future::pending::<()>().await; // a bank call that hangs
        }));
    }
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(b.snapshot().probes_in_flight, 3);
    assert!(b.try_acquire().is_err());
    for t in &tasks {
        t.abort(); // e.g. the client went away
    }
    for t in tasks {
        assert!(t.await.unwrap_err().is_cancelled());
    }
    assert_eq!(b.snapshot().probes_in_flight, 0);
    assert!(b.try_acquire().unwrap().is_probe());
}

/// Polly #935: calls that succeed slowly (or are cut off by a timeout) were never seen by the
/// breaker, so a crawling dependency never tripped it. Here slow successes count toward the
/// slow-call rate and attempt timeouts count as failures.
#[tokio::test(start_paused = true)]
async fn slow_calls_are_counted() {
    let p = Pipeline::with_parts(
        PipelineConfig::default(),
        Arc::new(TokioClock),
        Box::new(StdRng::seed_from_u64(1)),
    )
    .unwrap();
    for _ in 0..10 {
        let ex = p
            .execute(|_| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                AttemptResult::Success(())
            })
            .await;
        assert_eq!(ex.outcome, ExecutionOutcome::Success(()));
    }
    let s = p.breaker().snapshot();
    assert_eq!(s.state, State::Open);
    assert!(
        matches!(s.trip_reason, Some(TransitionReason::SlowCallRate { .. })),
        "{:?}",
        s.trip_reason
    );

    let p = Pipeline::with_parts(
        PipelineConfig::default(),
        Arc::new(TokioClock),
        Box::new(StdRng::seed_from_u64(2)),
    )
    .unwrap();
    let ex = p
        .execute(|_| std::future::pending::<AttemptResult<()>>())
        .await;
    assert!(ex.any_ambiguous);
    assert!(matches!(
        ex.outcome,
        ExecutionOutcome::GaveUp { .. } | ExecutionOutcome::BreakerRejected(_)
    ));
    assert_eq!(
        p.breaker().snapshot().consecutive_failures,
        4,
        "every timed-out attempt is a failure"
    );
}

/// The lock-free closed path under contention: many threads recording at once trip the breaker
/// exactly once, and a healthy stream never trips it.
#[test]
fn concurrent_recording_trips_exactly_once() {
    for round in 0..20 {
        let (b, _clock) = breaker(no_jitter());
        let mut rx = b.subscribe();
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (b, barrier) = (&b, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..500 {
                        if let Ok(p) = b.try_acquire() {
                            // Healthy for a while, then the bank fails.
                            p.record(if i < 200 || (i + t) % 7 == 0 {
                                Outcome::Success
                            } else {
                                Outcome::Failure
                            });
                        }
                    }
                });
            }
        });
        let first = rx.try_recv().unwrap();
        assert_eq!(
            (first.from, first.to),
            (State::Closed, State::Open),
            "round {round}"
        );
        assert!(
            rx.try_recv().is_err(),
            "round {round}: exactly one transition"
        );
    }
    let (b, _clock) = breaker(no_jitter());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..2000 {
                    b.try_acquire().unwrap().record(Outcome::Success);
                }
            });
        }
    });
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().window.calls, 20);
}
