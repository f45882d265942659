//! In-process counters and recent latencies for `/v1/status`: what the dashboard draws.
//!
//! Counters are plain atomics; latencies live in a fixed ring of the most recent samples, so
//! memory stays bounded however long the process runs.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use serde::Serialize;

/// Records how long a store operation took (`store_operation_duration_seconds{operation}`).
pub(crate) fn record_store_latency(operation: &'static str, elapsed: std::time::Duration) {
    crate::metric_handles::record_store_operation(operation, elapsed);
}

/// Runs a store operation and records its latency.
pub(crate) async fn timed<T>(
    operation: &'static str,
    op: impl std::future::Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let out = op.await;
    record_store_latency(operation, started.elapsed());
    out
}

/// Outcomes of `POST /v1/payments` and of the reconciler.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) succeeded: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) rejected_breaker: AtomicU64,
    pub(crate) rejected_bulkhead: AtomicU64,
    pub(crate) bank_unavailable: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) in_flight_conflicts: AtomicU64,
    pub(crate) key_mismatches: AtomicU64,
    pub(crate) store_unavailable: AtomicU64,
    pub(crate) bank_attempts: AtomicU64,
    pub(crate) bank_retries: AtomicU64,
    pub(crate) bank_timeouts: AtomicU64,
    pub(crate) bank_errors: AtomicU64,
    pub(crate) reconciled: AtomicU64,
    pub(crate) reconcile_resent: AtomicU64,
    /// Request handlers that found their lease taken over when they came to release a key.
    pub(crate) lease_lost: AtomicU64,
    /// Requests refused at the edge, before any work: over a key's rate limit (429), shed
    /// because too many were in progress (503), or cut by the request timeout (408).
    pub(crate) rate_limited: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct CountersSnapshot {
    pub(crate) succeeded: u64,
    pub(crate) declined: u64,
    pub(crate) pending: u64,
    pub(crate) failed: u64,
    pub(crate) rejected_breaker: u64,
    pub(crate) rejected_bulkhead: u64,
    pub(crate) bank_unavailable: u64,
    pub(crate) replayed: u64,
    pub(crate) in_flight_conflicts: u64,
    pub(crate) key_mismatches: u64,
    pub(crate) store_unavailable: u64,
    pub(crate) bank_attempts: u64,
    pub(crate) bank_retries: u64,
    pub(crate) bank_timeouts: u64,
    pub(crate) bank_errors: u64,
    pub(crate) reconciled: u64,
    pub(crate) reconcile_resent: u64,
    pub(crate) lease_lost: u64,
    pub(crate) rate_limited: u64,
    pub(crate) shed: u64,
    pub(crate) timed_out: u64,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            succeeded: get(&self.succeeded),
            declined: get(&self.declined),
            pending: get(&self.pending),
            failed: get(&self.failed),
            rejected_breaker: get(&self.rejected_breaker),
            rejected_bulkhead: get(&self.rejected_bulkhead),
            bank_unavailable: get(&self.bank_unavailable),
            replayed: get(&self.replayed),
            in_flight_conflicts: get(&self.in_flight_conflicts),
            key_mismatches: get(&self.key_mismatches),
            store_unavailable: get(&self.store_unavailable),
            bank_attempts: get(&self.bank_attempts),
            bank_retries: get(&self.bank_retries),
            bank_timeouts: get(&self.bank_timeouts),
            bank_errors: get(&self.bank_errors),
            reconciled: get(&self.reconciled),
            reconcile_resent: get(&self.reconcile_resent),
            lease_lost: get(&self.lease_lost),
            rate_limited: get(&self.rate_limited),
            shed: get(&self.shed),
            timed_out: get(&self.timed_out),
        }
    }
}

/// The most recent latencies (microseconds) in a fixed ring.
#[derive(Debug)]
pub(crate) struct Latencies {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    samples: Vec<u64>,
    next: usize,
    total: u64,
}

/// Percentiles over the samples in the ring.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LatencySummary {
    /// Samples the percentiles are computed over (at most the ring's size).
    pub(crate) samples: usize,
    /// Samples ever recorded.
    pub(crate) total: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latencies {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring {
                samples: Vec::with_capacity(capacity),
                next: 0,
                total: 0,
            }),
        }
    }

    pub(crate) fn record(&self, elapsed: std::time::Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = ring.samples.capacity();
        if ring.samples.len() < capacity {
            ring.samples.push(micros);
        } else {
            let at = ring.next;
            ring.samples[at] = micros;
        }
        ring.next = (ring.next + 1) % capacity.max(1);
        ring.total += 1;
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let (mut samples, total) = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            (ring.samples.clone(), ring.total)
        };
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index] as f64 / 1000.0
        };
        LatencySummary {
            samples: samples.len(),
            total,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: samples.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_the_ring() {
        let l = Latencies::new(100);
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!((s.samples, s.total), (100, 100));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }

    #[test]
    fn the_ring_keeps_only_the_newest_samples() {
        let l = Latencies::new(10);
        for ms in 1..=25 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!((s.samples, s.total), (10, 25));
        assert_eq!(s.max_ms, 25.0);
        assert_eq!(s.p50_ms, 20.0);
    }
}
