//! The sliding windows of recorded calls.
//!
//! - [`CountWindow`]: the last N outcomes in a lock-free ring of atomic bytes. Recording is one
//!   compare-and-swap on the cursor and a store into the slot it hands out; counts are computed by scanning the
//!   ring, which is only needed when a call could trip the breaker (a failure, a slow call, or a
//!   call while the window is filling) and for snapshots. This keeps the breaker's hot path
//!   (a success while closed) free of any lock.
//! - [`TimeWindow`]: one bucket per second for the last N seconds, behind the breaker's mutex
//!   (it needs the clock anyway); a bucket older than the window is dropped whole.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::time::Instant;

/// What a recorded call counts as in the window (ignored outcomes are never recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Success = 1,
    Failure = 2,
    Slow = 3,
}

/// A ring slot that holds no call yet.
pub(crate) const EMPTY: u8 = 0;

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
}

/// The last N recorded calls, lock-free.
#[derive(Debug)]
pub(crate) struct CountWindow {
    /// One byte per call: `EMPTY` or a `Mark`.
    ring: Box<[AtomicU8]>,
    /// The next slot, in `0..len`. Written by every call: kept on a cache line of its own so
    /// that it does not evict the read-mostly state word that every call also reads.
    cursor: CachePadded,
}

/// An `AtomicUsize` alone on its cache line (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug)]
#[repr(align(128))]
struct CachePadded(AtomicUsize);

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            ring: (0..size).map(|_| AtomicU8::new(EMPTY)).collect(),
            cursor: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Records a call; returns what its slot held before (`EMPTY` while the window fills).
    #[inline]
    pub(crate) fn record(&self, m: Mark) -> u8 {
        // A compare-and-swap that wraps the cursor, rather than a `fetch_add` and a modulo:
        // the division of a modulo by a run-time length costs more than the atomic itself.
        let len = self.ring.len();
        let pos = match self
            .cursor
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                Some(if i + 1 >= len { 0 } else { i + 1 })
            }) {
            Ok(i) | Err(i) => i,
        };
        // The cursor gave this slot to this call alone (until the ring wraps around under more
        // concurrent writers than slots), so a plain load and store suffice: no second atomic
        // read-modify-write. Counts are derived from the ring, so they can never drift.
        let slot = &self.ring[pos.min(len - 1)];
        let evicted = slot.load(Ordering::Relaxed);
        slot.store(m as u8, Ordering::Release);
        evicted
    }

    /// Counts by scanning the ring.
    pub(crate) fn counts(&self) -> WindowCounts {
        let mut c = WindowCounts::default();
        for slot in self.ring.iter() {
            match slot.load(Ordering::Acquire) {
                1 => c.add(Mark::Success),
                2 => c.add(Mark::Failure),
                3 => c.add(Mark::Slow),
                _ => {}
            }
        }
        c
    }

    /// Forgets every call. A record racing with the clear (admitted before a transition, its
    /// epoch check passed a few nanoseconds before it) may survive in the new window.
    pub(crate) fn clear(&self) {
        self.cursor.0.store(0, Ordering::Relaxed);
        for slot in self.ring.iter() {
            slot.store(EMPTY, Ordering::Release);
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    /// Which second (1-based, since the window's origin) this bucket holds; 0 = never used.
    second: u64,
    counts: WindowCounts,
}

/// The calls of the last N seconds, one bucket per second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    origin: Instant,
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    pub(crate) fn new(seconds: u32, origin: Instant) -> Self {
        Self {
            origin,
            buckets: vec![Bucket::default(); seconds as usize].into_boxed_slice(),
        }
    }

    pub(crate) fn record(&mut self, m: Mark, now: Instant) {
        let second = second_of(self.origin, now);
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(second % n) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                counts: WindowCounts::default(),
            };
        }
        b.counts.add(m);
    }

    /// The counts of the calls in the window at `now`.
    pub(crate) fn counts(&self, now: Instant) -> WindowCounts {
        let second = second_of(self.origin, now);
        let n = self.buckets.len() as u64;
        let mut total = WindowCounts::default();
        for b in self.buckets.iter() {
            if b.second != 0 && b.second <= second && b.second + n > second {
                total.calls += b.counts.calls;
                total.failures += b.counts.failures;
                total.slow += b.counts.slow;
            }
        }
        total
    }

    pub(crate) fn clear(&mut self) {
        for b in self.buckets.iter_mut() {
            *b = Bucket::default();
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
        let w = CountWindow::new(3);
        assert_eq!(w.record(Mark::Failure), EMPTY);
        w.record(Mark::Slow);
        w.record(Mark::Success);
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.record(Mark::Success), Mark::Failure as u8); // evicts the failure
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.record(Mark::Failure); // evicts the slow call
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(), WindowCounts::default());
        assert_eq!(w.record(Mark::Success), EMPTY);
    }

    #[test]
    fn time_window_drops_buckets_older_than_the_window() {
        let t = Instant::now();
        let mut w = TimeWindow::new(3, t);
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
        w.clear();
        assert_eq!(
            w.counts(t + Duration::from_secs(3)),
            WindowCounts::default()
        );
    }

    #[test]
    fn rate_of_nothing_is_zero() {
        assert_eq!(rate(0, 0), 0.0);
        assert_eq!(rate(1, 4), 0.25);
    }
}
