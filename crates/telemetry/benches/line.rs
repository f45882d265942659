//! What one payment's logging costs on the request's thread (issue 18): the request's span
//! with the fields `payment-api` gives it, the fields recorded on it as the payment goes, and
//! the canonical "request finished" line built from them, appended to the log buffer and
//! formatted as JSON. `direct` formats on the calling thread (to an `io::sink`), so the whole
//! cost is measured; `background` hands the record to the writer thread, as the services do.
//!
//! `cargo bench -p telemetry --bench line`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use telemetry::{
    layer::{LineFormat, Output, TelemetryLayer},
    LogBuffer,
};
use tracing_subscriber::{layer::SubscriberExt, EnvFilter};

fn one_payment(seq: u64) {
    let span = tracing::info_span!(
        "request",
        request_id = "6c1f7d7e-3a8b-4f0e-9b7a-2f4b1d9c8e11",
        method = "POST",
        route = "/v1/payments",
        path = "/v1/payments",
        tenant = tracing::field::Empty,
        operator = tracing::field::Empty,
        idempotency_key = tracing::field::Empty,
        payment_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        attempts = tracing::field::Empty,
        bank_ms = tracing::field::Empty,
        breaker_state = tracing::field::Empty,
        bank = tracing::field::Empty,
    );
    let _entered = span.enter();
    span.record("tenant", "bench");
    span.record(
        "idempotency_key",
        tracing::field::display(format_args!("order-{seq}")),
    );
    span.record("payment_id", "01a22fa9-0f5b-744e-84a1-3f8288bfc43a");
    span.record("attempts", 1u32);
    span.record("bank_ms", 1.753);
    span.record("breaker_state", "closed");
    span.record("bank", "bank");
    span.record("outcome", "succeeded");
    tracing::info!(status = 201u16, latency_ms = 12.852, "request finished");
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_line");
    for (name, output) in [
        ("direct", Output::new(LineFormat::Json, std::io::sink())),
        (
            "background",
            Output::background(LineFormat::Json, std::io::sink()),
        ),
    ] {
        let buffer = Arc::new(LogBuffer::new(telemetry::buffer::DEFAULT_CAPACITY));
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(TelemetryLayer::new("bench", buffer, vec![output.clone()]));
        tracing::subscriber::with_default(subscriber, || {
            let mut seq = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    seq += 1;
                    one_payment(seq);
                })
            });
        });
        output.flush(std::time::Duration::from_secs(5));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
