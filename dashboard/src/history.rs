//! The short memory behind the charts: one sample of the API's status per second, the last ten
//! minutes of them, so a page opened now still draws "over time". Memory is bounded by
//! [`CAPACITY`] samples of a few hundred bytes each.
//!
//! A sample keeps what the charts need: the breaker state and rates, the latency percentiles,
//! the retry budget, and the *increase* of every API counter since the previous sample (so the
//! page draws rates, and an API restart, which zeroes its counters, is not a negative spike).
//!
//! Per bank, a sample keeps the breaker state, the route share and the chaos preset, and the
//! increase of the bank's cumulative cascade counters (`cascades` by reason, `cascaded_away` in
//! all) since the previous poll; [`History::cascade_rates`] turns those into cascades per minute
//! and why. The counters are cumulative in the API, so a rate needs two polls of the same API
//! process: that is why it is derived here, where successive polls meet.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
};

use serde::Serialize;
use serde_json::Value;

/// Ten minutes at one sample a second.
pub(crate) const CAPACITY: usize = 600;

/// The API counters that count answers to `POST /v1/payments`; their sum is the request rate.
pub(crate) const REQUEST_OUTCOMES: &[&str] = &[
    "succeeded",
    "declined",
    "pending",
    "failed",
    "rejected_breaker",
    "rejected_bulkhead",
    "bank_unavailable",
    "replayed",
    "in_flight_conflicts",
    "key_mismatches",
    "store_unavailable",
];

/// One point of every chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Sample {
    /// Increases by one per sample: the page asks for the samples after the last it has.
    pub(crate) seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub(crate) t_ms: u64,
    /// Time since the previous sample (the divisor of the counts into rates).
    pub(crate) dt_ms: u64,
    /// Breaker state, or `None` when the API did not answer.
    pub(crate) state: Option<String>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) budget_balance: Option<f64>,
    pub(crate) bulkhead_in_use: Option<u64>,
    /// The bank's chaos preset at that moment.
    pub(crate) bank_preset: Option<String>,
    /// Increase of each API counter since the previous sample, plus `requests` (their sum over
    /// [`REQUEST_OUTCOMES`]). Empty for the first sample and after an unanswered poll.
    pub(crate) counts: BTreeMap<String, u64>,
    /// Each bank, by name (as the page names it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) banks: BTreeMap<String, BankSample>,
}

/// One bank's point of the charts.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub(crate) struct BankSample {
    /// Its breaker state, or `None` when the API did not say.
    pub(crate) state: Option<String>,
    pub(crate) failure_rate: Option<f64>,
    /// Its share of the API's bank attempts.
    pub(crate) share: Option<f64>,
    /// Its chaos preset, or `None` when the bank did not answer (or has no preset).
    pub(crate) preset: Option<String>,
    /// Increase of each cascade counter since the previous poll: the reasons of `cascades` and
    /// `cascaded_away` (every cascade away from this bank). `None` without a baseline (the first
    /// poll, after a gap, or an API restart), so a rate never counts a total as an increase.
    pub(crate) cascades: Option<BTreeMap<String, u64>>,
}

/// One bank as polled: its entry in the API's `/v1/status` `banks`, and its chaos.
#[derive(Debug, Clone, Default)]
pub(crate) struct BankPoll {
    pub(crate) name: String,
    pub(crate) api: Option<Value>,
    pub(crate) chaos: Option<Value>,
}

/// Cascades away from one bank per minute, in all and by reason, over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct CascadeRate {
    /// Every cascade away from the bank, per minute.
    pub(crate) per_minute: f64,
    /// Per reason (`breaker_open`, `bank_refused`, ...), per minute; only reasons that occurred.
    pub(crate) by_reason: BTreeMap<String, f64>,
    /// How much time the rate covers (less than the window until enough polls were made).
    pub(crate) over_ms: u64,
}

/// The bounded ring of samples.
#[derive(Debug, Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    next_seq: u64,
    /// The previous poll's instance and counters, to turn totals into increases.
    previous: Option<(String, BTreeMap<String, u64>)>,
    /// The previous poll's instance and each bank's cascade counters.
    previous_cascades: Option<(String, CascadeTotals)>,
}

