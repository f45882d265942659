//! The store's hot round trip, on a temporary SQLite file with `synchronous=FULL`: claim a new
//! key, then settle its payment with a stored response, as one payment does.
//! - `sqlite/claim_settle/1`: one writer at a time (every commit pays its own fsync);
//! - `sqlite/claim_settle/32`: 32 payments at once, as 32 connections of the API make them
//!   (group commit lets them share transactions and fsyncs); the time is per batch of 32.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use payment_store::test_support::TempDir;
use payment_store::{ClaimOutcome, NewPayment, Settlement, SqliteStore, Store, StoredResponse};
use uuid::Uuid;

static KEYS: AtomicU64 = AtomicU64::new(0);

fn new_payment() -> NewPayment {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let key = format!("bench-{}", KEYS.fetch_add(1, Ordering::Relaxed));
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

async fn one_payment(store: &dyn Store, response: &StoredResponse) {
    let new = new_payment();
    assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
    let settlement = Settlement::Succeeded {
        charge_id: "ch_bench".to_owned(),
    };
    assert!(store
        .settle(new.id, &settlement, 1, response, Utc::now())
        .await
        .unwrap());
}

fn claim_settle(c: &mut Criterion) {
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
    let mut group = c.benchmark_group("sqlite/claim_settle");
    group.sample_size(20);
    for concurrent in [1u64, 32] {
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
                            tasks.spawn(async move { one_payment(&*store, &response).await });
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

criterion_group!(benches, claim_settle);
criterion_main!(benches);
