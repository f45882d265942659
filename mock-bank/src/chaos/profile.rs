//! A chaos profile's rules: which profiles are valid, and the pure function that turns
//! (profile, seed, request index) into one request's [`Decision`].
//!
//! Purity is the point: with a fixed seed the i-th charge request gets the same decision on every
//! run, so tests can assert exact counts and a bad run can be replayed.

use std::time::Duration;

use payment_types::bank::{ChaosProfile, LostResponseMode};

/// Largest latency, tail or hold a profile may ask for: long enough for any test, short enough
/// that nothing the bank holds can pile up for long.
const MAX_MS: u64 = 120_000;

/// Checks ranges: rates in 0–1, fault rates summing to at most 1, errors with a non-zero weight
/// when they can happen, durations bounded.
pub(crate) fn validate(profile: &ChaosProfile) -> Result<(), String> {
    let rates = [
        ("error_rate", profile.error_rate),
        ("error_500_committed_rate", profile.error_500_committed_rate),
        ("hang_rate", profile.hang_rate),
        ("lost_response_rate", profile.lost_response_rate),
        ("latency.tail_rate", profile.latency.tail_rate),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name} must be between 0 and 1, got {rate}"));
        }
    }
    let faults = profile.hang_rate + profile.error_rate + profile.lost_response_rate;
    if faults > 1.0 + 1e-9 {
        return Err(format!(
            "hang_rate + error_rate + lost_response_rate must be at most 1, got {faults}"
        ));
    }
    let weights = profile.errors;
    if profile.error_rate > 0.0 && weights.http_500 + weights.http_503 + weights.http_429 == 0 {
        return Err("error_rate > 0 needs a non-zero weight in errors".to_owned());
    }
    let durations = [
        ("latency.base_ms", profile.latency.base_ms),
        ("latency.jitter_ms", profile.latency.jitter_ms),
        ("latency.tail_ms", profile.latency.tail_ms),
        ("hold_max_ms", profile.hold_max_ms),
    ];
    for (name, ms) in durations {
        if ms > MAX_MS {
            return Err(format!("{name} must be at most {MAX_MS}, got {ms}"));
        }
    }
    if profile.retry_after_s > 3600 {
        return Err(format!(
            "retry_after_s must be at most 3600, got {}",
            profile.retry_after_s
        ));
    }
    Ok(())
}

/// What chaos does to one charge request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Added before anything else happens (before the commit, or before an injected error).
    pub(crate) latency: Duration,
    /// The latency includes the slow tail.
    pub(crate) slow_tail: bool,
    pub(crate) fault: Fault,
}

/// The injected fault, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Process and answer normally.
    None,
    /// Never process, never answer; close the connection after `hold`.
    Hang { hold: Duration },
    /// 503 + Retry-After; not processed.
    Unavailable { retry_after_s: u32 },
    /// 429 + Retry-After; not processed.
    RateLimited { retry_after_s: u32 },
    /// 500; `committed` says whether the charge was processed first.
    ServerError { committed: bool },
    /// Process (commit), then lose the answer.
    LostResponse {
        mode: LostResponseMode,
        hold: Duration,
    },
}

impl Fault {
    /// The counter name of this fault (`None` for no fault).
    pub(crate) fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::None => return None,
            Self::Hang { .. } => "hang",
            Self::Unavailable { .. } => "http_503",
            Self::RateLimited { .. } => "http_429",
            Self::ServerError { committed: true } => "http_500_committed",
            Self::ServerError { committed: false } => "http_500_not_committed",
            Self::LostResponse { .. } => "lost_response",
        })
    }
}

/// The decision for request number `index` under `profile` and `seed`.
///
/// One roll `u` picks the fault from consecutive bands: `[0, hang)`, then `error`, then
/// `lost_response`, else none. Further rolls pick the error kind, whether a 500 committed, the
/// jitter and the slow tail. Every roll is drawn for every request so the sequence of rolls does
/// not depend on the profile.
pub(crate) fn decide(profile: &ChaosProfile, seed: u64, index: u64) -> Decision {
    let mut rng = SplitMix64::new(seed, index);
    let u_fault = rng.next_f64();
    let u_kind = rng.next_f64();
    let u_commit = rng.next_f64();
    let u_jitter = rng.next_f64();
    let u_tail = rng.next_f64();

    let hold = Duration::from_millis(profile.hold_max_ms);
    let hang_end = profile.hang_rate;
    let error_end = hang_end + profile.error_rate;
    let lost_end = error_end + profile.lost_response_rate;
    let fault = if u_fault < hang_end {
        Fault::Hang { hold }
    } else if u_fault < error_end {
        let w = profile.errors;
        let total = f64::from(w.http_500 + w.http_503 + w.http_429);
        let pick = u_kind * total;
        let retry_after_s = profile.retry_after_s;
        if pick < f64::from(w.http_500) {
            Fault::ServerError {
                committed: u_commit < profile.error_500_committed_rate,
            }
        } else if pick < f64::from(w.http_500 + w.http_503) {
            Fault::Unavailable { retry_after_s }
        } else {
            Fault::RateLimited { retry_after_s }
        }
    } else if u_fault < lost_end {
        Fault::LostResponse {
            mode: profile.lost_response_mode,
            hold,
        }
    } else {
        Fault::None
    };

    let latency = &profile.latency;
    // Truncation is the intent: jitter is uniform over whole milliseconds 0..=jitter_ms.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let jitter = (u_jitter * (latency.jitter_ms + 1) as f64) as u64;
    let slow_tail = latency.tail_ms > 0 && u_tail < latency.tail_rate;
    let total_ms = latency.base_ms
        + jitter.min(latency.jitter_ms)
        + if slow_tail { latency.tail_ms } else { 0 };
    Decision {
        latency: Duration::from_millis(total_ms),
        slow_tail,
        fault,
    }
}

