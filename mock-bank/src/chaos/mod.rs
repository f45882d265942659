//! Chaos: the profile in effect (set by preset, profile or scenario) and the seeded decision for
//! each charge request.
//!
//! # Layout
//! - [`profile`]: validation and the pure `decide(profile, seed, index)`.
//! - [`presets`]: the named presets' values.
//! - [`scenario`]: timed lists of presets.
//!
//! [`Chaos`] holds the state behind one mutex that is only ever held for a few field reads; the
//! request counter is an atomic so the i-th charge request is well defined.

pub(crate) mod presets;
pub(crate) mod profile;
pub(crate) mod scenario;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex, PoisonError,
};

use chrono::{DateTime, Utc};
use payment_types::bank::{ChaosProfile, ChaosState, ChaosUpdate, Preset};
use tokio::time::Instant;

pub(crate) use profile::{Decision, Fault};
use scenario::Scenario;

/// The chaos engine of one bank.
#[derive(Debug)]
pub(crate) struct Chaos {
    seed: u64,
    /// Index of the next charge request: the `i` of "the decision for the i-th request".
    next_index: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// What applies outside a scenario step: the last preset or profile PUT (or `--chaos`).
    base: Active,
    base_changed_at: DateTime<Utc>,
    scenario: Option<Scenario>,
    /// The scenario step seen last, so a step change is logged once.
    logged_step: Option<usize>,
}

#[derive(Debug, Clone)]
struct Active {
    preset: Option<Preset>,
    profile: Arc<ChaosProfile>,
}

impl Active {
    fn preset(preset: Preset) -> Self {
        Self {
            preset: Some(preset),
            profile: Arc::new(presets::profile(preset)),
        }
    }
}

impl Chaos {
    pub(crate) fn new(seed: u64, start: Preset) -> Self {
        Self {
            seed,
            next_index: AtomicU64::new(0),
            state: Mutex::new(State {
                base: Active::preset(start),
                base_changed_at: Utc::now(),
                scenario: None,
                logged_step: None,
            }),
        }
    }

    /// Charge requests decided so far.
    pub(crate) fn requests(&self) -> u64 {
        self.next_index.load(Ordering::Relaxed)
    }

    /// Draws the decision for the next charge request.
    pub(crate) fn decide(&self) -> (u64, Option<Preset>, Decision) {
        let active = self.active();
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        (
            index,
            active.preset,
            profile::decide(&active.profile, self.seed, index),
        )
    }

    /// What is in effect now.
    pub(crate) fn state(&self) -> ChaosState {
        let now = Instant::now();
        let mut state = self.lock();
        let (active, changed_at) = state.effective(now);
        ChaosState {
            preset: active.preset,
            profile: (*active.profile).clone(),
            scenario: state.scenario.as_ref().map(|s| s.state(now)),
            seed: self.seed,
            changed_at,
        }
    }

    /// Applies a `PUT /v1/chaos` body: a preset or a profile replaces what is in effect and ends
    /// any scenario; a scenario starts now.
    pub(crate) fn apply(&self, update: ChaosUpdate) -> Result<ChaosState, String> {
        {
            let mut state = self.lock();
            match update {
                ChaosUpdate::Preset(preset) => {
                    state.set_base(Active::preset(preset));
                    tracing::info!(preset = %preset, "chaos preset applied");
                }
                ChaosUpdate::Profile(profile) => {
                    profile::validate(&profile)?;
                    tracing::info!(profile = ?profile, "chaos profile applied");
                    state.set_base(Active {
                        preset: None,
                        profile: Arc::new(profile),
                    });
                }
                ChaosUpdate::Scenario(steps) => {
                    let scenario = Scenario::start(steps)?;
                    tracing::info!(steps = ?scenario.state(Instant::now()).steps, "chaos scenario started");
                    state.scenario = Some(scenario);
                    state.logged_step = None;
                }
            }
        }
        Ok(self.state())
    }

    fn active(&self) -> Active {
        self.lock().effective(Instant::now()).0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every write is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn set_base(&mut self, active: Active) {
        self.base = active;
        self.base_changed_at = Utc::now();
        self.scenario = None;
        self.logged_step = None;
    }

    /// The profile in effect at `now` and when it took effect.
    fn effective(&mut self, now: Instant) -> (Active, DateTime<Utc>) {
        let Some(scenario) = &self.scenario else {
            return (self.base.clone(), self.base_changed_at);
        };
        let Some(index) = scenario.step_at(now) else {
            return (self.base.clone(), self.base_changed_at);
        };
        let step = scenario.step(index);
        let changed_at = scenario.state(now).started_at
            + chrono::Duration::milliseconds(i64::try_from(step.at_ms).unwrap_or(i64::MAX));
        if self.logged_step != Some(index) {
            self.logged_step = Some(index);
            tracing::info!(step = index, preset = %step.preset, at_ms = step.at_ms, "chaos scenario step");
        }
        (Active::preset(step.preset), changed_at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use payment_types::bank::ScenarioStep;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scenario_switches_the_decisions_at_its_offsets() {
        let chaos = Chaos::new(1, Preset::Healthy);
        chaos
            .apply(ChaosUpdate::Scenario(vec![
                ScenarioStep {
                    at_ms: 0,
                    preset: Preset::Healthy,
                },
                ScenarioStep {
                    at_ms: 100,
                    preset: Preset::Down,
                },
                ScenarioStep {
                    at_ms: 200,
                    preset: Preset::Healthy,
                },
            ]))
            .unwrap();
        assert_eq!(chaos.decide().2.fault, Fault::None);
        tokio::time::advance(Duration::from_millis(100)).await;
        let (_, preset, decision) = chaos.decide();
        assert_eq!(preset, Some(Preset::Down));
        assert_eq!(decision.fault, Fault::Unavailable { retry_after_s: 2 });
        assert_eq!(chaos.state().scenario.unwrap().current_step, Some(1));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(chaos.decide().2.fault, Fault::None);
        assert!(chaos.state().scenario.unwrap().finished);
    }

    #[test]
    fn a_preset_ends_a_scenario_and_an_invalid_profile_changes_nothing() {
        let chaos = Chaos::new(1, Preset::Healthy);
        chaos
            .apply(ChaosUpdate::Scenario(vec![ScenarioStep {
                at_ms: 0,
                preset: Preset::Down,
            }]))
            .unwrap();
        let state = chaos.apply(ChaosUpdate::Preset(Preset::Flaky)).unwrap();
        assert_eq!(state.preset, Some(Preset::Flaky));
        assert!(state.scenario.is_none());
        let bad = ChaosProfile {
            error_rate: 2.0,
            ..Default::default()
        };
        assert!(chaos.apply(ChaosUpdate::Profile(bad)).is_err());
        assert_eq!(chaos.state().preset, Some(Preset::Flaky));
    }

    #[test]
    fn the_request_index_counts_every_decision() {
        let chaos = Chaos::new(1, Preset::Healthy);
        assert_eq!(chaos.decide().0, 0);
        assert_eq!(chaos.decide().0, 1);
        assert_eq!(chaos.requests(), 2);
    }
}
