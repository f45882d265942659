//! The request fingerprint (SHA-256 of method, path and canonical JSON) of a typical payment
//! body, and of one with metadata, as the API computes it for every keyed request: from the
//! parsed body's canonical view (`from_body`), against the same through a `serde_json::Value`
//! built for it (`via_value`, what the API did before) and from a ready `Value`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use payment_store::fingerprint::fingerprint;
use payment_types::payment::CreatePayment;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let plain = json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"});
    let rich = json!({
        "amount": 1999, "currency": "TRY", "source": "tok_visa",
        "description": "order 4242: tea and biscuits",
        "metadata": {"order": "4242", "customer": "c_123", "channel": "web", "coupon": "SPRING"}
    });
    for (name, value) in [("plain", &plain), ("with_metadata", &rich)] {
        let body: CreatePayment = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            fingerprint("POST", "/v1/payments", &body.canonical()),
            fingerprint("POST", "/v1/payments", value)
        );
        c.bench_function(&format!("fingerprint/{name}"), |b| {
            b.iter(|| fingerprint("POST", "/v1/payments", black_box(value)))
        });
        c.bench_function(&format!("fingerprint/{name}/via_value"), |b| {
            b.iter(|| {
                let value = serde_json::to_value(black_box(&body)).unwrap();
                fingerprint("POST", "/v1/payments", &value)
            })
        });
        c.bench_function(&format!("fingerprint/{name}/from_body"), |b| {
            b.iter(|| fingerprint("POST", "/v1/payments", &black_box(&body).canonical()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
