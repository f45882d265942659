//! The report: one row per phase (throughput, HDR percentiles, errors, the ratios to the
//! reference phases of the same run, CPU per request of each process), issue 18's targets
//! judged on them, and how quiet the machine was; printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::load::RunResult;
use crate::machine::{self, CpuTicks, Quietness};

/// The ceiling phase (proxy → stub): `vs_ceiling` divides by its req/s.
pub(crate) const CEILING: &str = "two_hop";
/// The minimal durable payment server: `vs_minimal` divides by its req/s.
pub(crate) const MINIMAL: &str = "minimal";
/// The mock bank alone: `vs_bank` divides by its req/s.
pub(crate) const BANK: &str = "bank";

/// Phases with a `vs_ceiling` ratio.
const VS_CEILING: [&str; 4] = [CEILING, MINIMAL, "happy", "postgres"];
/// Phases with a `vs_minimal` ratio.
const VS_MINIMAL: [&str; 2] = ["happy", "postgres"];
/// Phases with a `vs_bank` ratio.
const VS_BANK: [&str; 3] = [BANK, "replay", "breaker_open"];
/// Phases with `p99_vs_ceiling`.
const P99_VS_CEILING: [&str; 3] = [MINIMAL, "happy", "postgres"];

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) connections: usize,
    pub(crate) measure_secs: u64,
    pub(crate) warmup_secs: u64,
    /// Cores the load generator shares with every service.
    pub(crate) cpus: usize,
    /// How quiet the machine was: other work skews absolute figures (and ratios, if it changed
    /// between phases).
    pub(crate) machine: Machine,
    pub(crate) phases: Vec<PhaseReport>,
    /// Phases that could not run, and why.
    pub(crate) skipped: Vec<Skipped>,
    /// Issue 18's targets, judged on this run.
    pub(crate) targets: Vec<Target>,
    /// The (SQLite) payment API's RSS.
    pub(crate) rss_start_bytes: Option<u64>,
    pub(crate) rss_end_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<Memory>,
    /// The SQLite writer's group commit during `happy` (from the API's `/metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) happy_commits: Option<Commits>,
    #[serde(skip)]
    ticks_at_start: Option<CpuTicks>,
}

/// Writes and the transactions (batches) they were committed in, over one phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Commits {
    pub(crate) writes: u64,
    pub(crate) batches: u64,
}

/// The machine during the run.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) loadavg_at_start: String,
    pub(crate) loadavg_at_end: String,
    /// Steal and iowait over the whole run (all CPUs).
    pub(crate) over_the_run: Option<Quietness>,
}

/// One phase's row.
#[derive(Debug, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) phase: &'static str,
    /// The process the phase's requests go to.
    pub(crate) server: &'static str,
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
    /// req/s ÷ the `two_hop` phase's (the ceiling), for `two_hop`, `minimal`, `happy`,
    /// `postgres`.
    pub(crate) vs_ceiling: Option<f64>,
    /// req/s ÷ the `minimal` phase's, for `happy` and `postgres`.
    pub(crate) vs_minimal: Option<f64>,
    /// req/s ÷ the `bank` phase's (the mock bank alone), for `bank`, `replay`, `breaker_open`.
    pub(crate) vs_bank: Option<f64>,
    /// p99 ÷ the `two_hop` phase's p99, for `minimal`, `happy`, `postgres`.
    pub(crate) p99_vs_ceiling: Option<f64>,
    /// CPU time each process used per request during the phase, in microseconds.
    pub(crate) cpu_us_per_request: BTreeMap<&'static str, f64>,
    /// Steal and iowait during the phase.
    pub(crate) machine: Option<Quietness>,
    /// The RSS of the process the requests go to, right after the phase.
    pub(crate) server_rss_bytes: Option<u64>,
}

/// A phase that did not run.
#[derive(Debug, Serialize)]
pub(crate) struct Skipped {
    pub(crate) phase: &'static str,
    pub(crate) reason: String,
}

