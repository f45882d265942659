//! The order in which a new payment's banks are considered (docs/failover.md, "Routing").
//!
//! - `priority` (the default): the order configured.
//! - `health`: each bank's score is its success rate over its last `window` charge attempts
//!   (a decline or a refusal of the request counts as a success: the bank answered; a "not
//!   processed" or ambiguous attempt counts as a failure). Banks are ordered by score, priority
//!   breaking ties; a bank not yet judged (fewer than `min_samples` attempts) ranks as perfect,
//!   so a new or idle bank is tried in its priority place. A bank scoring below `min_success`
//!   is dropped to the end (in priority order). So that a dropped bank's recovery is noticed,
//!   an `exploration` share of payments tries a dropped bank first.
//!
//! The order only says where a payment starts and which bank is next; whether it may move on
//! is the cascade rule's, unchanged in either mode. The randomness is injected, so tests pick
//! which payments explore.

use std::{collections::VecDeque, sync::Mutex};

use resilience::pipeline::{Classification, Execution};

/// How banks are ordered for a new payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// The order configured.
    Priority,
    /// By each bank's recent success rate, priority breaking ties.
    Health,
}

impl RoutingMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Health => "health",
        }
    }
}

/// The settings of health-scored routing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HealthSettings {
    /// Attempts per bank the score covers (the last ones).
    pub(crate) window: usize,
    /// Attempts a bank needs in its window before its score counts.
    pub(crate) min_samples: usize,
    /// A bank scoring below this is dropped to the end.
    pub(crate) min_success: f64,
    /// The share of payments that try a dropped bank first.
    pub(crate) exploration: f64,
}

/// A uniform draw in [0, 1).
pub(crate) type Draw = Box<dyn Fn() -> f64 + Send + Sync>;

/// The draw in production: random bits from the process's fast UUID generator (no extra
/// dependency, no system call per draw).
pub(crate) fn random_draw() -> Draw {
    Box::new(|| {
        let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
        bits as f64 / (1u64 << 53) as f64
    })
}

/// One bank's recent attempts, for its score.
#[derive(Debug, Default)]
struct Window {
    /// `true` for an attempt the bank answered; newest at the back.
    outcomes: VecDeque<bool>,
    successes: usize,
}

/// The routing of one process: its mode, and every bank's window (kept in either mode, so
/// `/v1/status` shows scores before anyone switches to `health`).
pub(crate) struct Routing {
    mode: RoutingMode,
    settings: HealthSettings,
    windows: Vec<Mutex<Window>>,
    draw: Draw,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("mode", &self.mode)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A bank's score as `/v1/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score {
    /// Success rate over the window; `None` below `min_samples` attempts.
    pub(crate) score: Option<f64>,
    /// Attempts in the window.
    pub(crate) samples: usize,
    /// Health mode: below `min_success`, so tried after every other bank (and first by an
    /// exploration share of payments).
    pub(crate) dropped: bool,
}

impl Routing {
    pub(crate) fn new(
        mode: RoutingMode,
        settings: HealthSettings,
        banks: usize,
        draw: Draw,
    ) -> Self {
        Self {
            mode,
            settings,
            windows: (0..banks).map(|_| Mutex::default()).collect(),
            draw,
        }
    }

    /// Priority routing with the default health settings, for `banks` banks.
    #[cfg(test)]
    pub(crate) fn priority(banks: usize) -> Self {
        Self::new(
            RoutingMode::Priority,
            HealthSettings {
                window: 100,
                min_samples: 10,
                min_success: 0.5,
                exploration: 0.05,
            },
            banks,
            random_draw(),
        )
    }

    pub(crate) fn mode(&self) -> RoutingMode {
        self.mode
    }

    pub(crate) fn settings(&self) -> HealthSettings {
        self.settings
    }

