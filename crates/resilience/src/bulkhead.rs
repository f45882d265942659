//! The bulkhead: a bound on concurrent calls to the dependency, so that a slow bank cannot tie
//! up every task of the service. Fails fast by default; optionally a small queue whose waiters
//! give up after a timeout. A full bulkhead is the service protecting itself, not a bank
//! failure: callers record it as [`Outcome::Ignored`](crate::breaker::Outcome::Ignored).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::{ensure, ConfigError};
use crate::ser;

/// Settings of a [`Bulkhead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkheadConfig {
    /// Calls allowed at once. Default 64.
    pub max_concurrent: u32,
    /// Callers allowed to wait for a permit when all are taken (0 = fail fast). Default 0.
    pub max_queue: u32,
    /// How long a queued caller waits before giving up. Default 0 (unused when `max_queue` = 0).
    #[serde(rename = "queue_timeout_ms", serialize_with = "ser::ms")]
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queue: 0,
            queue_timeout: Duration::ZERO,
        }
    }
}

impl BulkheadConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.max_concurrent >= 1,
            "max_concurrent",
            "must be at least 1",
        )?;
        ensure(
            self.max_concurrent as usize <= Semaphore::MAX_PERMITS,
            "max_concurrent",
            "too large",
        )?;
        ensure(
            self.max_queue == 0 || !self.queue_timeout.is_zero(),
            "queue_timeout",
            "must be positive when max_queue > 0",
        )?;
        Ok(())
    }
}

/// The bulkhead refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("bulkhead full ({max_concurrent} calls in flight)")]
pub struct BulkheadFull {
    /// The bound that was reached.
    pub max_concurrent: u32,
}

/// A read-only view of the bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BulkheadSnapshot {
    /// Permits held now.
    pub in_use: u32,
    /// The bound.
    pub max_concurrent: u32,
    /// Callers waiting in the queue now.
    pub waiting: u32,
    /// Calls refused since creation.
    pub rejected_total: u64,
}

/// A bulkhead. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Bulkhead {
    config: BulkheadConfig,
    /// One permit per call allowed in flight.
    permits: Arc<Semaphore>,
    /// Callers queued now; bounded by `max_queue` so waiting cannot pile up without limit.
    waiting: AtomicU32,
    rejected_total: AtomicU64,
}

/// A slot in the bulkhead, released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// A bulkhead with these settings.
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            config,
            waiting: AtomicU32::new(0),
            rejected_total: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    fn full(&self) -> BulkheadFull {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        BulkheadFull {
            max_concurrent: self.config.max_concurrent,
        }
    }

    /// Takes a slot at once or fails.
    pub fn try_enter(&self) -> Result<BulkheadPermit, BulkheadFull> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(BulkheadPermit { _permit: p }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(self.full()),
        }
    }

    /// Takes a slot, waiting in the queue (if configured and not full) up to `queue_timeout`.
    pub async fn enter(&self) -> Result<BulkheadPermit, BulkheadFull> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: p });
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w < self.config.max_queue).then_some(w + 1)
            })
            .is_ok();
        if !queued {
            return Err(self.full());
        }
        let got = tokio::time::timeout(
            self.config.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match got {
            Ok(Ok(p)) => Ok(BulkheadPermit { _permit: p }),
            _ => Err(self.full()),
        }
    }

    /// A read-only view.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let available = self.permits.available_permits() as u32;
        BulkheadSnapshot {
            in_use: self.config.max_concurrent.saturating_sub(available),
            max_concurrent: self.config.max_concurrent,
            waiting: self.waiting.load(Ordering::Acquire),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_64_and_fail_fast() {
        let c = BulkheadConfig::default();
        assert_eq!((c.max_concurrent, c.max_queue), (64, 0));
    }

    #[test]
    fn fails_fast_at_the_bound_and_frees_on_drop() {
        let b = Bulkhead::new(BulkheadConfig {
            max_concurrent: 2,
            ..Default::default()
        })
        .unwrap();
        let p1 = b.try_enter().unwrap();
        let _p2 = b.try_enter().unwrap();
        assert_eq!(
            b.try_enter().unwrap_err(),
            BulkheadFull { max_concurrent: 2 }
        );
        assert_eq!(
            b.snapshot(),
            BulkheadSnapshot {
                in_use: 2,
                max_concurrent: 2,
                waiting: 0,
                rejected_total: 1
            }
        );
        drop(p1);
        assert!(b.try_enter().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn enter_without_a_queue_fails_fast() {
        let b = Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            ..Default::default()
        })
        .unwrap();
        let _p = b.enter().await.unwrap();
        let t0 = tokio::time::Instant::now();
        assert!(b.enter().await.is_err());
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_caller_gets_a_freed_permit() {
        let b = Arc::new(
            Bulkhead::new(BulkheadConfig {
                max_concurrent: 1,
                max_queue: 1,
                queue_timeout: Duration::from_secs(1),
            })
            .unwrap(),
        );
        let p = b.enter().await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.enter().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.snapshot().waiting, 1);
        // The queue holds one: a second waiter is refused at once.
        assert!(b.enter().await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(p);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(b.snapshot().waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_caller_gives_up_after_the_queue_timeout() {
        let b = Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 4,
            queue_timeout: Duration::from_millis(250),
        })
        .unwrap();
        let _p = b.enter().await.unwrap();
        let t0 = tokio::time::Instant::now();
        assert!(b.enter().await.is_err());
        assert_eq!(t0.elapsed(), Duration::from_millis(250));
        assert_eq!(b.snapshot().rejected_total, 1);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Bulkhead::new(BulkheadConfig {
            max_concurrent: 0,
            ..Default::default()
        })
        .is_err());
        assert!(Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            max_queue: 1,
            queue_timeout: Duration::ZERO
        })
        .is_err());
    }
}
