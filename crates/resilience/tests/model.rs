//! Property tests: the breaker against a small reference model, on random sequences of
//! outcomes, time steps and operator actions; and the retry policy's delay bounds.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use resilience::breaker::{
    BreakerConfig, CircuitBreaker, Outcome, Permit, RejectReason, State, WindowKind,
};
use resilience::clock::{Clock, ManualClock};
use resilience::retry::{Jitter, RetryConfig, RetryDecision, RetryPolicy};

const WINDOW: usize = 6;
const MIN_CALLS: usize = 4;
const CONSECUTIVE: u32 = 3;
const PROBES: u32 = 2;
const OPEN_MS: u64 = 1000;
const MAX_OPEN_MS: u64 = 8000;
const HALF_OPEN_TIMEOUT_MS: u64 = 3000;
const FAILURE_RATE: f64 = 0.5;
const SLOW_RATE: f64 = 0.6;

fn config() -> BreakerConfig {
    BreakerConfig {
        window: WindowKind::CountBased {
            size: WINDOW as u32,
        },
        minimum_calls: MIN_CALLS as u32,
        failure_rate_threshold: FAILURE_RATE,
        slow_call_rate_threshold: SLOW_RATE,
        consecutive_failures: CONSECUTIVE,
        open_duration: Duration::from_millis(OPEN_MS),
        open_backoff_multiplier: 2.0,
        max_open_duration: Duration::from_millis(MAX_OPEN_MS),
        open_jitter: 0.0,
        half_open_probes: PROBES,
        half_open_timeout: Duration::from_millis(HALF_OPEN_TIMEOUT_MS),
        ..BreakerConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record(usize, Outcome),
    Drop(usize),
    Advance(u64),
    ForceOpen,
    Disable,
    MetricsOnly,
    Reset,
    OpenFor(u64),
    Refresh,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        2 => Just(Outcome::SlowSuccess),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => Just(Op::Acquire),
        30 => (0usize..8, outcome()).prop_map(|(i, o)| Op::Record(i, o)),
        4 => (0usize..8).prop_map(Op::Drop),
        12 => prop_oneof![0u64..50, 0u64..4000].prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::MetricsOnly),
        2 => Just(Op::Reset),
        2 => (1u64..20_000).prop_map(Op::OpenFor),
        2 => Just(Op::Refresh),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ok,
    Fail,
    Slow,
}

/// The specification, written as plainly as possible: times in milliseconds, the window as a
/// vector.
#[derive(Debug)]
struct Model {
    now: u64,
    state: State,
    epoch: u64,
    window: Vec<Mark>,
    consecutive: u32,
    openings: u32,
    open_until: u64,
    half_open_deadline: u64,
    in_flight: u32,
    good: u32,
    slow: u32,
}

#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    epoch: u64,
    state: State,
    probe: bool,
}

impl Model {
    fn new() -> Self {
        Model {
            now: 0,
            state: State::Closed,
            epoch: 0,
            window: vec![],
            consecutive: 0,
            openings: 0,
            open_until: 0,
            half_open_deadline: 0,
            in_flight: 0,
            good: 0,
            slow: 0,
        }
    }

    fn go(&mut self, to: State, failure_driven_open: Option<bool>, reset_openings: bool) {
        self.epoch += 1;
        self.state = to;
        if to != State::HalfOpen {
            self.window.clear();
            self.consecutive = 0;
        }
        if reset_openings {
            self.openings = 0;
        }
        if to == State::Open && failure_driven_open == Some(true) {
            self.openings += 1;
            let wait = (OPEN_MS << (self.openings - 1).min(20)).min(MAX_OPEN_MS);
            self.open_until = self.now + wait;
        }
        if to == State::HalfOpen {
            self.in_flight = 0;
            self.good = 0;
            self.slow = 0;
            self.half_open_deadline = self.now + HALF_OPEN_TIMEOUT_MS;
        }
    }

    fn trip(&mut self) {
        self.go(State::Open, Some(true), false);
    }

    fn acquire(&mut self) -> Result<ModelPermit, (RejectReason, u64)> {
        loop {
            match self.state {
                State::Closed | State::Disabled | State::MetricsOnly => {
                    return Ok(ModelPermit {
                        epoch: self.epoch,
                        state: self.state,
                        probe: false,
                    })
                }
                State::ForcedOpen => return Err((RejectReason::ForcedOpen, OPEN_MS)),
                State::Open if self.now >= self.open_until => self.go(State::HalfOpen, None, false),
                State::Open => {
                    return Err((RejectReason::Open, (self.open_until - self.now).max(1)))
                }
                State::HalfOpen if self.now >= self.half_open_deadline => self.trip(),
                State::HalfOpen => {
                    if self.in_flight + self.good + self.slow < PROBES {
                        self.in_flight += 1;
                        return Ok(ModelPermit {
                            epoch: self.epoch,
                            state: State::HalfOpen,
                            probe: true,
                        });
                    }
                    return Err((
                        RejectReason::HalfOpenFull,
                        (self.half_open_deadline - self.now).max(1),
                    ));
                }
            }
        }
    }

