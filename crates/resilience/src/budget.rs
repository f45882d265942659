//! The retry budget: retries may be at most a share of the calls plus a small floor, so that a
//! failing dependency sees at most `(1 + percent)` times the normal traffic, never `max_attempts`
//! times. Each original call deposits, each retry withdraws; deposits expire after `ttl`
//! (as in Finagle's and tower's `TpsBudget`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::clock::{SharedClock, TokioClock};
use crate::error::{ensure, ConfigError};
use crate::ser;

/// Settings of a [`RetryBudget`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetConfig {
    /// Retries allowed per original call, as a fraction (0.2 = 20%). Default 0.2.
    pub retry_ratio: f64,
    /// Retries always allowed per second regardless of traffic, so a quiet service can still
    /// retry: a reserve of `min_retries_per_second × ttl` tokens. Default 10.
    pub min_retries_per_second: u32,
    /// How long a deposit counts. Default 10 s.
    #[serde(rename = "ttl_ms", serialize_with = "ser::ms")]
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            (0.0..=1000.0).contains(&self.retry_ratio),
            "retry_ratio",
            "must be in [0, 1000]",
        )?;
        ensure(
            self.ttl >= Duration::from_secs(1),
            "ttl",
            "must be at least 1 s",
        )?;
        ensure(
            self.ttl <= Duration::from_secs(3600),
            "ttl",
            "must be at most 1 h",
        )?;
        Ok(())
    }
}

/// A read-only view of the budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetSnapshot {
    /// Retries that may be made now (reserve + live deposits − live withdrawals), ≥ 0.
    pub balance: f64,
    /// Original calls deposited within the ttl.
    pub deposits: u64,
    /// Retries withdrawn within the ttl.
    pub withdrawals: u64,
    /// Retries refused since creation.
    pub exhausted_total: u64,
}

/// Milli-tokens per retry: deposits of a fraction of a retry stay integers.
const UNIT: i64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which second (1-based, since the origin) this slot holds.
    second: u64,
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct Inner {
    slots: Box<[Slot]>,
    exhausted_total: u64,
}

/// A retry budget. Share it behind an `Arc`.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    /// Milli-tokens credited per deposit (`retry_ratio × UNIT`).
    deposit: i64,
    /// Milli-tokens always available (`min_retries_per_second × ttl × UNIT`).
    reserve: i64,
    origin: Instant,
    clock: SharedClock,
    /// One slot per second of the ttl.
    inner: Mutex<Inner>,
}

impl RetryBudget {
    /// A budget on the tokio clock.
    pub fn new(config: BudgetConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(TokioClock))
    }

    /// A budget on the given clock.
    pub fn with_clock(config: BudgetConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        let secs = config.ttl.as_secs().max(1);
        Ok(Self {
            deposit: (config.retry_ratio * UNIT as f64).round() as i64,
            reserve: i64::from(config.min_retries_per_second) * secs as i64 * UNIT,
            origin: clock.now(),
            inner: Mutex::new(Inner {
                slots: vec![Slot::default(); secs as usize].into_boxed_slice(),
                exhausted_total: 0,
            }),
            clock,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    fn second(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.origin)
            .as_secs()
            + 1
    }

    fn slot(inner: &mut Inner, second: u64) -> &mut Slot {
        let n = inner.slots.len() as u64;
        let s = &mut inner.slots[(second % n) as usize];
        if s.second != second {
            *s = Slot {
                second,
                ..Slot::default()
            };
        }
        s
    }

    fn live(inner: &Inner, second: u64) -> (u64, u64) {
        let n = inner.slots.len() as u64;
        inner
            .slots
            .iter()
            .filter(|s| s.second != 0 && s.second <= second && s.second + n > second)
            .fold((0, 0), |(d, w), s| (d + s.deposits, w + s.withdrawals))
    }

    fn balance_milli(&self, inner: &Inner, second: u64) -> i64 {
        let (d, w) = Self::live(inner, second);
        self.reserve + d as i64 * self.deposit - w as i64 * UNIT
    }

    /// Credits one original call.
    pub fn deposit(&self) {
        let second = self.second();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::slot(&mut inner, second).deposits += 1;
    }

    /// Takes one retry token if there is one; `false` means "do not retry".
    pub fn try_withdraw(&self) -> bool {
        let second = self.second();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.balance_milli(&inner, second) >= UNIT {
            Self::slot(&mut inner, second).withdrawals += 1;
            true
        } else {
            inner.exhausted_total += 1;
            false
        }
    }

    /// A read-only view.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let second = self.second();
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (deposits, withdrawals) = Self::live(&inner, second);
        BudgetSnapshot {
            balance: (self.balance_milli(&inner, second).max(0) as f64) / UNIT as f64,
            deposits,
            withdrawals,
            exhausted_total: inner.exhausted_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn make(config: BudgetConfig) -> (RetryBudget, ManualClock) {
        let clock = ManualClock::new();
        (
            RetryBudget::with_clock(config, Arc::new(clock.clone())).unwrap(),
            clock,
        )
    }

    fn drain(b: &RetryBudget) -> u32 {
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
            assert!(n < 1_000_000);
        }
        n
    }

    #[test]
    fn defaults_match_the_design() {
        let c = BudgetConfig::default();
        assert_eq!(
            (c.retry_ratio, c.min_retries_per_second, c.ttl),
            (0.2, 10, Duration::from_secs(10))
        );
    }

    #[test]
    fn the_floor_allows_min_per_second_times_ttl_retries_without_traffic() {
        let (b, _) = make(BudgetConfig::default());
        assert_eq!(b.snapshot().balance, 100.0);
        assert_eq!(drain(&b), 100);
        assert_eq!(b.snapshot().exhausted_total, 1);
    }

    #[test]
    fn each_call_adds_the_ratio_of_a_retry() {
        let (b, _) = make(BudgetConfig {
            min_retries_per_second: 0,
            ..BudgetConfig::default()
        });
        assert!(!b.try_withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.snapshot().balance, 20.0);
        assert_eq!(drain(&b), 20);
        let s = b.snapshot();
        assert_eq!((s.deposits, s.withdrawals), (100, 20));
    }

    #[test]
    fn retry_ratio_setting_is_honoured() {
        let (b, _) = make(BudgetConfig {
            retry_ratio: 0.5,
            min_retries_per_second: 0,
            ..BudgetConfig::default()
        });
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(drain(&b), 5);
    }

    #[test]
    fn deposits_and_withdrawals_expire_after_the_ttl() {
        let (b, clock) = make(BudgetConfig {
            min_retries_per_second: 1,
            ttl: Duration::from_secs(2),
            ..BudgetConfig::default()
        });
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!(b.snapshot().balance, 12.0);
        assert_eq!(drain(&b), 12);
        clock.advance(Duration::from_secs(2));
        // Deposits and withdrawals of second 1 are gone: only the reserve remains.
        let s = b.snapshot();
        assert_eq!((s.balance, s.deposits, s.withdrawals), (2.0, 0, 0));
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(RetryBudget::new(BudgetConfig {
            ttl: Duration::from_millis(10),
            ..BudgetConfig::default()
        })
        .is_err());
        assert!(RetryBudget::new(BudgetConfig {
            retry_ratio: -1.0,
            ..BudgetConfig::default()
        })
        .is_err());
    }
}
