//! The report: one row per phase (throughput, HDR percentiles, errors, ratio to the bank-alone
//! baseline, CPU per request of each process), printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::load::RunResult;
use crate::services::Service;

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) connections: usize,
    pub(crate) measure_secs: u64,
    pub(crate) warmup_secs: u64,
    /// Cores the load generator shares with both services.
    pub(crate) cpus: usize,
    /// `/proc/loadavg` when the run started: other work on the machine skews absolute figures.
    pub(crate) loadavg_at_start: String,
    pub(crate) phases: Vec<PhaseReport>,
    pub(crate) rss_start_bytes: Option<u64>,
    pub(crate) rss_end_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<Memory>,
}

/// One phase's row.
#[derive(Debug, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) phase: &'static str,
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    pub(crate) req_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
    /// Unexpected answers plus transport errors; the phase's numbers are not trusted above 0.
    pub(crate) errors: u64,
    pub(crate) unexpected: u64,
    pub(crate) transport_errors: u64,
    /// Every status seen in the measured window.
    pub(crate) statuses: BTreeMap<String, u64>,
    /// Throughput relative to the `bank` phase of the same run.
    pub(crate) ratio_to_baseline: Option<f64>,
    /// CPU time each process used per request during the phase, in microseconds.
    pub(crate) cpu_us_per_request: BTreeMap<&'static str, f64>,
    /// The API's RSS right after the phase.
    pub(crate) api_rss_bytes: Option<u64>,
}

/// The memory test's RSS curve.
#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    pub(crate) target_payments: u64,
    pub(crate) samples: Vec<MemorySample>,
}

/// One RSS sample of the API during the memory test.
#[derive(Debug, Serialize)]
pub(crate) struct MemorySample {
    pub(crate) seconds: f64,
    pub(crate) payments: u64,
    pub(crate) rss_bytes: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    pub(crate) fn new(connections: usize, measure_secs: u64, warmup_secs: u64) -> Self {
        Self {
            connections,
            measure_secs,
            warmup_secs,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            phases: vec![],
            rss_start_bytes: None,
            rss_end_bytes: None,
            memory: None,
        }
    }

    pub(crate) fn push(
        &mut self,
        (phase, result, cpu): (&'static str, RunResult, Vec<(&'static str, Duration)>),
        services: &[&Service],
    ) {
        let h = &result.histogram;
        let baseline = self
            .phases
            .iter()
            .find(|p| p.phase == "bank")
            .map(|p| p.req_per_sec);
        let req_per_sec = result.throughput();
        let requests = result.requests.max(1) as f64;
        self.phases.push(PhaseReport {
            phase,
            requests: result.requests,
            seconds: result.elapsed.as_secs_f64(),
            req_per_sec,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
            errors: result.errors(),
            unexpected: result.unexpected,
            transport_errors: result.transport_errors,
            statuses: result
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            ratio_to_baseline: match phase {
                "bank" => Some(1.0),
                _ => baseline.map(|b| req_per_sec / b),
            },
            cpu_us_per_request: cpu
                .into_iter()
                .map(|(name, t)| (name, t.as_secs_f64() * 1e6 / requests))
                .collect(),
            api_rss_bytes: services
                .iter()
                .find(|s| s.name == "payment-api")
                .and_then(|s| s.rss_bytes()),
        });
    }

    /// The table, on stdout.
    pub(crate) fn print(&self) {
        println!(
            "\n{} connections, {} s measured after {} s warm-up per phase, {} CPUs shared by the load generator and both services; load average at start {}",
            self.connections, self.measure_secs, self.warmup_secs, self.cpus, self.loadavg_at_start
        );
        println!(
            "{:<13} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}  {:<22} CPU µs/req",
            "phase",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "ratio",
            "errors (statuses)",
        );
        for p in &self.phases {
            let statuses = p
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let cpu = p
                .cpu_us_per_request
                .iter()
                .map(|(name, us)| format!("{name} {us:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "{:<13} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>7}  {:<22} {}",
                p.phase,
                p.requests,
                p.req_per_sec,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms,
                p.ratio_to_baseline
                    .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
                format!("{} ({statuses})", p.errors),
                cpu,
            );
            if p.transport_errors > 0 {
                println!("{:<13} {} transport errors", "", p.transport_errors);
            }
        }
        let mb = |b: Option<u64>| b.map_or("?".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
        println!(
            "payment-api RSS: {} at start, {} at the end",
            mb(self.rss_start_bytes),
            mb(self.rss_end_bytes)
        );
        if let Some(memory) = &self.memory {
            let reached = memory.samples.last().map_or(0, |s| s.payments);
            println!(
                "memory test: {reached} of {} payments; RSS samples (payments → MB):",
                memory.target_payments
            );
            for s in &memory.samples {
                println!(
                    "  {:>8.0} s {:>9} → {:.1}",
                    s.seconds,
                    s.payments,
                    s.rss_bytes as f64 / 1e6
                );
            }
        }
    }
}
