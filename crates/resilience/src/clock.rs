//! Time sources: the [`Clock`] trait every component reads time through, a tokio-backed clock
//! (so `tokio::time::pause()` drives it in tests) and a [`ManualClock`] for pure unit tests.
//!
//! Components never call `Instant::now()` themselves: time is injected so that every transition
//! can be tested on a paused or hand-advanced clock, with no real sleep.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of monotonic time (and of wall time, for event timestamps).
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current monotonic instant.
    fn now(&self) -> Instant;

    /// The current wall-clock time, used only to stamp events for people (`at_unix_ms`).
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A shared, dynamically dispatched clock.
pub type SharedClock = Arc<dyn Clock>;

/// The production clock: `tokio::time::Instant::now()`, which follows `tokio::time::pause()`
/// and `tokio::time::advance()` in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to: for pure unit tests and property tests.
///
/// Cloning shares the same time (the offset lives behind an `Arc`).
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// The instant that offset 0 stands for.
    base: Instant,
    /// Nanoseconds elapsed since `base`; atomic so the clock can be shared across threads.
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at an arbitrary fixed instant.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Time elapsed since the clock was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// Wall time is the Unix epoch plus the time elapsed on this clock, so that tests are
    /// deterministic.
    fn system_now(&self) -> SystemTime {
        UNIX_EPOCH + self.elapsed()
    }
}

/// Milliseconds since the Unix epoch of a wall-clock time (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(unix_ms(clock.system_now()), 1500);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        a.advance(Duration::from_secs(3));
        assert_eq!(b.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock;
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(7));
    }
}