/// SplitMix64 seeded from (seed, index): small, fast, and the same on every platform, which a
/// general-purpose RNG does not promise across versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, index: u64) -> Self {
        let mut mixer = Self(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Decorrelate neighbouring indexes before the first real draw.
        mixer.next_u64();
        Self(mixer.next_u64() ^ index)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use payment_types::bank::{ErrorMix, Latency};

    use super::*;

    fn share(profile: &ChaosProfile, n: u64, pred: impl Fn(&Decision) -> bool) -> f64 {
        let hits = (0..n).filter(|&i| pred(&decide(profile, 7, i))).count();
        hits as f64 / n as f64
    }

    #[test]
    fn the_healthy_profile_never_faults_and_never_sleeps() {
        let healthy = ChaosProfile::default();
        for i in 0..10_000 {
            assert_eq!(
                decide(&healthy, 3, i),
                Decision {
                    latency: Duration::ZERO,
                    slow_tail: false,
                    fault: Fault::None
                }
            );
        }
    }

    #[test]
    fn the_same_seed_and_index_give_the_same_decision() {
        let profile = ChaosProfile {
            error_rate: 0.3,
            hang_rate: 0.1,
            lost_response_rate: 0.1,
            latency: Latency {
                base_ms: 5,
                jitter_ms: 50,
                tail_rate: 0.2,
                tail_ms: 100,
            },
            ..Default::default()
        };
        for i in 0..1000 {
            assert_eq!(decide(&profile, 42, i), decide(&profile, 42, i));
        }
        let a: Vec<_> = (0..100).map(|i| decide(&profile, 1, i)).collect();
        let b: Vec<_> = (0..100).map(|i| decide(&profile, 2, i)).collect();
        assert_ne!(a, b, "different seeds should give different sequences");
    }

    #[test]
    fn fault_rates_hold_within_a_tolerance() {
        let profile = ChaosProfile {
            hang_rate: 0.05,
            error_rate: 0.3,
            lost_response_rate: 0.1,
            errors: ErrorMix {
                http_500: 1,
                http_503: 2,
                http_429: 1,
            },
            error_500_committed_rate: 0.5,
            ..Default::default()
        };
        let n = 100_000;
        let close = |got: f64, want: f64| (got - want).abs() < 0.01;
        let hang = share(&profile, n, |d| matches!(d.fault, Fault::Hang { .. }));
        let e500c = share(&profile, n, |d| {
            d.fault == Fault::ServerError { committed: true }
        });
        let e503 = share(&profile, n, |d| {
            matches!(d.fault, Fault::Unavailable { .. })
        });
        let e429 = share(&profile, n, |d| {
            matches!(d.fault, Fault::RateLimited { .. })
        });
        let lost = share(&profile, n, |d| {
            matches!(d.fault, Fault::LostResponse { .. })
        });
        assert!(close(hang, 0.05), "{hang}");
        assert!(close(e500c, 0.0375), "{e500c}");
        assert!(close(e503, 0.15), "{e503}");
        assert!(close(e429, 0.075), "{e429}");
        assert!(close(lost, 0.1), "{lost}");
    }

    #[test]
    fn latency_stays_within_base_plus_jitter_plus_tail() {
        let profile = ChaosProfile {
            latency: Latency {
                base_ms: 10,
                jitter_ms: 20,
                tail_rate: 0.25,
                tail_ms: 1000,
            },
            ..Default::default()
        };
        let n = 20_000;
        let mut tails = 0;
        for i in 0..n {
            let d = decide(&profile, 9, i);
            let ms = d.latency.as_millis() as u64;
            if d.slow_tail {
                tails += 1;
                assert!((1010..=1030).contains(&ms), "{ms}");
            } else {
                assert!((10..=30).contains(&ms), "{ms}");
            }
        }
        let share = tails as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    #[test]
    fn out_of_range_profiles_are_rejected_with_the_field_name() {
        let bad = ChaosProfile {
            error_rate: 1.5,
            ..Default::default()
        };
        assert!(validate(&bad).unwrap_err().contains("error_rate"));
        let too_many = ChaosProfile {
            error_rate: 0.6,
            hang_rate: 0.6,
            ..Default::default()
        };
        assert!(validate(&too_many).unwrap_err().contains("at most 1"));
        let no_kind = ChaosProfile {
            error_rate: 0.1,
            errors: ErrorMix::default(),
            ..Default::default()
        };
        assert!(validate(&no_kind).is_err());
        let long = ChaosProfile {
            hold_max_ms: 10_000_000,
            ..Default::default()
        };
        assert!(validate(&long).unwrap_err().contains("hold_max_ms"));
        assert!(validate(&ChaosProfile::default()).is_ok());
    }
}
