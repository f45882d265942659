//! The chaos verifier, CI-sized: `run chaos` starts its own system, sends a few hundred payments
//! while the bank goes through every preset and the API is SIGKILLed twice, and its audit of the
//! API against the bank's ledger finds no violation of DESIGN.md §6 invariants 1–5.

use std::time::{Duration, Instant};

use e2e::{binary, wait_exit, Process};

#[test]
fn a_ci_sized_chaos_run_with_two_api_kills_reports_zero_violations() {
    let started = Instant::now();
    let run = Process::start(
        "run chaos",
        &binary("run"),
        &[
            "chaos",
            "--scenario",
            "everything",
            "--duration",
            "20s",
            "--rate",
            "20",
            "--kills",
            "2",
            "--seed",
            "20240901",
            "--give-up-after",
            "20s",
            "--settle-timeout",
            "40s",
        ],
        &[],
    );
    let mut run = run;
    let lines = run.read_until(Duration::from_secs(150), |l| {
        l.starts_with("chaos result:") || l.starts_with("run: error")
    });
    let output = lines.join("\n");
    let status = wait_exit(&mut run.child, Duration::from_secs(30)).expect("run chaos exits");
    let result = lines.last().unwrap();
    assert!(result.starts_with("chaos result:"), "no report:\n{output}");
    assert!(result.ends_with(" 0 violations"), "{result}\n{output}");
    assert!(result.contains(" 2 kills"), "{result}\n{output}");
    for invariant in 1..=5 {
        assert!(
            output.contains(&format!("[ok  ] invariant {invariant}:")),
            "invariant {invariant} not reported clean:\n{output}"
        );
    }
    let offered: u64 = result
        .split(", ")
        .find_map(|part| part.strip_suffix(" payments offered")?.parse().ok())
        .expect("payments offered in the result line");
    assert!(offered >= 300, "only {offered} payments: {result}");
    assert!(status.success(), "exit status {status}:\n{output}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
