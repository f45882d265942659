//! The retry policy: how many attempts, how long to wait between them (capped exponential
//! backoff with full or decorrelated jitter, a server's `Retry-After` honoured up to a cap), and
//! which attempt results are worth retrying. Pure decisions: the caller sleeps.

use std::time::Duration;

use rand::{Rng, RngCore};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::{ensure, ConfigError};
use crate::ser;

/// How the backoff delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniform in `[0, min(max_delay, base_delay · 2^(n−1))]` for the n-th retry ("full
    /// jitter"): the spread that best de-synchronises many clients.
    Full,
    /// Uniform in `[base_delay, 3 · previous delay]`, capped at `max_delay` ("decorrelated
    /// jitter").
    Decorrelated,
    /// No randomness: exactly `min(max_delay, base_delay · 2^(n−1))`.
    None,
}

/// Settings of a [`RetryPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryConfig {
    /// Attempts in total, the first one included (1 = never retry). Default 4.
    pub max_attempts: u32,
    /// Backoff base. Default 100 ms.
    #[serde(rename = "base_delay_ms", serialize_with = "ser::ms")]
    pub base_delay: Duration,
    /// Backoff cap (jitter included). Default 2 s.
    #[serde(rename = "max_delay_ms", serialize_with = "ser::ms")]
    pub max_delay: Duration,
    /// Randomisation. Default [`Jitter::Full`].
    pub jitter: Jitter,
    /// A server's `Retry-After` is honoured up to this long; a longer one is cut to it.
    /// Default 5 s.
    #[serde(rename = "max_retry_after_ms", serialize_with = "ser::ms")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            jitter: Jitter::Full,
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.max_attempts >= 1, "max_attempts", "must be at least 1")?;
        ensure(!self.base_delay.is_zero(), "base_delay", "must be positive")?;
        ensure(
            self.max_delay >= self.base_delay,
            "max_delay",
            "must be at least base_delay",
        )?;
        Ok(())
    }
}

/// What the caller should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum RetryDecision {
    /// Sleep this long, then try again.
    Retry {
        /// The delay.
        #[serde(rename = "delay_ms", serialize_with = "ser::ms")]
        delay: Duration,
    },
    /// Stop.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
    },
}

/// Why the retry loop stopped before a final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUpReason {
    /// The result is not worth retrying (a decline, a client error, a breaker rejection...).
    NotRetryable,
    /// `max_attempts` reached.
    AttemptsExhausted,
    /// The next attempt could not start before the deadline.
    DeadlineExceeded,
    /// The retry budget had no token left.
    BudgetExhausted,
}