/// One of issue 18's targets.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) target: &'static str,
    /// `None`: not judged (a phase missing or with errors; see `detail`).
    pub(crate) met: Option<bool>,
    /// The measured ratio, and the bound it is held to.
    pub(crate) value: Option<f64>,
    pub(crate) bound: f64,
    pub(crate) detail: String,
}

/// What one measured phase gives the report.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) phase: &'static str,
    pub(crate) server: &'static str,
    pub(crate) result: RunResult,
    pub(crate) cpu: Vec<(&'static str, Duration)>,
    pub(crate) machine: Option<Quietness>,
    pub(crate) server_rss_bytes: Option<u64>,
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
            machine: Machine {
                loadavg_at_start: machine::loadavg(),
                loadavg_at_end: String::new(),
                over_the_run: None,
            },
            phases: vec![],
            skipped: vec![],
            targets: vec![],
            rss_start_bytes: None,
            rss_end_bytes: None,
            memory: None,
            happy_commits: None,
            ticks_at_start: CpuTicks::now(),
        }
    }

    pub(crate) fn push(&mut self, measured: Measured) {
        let Measured {
            phase,
            server,
            result,
            cpu,
            machine,
            server_rss_bytes,
        } = measured;
        let h = &result.histogram;
        let requests = result.requests.max(1) as f64;
        self.phases.push(PhaseReport {
            phase,
            server,
            requests: result.requests,
            seconds: result.elapsed.as_secs_f64(),
            req_per_sec: result.throughput(),
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
            vs_ceiling: None,
            vs_minimal: None,
            vs_bank: None,
            p99_vs_ceiling: None,
            cpu_us_per_request: cpu
                .into_iter()
                .map(|(name, t)| (name, t.as_secs_f64() * 1e6 / requests))
                .collect(),
            machine,
            server_rss_bytes,
        });
    }

    pub(crate) fn skip(&mut self, phase: &'static str, reason: String) {
        eprintln!("bench: phase {phase} skipped: {reason}");
        self.skipped.push(Skipped { phase, reason });
    }

    fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.phase == name)
    }

    /// After the last phase: the ratios, the targets, the machine at the end.
    pub(crate) fn finish(&mut self) {
        let rate = |name: &str| self.phase(name).map(|p| p.req_per_sec).filter(|r| *r > 0.0);
        let (ceiling, minimal, bank) = (rate(CEILING), rate(MINIMAL), rate(BANK));
        let ceiling_p99 = self.phase(CEILING).map(|p| p.p99_ms).filter(|p| *p > 0.0);
        for p in &mut self.phases {
            let ratio = |of: &[&str], base: Option<f64>| {
                base.filter(|_| of.contains(&p.phase))
                    .map(|b| p.req_per_sec / b)
            };
            p.vs_ceiling = ratio(&VS_CEILING, ceiling);
            p.vs_minimal = ratio(&VS_MINIMAL, minimal);
            p.vs_bank = ratio(&VS_BANK, bank);
            p.p99_vs_ceiling = ceiling_p99
                .filter(|_| P99_VS_CEILING.contains(&p.phase))
                .map(|c| p.p99_ms / c);
        }
        if !self.phases.is_empty() && self.memory.is_none() {
            self.targets = vec![
                self.target(
                    "happy req/s ≥ 0.50 × ceiling (two_hop) req/s",
                    CEILING,
                    0.50,
                    false,
                    |p| p.req_per_sec,
                    "req/s",
                ),
                self.target(
                    "happy req/s ≥ 0.85 × minimal req/s",
                    MINIMAL,
                    0.85,
                    false,
                    |p| p.req_per_sec,
                    "req/s",
                ),
                self.target(
                    "happy p99 ≤ 2 × ceiling (two_hop) p99",
                    CEILING,
                    2.0,
                    true,
                    |p| p.p99_ms,
                    "ms",
                ),
            ];
        }
        self.machine.loadavg_at_end = machine::loadavg();
        self.machine.over_the_run = self
            .ticks_at_start
            .zip(CpuTicks::now())
            .and_then(|(start, end)| end.since(start));
    }

    /// `happy`'s figure ÷ `base`'s, held to `bound` (at most when `upper`, else at least).
    fn target(
        &self,
        target: &'static str,
        base: &str,
        bound: f64,
        upper: bool,
        figure: impl Fn(&PhaseReport) -> f64,
        unit: &str,
    ) -> Target {
        let unjudged = |detail: String| Target {
            target,
            met: None,
            value: None,
            bound,
            detail,
        };
        let (Some(happy), Some(base_phase)) = (self.phase("happy"), self.phase(base)) else {
            return unjudged(format!("not judged: happy or {base} was not measured"));
        };
        let (h, b) = (figure(happy), figure(base_phase));
        if b <= 0.0 {
            return unjudged(format!("not judged: {base} measured 0 {unit}"));
        }
        let value = h / b;
        let met = if upper {
            value <= bound
        } else {
            value >= bound
        };
        let mut detail = format!("happy {h:.1} {unit} = {value:.2} × {base} {b:.1} {unit}");
        let errors: Vec<String> = [happy, base_phase]
            .iter()
            .filter(|p| p.errors > 0)
            .map(|p| format!("{} had {} errors", p.phase, p.errors))
            .collect();
        if !errors.is_empty() {
            detail.push_str(&format!(" (not trusted: {})", errors.join(", ")));
            return Target {
                target,
                met: None,
                value: Some(value),
                bound,
                detail,
            };
        }
        Target {
            target,
            met: Some(met),
            value: Some(value),
            bound,
            detail,
        }
    }

    /// The table, on stdout.
    pub(crate) fn print(&self) {
        println!(
            "\n{} connections, {} s measured after {} s warm-up per phase, {} CPUs shared by the load generator and every service",
            self.connections, self.measure_secs, self.warmup_secs, self.cpus
        );
        println!(
            "{:<13} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7} {:>7} {:>6} {:>7} {:>8}  {:<20} CPU µs/req",
            "phase",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "vs ceil",
            "vs min",
            "vs bank",
            "p99/ceil",
            "errors (statuses)",
        );
        let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
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
                "{:<13} {:>8} {:>8.0} {:>7.2} {:>7.2} {:>8.2} {:>7.1} {:>7} {:>6} {:>7} {:>8}  {:<20} {}",
                p.phase,
                p.requests,
                p.req_per_sec,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms,
                ratio(p.vs_ceiling),
                ratio(p.vs_minimal),
                ratio(p.vs_bank),
                ratio(p.p99_vs_ceiling),
                format!("{} ({statuses})", p.errors),
                cpu,
            );
            if p.transport_errors > 0 {
                println!("{:<13} {} transport errors", "", p.transport_errors);
            }
        }
        for s in &self.skipped {
            println!("{:<13} skipped: {}", s.phase, s.reason);
        }
        if !self.targets.is_empty() {
            println!("\nissue 18 targets (this run):");
            for t in &self.targets {
                let verdict = match t.met {
                    Some(true) => "met",
                    Some(false) => "missed",
                    None => "?",
                };
                println!("  {:<6} {:<47} {}", verdict, t.target, t.detail);
            }
        }
        let quiet = |q: &Option<Quietness>| {
            q.map_or("?".to_owned(), |q| {
                format!("steal {:.1}%, iowait {:.1}%", q.steal_pct, q.iowait_pct)
            })
        };
        println!(
            "\nmachine: load average {} at start, {} at the end; over the run {}",
            self.machine.loadavg_at_start,
            self.machine.loadavg_at_end,
            quiet(&self.machine.over_the_run)
        );
        let phases = self
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase, quiet(&p.machine)))
            .collect::<Vec<_>>()
            .join("; ");
        println!("  per phase: {phases}");
        if let Some(c) = self.happy_commits {
            println!(
                "happy: the SQLite writer committed {} writes in {} transactions ({:.1} writes per commit)",
                c.writes,
                c.batches,
                c.writes as f64 / c.batches.max(1) as f64
            );
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