    fn record(&mut self, p: ModelPermit, o: Outcome) {
        if p.epoch != self.epoch || p.state != self.state {
            return;
        }
        match self.state {
            State::Closed | State::MetricsOnly => {
                let m = match o {
                    Outcome::Success => Mark::Ok,
                    Outcome::Failure => Mark::Fail,
                    Outcome::SlowSuccess => Mark::Slow,
                    Outcome::Ignored => return,
                };
                self.window.push(m);
                if self.window.len() > WINDOW {
                    self.window.remove(0);
                }
                self.consecutive = if m == Mark::Fail {
                    self.consecutive + 1
                } else {
                    0
                };
                if self.state == State::MetricsOnly {
                    return;
                }
                let calls = self.window.len();
                let fails = self.window.iter().filter(|m| **m == Mark::Fail).count();
                let slows = self.window.iter().filter(|m| **m == Mark::Slow).count();
                if self.consecutive >= CONSECUTIVE
                    || (calls >= MIN_CALLS
                        && (fails as f64 / calls as f64 >= FAILURE_RATE
                            || slows as f64 / calls as f64 >= SLOW_RATE))
                {
                    self.trip();
                }
            }
            State::HalfOpen => {
                if self.now >= self.half_open_deadline {
                    self.trip();
                    return;
                }
                self.in_flight -= 1;
                match o {
                    Outcome::Ignored => {}
                    Outcome::Failure => self.trip(),
                    Outcome::Success => self.good += 1,
                    Outcome::SlowSuccess => self.slow += 1,
                }
                if self.state == State::HalfOpen && self.good + self.slow >= PROBES {
                    if self.slow as f64 / PROBES as f64 >= SLOW_RATE {
                        self.trip();
                    } else {
                        self.go(State::Closed, None, true);
                    }
                }
            }
            _ => {}
        }
    }

    fn operator(&mut self, to: State, always: bool) {
        if self.state != to || always {
            self.go(to, None, true);
        }
    }

    fn open_for(&mut self, ms: u64) {
        let until = self.now + ms.min(MAX_OPEN_MS);
        match self.state {
            State::Closed | State::HalfOpen => {
                self.go(State::Open, Some(false), false);
                self.open_until = until;
            }
            State::Open => self.open_until = self.open_until.max(until),
            _ => {}
        }
    }
}

struct Real {
    breaker: &'static CircuitBreaker,
    clock: ManualClock,
}