    /// Records the attempts of a run at bank `bank` in its window.
    pub(crate) fn record<T>(&self, bank: usize, execution: &Execution<T>) {
        if execution.attempts.is_empty() {
            return;
        }
        let mut window = self.windows[bank].lock().unwrap_or_else(|p| p.into_inner());
        for attempt in &execution.attempts {
            let answered = matches!(
                attempt.classification,
                Classification::Success
                    | Classification::BusinessRejection
                    | Classification::ClientError
            );
            window.outcomes.push_back(answered);
            window.successes += usize::from(answered);
            while window.outcomes.len() > self.settings.window {
                if window.outcomes.pop_front() == Some(true) {
                    window.successes -= 1;
                }
            }
        }
    }

    /// Bank `bank`'s score now.
    pub(crate) fn score(&self, bank: usize) -> Score {
        let window = self.windows[bank].lock().unwrap_or_else(|p| p.into_inner());
        let samples = window.outcomes.len();
        let score = (samples >= self.settings.min_samples.max(1))
            .then(|| window.successes as f64 / samples as f64);
        Score {
            score,
            samples,
            dropped: self.mode == RoutingMode::Health
                && score.is_some_and(|s| s < self.settings.min_success),
        }
    }

    /// The banks (indices in priority order) in the order a new payment considers them.
    pub(crate) fn order(&self) -> Vec<usize> {
        let banks = self.windows.len();
        if self.mode == RoutingMode::Priority || banks < 2 {
            return (0..banks).collect();
        }
        let scores: Vec<Score> = (0..banks).map(|bank| self.score(bank)).collect();
        let (mut kept, dropped): (Vec<usize>, Vec<usize>) =
            (0..banks).partition(|&bank| !scores[bank].dropped);
        // Best score first; not yet judged ranks as perfect; the sort is stable, so equal
        // scores keep their priority order.
        kept.sort_by(|&x, &y| {
            let (x, y) = (
                scores[x].score.unwrap_or(1.0),
                scores[y].score.unwrap_or(1.0),
            );
            y.total_cmp(&x)
        });
        if dropped.is_empty() {
            return kept;
        }
        let draw = (self.draw)();
        let exploration = self.settings.exploration;
        if draw < exploration {
            // Which dropped bank explores: the draw, spread over them.
            let pick = ((draw / exploration) * dropped.len() as f64) as usize;
            let pick = dropped[pick.min(dropped.len() - 1)];
            let mut order = vec![pick];
            order.extend(kept);
            order.extend(dropped.into_iter().filter(|&bank| bank != pick));
            return order;
        }
        kept.extend(dropped);
        kept
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicU64, Ordering},
            Arc,
        },
        time::Duration,
    };

    use resilience::{
        pipeline::{AttemptRecord, ExecutionOutcome},
        retry::GiveUpReason,
    };

    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            window: 10,
            min_samples: 4,
            min_success: 0.5,
            exploration: 0.1,
        }
    }

    /// A routing whose draws are what `next` holds (as f64 bits), so a test picks them.
    fn routing(mode: RoutingMode, banks: usize) -> (Routing, Arc<AtomicU64>) {
        let next = Arc::new(AtomicU64::new(0.99f64.to_bits()));
        let source = next.clone();
        let draw: Draw = Box::new(move || f64::from_bits(source.load(Ordering::SeqCst)));
        (Routing::new(mode, settings(), banks, draw), next)
    }

    fn run(classifications: &[Classification]) -> Execution<()> {
        Execution {
            outcome: ExecutionOutcome::GaveUp {
                reason: GiveUpReason::AttemptsExhausted,
                last: classifications.last().copied(),
            },
            attempts: classifications
                .iter()
                .enumerate()
                .map(|(i, classification)| AttemptRecord {
                    number: i as u32 + 1,
                    classification: *classification,
                    duration: Duration::from_millis(1),
                    delay_before_next: None,
                    probe: false,
                })
                .collect(),
            any_ambiguous: false,
            elapsed: Duration::ZERO,
        }
    }

    const OK: Classification = Classification::Success;
    const DECLINE: Classification = Classification::BusinessRejection;
    const REFUSED: Classification = Classification::NotProcessed { retry_after: None };
    const TIMEOUT: Classification = Classification::Ambiguous { timed_out: true };

    #[test]
    fn priority_mode_keeps_the_configured_order_whatever_the_scores() {
        let (r, _) = routing(RoutingMode::Priority, 3);
        r.record(0, &run(&[REFUSED; 10]));
        assert_eq!(r.order(), [0, 1, 2]);
        let score = r.score(0);
        assert_eq!(score.score, Some(0.0));
        assert!(!score.dropped, "nothing is dropped in priority mode");
    }

    #[test]
    fn the_score_is_the_success_rate_over_the_last_window_attempts_once_judged() {
        let (r, _) = routing(RoutingMode::Health, 2);
        r.record(0, &run(&[OK, DECLINE, REFUSED]));
        assert_eq!(r.score(0).score, None, "3 attempts: not yet judged");
        assert_eq!(r.score(0).samples, 3);
        r.record(0, &run(&[TIMEOUT]));
        assert_eq!(r.score(0).score, Some(0.5), "a decline is an answer");
        // Ten more successes push every failure out of the window of 10.
        r.record(0, &run(&[OK; 10]));
        assert_eq!(r.score(0).score, Some(1.0));
        assert_eq!(r.score(0).samples, 10);
        r.record(0, &run(&[REFUSED, REFUSED]));
        assert_eq!(r.score(0).score, Some(0.8));
        // A run with no attempt (breaker or bulkhead refused) says nothing about the bank.
        r.record(0, &run(&[]));
        assert_eq!(r.score(0).samples, 10);
    }

    #[test]
    fn health_mode_orders_by_score_with_priority_breaking_ties() {
        let (r, _) = routing(RoutingMode::Health, 3);
        assert_eq!(r.order(), [0, 1, 2], "nothing judged: priority");
        r.record(0, &run(&[OK, OK, OK, REFUSED])); // 0.75
        r.record(1, &run(&[OK; 4])); // 1.0
        r.record(2, &run(&[OK, OK, OK, REFUSED])); // 0.75
        assert_eq!(r.order(), [1, 0, 2]);
        r.record(0, &run(&[OK; 4])); // 7/8
        assert_eq!(r.order(), [1, 0, 2]);
        r.record(0, &run(&[OK; 4])); // 0.9 of the last 10 vs 1.0
        r.record(1, &run(&[REFUSED; 2])); // 4/6
        assert_eq!(r.order(), [0, 2, 1]);
    }

    #[test]
    fn a_bank_below_the_minimum_goes_last_and_an_exploration_share_tries_it_first() {
        let (r, next) = routing(RoutingMode::Health, 3);
        r.record(0, &run(&[REFUSED, REFUSED, REFUSED, OK])); // 0.25: dropped
        r.record(2, &run(&[OK; 4]));
        assert!(r.score(0).dropped);
        assert!(!r.score(1).dropped, "not judged yet: kept");
        assert_eq!(r.order(), [1, 2, 0], "dropped to the end");
        // A draw under the exploration share (0.1): the dropped bank first, then the rest.
        next.store(0.05f64.to_bits(), Ordering::SeqCst);
        assert_eq!(r.order(), [0, 1, 2]);
        next.store(0.1f64.to_bits(), Ordering::SeqCst);
        assert_eq!(r.order(), [1, 2, 0], "at the share: no exploration");
        // Two dropped banks: the draw picks which one explores.
        r.record(2, &run(&[REFUSED; 8])); // 2/10
        assert_eq!(r.score(2).score, Some(0.2));
        next.store(0.99f64.to_bits(), Ordering::SeqCst);
        assert_eq!(r.order(), [1, 0, 2]);
        next.store(0.01f64.to_bits(), Ordering::SeqCst);
        assert_eq!(r.order(), [0, 1, 2]);
        next.store(0.07f64.to_bits(), Ordering::SeqCst);
        assert_eq!(r.order(), [2, 1, 0]);
        // Recovery: successes lift it back above the minimum.
        r.record(0, &run(&[OK; 10]));
        next.store(0.99f64.to_bits(), Ordering::SeqCst);
        assert!(!r.score(0).dropped);
        assert_eq!(r.order(), [0, 1, 2]);
    }

    #[test]
    fn the_production_draw_is_in_the_unit_interval() {
        let draw = random_draw();
        for _ in 0..1000 {
            let x = draw();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
