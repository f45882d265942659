//! The breaker's public vocabulary: states, typed outcomes, transition reasons and events,
//! rejections and the read-only snapshot.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::window::WindowCounts;
use crate::ser;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are recorded and may trip the breaker.
    Closed = 0,
    /// Calls are rejected at once until the open wait ends.
    Open = 1,
    /// A fixed number of probe calls are admitted; their verdict closes or reopens.
    HalfOpen = 2,
    /// Operator state: every call is rejected until an operator acts.
    ForcedOpen = 3,
    /// Operator state ("forced closed"): every call is admitted, nothing is recorded.
    Disabled = 4,
    /// Operator state: every call is admitted, outcomes are recorded and rates computed, but
    /// the breaker never trips.
    MetricsOnly = 5,
}

impl State {
    #[inline]
    pub(crate) fn from_u8(v: u8) -> State {
        match v {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            _ => State::MetricsOnly,
        }
    }

    /// The state's name as serialised (`"half_open"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }
}

/// The verdict on one call, as recorded through a [`Permit`](super::Permit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The dependency did its job (a card decline is a success: the bank answered).
    Success,
    /// A success that took at least `slow_call_duration`: counts toward the slow-call rate.
    SlowSuccess,
    /// The dependency failed (timeout, 5xx, refused connection...).
    Failure,
    /// Says nothing about the dependency's health (a client error, a full bulkhead, a
    /// cancelled call): not recorded; in half-open it frees the probe slot.
    Ignored,
}

/// An operator's action on the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// [`force_open`](super::CircuitBreaker::force_open).
    ForceOpen,
    /// [`disable`](super::CircuitBreaker::disable) (forced closed).
    Disable,
    /// [`metrics_only`](super::CircuitBreaker::metrics_only).
    MetricsOnly,
    /// [`reset`](super::CircuitBreaker::reset).
    Reset,
}

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionReason {
    /// Closed → Open: the window's failure rate reached its threshold.
    FailureRate {
        /// The failure rate (fraction) that tripped.
        rate: f64,
        /// Calls in the window when it tripped.
        calls: u32,
    },
    /// Closed → Open: the window's slow-call rate reached its threshold.
    SlowCallRate {
        /// The slow-call rate (fraction) that tripped.
        rate: f64,
        /// Calls in the window when it tripped.
        calls: u32,
    },
    /// Closed → Open: a run of consecutive failures reached its limit.
    ConsecutiveFailures {
        /// Length of the run.
        count: u32,
    },
    /// → Open: the dependency asked us to wait (`Retry-After`), via
    /// [`open_until`](super::CircuitBreaker::open_until).
    RetryAfter {
        /// How long the breaker is held open.
        #[serde(rename = "wait_ms", serialize_with = "ser::ms")]
        wait: Duration,
    },
    /// Open → HalfOpen: the open wait ended and a call arrived.
    OpenElapsed,
    /// HalfOpen → Closed: every probe came back good.
    ProbesSucceeded,
    /// HalfOpen → Open: a probe failed.
    ProbeFailed,
    /// HalfOpen → Open: the probes' slow-call rate reached the slow-call threshold.
    ProbesSlow,
    /// HalfOpen → Open: no verdict within `half_open_timeout`.
    HalfOpenTimeout,
    /// An operator acted.
    Operator {
        /// What the operator did.
        action: OperatorAction,
        /// Who acted: an identity the caller chose (the payment API puts the operator key's
        /// configured name here, never the key). `None` for an action with no named actor.
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<String>,
    },
}

/// One state change, as delivered to subscribers and kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Why.
    pub reason: TransitionReason,
    /// Wall-clock time of the transition, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Monotonic time of the transition.
    #[serde(skip)]
    pub at: Instant,
    /// For a transition to Open: how long the breaker stays open.
    #[serde(rename = "open_for_ms", serialize_with = "ser::opt_ms")]
    pub open_for: Option<Duration>,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The breaker is open.
    Open,
    /// An operator forced the breaker open.
    ForcedOpen,
    /// Half-open, and every probe slot is taken.
    HalfOpenFull,
}

/// A refused call: why, and when the next attempt may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("circuit breaker rejected the call ({reason:?}); retry after {retry_after:?}")]
pub struct Rejected {
    /// Why.
    pub reason: RejectReason,
    /// How long to wait before trying again (for a `Retry-After` header):
    /// - `Open`: the time left until the breaker admits probes (at least 1 ms);
    /// - `HalfOpenFull`: the time left until the half-open bound, by which a verdict exists;
    /// - `ForcedOpen`: no end is known; the configured `open_duration` as a hint.
    #[serde(rename = "retry_after_ms", serialize_with = "ser::ms")]
    pub retry_after: Duration,
}

/// A read-only view of the breaker at one instant. Taking it changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Current state (time-driven transitions such as Open → HalfOpen happen on the next call
    /// or on [`refresh`](super::CircuitBreaker::refresh); `open_remaining_ms` = 0 tells that
    /// the next call will be a probe).
    pub state: State,
    /// When the current state began (monotonic).
    #[serde(skip)]
    pub since: Instant,
    /// When the current state began, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// How long the breaker has been in this state.
    #[serde(rename = "in_state_ms", serialize_with = "ser::ms")]
    pub in_state: Duration,
    /// The reason of the last transition into Open, if the breaker is open, half-open or
    /// forced open.
    pub trip_reason: Option<TransitionReason>,
    /// Failure rate of the window (fraction), or `None` ("not enough calls") below
    /// `minimum_calls`.
    pub failure_rate: Option<f64>,
    /// Slow-call rate of the window (fraction), or `None` below `minimum_calls`.
    pub slow_call_rate: Option<f64>,
    /// The window's counts.
    pub window: WindowCounts,
    /// `minimum_calls`, to show how far the window is from being evaluated.
    pub minimum_calls: u32,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// Openings in a row (the open wait grows with it); reset by a successful half-open.
    pub consecutive_openings: u32,
    /// Probe calls admitted in half-open and not yet judged.
    pub probes_in_flight: u32,
    /// Probe calls judged good so far in this half-open.
    pub probes_succeeded: u32,
    /// Probe slots in total.
    pub probes_permitted: u32,
    /// Open: time left until the next probe is allowed (0 = the next call probes).
    #[serde(rename = "open_remaining_ms", serialize_with = "ser::opt_ms")]
    pub open_remaining: Option<Duration>,
    /// Open: when the next probe is allowed, milliseconds since the Unix epoch (the wall-clock
    /// form of `open_remaining_ms`, for a display that polls).
    pub next_probe_at_unix_ms: Option<u64>,
    /// Half-open: time left before the state times out back to Open.
    #[serde(rename = "half_open_remaining_ms", serialize_with = "ser::opt_ms")]
    pub half_open_remaining: Option<Duration>,
    /// Calls rejected since creation.
    pub rejected_total: u64,
}
