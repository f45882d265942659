//! Circuit-breaker settings, their defaults (docs/contract.md §3) and their validation.

use std::time::Duration;

use serde::Serialize;

use crate::error::{ensure, ConfigError};
use crate::ser;

/// Which calls the breaker's rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `size` recorded calls (ignored outcomes are not recorded).
    CountBased {
        /// Number of calls kept (1..=10000). Default 20.
        size: u32,
    },
    /// The calls of the last `seconds` seconds, kept in one bucket per second; a bucket older
    /// than the window is dropped whole, so the window slides in one-second steps.
    TimeBased {
        /// Length of the window in seconds (1..=3600).
        seconds: u32,
    },
}

/// Settings of a [`CircuitBreaker`](super::CircuitBreaker). Every field has a default; see
/// [`BreakerConfig::default`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// The sliding window. Default: count-based, 20 calls.
    pub window: WindowKind,
    /// Rates are not evaluated (and the snapshot shows "not enough calls") until the window
    /// holds at least this many calls. Default 10.
    pub minimum_calls: u32,
    /// Trip when failures / calls in the window reaches this fraction (0 < x ≤ 1). Default 0.5.
    pub failure_rate_threshold: f64,
    /// A success that took at least this long is a *slow success*. Default 1 s.
    #[serde(rename = "slow_call_duration_ms", serialize_with = "ser::ms")]
    pub slow_call_duration: Duration,
    /// Trip when slow successes / calls in the window reaches this fraction (0 < x ≤ 1).
    /// Default 0.8.
    pub slow_call_rate_threshold: f64,
    /// Trip after this many failures in a row, without waiting for the window's minimum
    /// (0 disables this rule). Default 5.
    pub consecutive_failures: u32,
    /// How long the first opening lasts. Default 5 s.
    #[serde(rename = "open_duration_ms", serialize_with = "ser::ms")]
    pub open_duration: Duration,
    /// Each consecutive opening (without a successful half-open in between) multiplies the
    /// previous wait by this factor (≥ 1). Default 2.0.
    pub open_backoff_multiplier: f64,
    /// The open wait never exceeds this, jitter included; also caps `open_until`. Default 60 s.
    #[serde(rename = "max_open_duration_ms", serialize_with = "ser::ms")]
    pub max_open_duration: Duration,
    /// The open wait is drawn uniformly from `[w·(1−j), w·(1+j)]` (then capped), so that many
    /// instances do not probe the bank in lock step (0 ≤ j < 1). Default 0.1.
    pub open_jitter: f64,
    /// Exactly this many probe calls are admitted in half-open. Default 3.
    pub half_open_probes: u32,
    /// A half-open state that has not reached a verdict within this bound goes back to Open
    /// (a lost or leaked probe can never leave the breaker stuck). Default 5 s.
    #[serde(rename = "half_open_timeout_ms", serialize_with = "ser::ms")]
    pub half_open_timeout: Duration,
    /// Number of recent transitions kept for [`history`](super::CircuitBreaker::history).
    /// Default 50.
    pub history_len: usize,
    /// Capacity of the broadcast channel of transitions; a slow subscriber loses the oldest
    /// events (it sees `RecvError::Lagged`). Default 256.
    pub event_capacity: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: WindowKind::CountBased { size: 20 },
            minimum_calls: 10,
            failure_rate_threshold: 0.5,
            slow_call_duration: Duration::from_secs(1),
            slow_call_rate_threshold: 0.8,
            consecutive_failures: 5,
            open_duration: Duration::from_secs(5),
            open_backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(60),
            open_jitter: 0.1,
            half_open_probes: 3,
            half_open_timeout: Duration::from_secs(5),
            history_len: 50,
            event_capacity: 256,
        }
    }
}

