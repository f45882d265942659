//! Bank faults and API crashes: the API's payments and the bank's ledger must agree afterwards
//! (docs/contract.md §6 invariants 1–4), whatever failed on the way.

use std::{collections::HashMap, time::Duration};

use e2e::{
    client::{body, http, ledger, parts, pay, set_chaos, status},
    eventually, signal, start_api, start_bank, temp_dir, wait_exit, FAST_API, TEST_API_KEY,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Sends one payment like a careful client: retries the same key on 409, 503 and transport
/// errors, waiting as `Retry-After` says (capped) or with backoff; a 202 is an accepted, pending
/// payment (the reconciler finishes it). Gives up (0) after 90 s.
async fn pay_with_retries(api: &str, key: &str, amount: i64) -> u16 {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut delay = Duration::from_millis(20);
    while std::time::Instant::now() < deadline {
        let sent = http()
            .post(format!("{api}/v1/payments"))
            .bearer_auth(TEST_API_KEY)
            .header("Idempotency-Key", key)
            .json(&body(amount))
            .send()
            .await;
        let mut wait = delay;
        if let Ok(response) = &sent {
            let status = response.status().as_u16();
            if matches!(status, 201 | 202 | 402) {
                return status;
            }
            if let Some(seconds) = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            {
                wait = Duration::from_secs(seconds).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    0
}

/// All of the test tenant's payments, by id.
async fn all_payments(api: &str) -> Vec<Value> {
    let mut payments = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{api}/v1/payments?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http()
            .get(url)
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        payments.extend(page["data"].as_array().cloned().unwrap());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return payments,
        }
    }
    panic!("paging did not end");
}

/// docs/contract.md §6 invariants 1–4 between the API's payments and the bank's ledger.
async fn audit(api: &str, bank: &str, keys: usize) {
    let payments = all_payments(api).await;
    let charges = ledger(bank).await;
    let mut by_reference: HashMap<&str, usize> = HashMap::new();
    for charge in &charges {
        *by_reference
            .entry(charge["reference"].as_str().unwrap())
            .or_default() += 1;
    }
    let payments_by_reference: HashMap<&str, &Value> = payments
        .iter()
        .map(|p| (p["bank_reference"].as_str().unwrap(), p))
        .collect();
    assert!(
        payments.len() <= keys,
        "{} payments for {keys} keys: a key made two payments",
        payments.len()
    );
    // 1. At most one charge per payment (and so per key).
    assert!(
        by_reference.values().all(|n| *n == 1),
        "a reference was charged twice"
    );
    // 2. Every charge belongs to a payment that ended succeeded (or declined, for a decline).
    for charge in &charges {
        let reference = charge["reference"].as_str().unwrap();
        let payment = payments_by_reference
            .get(reference)
            .unwrap_or_else(|| panic!("charge {reference} has no payment"));
        let want = if charge["status"] == "succeeded" {
            "succeeded"
        } else {
            "declined"
        };
        assert_eq!(payment["status"], want, "payment for {reference}");
    }
    // 3 and 4. Every succeeded payment is in the ledger; none is left pending.
    for payment in &payments {
        assert_ne!(payment["status"], "pending", "{payment}");
        if payment["status"] == "succeeded" {
            assert!(
                by_reference.contains_key(payment["bank_reference"].as_str().unwrap()),
                "{payment}"
            );
        }
    }
}

async fn run_under(preset: &'static str, count: usize) {
    let bank = start_bank(&["--chaos", preset, "--seed", "42"]).await;
    let api = start_api(&bank.url(), &temp_dir(preset), FAST_API).await;
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..count {
        let api = api.url();
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let status = pay_with_retries(&api, &format!("{preset}-{i}"), 1000 + i as i64).await;
            drop(permit);
            status
        }));
    }
    let mut outcomes: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        *outcomes.entry(task.await.unwrap()).or_default() += 1;
    }
    assert!(
        !outcomes.contains_key(&0),
        "some payments never got an answer: {outcomes:?}"
    );

    set_chaos(&bank.url(), "healthy").await;
    eventually(
        Duration::from_secs(60),
        "the reconciler empties the backlog",
        || {
            let api = api.url();
            async move { (status(&api).await["reconciler"]["backlog"] == 0).then_some(()) }
        },
    )
    .await;
    audit(&api.url(), &bank.url(), count).await;
    let succeeded = all_payments(&api.url())
        .await
        .iter()
        .filter(|p| p["status"] == "succeeded")
        .count();
    assert_eq!(
        succeeded, count,
        "every payment eventually succeeds: {outcomes:?}"
    );
}

#[tokio::test]
async fn under_a_lossy_bank_five_hundred_payments_reconcile_with_the_ledger() {
    run_under("lossy", 500).await;
}

#[tokio::test]
async fn under_a_flaky_bank_five_hundred_payments_reconcile_with_the_ledger() {
    run_under("flaky", 500).await;
}

#[tokio::test]
async fn a_payment_in_flight_when_the_api_is_killed_is_settled_after_restart() {
    let bank = start_bank(&["--chaos", "blackhole"]).await;
    let data = temp_dir("crash");
    // A long deadline keeps the charge surely in flight while the API is killed; the lease
    // outlives it (deadline + margin), and the next process resumes the payment once it expires.
    let slow = e2e::fast_api_with(&[
        ("--deadline-ms", "6000"),
        ("--attempt-timeout-ms", "5000"),
        ("--lease-ms", "9000"),
    ]);
    let mut api = start_api(&bank.url(), &data, &slow).await;
    let in_flight = tokio::spawn({
        let api = api.url();
        async move {
            http()
                .post(format!("{api}/v1/payments"))
                .bearer_auth(TEST_API_KEY)
                .header("Idempotency-Key", "crash-key")
                .json(&body(7777))
                .send()
                .await
        }
    });
    // Wait until the payment is claimed and in flight (read-only check), then kill the API.
    eventually(Duration::from_secs(10), "the payment is in flight", || {
        let api = api.url();
        async move { (e2e::client::pending_payments(&api).await? == 1).then_some(()) }
    })
    .await;
    signal(api.child.id(), Signal::SIGKILL);
    wait_exit(&mut api.child, Duration::from_secs(5)).expect("the API dies on SIGKILL");
    // The client of the killed process saw its connection drop: no answer at all.
    assert!(
        in_flight.await.unwrap().is_err(),
        "a killed API cannot have answered"
    );

    set_chaos(&bank.url(), "healthy").await;
    let api = start_api(&bank.url(), &data, FAST_API).await;
    let (status_code, replayed, _, bytes) = eventually(
        Duration::from_secs(30),
        "the retry gets the settled answer (after the dead process's lease expires)",
        || {
            let api = api.url();
            async move {
                let answer = parts(pay(&api, "crash-key", &body(7777)).await).await;
                (answer.0 == 201).then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(status_code, 201);
    assert_eq!(
        replayed.as_deref(),
        Some("true"),
        "the settled payment is replayed, not restarted"
    );
    let payment: Value = serde_json::from_slice(&bytes).unwrap();
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 1, "exactly one charge");
    assert_eq!(charges[0]["reference"], payment["bank_reference"]);
}
