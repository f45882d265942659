//! The short memory behind the charts: one sample of the API's status per second, the last ten
//! minutes of them, so a page opened now still draws "over time". Memory is bounded by
//! [`CAPACITY`] samples of a few hundred bytes each.
//!
//! A sample keeps what the charts need: the breaker state and rates, the latency percentiles,
//! the retry budget, and the *increase* of every API counter since the previous sample (so the
//! page draws rates, and an API restart, which zeroes its counters, is not a negative spike).

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
}

impl History {
    /// Records one poll: `api` is the API's `/v1/status` (or `None` if it did not answer), `bank`
    /// the bank's `/v1/chaos` or `/v1/status` (either has a `preset`).
    pub(crate) fn record(&self, t_ms: u64, api: Option<&Value>, bank: Option<&Value>) {
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
        );
        history.record(2_000, Some(&status("a", 8, 2)), None);
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
        history.record(1_000, Some(&status("a", 100, 0)), None);
        history.record(2_000, Some(&status("b", 4, 0)), None);
        assert_eq!(history.after(None)[1].counts["succeeded"], 4);
    }

    #[test]
    fn an_unanswered_poll_is_a_gap_not_a_zero() {
        let history = History::default();
        history.record(1_000, Some(&status("a", 1, 0)), None);
        history.record(2_000, None, None);
        history.record(3_000, Some(&status("a", 9, 0)), None);
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
            history.record(i * 1000, Some(&status("a", i, 0)), None);
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
            history.record(i as u64 * 1000, Some(&status("a", succeeded, 0)), None);
        }
        // Samples at 2 s, 3 s, 4 s are inside (1.5 s, 4 s]: 2 + 3 + 4.
        assert_eq!(history.rolling(4_000, 2_500)["succeeded"], 9);
        assert_eq!(history.rolling(4_000, 60_000)["succeeded"], 10);
    }
}