fn real() -> Real {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::with_parts(
        config(),
        Arc::new(clock.clone()),
        Box::new(StdRng::seed_from_u64(0)),
    )
    .unwrap();
    // Leaked so permits can be held across steps; a few hundred small breakers per run.
    Real {
        breaker: Box::leak(Box::new(breaker)),
        clock,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let Real { breaker, clock } = real();
        let mut model = Model::new();
        let mut held: Vec<(Permit<'static>, ModelPermit)> = vec![];
        for op in ops {
            match op {
                Op::Acquire => {
                    let r = breaker.try_acquire();
                    let m = model.acquire();
                    match (r, m) {
                        (Ok(p), Ok(mp)) => {
                            prop_assert_eq!(p.is_probe(), mp.probe);
                            if held.len() < 8 { held.push((p, mp)); } else { p.record(Outcome::Success); model.record(mp, Outcome::Success); }
                        }
                        (Err(r), Err((reason, ms))) => {
                            prop_assert_eq!(r.reason, reason);
                            prop_assert_eq!(r.retry_after, Duration::from_millis(ms));
                        }
                        (r, m) => prop_assert!(false, "breaker {:?} vs model {:?}", r.map(|p| p.is_probe()), m),
                    }
                }
                Op::Record(i, o) => {
                    if !held.is_empty() {
                        let (p, mp) = held.remove(i % held.len());
                        p.record(o);
                        model.record(mp, o);
                    }
                }
                Op::Drop(i) => {
                    if !held.is_empty() {
                        let (p, mp) = held.remove(i % held.len());
                        drop(p);
                        model.record(mp, Outcome::Ignored);
                    }
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms;
                }
                Op::ForceOpen => { breaker.force_open(); model.operator(State::ForcedOpen, false); }
                Op::Disable => { breaker.disable(); model.operator(State::Disabled, false); }
                Op::MetricsOnly => { breaker.metrics_only(); model.operator(State::MetricsOnly, false); }
                Op::Reset => { breaker.reset(); model.operator(State::Closed, true); }
                Op::OpenFor(ms) => { breaker.open_for(Duration::from_millis(ms)); model.open_for(ms); }
                Op::Refresh => {
                    let s = breaker.refresh();
                    if model.state == State::HalfOpen && model.now >= model.half_open_deadline { model.trip(); }
                    prop_assert_eq!(s, model.state);
                }
            }
            let s = breaker.snapshot();
            prop_assert_eq!(s.state, model.state);
            prop_assert_eq!(s.window.calls as usize, model.window.len());
            prop_assert_eq!(s.window.failures as usize, model.window.iter().filter(|m| **m == Mark::Fail).count());
            prop_assert_eq!(s.window.slow as usize, model.window.iter().filter(|m| **m == Mark::Slow).count());
            prop_assert_eq!(s.consecutive_failures, model.consecutive);
            prop_assert_eq!(s.consecutive_openings, model.openings);
            prop_assert!(s.probes_in_flight <= PROBES, "more than N probes in flight");
            if model.state == State::HalfOpen {
                prop_assert_eq!(s.probes_in_flight, model.in_flight);
                prop_assert_eq!(s.probes_succeeded, model.good + model.slow);
            }
            if model.state == State::Open {
                prop_assert_eq!(s.open_remaining, Some(Duration::from_millis(model.open_until.saturating_sub(model.now))));
            }
            let _ = clock.now();
        }
    }

    #[test]
    fn open_waits_stay_within_the_jitter_bounds(jitter in 0.0f64..0.9, seed: u64, openings in 1usize..12) {
        let clock = ManualClock::new();
        let b = CircuitBreaker::with_parts(
            BreakerConfig { open_jitter: jitter, ..BreakerConfig::default() },
            Arc::new(clock.clone()),
            Box::new(StdRng::seed_from_u64(seed)),
        ).unwrap();
        for _ in 0..5 { b.try_acquire().unwrap().record(Outcome::Failure); }
        for n in 0..openings {
            let wait = b.try_acquire().unwrap_err().retry_after;
            let base = Duration::from_secs(5).mul_f64(2f64.powi(n as i32)).min(Duration::from_secs(60));
            prop_assert!(wait <= Duration::from_secs(60));
            prop_assert!(wait >= base.mul_f64(1.0 - jitter).min(Duration::from_secs(60)) - Duration::from_micros(1));
            prop_assert!(wait <= base.mul_f64(1.0 + jitter) + Duration::from_micros(1));
            clock.advance(wait);
            b.try_acquire().unwrap().record(Outcome::Failure);
        }
    }

    #[test]
    fn retry_delays_stay_within_the_jitter_bounds_and_the_deadline(
        seed: u64,
        decorrelated: bool,
        base_ms in 1u64..500,
        cap_factor in 1u64..50,
        attempt in 1u32..10,
        previous_ms in 0u64..10_000,
        retry_after_ms in proptest::option::of(0u64..20_000),
        deadline_ms in 0u64..15_000,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * cap_factor as u32;
        let cfg = RetryConfig {
            max_attempts: 10,
            base_delay: base,
            max_delay: cap,
            jitter: if decorrelated { Jitter::Decorrelated } else { Jitter::Full },
            max_retry_after: Duration::from_secs(5),
        };
        let policy = RetryPolicy::new(cfg).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let previous = Duration::from_millis(previous_ms);
        let d = policy.backoff(attempt, previous, &mut rng);
        prop_assert!(d <= cap);
        if decorrelated {
            prop_assert!(d >= base);
            prop_assert!(d <= (previous.max(base) * 3).min(cap).max(base));
        } else {
            prop_assert!(d <= policy.ceiling(attempt));
        }
        let now = tokio::time::Instant::now();
        let deadline = now + Duration::from_millis(deadline_ms);
        let ra = retry_after_ms.map(Duration::from_millis);
        match policy.decide(attempt, true, ra, previous, now, deadline, &mut rng) {
            RetryDecision::Retry { delay } => {
                prop_assert!(now + delay < deadline, "sleeps past the deadline");
                prop_assert!(delay <= cap.max(Duration::from_secs(5)));
                if let Some(ra) = ra { prop_assert!(delay >= ra.min(Duration::from_secs(5))); }
            }
            RetryDecision::GiveUp { .. } => {}
        }
    }
}