impl History {
    /// Records one poll: `api` is the API's `/v1/status` (or `None` if it did not answer), `bank`
    /// the first bank's `/v1/chaos` or `/v1/status` (either has a `preset`), `banks` every bank.
    pub(crate) fn record(
        &self,
        t_ms: u64,
        api: Option<&Value>,
        bank: Option<&Value>,
        banks: &[BankPoll],
    ) {
        let mut inner = self.inner.lock().expect("history lock");
        let dt_ms = inner
            .samples
            .back()
            .map_or(1000, |last| t_ms.saturating_sub(last.t_ms).max(1));
        let counters = api.map(counters);
        let instance = api.and_then(|s| s["instance_id"].as_str()).unwrap_or("");
        let counts = match (&inner.previous, &counters) {
            // Same process as last time: the increase. A restart starts again from zero.
            (Some((previous_instance, previous)), Some(now)) if previous_instance == instance => {
                increases(previous, now)
            }
            (Some(_), Some(now)) => increases(&BTreeMap::new(), now),
            _ => BTreeMap::new(),
        };
        inner.previous = counters.map(|c| (instance.to_owned(), c));
        let bank_samples = bank_samples(&mut inner, api.is_some().then_some(instance), banks);
        let f = |v: &Value| v.as_f64();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let sample = Sample {
            seq,
            t_ms,
            dt_ms,
            state: api.and_then(|s| s["breaker"]["state"].as_str().map(str::to_owned)),
            failure_rate: api.and_then(|s| f(&s["breaker"]["failure_rate"])),
            slow_call_rate: api.and_then(|s| f(&s["breaker"]["slow_call_rate"])),
            p50_ms: api.and_then(|s| f(&s["latency"]["p50_ms"])),
            p90_ms: api.and_then(|s| f(&s["latency"]["p90_ms"])),
            p99_ms: api.and_then(|s| f(&s["latency"]["p99_ms"])),
            budget_balance: api.and_then(|s| f(&s["retry_budget"]["balance"])),
            bulkhead_in_use: api.and_then(|s| s["bulkhead"]["in_use"].as_u64()),
            bank_preset: bank.and_then(|b| preset(b).map(str::to_owned)),
            counts,
            banks: bank_samples,
        };
        if inner.samples.len() == CAPACITY {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
    }

    /// The samples after `seq` (all of them for `None`), oldest first.
    pub(crate) fn after(&self, seq: Option<u64>) -> Vec<Sample> {
        let inner = self.inner.lock().expect("history lock");
        inner
            .samples
            .iter()
            .filter(|s| seq.is_none_or(|after| s.seq > after))
            .cloned()
            .collect()
    }

    /// The newest sample's `seq`, if any.
    pub(crate) fn latest_seq(&self) -> Option<u64> {
        let inner = self.inner.lock().expect("history lock");
        inner.samples.back().map(|s| s.seq)
    }

    /// The sum of each counter's increase over the samples of the last `window_ms` before
    /// `now_ms`: the rolling counts of the page's counter panel.
    pub(crate) fn rolling(&self, now_ms: u64, window_ms: u64) -> BTreeMap<String, u64> {
        let inner = self.inner.lock().expect("history lock");
        let mut sums = BTreeMap::new();
        for sample in inner
            .samples
            .iter()
            .rev()
            .take_while(|s| s.t_ms + window_ms > now_ms)
        {
            for (name, n) in &sample.counts {
                *sums.entry(name.clone()).or_insert(0) += n;
            }
        }
        sums
    }

    /// Cascades per minute for each bank over the samples of the last `window_ms` before
    /// `now_ms` that had a baseline; a bank without such a sample has no rate.
    pub(crate) fn cascade_rates(
        &self,
        now_ms: u64,
        window_ms: u64,
    ) -> BTreeMap<String, CascadeRate> {
        let inner = self.inner.lock().expect("history lock");
        // Per bank: the covered time and each counter's sum.
        let mut sums: BTreeMap<&str, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
        for sample in inner
            .samples
            .iter()
            .rev()
            .take_while(|s| s.t_ms + window_ms > now_ms)
        {
            for (name, bank) in &sample.banks {
                let Some(cascades) = &bank.cascades else {
                    continue;
                };
                let (over_ms, counts) = sums.entry(name).or_default();
                *over_ms += sample.dt_ms;
                for (reason, n) in cascades {
                    *counts.entry(reason).or_default() += n;
                }
            }
        }
        sums.into_iter()
            .filter(|(_, (over_ms, _))| *over_ms > 0)
            .map(|(name, (over_ms, counts))| {
                let per_minute = |n: u64| n as f64 * 60_000.0 / over_ms as f64;
                let by_reason: BTreeMap<String, f64> = counts
                    .iter()
                    .filter(|(reason, n)| **reason != CASCADED_AWAY && **n > 0)
                    .map(|(reason, n)| ((*reason).to_owned(), per_minute(*n)))
                    .collect();
                // The API's own total when it has one; an API that reports only reasons, the
                // sum of them.
                let total = counts.get(CASCADED_AWAY).copied().unwrap_or_else(|| {
                    counts
                        .iter()
                        .filter(|(reason, _)| **reason != CASCADED_AWAY)
                        .map(|(_, n)| n)
                        .sum()
                });
                (
                    name.to_owned(),
                    CascadeRate {
                        per_minute: per_minute(total),
                        by_reason,
                        over_ms,
                    },
                )
            })
            .collect()
    }
}

/// Each bank's cumulative cascade counters, by bank name then counter.
type CascadeTotals = BTreeMap<String, BTreeMap<String, u64>>;

/// The key of a bank's cascade total among its reasons.
const CASCADED_AWAY: &str = "cascaded_away";

/// Each bank's sample, turning its cascade totals into increases since the previous poll of the
/// same API `instance` (`None`: the API did not answer, so no bank has a baseline next time).
fn bank_samples(
    inner: &mut Inner,
    instance: Option<&str>,
    banks: &[BankPoll],
) -> BTreeMap<String, BankSample> {
    let totals: CascadeTotals = banks
        .iter()
        .filter_map(|b| {
            b.api
                .as_ref()
                .map(|api| (b.name.clone(), cascade_totals(api)))
        })
        .collect();
    let previous = match (&inner.previous_cascades, instance) {
        (Some((was, previous)), Some(now)) if was == now => Some(previous),
        _ => None,
    };
    let samples = banks
        .iter()
        .map(|b| {
            let api = b.api.as_ref();
            let cascades = match (previous.and_then(|p| p.get(&b.name)), totals.get(&b.name)) {
                (Some(before), Some(now)) => Some(
                    now.iter()
                        .map(|(k, n)| {
                            let was = before.get(k).copied().unwrap_or(0);
                            (k.clone(), n.saturating_sub(was))
                        })
                        .collect(),
                ),
                _ => None,
            };
            let sample = BankSample {
                state: api.and_then(|a| {
                    a["breaker_state"]
                        .as_str()
                        .or_else(|| a["breaker"]["state"].as_str())
                        .map(str::to_owned)
                }),
                failure_rate: api.and_then(|a| a["breaker"]["failure_rate"].as_f64()),
                share: api.and_then(|a| a["share"].as_f64()),
                preset: b.chaos.as_ref().and_then(|c| preset(c).map(str::to_owned)),
                cascades,
            };
            (b.name.clone(), sample)
        })
        .collect();
    inner.previous_cascades = instance.map(|i| (i.to_owned(), totals));
    samples
}

/// A bank entry's cumulative cascade counters: each reason of `cascades`, and `cascaded_away`.
fn cascade_totals(bank: &Value) -> BTreeMap<String, u64> {
    let mut totals: BTreeMap<String, u64> = bank["cascades"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(n) = bank[CASCADED_AWAY].as_u64() {
        totals.insert(CASCADED_AWAY.to_owned(), n);
    }
    totals
}

/// The chaos preset in a bank answer: `/v1/chaos` has it at the top, `/v1/status` under `chaos`.
pub(crate) fn preset(bank: &Value) -> Option<&str> {
    bank["preset"]
        .as_str()
        .or_else(|| bank["chaos"]["preset"].as_str())
}

/// Every numeric counter of an API status.
fn counters(status: &Value) -> BTreeMap<String, u64> {
    status["counters"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

fn increases(
    previous: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = now
        .iter()
        .map(|(k, n)| {
            let before = previous.get(k).copied().unwrap_or(0);
            (k.clone(), n.saturating_sub(before))
        })
        .collect();
    let requests = REQUEST_OUTCOMES
        .iter()
        .filter_map(|k| out.get(*k))
        .sum::<u64>();
    out.insert("requests".to_owned(), requests);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(instance: &str, succeeded: u64, rejected: u64) -> Value {
        json!({
            "instance_id": instance,
            "breaker": {"state": "closed", "failure_rate": 0.25, "slow_call_rate": null},
            "latency": {"p50_ms": 12.0, "p90_ms": 40.0, "p99_ms": 90.0},
            "retry_budget": {"balance": 10.0},
            "bulkhead": {"in_use": 3},
            "counters": {"succeeded": succeeded, "rejected_breaker": rejected, "bank_attempts": succeeded},
        })
    }

    #[test]
    fn a_sample_holds_the_increase_of_each_counter_and_the_request_total() {
        let history = History::default();
        history.record(
            1_000,
            Some(&status("a", 5, 0)),
            Some(&json!({"preset": "healthy"})),
            &[],
        );
        history.record(2_000, Some(&status("a", 8, 2)), None, &[]);
        let samples = history.after(None);
        assert_eq!(samples.len(), 2);
        assert!(
            samples[0].counts.is_empty(),
            "no increase without a previous poll"
        );
        let second = &samples[1];
        assert_eq!(second.counts["succeeded"], 3);
        assert_eq!(second.counts["rejected_breaker"], 2);
        assert_eq!(
            second.counts["requests"], 5,
            "bank_attempts is not a request"
        );
        assert_eq!(second.dt_ms, 1_000);
        assert_eq!(second.state.as_deref(), Some("closed"));
        assert_eq!(second.failure_rate, Some(0.25));
        assert_eq!(second.slow_call_rate, None);
        assert_eq!(samples[0].bank_preset.as_deref(), Some("healthy"));
    }

    #[test]
    fn an_api_restart_counts_from_zero_instead_of_going_negative() {
        let history = History::default();
        history.record(1_000, Some(&status("a", 100, 0)), None, &[]);
        history.record(2_000, Some(&status("b", 4, 0)), None, &[]);
        assert_eq!(history.after(None)[1].counts["succeeded"], 4);
    }

    #[test]
    fn an_unanswered_poll_is_a_gap_not_a_zero() {
        let history = History::default();
        history.record(1_000, Some(&status("a", 1, 0)), None, &[]);
        history.record(2_000, None, None, &[]);
        history.record(3_000, Some(&status("a", 9, 0)), None, &[]);
        let samples = history.after(None);
        assert_eq!(samples[1].state, None);
        assert!(
            samples[2].counts.is_empty(),
            "no baseline right after a gap"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_ten_minutes_and_pages_by_seq() {
        let history = History::default();
        for i in 0..(CAPACITY as u64 + 50) {
            history.record(i * 1000, Some(&status("a", i, 0)), None, &[]);
        }
        let all = history.after(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 50);
        let newer = history.after(Some(CAPACITY as u64 + 47));
        assert_eq!(
            newer.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![CAPACITY as u64 + 48, CAPACITY as u64 + 49]
        );
    }

    #[test]
    fn rolling_counts_sum_the_samples_inside_the_window() {
        let history = History::default();
        for (i, succeeded) in [0, 1, 3, 6, 10].into_iter().enumerate() {
            history.record(i as u64 * 1000, Some(&status("a", succeeded, 0)), None, &[]);
        }
        // Samples at 2 s, 3 s, 4 s are inside (1.5 s, 4 s]: 2 + 3 + 4.
        assert_eq!(history.rolling(4_000, 2_500)["succeeded"], 9);
        assert_eq!(history.rolling(4_000, 60_000)["succeeded"], 10);
    }

    /// An API status with bank `a`'s cascade counters.
    fn with_cascades(instance: &str, away: u64, refused: u64, open: u64) -> (Value, BankPoll) {
        let entry = json!({
            "name": "a", "breaker_state": "open", "breaker": {"failure_rate": 1.0},
            "share": 0.25, "cascaded_away": away,
            "cascades": {"bank_refused": refused, "breaker_open": open, "decline": 0},
        });
        let status = json!({"instance_id": instance, "counters": {}, "banks": [entry.clone()]});
        let poll = BankPoll {
            name: "a".into(),
            api: Some(entry),
            chaos: Some(json!({"preset": "down"})),
        };
        (status, poll)
    }

    #[test]
    fn cascades_per_minute_come_from_successive_polls_of_the_cumulative_counters() {
        let history = History::default();
        for (i, (away, refused, open)) in [(10, 10, 0), (16, 14, 2), (22, 14, 8)]
            .into_iter()
            .enumerate()
        {
            let (status, poll) = with_cascades("api-1", away, refused, open);
            history.record(1_000 * (i as u64 + 1), Some(&status), None, &[poll]);
        }
        let samples = history.after(None);
        assert_eq!(samples[0].banks["a"].cascades, None, "no baseline yet");
        assert_eq!(
            samples[1].banks["a"].cascades.as_ref().unwrap()["cascaded_away"],
            6
        );
        assert_eq!(samples[2].banks["a"].state.as_deref(), Some("open"));
        assert_eq!(samples[2].banks["a"].preset.as_deref(), Some("down"));
        assert_eq!(samples[2].banks["a"].share, Some(0.25));
        // 12 cascades over the 2 s with a baseline: 360 a minute; 4 + 8 by reason, the
        // reason that did not occur is left out.
        let rate = &history.cascade_rates(3_000, 60_000)["a"];
        assert_eq!(rate.over_ms, 2_000);
        assert_eq!(rate.per_minute, 360.0);
        assert_eq!(rate.by_reason["bank_refused"], 120.0);
        assert_eq!(rate.by_reason["breaker_open"], 240.0);
        assert!(!rate.by_reason.contains_key("decline"));
        assert!(!rate.by_reason.contains_key("cascaded_away"));
    }

    #[test]
    fn an_api_restart_or_gap_gives_no_cascade_baseline_and_an_old_api_only_a_total() {
        let history = History::default();
        let (status, poll) = with_cascades("api-1", 50, 50, 0);
        history.record(1_000, Some(&status), None, &[poll]);
        // A restart: the new process counts from 0; its 3 are not "3 - 50".
        let (status, poll) = with_cascades("api-2", 3, 3, 0);
        history.record(2_000, Some(&status), None, &[poll]);
        assert_eq!(history.after(None)[1].banks["a"].cascades, None);
        // The API unanswered: no baseline after it either.
        history.record(
            3_000,
            None,
            None,
            &[BankPoll {
                name: "a".into(),
                ..BankPoll::default()
            }],
        );
        let (status, poll) = with_cascades("api-2", 5, 5, 0);
        history.record(4_000, Some(&status), None, &[poll]);
        assert_eq!(history.after(None)[3].banks["a"].cascades, None);
        assert!(history.cascade_rates(4_000, 60_000).is_empty());
        // An API without `cascades` (only the total): a rate without reasons.
        let old = |away: u64| {
            let entry = json!({"name": "a", "cascaded_away": away});
            (
                json!({"instance_id": "api-2", "banks": [entry.clone()]}),
                BankPoll {
                    name: "a".into(),
                    api: Some(entry),
                    chaos: None,
                },
            )
        };
        let (s, p) = old(5);
        history.record(5_000, Some(&s), None, &[p]);
        let (s, p) = old(7);
        history.record(6_000, Some(&s), None, &[p]);
        // 0 then 2 over the two polls with a baseline (5 s and 6 s): 60 a minute.
        let rate = &history.cascade_rates(6_000, 60_000)["a"];
        assert_eq!(rate.per_minute, 60.0);
        assert!(rate.by_reason.is_empty());
    }
}
