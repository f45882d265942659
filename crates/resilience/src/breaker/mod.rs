//! The circuit breaker: a small state machine behind one mutex, with an atomic fast path that
//! admits calls without locking while the breaker is closed.
//!
//! Closed → Open on the failure rate, the slow-call rate (both over the sliding window, once it
//! holds `minimum_calls`) or a run of consecutive failures. Open rejects at once for a wait that
//! grows with jitter on consecutive openings (or until a `Retry-After`). The first call after
//! the wait moves it to HalfOpen, where exactly `half_open_probes` probes are admitted, reserved
//! under the lock; any failing probe reopens, all good probes close, and a half-open with no
//! verdict within `half_open_timeout` reopens. Operator states override all of this.
//!
//! Every outcome is tied to the *epoch* (the count of transitions) it was admitted in: a verdict
//! arriving after the breaker has moved on (a slow call admitted before a trip, a probe of an
//! earlier half-open) is dropped instead of corrupting the new state.

mod config;
mod state;
mod window;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::clock::{unix_ms, SharedClock, TokioClock};
use crate::error::ConfigError;

pub use config::{BreakerConfig, WindowKind};
pub use state::{
    OperatorAction, Outcome, RejectReason, Rejected, Snapshot, State, Transition, TransitionReason,
};
pub use window::WindowCounts;

use window::{rate, CountWindow, Mark, TimeWindow, EMPTY};

/// A circuit breaker. Share it behind an `Arc`; every method takes `&self`.
pub struct CircuitBreaker {
    /// `epoch << 8 | state`, written under the lock at every transition and read without it:
    /// lets `try_acquire` admit calls in Closed, Disabled and MetricsOnly with one atomic load.
    word: AtomicU64,
    /// The count-based window (`None` for a time-based one), outside the mutex: recording a
    /// call while closed takes no lock.
    count_window: Option<CountWindow>,
    /// Failures in a row while closed (or metrics-only); atomic for the same reason.
    consecutive_failures: AtomicU32,
    /// Everything else; held only for a few dozen instructions, never across an await.
    inner: Mutex<Inner>,
    config: BreakerConfig,
    clock: SharedClock,
    /// Transition events; subscribers that fall behind lose the oldest.
    events: broadcast::Sender<Transition>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: State,
    epoch: u64,
    since: Instant,
    since_sys: SystemTime,
    trip_reason: Option<TransitionReason>,
    /// The time-based window (`None` for a count-based one).
    time_window: Option<TimeWindow>,
    consecutive_openings: u32,
    /// Open: when probes become allowed.
    open_until: Instant,
    /// HalfOpen: when the state times out back to Open.
    half_open_deadline: Instant,
    probes_in_flight: u32,
    probes_succeeded: u32,
    probes_slow: u32,
    rejected_total: u64,
    history: VecDeque<Transition>,
    /// Draws the open-wait jitter; injected so tests are reproducible.
    rng: Box<dyn RngCore + Send>,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Record the call's verdict with [`record`](Permit::record) or
/// [`record_elapsed`](Permit::record_elapsed). Dropping it without a verdict counts as
/// [`Outcome::Ignored`]: a half-open probe slot is released, nothing else is recorded.
#[must_use = "record the call's outcome on the permit"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    /// The breaker's `word` when the permit was granted; a permit granted in HalfOpen is a
    /// probe. (Two words in all, so that it travels in registers on the hot path.)
    word: u64,
}

impl Permit<'_> {
    /// Whether this call is a half-open probe.
    #[inline]
    pub fn is_probe(&self) -> bool {
        unpack_state(self.word) == State::HalfOpen
    }

    /// Records the call's outcome as given.
    #[inline]
    pub fn record(self, outcome: Outcome) {
        let (breaker, word) = (self.breaker, self.word);
        // The verdict is given: skip `Drop` (which would record `Ignored`).
        std::mem::forget(self);
        breaker.on_outcome(word, outcome);
    }

    /// Records the outcome with the call's duration: a `Success` that took at least
    /// `slow_call_duration` is recorded as a `SlowSuccess` (the breaker decides slowness from
    /// its configuration; other outcomes are recorded as given).
    #[inline]
    pub fn record_elapsed(self, outcome: Outcome, elapsed: Duration) {
        let outcome = self.breaker.classify(outcome, elapsed);
        self.record(outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Dropped without a verdict: only a probe has something (its slot) to give back.
        if self.is_probe() {
            self.breaker.on_outcome_slow(self.word, Outcome::Ignored);
        }
    }
}

