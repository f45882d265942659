//! Timed scenarios: a list of presets with start offsets, started by one request.
//!
//! A scenario needs no background task: the step in effect is computed from the elapsed time
//! whenever chaos is consulted, so it is exact, cheap, and testable with a paused clock.

use chrono::{DateTime, Utc};
use payment_types::bank::{ScenarioState, ScenarioStep};
use tokio::time::Instant;

/// Most steps in one scenario.
const MAX_STEPS: usize = 100;
/// Latest offset a step may have (24 h).
const MAX_OFFSET_MS: u64 = 24 * 60 * 60 * 1000;

/// A started scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    steps: Vec<ScenarioStep>,
    started: Instant,
    started_at: DateTime<Utc>,
}

impl Scenario {
    /// Checks the steps (1–100, offsets non-decreasing and at most 24 h) and starts the clock.
    pub(crate) fn start(steps: Vec<ScenarioStep>) -> Result<Self, String> {
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(format!(
                "a scenario needs 1 to {MAX_STEPS} steps, got {}",
                steps.len()
            ));
        }
        if steps.windows(2).any(|w| w[0].at_ms > w[1].at_ms) {
            return Err("scenario steps must be in order of at_ms".to_owned());
        }
        if steps.iter().any(|s| s.at_ms > MAX_OFFSET_MS) {
            return Err(format!("a step's at_ms must be at most {MAX_OFFSET_MS}"));
        }
        Ok(Self {
            steps,
            started: Instant::now(),
            started_at: Utc::now(),
        })
    }

    /// The index of the step in effect at `now`, or `None` before the first step's offset.
    pub(crate) fn step_at(&self, now: Instant) -> Option<usize> {
        let elapsed = elapsed_ms(self.started, now);
        self.steps.iter().rposition(|step| step.at_ms <= elapsed)
    }

    pub(crate) fn step(&self, index: usize) -> ScenarioStep {
        self.steps[index]
    }

    /// The scenario's progress at `now`, for `GET /v1/chaos`.
    pub(crate) fn state(&self, now: Instant) -> ScenarioState {
        let current_step = self.step_at(now);
        ScenarioState {
            steps: self.steps.clone(),
            started_at: self.started_at,
            elapsed_ms: elapsed_ms(self.started, now),
            current_step,
            finished: current_step == Some(self.steps.len() - 1),
        }
    }
}

fn elapsed_ms(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use payment_types::bank::Preset;

    use super::*;

    fn step(at_ms: u64, preset: Preset) -> ScenarioStep {
        ScenarioStep { at_ms, preset }
    }

    #[tokio::test(start_paused = true)]
    async fn the_step_in_effect_follows_the_offsets() {
        let scenario = Scenario::start(vec![
            step(0, Preset::Healthy),
            step(10_000, Preset::Down),
            step(40_000, Preset::Healthy),
        ])
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(scenario.step_at(t0), Some(0));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(scenario.step_at(Instant::now()), Some(0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(scenario.step_at(Instant::now()), Some(1));
        assert!(!scenario.state(Instant::now()).finished);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(scenario.step_at(Instant::now()), Some(2));
        assert!(scenario.state(Instant::now()).finished);
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_offset_no_step_is_in_effect() {
        let scenario = Scenario::start(vec![step(500, Preset::Down)]).unwrap();
        assert_eq!(scenario.step_at(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(scenario.step_at(Instant::now()), Some(0));
    }

    #[test]
    fn empty_or_unordered_scenarios_are_rejected() {
        assert!(Scenario::start(vec![]).is_err());
        assert!(Scenario::start(vec![step(10, Preset::Down), step(5, Preset::Healthy)]).is_err());
    }
}