/// The retry policy. Cheap to clone; holds no state (the random source is passed in, so that
/// tests can seed it).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// A policy with these settings.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The exponential ceiling for the `retry`-th retry (1-based): `min(max, base · 2^(retry−1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let c = &self.config;
        let shift = retry.saturating_sub(1).min(31);
        c.base_delay
            .checked_mul(1u32 << shift)
            .map_or(c.max_delay, |d| d.min(c.max_delay))
    }

    /// The backoff before the `retry`-th retry (1-based); `previous` is the delay before the
    /// previous retry (used by decorrelated jitter; pass `Duration::ZERO` for the first).
    pub fn backoff(&self, retry: u32, previous: Duration, rng: &mut dyn RngCore) -> Duration {
        let c = &self.config;
        match c.jitter {
            Jitter::None => self.ceiling(retry),
            Jitter::Full => {
                let hi = self.ceiling(retry);
                Duration::from_nanos(rng.gen_range(0..=nanos(hi)))
            }
            Jitter::Decorrelated => {
                let lo = c.base_delay;
                let hi = previous
                    .max(c.base_delay)
                    .saturating_mul(3)
                    .min(c.max_delay)
                    .max(lo);
                Duration::from_nanos(rng.gen_range(nanos(lo)..=nanos(hi)))
            }
        }
    }

    /// The decision after attempt number `attempt` (1-based) failed with a result that is
    /// `retryable` or not. The delay is the backoff, lengthened to the server's `retry_after`
    /// (itself capped at `max_retry_after`); the retry is abandoned when it could not start
    /// before `deadline` — the policy never sleeps past it.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        attempt: u32,
        retryable: bool,
        retry_after: Option<Duration>,
        previous_delay: Duration,
        now: Instant,
        deadline: Instant,
        rng: &mut dyn RngCore,
    ) -> RetryDecision {
        if !retryable {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::NotRetryable,
            };
        }
        if attempt >= self.config.max_attempts {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::AttemptsExhausted,
            };
        }
        let mut delay = self.backoff(attempt, previous_delay, rng);
        if let Some(ra) = retry_after {
            delay = delay.max(ra.min(self.config.max_retry_after));
        }
        if now + delay >= deadline {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::DeadlineExceeded,
            };
        }
        RetryDecision::Retry { delay }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            jitter,
            ..RetryConfig::default()
        })
        .unwrap()
    }

    fn far() -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + Duration::from_secs(3600))
    }

    #[test]
    fn defaults_match_the_design() {
        let c = RetryConfig::default();
        assert_eq!(c.max_attempts, 4);
        assert_eq!(c.base_delay, Duration::from_millis(100));
        assert_eq!(c.max_delay, Duration::from_secs(2));
        assert_eq!(c.jitter, Jitter::Full);
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = policy(Jitter::None);
        let got: Vec<_> = (1..=7).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling_and_spreads() {
        let p = policy(Jitter::Full);
        let mut rng = StdRng::seed_from_u64(1);
        for n in 1..=6 {
            let ds: Vec<_> = (0..200)
                .map(|_| p.backoff(n, Duration::ZERO, &mut rng))
                .collect();
            assert!(ds.iter().all(|d| *d <= p.ceiling(n)));
            let min = ds.iter().min().unwrap();
            let max = ds.iter().max().unwrap();
            assert!(*max - *min > p.ceiling(n) / 2, "jitter should spread");
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_previous() {
        let p = policy(Jitter::Decorrelated);
        let mut rng = StdRng::seed_from_u64(2);
        let mut prev = Duration::ZERO;
        for n in 1..50 {
            let d = p.backoff(n, prev, &mut rng);
            assert!(d >= Duration::from_millis(100));
            assert!(d <= (prev.max(Duration::from_millis(100)) * 3).min(Duration::from_secs(2)));
            prev = d;
        }
    }

    #[test]
    fn max_attempts_setting_is_honoured() {
        let p = RetryPolicy::new(RetryConfig {
            max_attempts: 2,
            ..RetryConfig::default()
        })
        .unwrap();
        let (now, deadline) = far();
        let mut rng = StdRng::seed_from_u64(3);
        assert!(matches!(
            p.decide(1, true, None, Duration::ZERO, now, deadline, &mut rng),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(
            p.decide(2, true, None, Duration::ZERO, now, deadline, &mut rng),
            RetryDecision::GiveUp {
                reason: GiveUpReason::AttemptsExhausted
            }
        );
    }

    #[test]
    fn results_that_are_not_retryable_are_not_retried() {
        let p = policy(Jitter::Full);
        let (now, deadline) = far();
        let mut rng = StdRng::seed_from_u64(4);
        assert_eq!(
            p.decide(1, false, None, Duration::ZERO, now, deadline, &mut rng),
            RetryDecision::GiveUp {
                reason: GiveUpReason::NotRetryable
            }
        );
    }

    #[test]
    fn retry_after_lengthens_the_delay_up_to_its_cap() {
        let p = policy(Jitter::None);
        let (now, deadline) = far();
        let mut rng = StdRng::seed_from_u64(5);
        let d = |ra| match p.decide(
            1,
            true,
            Some(ra),
            Duration::ZERO,
            now,
            deadline,
            &mut rng.clone(),
        ) {
            RetryDecision::Retry { delay } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            d(Duration::from_millis(10)),
            Duration::from_millis(100),
            "backoff wins"
        );
        assert_eq!(d(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(
            d(Duration::from_secs(120)),
            Duration::from_secs(5),
            "capped"
        );
        let _ = &mut rng;
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let p = policy(Jitter::None);
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(6);
        assert_eq!(
            p.decide(
                1,
                true,
                None,
                Duration::ZERO,
                now,
                now + Duration::from_millis(100),
                &mut rng
            ),
            RetryDecision::GiveUp {
                reason: GiveUpReason::DeadlineExceeded
            }
        );
        assert_eq!(
            p.decide(
                1,
                true,
                None,
                Duration::ZERO,
                now,
                now + Duration::from_millis(101),
                &mut rng
            ),
            RetryDecision::Retry {
                delay: Duration::from_millis(100)
            }
        );
        assert_eq!(
            p.decide(
                1,
                true,
                Some(Duration::from_secs(2)),
                Duration::ZERO,
                now,
                now + Duration::from_secs(1),
                &mut rng
            ),
            RetryDecision::GiveUp {
                reason: GiveUpReason::DeadlineExceeded
            }
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        for c in [
            RetryConfig {
                max_attempts: 0,
                ..RetryConfig::default()
            },
            RetryConfig {
                base_delay: Duration::ZERO,
                ..RetryConfig::default()
            },
            RetryConfig {
                max_delay: Duration::from_millis(1),
                ..RetryConfig::default()
            },
        ] {
            assert!(RetryPolicy::new(c).is_err());
        }
    }
}
