//! The store's hot round trip, on a temporary SQLite file with `synchronous=FULL`: claim a new
//! key, then settle its payment with a stored response, as one payment does.
//! - `sqlite/claim_settle/1`: one writer at a time (every commit pays its own fsync);
//! - `sqlite/claim_settle/32`: 32 payments at once, as 32 connections of the API make them
//!   (group commit lets them share transactions and fsyncs); the time is per batch of 32;
//! - `sqlite/claim_settle_random_keys/32`: the same with random (UUID) idempotency keys, as
//!   clients usually send them: each claim inserts into the key index at its own place, where
//!   the keys above are consecutive and land on the same page.
//!
//! `sqlite_cpu/…` are the same round trips measured in **CPU time of the whole process** (every
//! thread: the callers, the runtime, the writer) instead of wall time, per batch: on a machine
//! shared with other work, CPU time per payment moves much less than wall time, and CPU is what
//! bounds the API's happy path (docs/performance.md). Read from `/proc/self/task/*/schedstat`
//! (nanoseconds on a CPU per thread; Linux only, else the group is skipped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use payment_store::test_support::TempDir;
use payment_store::{ClaimOutcome, NewPayment, Settlement, SqliteStore, Store, StoredResponse};
use uuid::Uuid;

static KEYS: AtomicU64 = AtomicU64::new(0);

fn new_payment(random_key: bool) -> NewPayment {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let key = if random_key {
        Uuid::new_v4().to_string()
    } else {
        format!("bench-{}", KEYS.fetch_add(1, Ordering::Relaxed))
    };
    NewPayment {
        id,
        tenant: "bench".to_owned(),
        fingerprint: format!("fp-{key}"),
        idempotency_key: key,
        amount: 1999,
        currency: "TRY".to_owned(),
        source: "tok_visa".to_owned(),
        description: None,
        metadata: None,
        bank_reference: format!("pay_{}", id.simple()),
        bank: "bank-a".to_owned(),
        lease_owner: "bench/owner".to_owned(),
        lease_expires_at: now + chrono::Duration::seconds(15),
        now,
    }
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), "/v1/payments/x".to_owned()),
        ],
        body: vec![b'x'; 420],
    }
}

async fn one_payment(store: &dyn Store, response: &StoredResponse, random_key: bool) {
    let new = new_payment(random_key);
    assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
    let settlement = Settlement::Succeeded {
        charge_id: "ch_bench".to_owned(),
    };
    assert!(store
        .settle(new.id, &settlement, 1, response, Utc::now())
        .await
        .unwrap());
}

/// CPU time used by all the threads of this process, as a criterion measurement.
struct ProcessCpu(WallTime);

impl ProcessCpu {
    /// Nanoseconds on a CPU, summed over the live threads (`None` without `/proc` schedstat).
    /// A thread that exits between the listing and the read is skipped (none of the store's
    /// threads exits while it is open).
    fn now() -> Option<u64> {
        let mut total = 0;
        let mut threads = 0;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
            threads += 1;
        }
        (threads > 0).then_some(total)
    }
}

impl Measurement for ProcessCpu {
    type Intermediate = u64;
    type Value = std::time::Duration;

    fn start(&self) -> u64 {
        Self::now().unwrap_or_default()
    }
    fn end(&self, start: u64) -> std::time::Duration {
        std::time::Duration::from_nanos(Self::now().unwrap_or_default().saturating_sub(start))
    }
    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }
    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }
    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time.
        self.0.formatter()
    }
}

fn claim_settle(c: &mut Criterion) {
    run(c, "sqlite", &[1, 32]);
}

fn claim_settle_cpu(c: &mut Criterion<ProcessCpu>) {
    if ProcessCpu::now().is_none() {
        eprintln!("sqlite_cpu: no /proc/self/task/*/schedstat here; skipped");
        return;
    }
    run(c, "sqlite_cpu", &[32]);
}

/// The round trips of the module docs, timed by `c`'s measurement; `sizes` are the numbers of
/// payments made at once with consecutive keys (random keys: 32 at once only).
fn run<M: Measurement>(c: &mut Criterion<M>, prefix: &str, sizes: &[u64]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("store-bench").unwrap();
    let store: Arc<dyn Store> = Arc::new(
        runtime
            .block_on(SqliteStore::open(&dir.path().join("bench.db")))
            .unwrap(),
    );
    let response = Arc::new(response());
    for (name, random_key, sizes) in [
        ("claim_settle", false, sizes),
        ("claim_settle_random_keys", true, &[32u64][..]),
    ] {
        let mut group = c.benchmark_group(format!("{prefix}/{name}"));
        group.sample_size(20);
        for &concurrent in sizes {
            group.throughput(Throughput::Elements(concurrent));
            group.bench_with_input(
                BenchmarkId::from_parameter(concurrent),
                &concurrent,
                |b, &concurrent| {
                    b.iter(|| {
                        runtime.block_on(async {
                            let mut tasks = tokio::task::JoinSet::new();
                            for _ in 0..concurrent {
                                let store = store.clone();
                                let response = response.clone();
                                tasks.spawn(async move {
                                    one_payment(&*store, &response, random_key).await
                                });
                            }
                            while let Some(done) = tasks.join_next().await {
                                done.unwrap();
                            }
                        })
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, claim_settle);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ProcessCpu(WallTime));
    targets = claim_settle_cpu
}
criterion_main!(benches, cpu);
