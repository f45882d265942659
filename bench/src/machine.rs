//! How quiet the machine was: `/proc/loadavg`, and the share of CPU time stolen by the
//! hypervisor (`steal`) and spent waiting for I/O (`iowait`), from deltas of the `cpu` line of
//! `/proc/stat`. Figures taken on a busy or oversubscribed machine say so here.

use serde::Serialize;

/// The first load average fields of `/proc/loadavg` (empty if unreadable).
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Cumulative ticks of all CPUs from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTicks {
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is already in
    /// user and nice).
    total: u64,
    iowait: u64,
    steal: u64,
}

/// Shares of all CPUs' time over an interval, in percent.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Quietness {
    pub(crate) steal_pct: f64,
    pub(crate) iowait_pct: f64,
}

impl CpuTicks {
    pub(crate) fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Some(Self {
            total: (0..8).map(field).sum(),
            iowait: field(4),
            steal: field(7),
        })
    }

    /// The shares from `before` to `self`.
    pub(crate) fn since(self, before: Self) -> Option<Quietness> {
        let total = self.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
        Some(Quietness {
            steal_pct: self.steal.saturating_sub(before.steal) as f64 * 100.0 / total,
            iowait_pct: self.iowait.saturating_sub(before.iowait) as f64 * 100.0 / total,
        })
    }
}