impl BreakerConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            WindowKind::CountBased { size } => {
                ensure(size > 0, "window.size", "must be at least 1")?;
                ensure(size <= 10_000, "window.size", "must be at most 10000")?;
            }
            WindowKind::TimeBased { seconds } => {
                ensure(seconds > 0, "window.seconds", "must be at least 1")?;
                ensure(seconds <= 3600, "window.seconds", "must be at most 3600")?;
            }
        }
        ensure(
            self.minimum_calls > 0,
            "minimum_calls",
            "must be at least 1",
        )?;
        if let WindowKind::CountBased { size } = self.window {
            ensure(
                self.minimum_calls <= size,
                "minimum_calls",
                "must not exceed the count-based window size",
            )?;
        }
        ensure(
            self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0,
            "failure_rate_threshold",
            "must be in (0, 1]",
        )?;
        ensure(
            self.slow_call_rate_threshold > 0.0 && self.slow_call_rate_threshold <= 1.0,
            "slow_call_rate_threshold",
            "must be in (0, 1]",
        )?;
        ensure(
            !self.slow_call_duration.is_zero(),
            "slow_call_duration",
            "must be positive",
        )?;
        ensure(
            !self.open_duration.is_zero(),
            "open_duration",
            "must be positive",
        )?;
        ensure(
            self.max_open_duration >= self.open_duration,
            "max_open_duration",
            "must be at least open_duration",
        )?;
        ensure(
            self.open_backoff_multiplier >= 1.0 && self.open_backoff_multiplier.is_finite(),
            "open_backoff_multiplier",
            "must be a finite number ≥ 1",
        )?;
        ensure(
            (0.0..1.0).contains(&self.open_jitter),
            "open_jitter",
            "must be in [0, 1)",
        )?;
        ensure(
            self.half_open_probes > 0,
            "half_open_probes",
            "must be at least 1",
        )?;
        ensure(
            !self.half_open_timeout.is_zero(),
            "half_open_timeout",
            "must be positive",
        )?;
        ensure(
            self.event_capacity > 0,
            "event_capacity",
            "must be at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = BreakerConfig::default();
        assert_eq!(c.window, WindowKind::CountBased { size: 20 });
        assert_eq!(c.minimum_calls, 10);
        assert_eq!(c.failure_rate_threshold, 0.5);
        assert_eq!(c.slow_call_duration, Duration::from_secs(1));
        assert_eq!(c.slow_call_rate_threshold, 0.8);
        assert_eq!(c.consecutive_failures, 5);
        assert_eq!(c.open_duration, Duration::from_secs(5));
        assert_eq!(c.max_open_duration, Duration::from_secs(60));
        assert_eq!(c.half_open_probes, 3);
        c.validate().unwrap();
    }

    #[test]
    fn invalid_settings_are_named() {
        let bad = [
            BreakerConfig {
                window: WindowKind::CountBased { size: 0 },
                ..Default::default()
            },
            BreakerConfig {
                window: WindowKind::TimeBased { seconds: 0 },
                ..Default::default()
            },
            BreakerConfig {
                minimum_calls: 0,
                ..Default::default()
            },
            BreakerConfig {
                minimum_calls: 21,
                ..Default::default()
            },
            BreakerConfig {
                failure_rate_threshold: 0.0,
                ..Default::default()
            },
            BreakerConfig {
                failure_rate_threshold: 1.5,
                ..Default::default()
            },
            BreakerConfig {
                slow_call_rate_threshold: 0.0,
                ..Default::default()
            },
            BreakerConfig {
                slow_call_duration: Duration::ZERO,
                ..Default::default()
            },
            BreakerConfig {
                open_duration: Duration::ZERO,
                ..Default::default()
            },
            BreakerConfig {
                max_open_duration: Duration::from_secs(1),
                ..Default::default()
            },
            BreakerConfig {
                open_backoff_multiplier: 0.5,
                ..Default::default()
            },
            BreakerConfig {
                open_jitter: 1.0,
                ..Default::default()
            },
            BreakerConfig {
                half_open_probes: 0,
                ..Default::default()
            },
            BreakerConfig {
                half_open_timeout: Duration::ZERO,
                ..Default::default()
            },
            BreakerConfig {
                event_capacity: 0,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?} should be rejected");
        }
    }

    #[test]
    fn serialises_durations_as_milliseconds() {
        let v = serde_json::to_value(BreakerConfig::default()).unwrap();
        assert_eq!(v["open_duration_ms"], 5000);
        assert_eq!(v["slow_call_duration_ms"], 1000);
        assert_eq!(v["window"]["kind"], "count_based");
        assert_eq!(v["window"]["size"], 20);
    }
}
