//! The request fingerprint (SHA-256 of method, path and canonical JSON) of a typical payment
//! body, and of one with metadata, as the API computes it for every keyed request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use payment_store::fingerprint::fingerprint;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let plain = json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"});
    let rich = json!({
        "amount": 1999, "currency": "TRY", "source": "tok_visa",
        "description": "order 4242: tea and biscuits",
        "metadata": {"order": "4242", "customer": "c_123", "channel": "web", "coupon": "SPRING"}
    });
    c.bench_function("fingerprint/plain", |b| {
        b.iter(|| fingerprint("POST", "/v1/payments", black_box(&plain)))
    });
    c.bench_function("fingerprint/with_metadata", |b| {
        b.iter(|| fingerprint("POST", "/v1/payments", black_box(&rich)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
