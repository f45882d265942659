//! Handles of the metrics every payment records (HTTP requests, store operations, bank
//! attempts), kept by their label values. Recording through the `metrics` macros builds a key
//! (a vector of labels, owned copies of their values), hashes it and looks it up in the
//! registry, on every call: ~3 µs of CPU per payment in the API's profile
//! (docs/performance.md). A kept handle records with one atomic update.
//!
//! Handles are only kept once the process's recorder is installed
//! ([`telemetry::metrics::installed`]): one taken before would record into nothing forever.
//! Until then, and past [`MAX_KEPT`] label combinations (an unbounded label such as an unknown
//! HTTP method must not grow memory), recording goes through the macros as before.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::http::Method;
use metrics::{Counter, Histogram};

/// Label combinations kept per metric family, at most.
const MAX_KEPT: usize = 4096;

/// A request's counter and latency histogram (`http_requests_total`,
/// `http_request_duration_seconds`), by status, method and route.
type HttpHandles = HashMap<(u16, Method), HashMap<String, (Counter, Histogram)>>;

static HTTP: RwLock<Option<(usize, HttpHandles)>> = RwLock::new(None);

/// Records one answered request.
pub(crate) fn record_request(method: &Method, route: &str, status: u16, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let kept = {
        let http = HTTP.read().unwrap_or_else(|p| p.into_inner());
        http.as_ref()
            .and_then(|(_, by)| by.get(&(status, method.clone()))?.get(route).cloned())
    };
    let (counter, histogram) = match kept {
        Some(handles) => handles,
        None => {
            let labels = [
                ("method", method.as_str().to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ];
            let handles = (
                metrics::counter!("http_requests_total", &labels),
                metrics::histogram!("http_request_duration_seconds", &labels),
            );
            if telemetry::metrics::installed() {
                let mut http = HTTP.write().unwrap_or_else(|p| p.into_inner());
                let (count, by) = http.get_or_insert_with(Default::default);
                if *count < MAX_KEPT {
                    *count += 1;
                    by.entry((status, method.clone()))
                        .or_default()
                        .insert(route.to_owned(), handles.clone());
                }
            }
            handles
        }
    };
    counter.increment(1);
    histogram.record(seconds);
}

/// `store_operation_duration_seconds` by operation (a fixed set of names).
static STORE: RwLock<Option<HashMap<&'static str, Histogram>>> = RwLock::new(None);

/// Records how long a store operation took.
pub(crate) fn record_store_operation(operation: &'static str, elapsed: Duration) {
    let kept = {
        let store = STORE.read().unwrap_or_else(|p| p.into_inner());
        store.as_ref().and_then(|by| by.get(operation).cloned())
    };
    let histogram = kept.unwrap_or_else(|| {
        let histogram =
            metrics::histogram!("store_operation_duration_seconds", "operation" => operation);
        if telemetry::metrics::installed() {
            let mut store = STORE.write().unwrap_or_else(|p| p.into_inner());
            let by = store.get_or_insert_with(Default::default);
            if by.len() < MAX_KEPT {
                by.insert(operation, histogram.clone());
            }
        }
        histogram
    });
    histogram.record(elapsed.as_secs_f64());
}

/// `bank_attempts_total` and `bank_attempt_duration_seconds` by bank and classification.
type BankHandles = HashMap<String, HashMap<&'static str, (Counter, Histogram)>>;

static BANK: RwLock<Option<(usize, BankHandles)>> = RwLock::new(None);

/// Records one bank attempt.
pub(crate) fn record_bank_attempt(bank: &str, classification: &'static str, elapsed: Duration) {
    let kept = {
        let banks = BANK.read().unwrap_or_else(|p| p.into_inner());
        banks
            .as_ref()
            .and_then(|(_, by)| by.get(bank)?.get(classification).cloned())
    };
    let (counter, histogram) = kept.unwrap_or_else(|| {
        let handles = (
            metrics::counter!("bank_attempts_total", "bank" => bank.to_owned(), "classification" => classification),
            metrics::histogram!("bank_attempt_duration_seconds", "bank" => bank.to_owned(), "classification" => classification),
        );
        if telemetry::metrics::installed() {
            let mut banks = BANK.write().unwrap_or_else(|p| p.into_inner());
            let (count, by) = banks.get_or_insert_with(Default::default);
            if *count < MAX_KEPT {
                *count += 1;
                by.entry(bank.to_owned())
                    .or_default()
                    .insert(classification, handles.clone());
            }
        }
        handles
    });
    counter.increment(1);
    histogram.record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().unwrap())
    }

    /// What is recorded through a kept handle is what the registry renders: the first request
    /// of a combination registers its handles, the next ones reuse them, and every one counts.
    #[test]
    fn kept_handles_record_into_the_process_registry() {
        let _ = telemetry::metrics::prometheus();
        for _ in 0..3 {
            record_request(
                &Method::PATCH,
                "/kept-handles-test",
                418,
                Duration::from_millis(2),
            );
            record_store_operation("kept_handles_test", Duration::from_millis(1));
            record_bank_attempt("kept-bank", "timeout", Duration::from_millis(3));
        }
        let text = telemetry::metrics::render();
        assert_eq!(
            sample(
                &text,
                "http_requests_total",
                "method=\"PATCH\",route=\"/kept-handles-test\",status=\"418\""
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "http_request_duration_seconds_count",
                "method=\"PATCH\",route=\"/kept-handles-test\",status=\"418\""
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "store_operation_duration_seconds_count",
                "operation=\"kept_handles_test\""
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "bank_attempts_total",
                "bank=\"kept-bank\",classification=\"timeout\""
            ),
            Some(3.0)
        );
        let kept = HTTP.read().unwrap();
        let (_, by) = kept.as_ref().expect("handles kept once installed");
        assert!(by[&(418, Method::PATCH)].contains_key("/kept-handles-test"));
    }
}
