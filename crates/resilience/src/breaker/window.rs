//! The sliding window of recorded calls: count-based (a ring buffer of the last N outcomes) or
//! time-based (one bucket per second for the last N seconds). Both keep running counts so that
//! recording and reading are O(1) (count-based) or O(N buckets) with N small (time-based).

use serde::Serialize;
use tokio::time::Instant;

use super::config::WindowKind;

/// What a recorded call counts as in the window (ignored outcomes are never recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Success = 0,
    Failure = 1,
    Slow = 2,
}

/// Counts of the calls the window currently holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Recorded calls (successes, slow successes and failures).
    pub calls: u32,
    /// Failures.
    pub failures: u32,
    /// Slow successes.
    pub slow: u32,
}

impl WindowCounts {
    fn add(&mut self, m: Mark) {
        self.calls += 1;
        match m {
            Mark::Success => {}
            Mark::Failure => self.failures += 1,
            Mark::Slow => self.slow += 1,
        }
    }

    fn remove(&mut self, m: Mark) {
        self.calls -= 1;
        match m {
            Mark::Success => {}
            Mark::Failure => self.failures -= 1,
            Mark::Slow => self.slow -= 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    /// Which second (since the window's origin) this bucket holds.
    second: u64,
    counts: WindowCounts,
}

#[derive(Debug)]
pub(crate) enum Window {
    Count {
        /// The last `ring.len()` marks; `next` is where the next one goes.
        ring: Box<[Mark]>,
        next: usize,
        /// Whether the ring has wrapped (every slot holds a mark).
        full: bool,
        counts: WindowCounts,
    },
    Time {
        origin: Instant,
        buckets: Box<[Bucket]>,
    },
}

impl Window {
    pub(crate) fn new(kind: WindowKind, origin: Instant) -> Self {
        match kind {
            WindowKind::CountBased { size } => Window::Count {
                ring: vec![Mark::Success; size as usize].into_boxed_slice(),
                next: 0,
                full: false,
                counts: WindowCounts::default(),
            },
            WindowKind::TimeBased { seconds } => Window::Time {
                origin,
                // Seconds start at 1 so that the zeroed buckets (second 0) are never "live"
                // by accident before anything was recorded.
                buckets: vec![Bucket::default(); seconds as usize].into_boxed_slice(),
            },
        }
    }

    /// Whether reading the window needs the current time (time-based windows do).
    #[inline]
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Window::Time { .. })
    }

    #[inline]
    pub(crate) fn record(&mut self, m: Mark, now: Instant) {
        match self {
            Window::Count {
                ring,
                next,
                full,
                counts,
            } => {
                if *full {
                    counts.remove(ring[*next]);
                }
                ring[*next] = m;
                counts.add(m);
                *next += 1;
                if *next == ring.len() {
                    *next = 0;
                    *full = true;
                }
            }
            Window::Time { origin, buckets } => {
                let second = second_of(*origin, now);
                let n = buckets.len() as u64;
                let b = &mut buckets[(second % n) as usize];
                if b.second != second {
                    *b = Bucket {
                        second,
                        counts: WindowCounts::default(),
                    };
                }
                b.counts.add(m);
            }
        }
    }

    /// The counts of the calls in the window at `now` (`now` is unused by count-based windows).
    #[inline]
    pub(crate) fn counts(&self, now: Instant) -> WindowCounts {
        match self {
            Window::Count { counts, .. } => *counts,
            Window::Time { origin, buckets } => {
                let second = second_of(*origin, now);
                let n = buckets.len() as u64;
                let mut total = WindowCounts::default();
                for b in buckets.iter() {
                    if b.second <= second && b.second + n > second && b.second != 0 {
                        total.calls += b.counts.calls;
                        total.failures += b.counts.failures;
                        total.slow += b.counts.slow;
                    }
                }
                total
            }
        }
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count {
                next, full, counts, ..
            } => {
                *next = 0;
                *full = false;
                *counts = WindowCounts::default();
            }
            Window::Time { buckets, .. } => {
                for b in buckets.iter_mut() {
                    *b = Bucket::default();
                }
            }
        }
    }
}

/// The one-based second of `now` since `origin`.
fn second_of(origin: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(origin).as_secs() + 1
}

/// Rate of `part` in `calls`, as a fraction.
pub(crate) fn rate(part: u32, calls: u32) -> f64 {
    if calls == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn count_window_keeps_only_the_last_n_calls() {
        let t = Instant::now();
        let mut w = Window::new(WindowKind::CountBased { size: 3 }, t);
        w.record(Mark::Failure, t);
        w.record(Mark::Slow, t);
        w.record(Mark::Success, t);
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(Mark::Success, t); // evicts the failure
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.record(Mark::Failure, t); // evicts the slow call
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(t), WindowCounts::default());
    }

    #[test]
    fn time_window_drops_buckets_older_than_the_window() {
        let t = Instant::now();
        let mut w = Window::new(WindowKind::TimeBased { seconds: 3 }, t);
        w.record(Mark::Failure, t);
        w.record(Mark::Failure, t + Duration::from_millis(999));
        w.record(Mark::Success, t + Duration::from_secs(1));
        assert_eq!(w.counts(t + Duration::from_secs(2)).calls, 3);
        // At second 3 the first bucket (second 0) has left the 3-second window.
        let c = w.counts(t + Duration::from_secs(3));
        assert_eq!(
            c,
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        // A bucket reused for a new second starts empty.
        w.record(Mark::Slow, t + Duration::from_secs(3));
        let c = w.counts(t + Duration::from_secs(3));
        assert_eq!(
            c,
            WindowCounts {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(
            w.counts(t + Duration::from_secs(10)),
            WindowCounts::default()
        );
    }

    #[test]
    fn rate_of_nothing_is_zero() {
        assert_eq!(rate(0, 0), 0.0);
        assert_eq!(rate(1, 4), 0.25);
    }
}
