//! The process-wide Prometheus recorder: `metrics` macros anywhere in the process feed it, and
//! a service renders it at its own `GET /metrics` (no separate HTTP listener).
//!
//! Histograms use explicit buckets (seconds) so they render as Prometheus histograms, not
//! summaries. A background thread runs the recorder's upkeep every 5 s, which keeps histogram
//! memory bounded even when nobody scrapes.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Buckets of every `*_seconds` histogram: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder's handle, installing the recorder on first use. If another recorder was
/// installed first (it never is in our services), the handle renders an empty registry.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        handle
    })
}

/// Whether [`prometheus`] installed the recorder already. A metric handle taken before that
/// records into nothing forever, so code that keeps handles takes them only once this is true.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    prometheus().render()
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