const STATE_BITS: u32 = 8;

#[inline]
fn pack(epoch: u64, state: State) -> u64 {
    (epoch << STATE_BITS) | state as u64
}

#[inline]
fn unpack_state(word: u64) -> State {
    State::from_u8((word & 0xff) as u8)
}

impl CircuitBreaker {
    /// A breaker on the tokio clock, with jitter drawn from an entropy-seeded generator.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::with_parts(
            config,
            Arc::new(TokioClock),
            Box::new(StdRng::from_entropy()),
        )
    }

    /// A breaker on the given clock and random source (seed it in tests).
    pub fn with_parts(
        config: BreakerConfig,
        clock: SharedClock,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let now = clock.now();
        let (events, _) = broadcast::channel(config.event_capacity);
        let inner = Inner {
            state: State::Closed,
            epoch: 0,
            since: now,
            since_sys: clock.system_now(),
            trip_reason: None,
            time_window: match config.window {
                WindowKind::TimeBased { seconds } => Some(TimeWindow::new(seconds, now)),
                WindowKind::CountBased { .. } => None,
            },
            consecutive_openings: 0,
            open_until: now,
            half_open_deadline: now,
            probes_in_flight: 0,
            probes_succeeded: 0,
            probes_slow: 0,
            rejected_total: 0,
            history: VecDeque::with_capacity(config.history_len.min(1024)),
            rng,
        };
        Ok(Self {
            word: AtomicU64::new(pack(0, State::Closed)),
            count_window: match config.window {
                WindowKind::CountBased { size } => Some(CountWindow::new(size)),
                WindowKind::TimeBased { .. } => None,
            },
            consecutive_failures: AtomicU32::new(0),
            inner: Mutex::new(inner),
            config,
            clock,
            events,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (one atomic load; time-driven transitions are applied on the next
    /// call).
    #[inline]
    pub fn state(&self) -> State {
        unpack_state(self.word.load(Ordering::Acquire))
    }

    /// Asks to make one call. In Closed, Disabled and MetricsOnly this is one atomic load.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let word = self.word.load(Ordering::Acquire);
        match unpack_state(word) {
            State::Closed | State::Disabled | State::MetricsOnly => Ok(Permit {
                breaker: self,
                word,
            }),
            _ => self.acquire_slow(),
        }
    }

    /// `Success` becomes `SlowSuccess` when `elapsed` reaches `slow_call_duration`.
    #[inline]
    pub fn classify(&self, outcome: Outcome, elapsed: Duration) -> Outcome {
        if outcome == Outcome::Success && elapsed >= self.config.slow_call_duration {
            Outcome::SlowSuccess
        } else {
            outcome
        }
    }

    #[cold]
    fn acquire_slow(&self) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        let now = self.clock.now();
        loop {
            match inner.state {
                State::Closed | State::Disabled | State::MetricsOnly => {
                    let word = pack(inner.epoch, inner.state);
                    return Ok(Permit {
                        breaker: self,
                        word,
                    });
                }
                State::ForcedOpen => {
                    inner.rejected_total += 1;
                    return Err(Rejected {
                        reason: RejectReason::ForcedOpen,
                        retry_after: self.config.open_duration,
                    });
                }
                State::Open => {
                    if now >= inner.open_until {
                        self.transition(
                            &mut inner,
                            State::HalfOpen,
                            TransitionReason::OpenElapsed,
                            now,
                        );
                        continue;
                    }
                    inner.rejected_total += 1;
                    return Err(Rejected {
                        reason: RejectReason::Open,
                        retry_after: at_least_1ms(inner.open_until - now),
                    });
                }
                State::HalfOpen => {
                    if now >= inner.half_open_deadline {
                        self.transition(
                            &mut inner,
                            State::Open,
                            TransitionReason::HalfOpenTimeout,
                            now,
                        );
                        continue;
                    }
                    let reserved =
                        inner.probes_in_flight + inner.probes_succeeded + inner.probes_slow;
                    if reserved < self.config.half_open_probes {
                        inner.probes_in_flight += 1;
                        let word = pack(inner.epoch, State::HalfOpen);
                        return Ok(Permit {
                            breaker: self,
                            word,
                        });
                    }
                    inner.rejected_total += 1;
                    return Err(Rejected {
                        reason: RejectReason::HalfOpenFull,
                        retry_after: at_least_1ms(inner.half_open_deadline - now),
                    });
                }
            }
        }
    }

    #[inline]
    fn on_outcome(&self, word: u64, outcome: Outcome) {
        let mark = match outcome {
            Outcome::Success => Mark::Success,
            Outcome::SlowSuccess => Mark::Slow,
            Outcome::Failure => Mark::Failure,
            Outcome::Ignored => Mark::Success, // never recorded: see below
        };
        match unpack_state(word) {
            // Nothing to record, and no probe slot to release.
            State::Disabled => {}
            State::Closed | State::MetricsOnly if outcome == Outcome::Ignored => {}
            State::Closed | State::MetricsOnly if self.count_window.is_some() => {
                if let Some(window) = &self.count_window {
                    self.record_closed_lock_free(word, window, mark);
                }
            }
            _ => self.on_outcome_slow(word, outcome),
        }
    }

    /// Verdicts that need the lock: probes, and closed calls on a time-based window.
    #[inline(never)]
    fn on_outcome_slow(&self, word: u64, outcome: Outcome) {
        let mut inner = self.lock();
        if pack(inner.epoch, inner.state) != word {
            // Admitted in an earlier state: the verdict belongs to a past the breaker has
            // already judged.
            return;
        }
        match inner.state {
            State::Closed | State::MetricsOnly => {
                // Time-based window (count-based ones never get here).
                let mark = match outcome {
                    Outcome::Success => Mark::Success,
                    Outcome::SlowSuccess => Mark::Slow,
                    Outcome::Failure => Mark::Failure,
                    Outcome::Ignored => return,
                };
                let now = self.clock.now();
                if let Some(w) = inner.time_window.as_mut() {
                    w.record(mark, now);
                }
                let consecutive = self.bump_consecutive(mark);
                if inner.state == State::Closed {
                    let counts = self.counts_locked(&inner, now);
                    if let Some(reason) = self.trip_reason(consecutive, counts) {
                        self.transition(&mut inner, State::Open, reason, now);
                    }
                }
            }
            State::HalfOpen => {
                let now = self.clock.now();
                if now >= inner.half_open_deadline {
                    self.transition(
                        &mut inner,
                        State::Open,
                        TransitionReason::HalfOpenTimeout,
                        now,
                    );
                    return;
                }
                inner.probes_in_flight -= 1;
                match outcome {
                    Outcome::Ignored => {}
                    Outcome::Failure => {
                        self.transition(
                            &mut inner,
                            State::Open,
                            TransitionReason::ProbeFailed,
                            now,
                        );
                    }
                    Outcome::Success | Outcome::SlowSuccess => {
                        if outcome == Outcome::Success {
                            inner.probes_succeeded += 1;
                        } else {
                            inner.probes_slow += 1;
                        }
                        let judged = inner.probes_succeeded + inner.probes_slow;
                        let n = self.config.half_open_probes;
                        if judged >= n {
                            if rate(inner.probes_slow, n) >= self.config.slow_call_rate_threshold {
                                self.transition(
                                    &mut inner,
                                    State::Open,
                                    TransitionReason::ProbesSlow,
                                    now,
                                );
                            } else {
                                self.transition(
                                    &mut inner,
                                    State::Closed,
                                    TransitionReason::ProbesSucceeded,
                                    now,
                                );
                            }
                        }
                    }
                }
            }
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }

    /// The hot path: a verdict while closed (or metrics-only) on a count-based window, with no
    /// lock unless the call trips the breaker.
    #[inline]
    fn record_closed_lock_free(&self, word: u64, window: &CountWindow, mark: Mark) {
        if self.word.load(Ordering::Acquire) != word {
            return; // admitted before a transition
        }
        let evicted = window.record(mark);
        let consecutive = self.bump_consecutive(mark);
        // A success replacing a recorded call cannot raise either rate: skip the check.
        if unpack_state(word) == State::Closed
            && (mark != Mark::Success || evicted == EMPTY)
            && self.trip_reason(consecutive, window.counts()).is_some()
        {
            self.trip_locked(word);
        }
    }

    #[cold]
    fn trip_locked(&self, word: u64) {
        let mut inner = self.lock();
        if pack(inner.epoch, inner.state) != word {
            return; // another thread got there first
        }
        let now = self.clock.now();
        let consecutive = self.consecutive_failures.load(Ordering::Acquire);
        if let Some(reason) = self.trip_reason(consecutive, self.counts_locked(&inner, now)) {
            self.transition(&mut inner, State::Open, reason, now);
        }
    }

    /// Updates the run of failures; returns its new length.
    #[inline]
    fn bump_consecutive(&self, mark: Mark) -> u32 {
        if mark == Mark::Failure {
            self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Release);
            }
            0
        }
    }

    fn counts_locked(&self, inner: &Inner, now: Instant) -> WindowCounts {
        match (&self.count_window, &inner.time_window) {
            (Some(w), _) => w.counts(),
            (None, Some(w)) => w.counts(now),
            (None, None) => WindowCounts::default(),
        }
    }

    /// Whether the window (or the run of failures) calls for opening.
    #[inline]
    fn trip_reason(&self, consecutive: u32, counts: WindowCounts) -> Option<TransitionReason> {
        let c = &self.config;
        if c.consecutive_failures > 0 && consecutive >= c.consecutive_failures {
            return Some(TransitionReason::ConsecutiveFailures { count: consecutive });
        }
        if counts.calls < c.minimum_calls {
            return None;
        }
        let failure_rate = rate(counts.failures, counts.calls);
        if failure_rate >= c.failure_rate_threshold {
            return Some(TransitionReason::FailureRate {
                rate: failure_rate,
                calls: counts.calls,
            });
        }
        let slow_rate = rate(counts.slow, counts.calls);
        if slow_rate >= c.slow_call_rate_threshold {
            return Some(TransitionReason::SlowCallRate {
                rate: slow_rate,
                calls: counts.calls,
            });
        }
        None
    }

    /// The open wait for the `n`-th consecutive opening (1-based), before jitter and cap.
    fn base_open_wait(&self, n: u32) -> Duration {
        let c = &self.config;
        let factor = c
            .open_backoff_multiplier
            .powi(n.saturating_sub(1).min(1000) as i32);
        let secs = c.open_duration.as_secs_f64() * factor;
        if secs >= c.max_open_duration.as_secs_f64() {
            c.max_open_duration
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    fn jittered_open_wait(&self, inner: &mut Inner) -> Duration {
        let base = self.base_open_wait(inner.consecutive_openings);
        let j = self.config.open_jitter;
        let wait = if j > 0.0 {
            base.mul_f64(inner.rng.gen_range((1.0 - j)..=(1.0 + j)))
        } else {
            base
        };
        wait.min(self.config.max_open_duration)
    }

    fn transition(&self, inner: &mut Inner, to: State, reason: TransitionReason, now: Instant) {
        let from = inner.state;
        inner.epoch += 1;
        inner.state = to;
        inner.since = now;
        inner.since_sys = self.clock.system_now();
        let mut open_for = None;
        match to {
            State::Open => {
                let wait = match reason {
                    TransitionReason::RetryAfter { wait } => wait,
                    _ => {
                        inner.consecutive_openings = inner.consecutive_openings.saturating_add(1);
                        self.jittered_open_wait(inner)
                    }
                };
                inner.open_until = now + wait;
                open_for = Some(wait);
                inner.trip_reason = Some(reason.clone());
            }
            State::HalfOpen => {
                inner.probes_in_flight = 0;
                inner.probes_succeeded = 0;
                inner.probes_slow = 0;
                inner.half_open_deadline = now + self.config.half_open_timeout;
            }
            State::Closed | State::Disabled | State::MetricsOnly => inner.trip_reason = None,
            State::ForcedOpen => inner.trip_reason = Some(reason.clone()),
        }
        // A good half-open or any operator action starts the growth of the open wait afresh.
        if matches!(
            reason,
            TransitionReason::ProbesSucceeded | TransitionReason::Operator { .. }
        ) {
            inner.consecutive_openings = 0;
        }
        if to != State::HalfOpen {
            if let Some(w) = &self.count_window {
                w.clear();
            }
            if let Some(w) = inner.time_window.as_mut() {
                w.clear();
            }
            self.consecutive_failures.store(0, Ordering::Release);
        }
        self.word.store(pack(inner.epoch, to), Ordering::Release);
        let t = Transition {
            from,
            to,
            reason,
            at_unix_ms: unix_ms(inner.since_sys),
            at: now,
            open_for,
        };
        if self.config.history_len > 0 {
            if inner.history.len() == self.config.history_len {
                inner.history.pop_front();
            }
            inner.history.push_back(t.clone());
        }
        // No subscriber is not an error.
        let _ = self.events.send(t);
    }

    /// Holds the breaker open until `until` (capped at now + `max_open_duration`), e.g. for a
    /// dependency's `Retry-After`. From Closed or HalfOpen this is a transition to Open with
    /// reason `RetryAfter`; while Open it only ever lengthens the wait. It does not count as a
    /// consecutive opening (the next failure-driven wait does not grow because of it). Operator
    /// states win: in ForcedOpen, Disabled or MetricsOnly nothing happens. Returns whether the
    /// breaker is now held open until at least `until` (capped).
    pub fn open_until(&self, until: Instant) -> bool {
        let mut inner = self.lock();
        let now = self.clock.now();
        let until = until.min(now + self.config.max_open_duration);
        if until <= now {
            return false;
        }
        match inner.state {
            State::Closed | State::HalfOpen => {
                let wait = until - now;
                self.transition(
                    &mut inner,
                    State::Open,
                    TransitionReason::RetryAfter { wait },
                    now,
                );
                true
            }
            State::Open => {
                if until > inner.open_until {
                    inner.open_until = until;
                    inner.trip_reason = Some(TransitionReason::RetryAfter { wait: until - now });
                }
                true
            }
            State::ForcedOpen | State::Disabled | State::MetricsOnly => false,
        }
    }

    /// [`open_until`](Self::open_until) now + `wait`.
    pub fn open_for(&self, wait: Duration) -> bool {
        self.open_until(self.clock.now() + wait)
    }

    /// Applies an operator action, recording `actor` (who acted) in the transition's reason.
    /// Repeating an action whose state is already in force is not a transition, except
    /// [`Reset`](OperatorAction::Reset), which always is.
    pub fn operate(&self, action: OperatorAction, actor: Option<&str>) {
        let to = match action {
            OperatorAction::ForceOpen => State::ForcedOpen,
            OperatorAction::Disable => State::Disabled,
            OperatorAction::MetricsOnly => State::MetricsOnly,
            OperatorAction::Reset => State::Closed,
        };
        let mut inner = self.lock();
        if inner.state == to && action != OperatorAction::Reset {
            return;
        }
        let now = self.clock.now();
        let reason = TransitionReason::Operator {
            action,
            actor: actor.map(str::to_owned),
        };
        self.transition(&mut inner, to, reason, now);
    }

    /// Operator: reject every call until another operator action.
    pub fn force_open(&self) {
        self.operate(OperatorAction::ForceOpen, None);
    }

    /// Operator ("force closed"): admit every call and record nothing, until another operator
    /// action.
    pub fn disable(&self) {
        self.operate(OperatorAction::Disable, None);
    }

    /// Same as [`disable`](Self::disable).
    pub fn force_closed(&self) {
        self.disable();
    }

    /// Operator: admit every call, record outcomes and compute rates, never trip.
    pub fn metrics_only(&self) {
        self.operate(OperatorAction::MetricsOnly, None);
    }

    /// Operator: back to Closed with an empty window and the opening count at zero (always
    /// a transition, even from Closed, so the action shows in the history).
    pub fn reset(&self) {
        self.operate(OperatorAction::Reset, None);
    }

    /// Applies the time-driven transition that needs no call: a half-open past its bound goes
    /// back to Open. (Open → HalfOpen waits for a call, which becomes the first probe.)
    /// Returns the state afterwards.
    pub fn refresh(&self) -> State {
        let mut inner = self.lock();
        let now = self.clock.now();
        if inner.state == State::HalfOpen && now >= inner.half_open_deadline {
            self.transition(
                &mut inner,
                State::Open,
                TransitionReason::HalfOpenTimeout,
                now,
            );
        }
        inner.state
    }

    /// Whether a call made now would be rejected because the breaker is open (and not yet due
    /// for a probe) or forced open, and with what `retry_after`. Changes nothing; never reports
    /// `HalfOpenFull` (a slot may free up at any moment). The pipeline uses it to stop a retry
    /// loop at once instead of sleeping into a certain rejection.
    pub fn peek_rejection(&self) -> Option<Rejected> {
        match self.state() {
            State::Open | State::ForcedOpen => {}
            _ => return None,
        }
        let inner = self.lock();
        let now = self.clock.now();
        match inner.state {
            State::ForcedOpen => Some(Rejected {
                reason: RejectReason::ForcedOpen,
                retry_after: self.config.open_duration,
            }),
            State::Open if now < inner.open_until => Some(Rejected {
                reason: RejectReason::Open,
                retry_after: at_least_1ms(inner.open_until - now),
            }),
            _ => None,
        }
    }

    /// A read-only view of the breaker; changes nothing.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let now = self.clock.now();
        let counts = self.counts_locked(&inner, now);
        let enough = counts.calls >= self.config.minimum_calls;
        let evaluated = enough && matches!(inner.state, State::Closed | State::MetricsOnly);
        Snapshot {
            state: inner.state,
            since: inner.since,
            since_unix_ms: unix_ms(inner.since_sys),
            in_state: now.saturating_duration_since(inner.since),
            trip_reason: inner.trip_reason.clone(),
            failure_rate: evaluated.then(|| rate(counts.failures, counts.calls)),
            slow_call_rate: evaluated.then(|| rate(counts.slow, counts.calls)),
            window: counts,
            minimum_calls: self.config.minimum_calls,
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            consecutive_openings: inner.consecutive_openings,
            probes_in_flight: if inner.state == State::HalfOpen {
                inner.probes_in_flight
            } else {
                0
            },
            probes_succeeded: if inner.state == State::HalfOpen {
                inner.probes_succeeded + inner.probes_slow
            } else {
                0
            },
            probes_permitted: self.config.half_open_probes,
            open_remaining: (inner.state == State::Open)
                .then(|| inner.open_until.saturating_duration_since(now)),
            next_probe_at_unix_ms: (inner.state == State::Open).then(|| {
                unix_ms(self.clock.system_now() + inner.open_until.saturating_duration_since(now))
            }),
            half_open_remaining: (inner.state == State::HalfOpen)
                .then(|| inner.half_open_deadline.saturating_duration_since(now)),
            rejected_total: inner.rejected_total,
        }
    }

    /// The most recent transitions, oldest first (at most `history_len`).
    pub fn history(&self) -> Vec<Transition> {
        self.lock().history.iter().cloned().collect()
    }

    /// A receiver of every future transition.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is a few plain
        // assignments with no early exit that could leave it half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests;
