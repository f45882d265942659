//! The per-API-key rate limit: a token bucket (GCRA, from `governor`) for each configured key,
//! so one client flooding the API gets 429s while every other key is still served.
//!
//! Buckets are per key rather than per tenant, so rotating a leaked key out does not also
//! throttle its replacement, and per key rather than per address, because one address (a NAT,
//! a proxy) can front many clients. The set of keys is fixed at start, so memory is bounded:
//! an unknown key never gets this far (it is a 401 first).

use std::{num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, Quota, RateLimiter,
};

/// One bucket per configured key, in the key table's order; empty when the limit is off.
#[derive(Debug)]
pub(crate) struct RateLimits {
    buckets: Vec<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `per_second` requests a second per key, `burst` at once (0: one second's worth);
    /// `per_second == 0` turns the limit off.
    pub(crate) fn new(keys: usize, per_second: u32, burst: u32) -> Self {
        let buckets = match NonZeroU32::new(per_second) {
            None => Vec::new(),
            Some(rate) => {
                let burst = NonZeroU32::new(burst).unwrap_or(rate);
                let quota = Quota::per_second(rate).allow_burst(burst);
                (0..keys).map(|_| RateLimiter::direct(quota)).collect()
            }
        };
        Self {
            buckets,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from key `index`'s bucket; `Err(wait)` when it is empty, with how long
    /// until the next request would be admitted.
    pub(crate) fn check(&self, index: usize) -> Result<(), Duration> {
        match self.buckets.get(index) {
            None => Ok(()),
            Some(bucket) => bucket
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_is_refused_with_a_wait_while_another_key_is_not_touched() {
        let limits = RateLimits::new(2, 10, 5);
        for _ in 0..5 {
            assert_eq!(limits.check(0), Ok(()));
        }
        let wait = limits
            .check(0)
            .expect_err("the sixth request exceeds the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(limits.check(1), Ok(()), "key 1 has its own bucket");
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limits = RateLimits::new(1, 0, 0);
        for _ in 0..10_000 {
            assert_eq!(limits.check(0), Ok(()));
        }
    }

    #[test]
    fn burst_defaults_to_one_second_of_rate() {
        let limits = RateLimits::new(1, 3, 0);
        assert!((0..3).all(|_| limits.check(0).is_ok()));
        assert!(limits.check(0).is_err());
    }
}
