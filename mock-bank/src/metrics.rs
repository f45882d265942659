//! Counters of answers by outcome and of injected faults, read by `/v1/status` and `/metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use dashmap::DashMap;

/// Named monotonic counters. Names are a small fixed vocabulary (see [`crate::error::ApiError`]
/// and [`crate::chaos::Fault`]), so the map stays tiny.
#[derive(Debug, Default)]
pub(crate) struct Counters(DashMap<&'static str, AtomicU64>);

impl Counters {
    pub(crate) fn incr(&self, name: &'static str) {
        if let Some(counter) = self.0.get(name) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.0
            .entry(name)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|e| ((*e.key()).to_owned(), e.value().load(Ordering::Relaxed)))
            .collect()
    }
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub(crate) struct MetricsSnapshot {
    pub(crate) outcomes: BTreeMap<String, u64>,
    pub(crate) faults: BTreeMap<String, u64>,
    pub(crate) chaos_requests: u64,
    pub(crate) ledger_charges: u64,
    pub(crate) in_flight: u64,
    pub(crate) held: u64,
    pub(crate) uptime_s: u64,
}

/// Prometheus text exposition (version 0.0.4).
pub(crate) fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP mock_bank_responses_total Answers by outcome.");
    let _ = writeln!(out, "# TYPE mock_bank_responses_total counter");
    for (outcome, n) in &m.outcomes {
        let _ = writeln!(
            out,
            "mock_bank_responses_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP mock_bank_faults_total Injected faults by kind."
    );
    let _ = writeln!(out, "# TYPE mock_bank_faults_total counter");
    for (fault, n) in &m.faults {
        let _ = writeln!(out, "mock_bank_faults_total{{fault=\"{fault}\"}} {n}");
    }
    let gauges = [
        (
            "mock_bank_chaos_requests_total",
            "counter",
            "Charge requests that got a chaos decision.",
            m.chaos_requests,
        ),
        (
            "mock_bank_ledger_charges",
            "gauge",
            "Charges in the ledger.",
            m.ledger_charges,
        ),
        (
            "mock_bank_in_flight",
            "gauge",
            "Charges claimed and not yet committed.",
            m.in_flight,
        ),
        (
            "mock_bank_held_connections",
            "gauge",
            "Connections held by hangs and withheld answers.",
            m.held,
        ),
        (
            "mock_bank_uptime_seconds",
            "gauge",
            "Seconds since this bank instance started.",
            m.uptime_s,
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_render_as_prometheus_text() {
        let counters = Counters::default();
        counters.incr("created");
        counters.incr("created");
        let snapshot = MetricsSnapshot {
            outcomes: counters.snapshot(),
            faults: BTreeMap::new(),
            chaos_requests: 2,
            ledger_charges: 2,
            in_flight: 0,
            held: 0,
            uptime_s: 1,
        };
        let text = render(&snapshot);
        assert!(
            text.contains("mock_bank_responses_total{outcome=\"created\"} 2"),
            "{text}"
        );
        assert!(text.contains("mock_bank_ledger_charges 2"), "{text}");
    }
}
