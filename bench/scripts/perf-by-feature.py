#!/usr/bin/env python3
"""Attributes the payment API's CPU samples to its features (docs/performance.md, "Where the
time goes"). Reads `perf script` output of a `perf record --call-graph dwarf` of the API:

    target/release/bench --no-build --payments 300000 --max-secs 20 &
    sleep 7; perf record -F 499 --call-graph dwarf,16384 -p "$(pgrep -f release/payment-api)" \
        -o api.perf -- sleep 8
    perf script -i api.perf | python3 bench/scripts/perf-by-feature.py

Each sample goes to its thread if that thread has one job (the SQLite writer, the log writer),
else to the innermost frame (nearest the leaf) that belongs to a feature: a sample in `sha2`
called from authentication is authentication's, a `writev` under hyper's server dispatch is
the HTTP server's. Samples in the allocator, the scheduler or the kernel with no feature frame
above them before the runtime are "unattributed".
"""
import collections
import re
import sys

RULES = [
    ("logging and tracing (request threads)", r"telemetry::|tracing_subscriber::|tracing_core::|tracing::span::"),
    ("metrics", r"metrics::|metrics_util::|metrics_exporter"),
    ("authentication and rate limit", r"payment_api::auth::|governor::|sha2::|subtle::|payment_api::rate_limit"),
    ("bank call: HTTP client (reqwest, hyper client), TCP", r"reqwest::|dispatch::Client|role::Client|hyper_util::client|payment_api::bank::client"),
    ("store: lookups, hand-off to the writer", r"payment_store::|rusqlite::|sqlite3|tokio::sync::oneshot|tokio::sync::mpsc"),
    ("payment flow (replay cache, responses, breaker, retry loop)", r"payment_api::payments::|resilience::|payment_api::bank::gateway|payment_api::stats"),
    ("request parsing, validation, fingerprint, JSON", r"payment_api::routes::payments|payment_api::domain|payment_types::|serde_json::|serde_path_to_error"),
    ("HTTP server and middleware (hyper, axum, tower-http), TCP", r"dispatch::Server|role::Server|axum::|axum_core::|tower_http::|tower::|hyper::|payment_api::routes|service_runtime::"),
]
THREADS = {
    "sqlite-writer": "SQLite writer thread (claim and settle commits)",
    "log-writer": "log writer thread (formatting, file writes)",
}


def main():
    counts = collections.Counter()
    comm, frames = None, []

    def flush():
        if comm is None:
            return
        if comm in THREADS:
            counts[THREADS[comm]] += 1
            return
        for frame in frames:  # leaf first
            name = frame.split(None, 1)[1] if " " in frame else frame
            for category, pattern in RULES:
                if re.search(pattern, name):
                    counts[category] += 1
                    return
        counts["runtime, scheduling, allocator, kernel (unattributed)"] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line.startswith((" ", "\t")):
            comm = line.split()[0]
        else:
            frames.append(line.strip())
    flush()
    total = sum(counts.values()) or 1
    for category, n in counts.most_common():
        print(f"| {category} | {100 * n / total:.1f}% |")
    print(f"| samples | {total} |")


if __name__ == "__main__":
    main()
