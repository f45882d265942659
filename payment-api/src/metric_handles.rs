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

/// A counter and a histogram of one label combination.
type Pair = (Counter, Histogram);

/// Label combinations kept per metric family, at most.
const MAX_KEPT: usize = 4096;

/// The handles of one metric family by label values (`K`, often nested maps so that a lookup
/// borrows its labels), and how many combinations are kept.
struct Kept<K> {
    map: RwLock<(usize, K)>,
}

impl<K> Kept<K> {
    const fn new(empty: K) -> Self {
        Self {
            map: RwLock::new((0, empty)),
        }
    }

    /// The kept handles `find` finds; else `register`'s, which `keep` stores if the recorder
    /// is installed and fewer than [`MAX_KEPT`] combinations are kept.
    fn get<V: Clone>(
        &self,
        find: impl FnOnce(&K) -> Option<V>,
        register: impl FnOnce() -> V,
        keep: impl FnOnce(&mut K, V),
    ) -> V {
        let found = find(&self.map.read().unwrap_or_else(|p| p.into_inner()).1);
        found.unwrap_or_else(|| {
            let handles = register();
            if telemetry::metrics::installed() {
                let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                if map.0 < MAX_KEPT {
                    map.0 += 1;
                    keep(&mut map.1, handles.clone());
                }
            }
            handles
        })
    }
}

/// `http_requests_total` and `http_request_duration_seconds`, by status and method, then
/// route.
static HTTP: Kept<Option<ByStatusMethod>> = Kept::new(None);

type ByStatusMethod = HashMap<(u16, Method), HashMap<String, Pair>>;

/// Records one answered request.
pub(crate) fn record_request(method: &Method, route: &str, status: u16, elapsed: Duration) {
    let (counter, histogram) = HTTP.get(
        |by| {
            by.as_ref()?
                .get(&(status, method.clone()))?
                .get(route)
                .cloned()
        },
        || {
            let labels = [
                ("method", method.as_str().to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ];
            (
                metrics::counter!("http_requests_total", &labels),
                metrics::histogram!("http_request_duration_seconds", &labels),
            )
        },
        |by, handles| {
            by.get_or_insert_with(HashMap::new)
                .entry((status, method.clone()))
                .or_default()
                .insert(route.to_owned(), handles);
        },
    );
    counter.increment(1);
    histogram.record(elapsed.as_secs_f64());
}

/// `store_operation_duration_seconds` by operation (a fixed set of names).
static STORE: Kept<Option<HashMap<&'static str, Histogram>>> = Kept::new(None);

/// Records how long a store operation took.
pub(crate) fn record_store_operation(operation: &'static str, elapsed: Duration) {
    let histogram = STORE.get(
        |by| by.as_ref()?.get(operation).cloned(),
        || metrics::histogram!("store_operation_duration_seconds", "operation" => operation),
        |by, handle| {
            by.get_or_insert_with(HashMap::new)
                .insert(operation, handle);
        },
    );
    histogram.record(elapsed.as_secs_f64());
}

/// `bank_attempts_total` and `bank_attempt_duration_seconds` by bank, then classification.
static BANK: Kept<Option<HashMap<String, HashMap<&'static str, Pair>>>> = Kept::new(None);

/// Records one bank attempt.
pub(crate) fn record_bank_attempt(bank: &str, classification: &'static str, elapsed: Duration) {
    let (counter, histogram) = BANK.get(
        |by| by.as_ref()?.get(bank)?.get(classification).cloned(),
        || {
            (
                metrics::counter!("bank_attempts_total", "bank" => bank.to_owned(), "classification" => classification),
                metrics::histogram!("bank_attempt_duration_seconds", "bank" => bank.to_owned(), "classification" => classification),
            )
        },
        |by, handles| {
            by.get_or_insert_with(HashMap::new)
                .entry(bank.to_owned())
                .or_default()
                .insert(classification, handles);
        },
    );
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
        let kept = HTTP.map.read().unwrap();
        let by = kept.1.as_ref().expect("handles kept once installed");
        assert!(by[&(418, Method::PATCH)].contains_key("/kept-handles-test"));
    }
}
