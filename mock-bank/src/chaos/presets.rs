//! The named presets' values. `docs/mock-bank.md` lists the same numbers; change both together.

use payment_types::bank::{ChaosProfile, ErrorMix, Latency, LostResponseMode, Preset};

/// The profile a preset stands for.
pub(crate) fn profile(preset: Preset) -> ChaosProfile {
    let healthy = ChaosProfile::default();
    match preset {
        // No faults, no latency: the performance baseline, served without a single sleep.
        Preset::Healthy => healthy,
        Preset::Flaky => ChaosProfile {
            error_rate: 0.3,
            errors: ErrorMix {
                http_500: 1,
                http_503: 1,
                http_429: 1,
            },
            error_500_committed_rate: 0.5,
            retry_after_s: 1,
            latency: Latency {
                base_ms: 10,
                jitter_ms: 40,
                tail_rate: 0.0,
                tail_ms: 0,
            },
            ..healthy
        },
        // 30% of calls take 1.3–1.5 s: slow (over the API's 1 s slow-call mark) but under its
        // 2 s attempt timeout, so they succeed slowly rather than time out.
        Preset::Slow => ChaosProfile {
            latency: Latency {
                base_ms: 100,
                jitter_ms: 200,
                tail_rate: 0.3,
                tail_ms: 1200,
            },
            ..healthy
        },
        Preset::Down => ChaosProfile {
            error_rate: 1.0,
            errors: ErrorMix {
                http_500: 0,
                http_503: 1,
                http_429: 0,
            },
            retry_after_s: 2,
            ..healthy
        },
        Preset::Blackhole => ChaosProfile {
            hang_rate: 1.0,
            hold_max_ms: 30_000,
            ..healthy
        },
        Preset::Lossy => ChaosProfile {
            lost_response_rate: 0.2,
            lost_response_mode: LostResponseMode::Drop,
            error_rate: 0.1,
            errors: ErrorMix {
                http_500: 1,
                http_503: 0,
                http_429: 0,
            },
            error_500_committed_rate: 1.0,
            latency: Latency {
                base_ms: 5,
                jitter_ms: 20,
                tail_rate: 0.0,
                tail_ms: 0,
            },
            ..healthy
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::profile::validate;

    #[test]
    fn every_preset_is_a_valid_profile() {
        for preset in Preset::ALL {
            assert_eq!(validate(&profile(preset)), Ok(()), "{preset}");
        }
    }

    #[test]
    fn healthy_is_the_all_defaults_profile() {
        assert_eq!(profile(Preset::Healthy), ChaosProfile::default());
    }
}
