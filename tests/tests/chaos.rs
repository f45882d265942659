//! The chaos verifier, CI-sized: `run chaos` starts its own system, sends a few hundred payments
//! while the bank goes through every preset and the API is SIGKILLed twice, and its audit of the
//! API against the bank's ledger finds no violation of docs/contract.md §6 invariants 1–5 and 7.
//!
//! "0 violations" alone is also what an API that refuses everything would report, so the run
//! must also clear floors: payments answered 201, charges in the ledger, keys audited, and no
//! payment left pending (see [`e2e::chaos::assert_floors`]). The store faults have their own
//! suite, `chaos_store.rs`.
//!
//! Over two banks the audit adds invariant 8 (at most one charge per payment across all banks,
//! at the bank the payment names, none at a bank it was never sent to), and `bank-a-down`
//! prints the failover figures of the payments started while `bank-a` was out.
//!
//! Every run also has webhooks on: a receiver that fails and hangs for part of the run is
//! registered for the tenant, and after healing its deliveries are audited (W1: every final
//! payment's final event delivered; W2: every signature verifies; W3: one payload per event id).

use std::time::{Duration, Instant};

use e2e::chaos::{assert_clean, assert_floors, figure, run_chaos, run_ci_sized};

/// The number before `suffix` in the `webhooks:` report line (e.g. `refused 500` in
/// `answered 200 474, refused 500 8, hung 5`).
fn webhook_figure(output: &str, suffix: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with("webhooks: "))
        .unwrap_or_else(|| panic!("no webhooks report:\n{output}"));
    line.trim_start_matches("webhooks: ")
        .split([',', '('])
        .find_map(|part| {
            let part = part.trim().trim_end_matches(')');
            part.strip_suffix(suffix)
                .and_then(|n| n.trim().parse().ok())
                .or_else(|| {
                    part.strip_prefix(suffix)
                        .and_then(|n| n.trim().parse().ok())
                })
        })
        .unwrap_or_else(|| panic!("no `{suffix}` in {line}"))
}

#[test]
fn webhooks_survive_a_failing_and_hanging_receiver_and_two_api_kills() {
    let started = Instant::now();
    let (status, output, result) = run_chaos(
        &[
            "--scenario",
            "crashes",
            "--duration",
            "20s",
            "--rate",
            "20",
            "--kills",
            "2",
            "--seed",
            "20261202",
            "--give-up-after",
            "20s",
            "--settle-timeout",
            "40s",
            "--store-faults",
            "none",
            "--webhooks",
            "on",
        ],
        Duration::from_secs(120),
    );
    assert_clean(&result, &output, &[1, 2, 3, 4, 5, 7]);
    for check in ["W1", "W2", "W3"] {
        assert!(
            output.contains(&format!("[ok  ] {check}: ")),
            "{check} not reported clean:\n{output}"
        );
    }
    assert!(output.contains("webhooks result: 0 violations"), "{output}");
    let schedule = output
        .lines()
        .find(|l| l.starts_with("[chaos] webhook receiver schedule: "))
        .unwrap_or_else(|| panic!("no receiver schedule:\n{output}"));
    assert!(
        schedule.contains(" failing ") && schedule.contains(" hanging "),
        "{schedule}"
    );
    assert!(result.contains(" 2 kills"), "{result}\n{output}");
    assert_floors(&result, &output);
    // Every payment reached a final state and announced it: at least one event each.
    let delivered = figure(&result, " events delivered");
    let payments = figure(&result, " payments");
    assert!(delivered >= payments, "{result}");
    // The receiver refused (or held) some deliveries, and the API delivered them later.
    let refused = webhook_figure(&output, "refused 500") + webhook_figure(&output, "hung");
    assert!(refused > 0, "nothing refused:\n{output}");
    assert!(
        webhook_figure(&output, "events refused or hung then delivered") > 0,
        "{output}"
    );
    assert!(
        webhook_figure(&output, "redeliveries of an event id") > 0,
        "{output}"
    );
    assert!(status.success(), "exit status {status}:\n{output}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

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

#[test]
fn a_two_bank_run_with_alternating_outages_and_kills_keeps_invariant_8() {
    let (status, output, result) = run_chaos(
        &[
            "--scenario",
            "alternating-outages",
            "--duration",
            "20s",
            "--rate",
            "20",
            "--kills",
            "2",
            "--seed",
            "20261130",
            "--give-up-after",
            "20s",
            "--settle-timeout",
            "40s",
            "--store-faults",
            "none",
        ],
        Duration::from_secs(150),
    );
    assert_clean(&result, &output, &[1, 2, 3, 4, 5, 7, 8]);
    assert!(output.contains("[chaos] bank-b schedule:"), "{output}");
    assert!(result.contains(" 2 kills"), "{result}\n{output}");
    assert_floors(&result, &output);
    // Both banks took payments: each was up while the other was down.
    let per_bank = output
        .lines()
        .find(|l| l.starts_with("[chaos] per bank:"))
        .unwrap_or_else(|| panic!("no per-bank line:\n{output}"));
    let parts: Vec<&str> = per_bank
        .trim_start_matches("[chaos] per bank: ")
        .split("; ")
        .collect();
    assert_eq!(parts.len(), 2, "{per_bank}");
    for part in parts {
        let mut words = part.split_whitespace();
        let bank = words.next().unwrap();
        let charged: u64 = words.next().and_then(|n| n.parse().ok()).unwrap();
        assert!(charged > 0, "{bank} charged nothing: {per_bank}");
    }
    assert!(status.success(), "exit status {status}:\n{output}");
}

#[test]
fn with_bank_a_down_new_payments_fail_over_to_bank_b() {
    let (status, output, result) = run_chaos(
        &[
            "--scenario",
            "bank-a-down",
            "--duration",
            "15s",
            "--rate",
            "20",
            "--decline-share",
            "0",
            "--seed",
            "20261201",
            "--store-faults",
            "none",
            "--settle-timeout",
            "40s",
        ],
        Duration::from_secs(120),
    );
    assert_clean(&result, &output, &[1, 2, 3, 4, 5, 7, 8]);
    let figures = output
        .lines()
        .find(|l| l.starts_with("[chaos] bank-a out from"))
        .unwrap_or_else(|| panic!("no failover figures:\n{output}"));
    let started: u64 = figures
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{figures}"));
    let succeeded: u64 = figures
        .split("first answers 201 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{figures}"));
    assert!(started >= 150, "{figures}");
    // The failover target of issue 19 is 99%; a CI machine gets a little slack.
    assert!(succeeded * 100 >= started * 95, "{figures}");
    assert!(
        figures.ends_with("0 of them moved to another bank"),
        "{figures}"
    );
    assert!(status.success(), "exit status {status}:\n{output}");
}
