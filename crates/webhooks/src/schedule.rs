//! When a failed delivery is tried again.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// Delays between delivery attempts, measured from the attempts' scheduled times: a fixed list,
/// then a fixed interval, until a horizon after the first attempt. The worker adds no state of
/// its own beyond the number of failed attempts, so a restart resumes the same schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The delay after the 1st, 2nd, … failed attempt.
    delays: Vec<Duration>,
    /// The delay after each failure past the list.
    then_every: Duration,
    /// No attempt is scheduled later than this after the first one.
    give_up_after: Duration,
}

impl RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h, for 3 days after the first attempt
    /// (the schedule Standard Webhooks and Svix document): 12 attempts in all.
    pub fn standard() -> Self {
        RetrySchedule {
            delays: [5, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR, 10 * HOUR]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            then_every: Duration::from_secs(10 * HOUR),
            give_up_after: Duration::from_secs(72 * HOUR),
        }
    }

    /// Every delay and the horizon multiplied by `factor` (e.g. 0.001 turns 5 s into 5 ms and
    /// 3 days into about 4 min, for tests). The number of attempts does not change. A factor that
    /// is not a positive finite number is treated as 1.
    pub fn scaled(self, factor: f64) -> Self {
        let factor = if factor.is_finite() && factor > 0.0 {
            factor
        } else {
            1.0
        };
        let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
        RetrySchedule {
            delays: self.delays.into_iter().map(scale).collect(),
            // Never zero, so `max_attempts` ends even for an absurdly small factor.
            then_every: scale(self.then_every).max(Duration::from_nanos(1)),
            give_up_after: scale(self.give_up_after),
        }
    }

    /// The wait before the next attempt after `failed_attempts` attempts failed, or `None` when
    /// that attempt would fall past the horizon: give up and mark the delivery failed.
    /// `delay_after(0)` is zero: the first attempt goes at once.
    pub fn delay_after(&self, failed_attempts: u32) -> Option<Duration> {
        if failed_attempts == 0 {
            return Some(Duration::ZERO);
        }
        // When the next attempt would go, counted from the first; stops as soon as the horizon
        // is passed, so a huge count costs no more than the schedule's length.
        let mut at = Duration::ZERO;
        for n in 1..=failed_attempts {
            at = at.saturating_add(self.nth_delay(n));
            if at > self.give_up_after {
                return None;
            }
        }
        Some(self.nth_delay(failed_attempts))
    }

    /// How many attempts a delivery gets in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        let mut attempts = 1;
        while self.delay_after(attempts).is_some() {
            attempts += 1;
        }
        attempts
    }

    /// The delay after the `n`th failure (`n` ≥ 1).
    fn nth_delay(&self, n: u32) -> Duration {
        self.delays
            .get(n as usize - 1)
            .copied()
            .unwrap_or(self.then_every)
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn the_standard_schedule_lists_the_documented_delays() {
        let s = RetrySchedule::standard();
        assert_eq!(s.delay_after(0), Some(Duration::ZERO));
        let expected = [
            5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000,
        ];
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(
                s.delay_after(i as u32 + 1),
                secs(want),
                "after {} failures",
                i + 1
            );
        }
        // The 12th attempt goes at 67 h 35 min 5 s; a 13th would be at 77 h 35 min 5 s, past 72 h.
        assert_eq!(s.delay_after(12), None);
        assert_eq!(s.delay_after(u32::MAX), None);
        assert_eq!(s.max_attempts(), 12);
        assert_eq!(RetrySchedule::default(), s);
    }

    #[test]
    fn no_attempt_is_scheduled_past_three_days() {
        let s = RetrySchedule::standard();
        let mut at = Duration::ZERO;
        for failed in 1..s.max_attempts() {
            at += s.delay_after(failed).unwrap();
        }
        assert!(at <= Duration::from_secs(72 * HOUR));
        assert!(at + Duration::from_secs(10 * HOUR) > Duration::from_secs(72 * HOUR));
    }

    #[test]
    fn scaling_compresses_every_delay_and_keeps_the_attempt_count() {
        let s = RetrySchedule::standard().scaled(0.001);
        assert_eq!(s.delay_after(1), Some(Duration::from_millis(5)));
        assert_eq!(s.delay_after(2), Some(Duration::from_millis(300)));
        assert_eq!(s.delay_after(7), Some(Duration::from_secs(36)));
        assert_eq!(s.max_attempts(), 12);
        assert_eq!(s.delay_after(12), None);
        // A nonsense factor leaves the schedule as it was.
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                RetrySchedule::standard().scaled(bad),
                RetrySchedule::standard()
            );
        }
    }
}
