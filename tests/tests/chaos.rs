//! The chaos verifier, CI-sized: `run chaos` starts its own system, sends a few hundred payments
//! while the bank goes through every preset and the API is SIGKILLed twice, and its audit of the
//! API against the bank's ledger finds no violation of docs/contract.md §6 invariants 1–5 and 7.
//!
//! "0 violations" alone is also what an API that refuses everything would report, so the run
//! must also clear floors: payments answered 201, charges in the ledger, keys audited, and no
//! payment left pending (see [`e2e::chaos::assert_floors`]). The store faults have their own
//! suite, `chaos_store.rs`.

use std::time::{Duration, Instant};

use e2e::chaos::{assert_clean, assert_floors, run_ci_sized};

#[test]
fn a_ci_sized_chaos_run_with_two_api_kills_reports_zero_violations() {
    let started = Instant::now();
    let (status, output, result) = run_ci_sized("20240901", &["--store-faults", "none"]);
    assert_clean(&result, &output, &[1, 2, 3, 4, 5, 7]);
    assert!(result.contains(" 2 kills"), "{result}\n{output}");
    assert!(result.contains(" 0 store faults"), "{result}\n{output}");
    let offered = assert_floors(&result, &output);
    assert!(offered >= 300, "only {offered} payments: {result}");
    assert!(status.success(), "exit status {status}:\n{output}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
