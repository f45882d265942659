//! Graceful drain (issue 15): SIGTERM to an API with payments in flight at the bank. Each one is
//! answered, or left pending under a lease that the next process on the same data directory
//! resumes; either way every payment ends `succeeded` with exactly one charge in the bank's
//! ledger. Real processes throughout; every wait is bounded polling on the bank or the API.

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant},
};

use e2e::{
    client::{body, http, ledger, parts, pay, payment, put_chaos, set_chaos, status},
    eventually, signal, start_api, start_bank, temp_dir, wait_exit, TEST_API_KEY,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `GET /v1/status` of the mock bank.
async fn bank_status(bank: &str) -> Option<Value> {
    http()
        .get(format!("{bank}/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until the bank holds `n` charges claimed and not yet committed (they are "at the
/// bank", waiting out its latency).
async fn wait_at_the_bank(bank: &str, n: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("{n} charges in flight at the bank"),
        || async move { (bank_status(bank).await?["in_flight"].as_u64()? == n).then_some(()) },
    )
    .await;
}

/// One charge per reference, `n` in all; returns the ledger by reference.
async fn one_charge_each(bank: &str, n: usize) -> HashMap<String, Value> {
    let charges = ledger(bank).await;
    let mut by_reference = HashMap::new();
    for charge in charges {
        let reference = charge["reference"].as_str().unwrap().to_owned();
        assert!(
            by_reference.insert(reference.clone(), charge).is_none(),
            "{reference} was charged twice"
        );
    }
    assert_eq!(by_reference.len(), n, "one charge per payment");
    by_reference
}

/// Sends `n` payments to `api`, key `{prefix}-{i}` for `amount + i`, each from a task of its own
/// that ends with what `answer` makes of the response (or the transport error).
fn pay_in_background<T, F, Fut>(
    api: &str,
    prefix: &'static str,
    amount: i64,
    n: usize,
    answer: F,
) -> Vec<JoinHandle<reqwest::Result<T>>>
where
    T: Send + 'static,
    F: Fn(reqwest::Response) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    (0..n)
        .map(|i| {
            let api = api.to_owned();
            let answer = answer.clone();
            tokio::spawn(async move {
                let response = http()
                    .post(format!("{api}/v1/payments"))
                    .bearer_auth(TEST_API_KEY)
                    .header("Idempotency-Key", format!("{prefix}-{i}"))
                    .json(&body(amount + i as i64))
                    .send()
                    .await?;
                Ok(answer(response).await)
            })
        })
        .collect()
}

/// API flags for these tests: a 5 s payment deadline and a lease that outlives it.
fn api_flags(extra: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut overrides = vec![
        ("--deadline-ms", "5000"),
        ("--attempt-timeout-ms", "4000"),
        ("--lease-ms", "8000"),
    ];
    overrides.extend_from_slice(extra);
    e2e::fast_api_with(&overrides)
}

#[tokio::test]
async fn sigterm_with_payments_at_the_bank_answers_every_one_and_exits_cleanly() {
    const N: usize = 8;
    let bank = start_bank(&[]).await;
    // Every charge spends 2 s at the bank: SIGTERM lands while all of them are there.
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 2000}})).await;
    let data = temp_dir("drain-answered");
    let flags = api_flags(&[]);
    let mut api = start_api(&bank.url(), &data, &flags).await;

    let clients = pay_in_background(&api.url(), "drain", 1000, N, parts);
    wait_at_the_bank(&bank.url(), N as u64).await;
    let signalled = Instant::now();
    signal(api.child.id(), Signal::SIGTERM);

    // Every client gets its answer: no reset connection, no 5xx.
    let mut ids = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, _, _, bytes) = client
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("drain-{i}: no answer during the drain: {e}"));
        assert!(
            status == 201 || status == 202,
            "drain-{i}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        ids.push((i, json_of(&bytes)["id"].as_str().unwrap().to_owned()));
    }
    let exit = wait_exit(&mut api.child, Duration::from_secs(20)).expect("the API exits");
    assert!(exit.success(), "a drained API exits 0: {exit}");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "the drain ended when the work did: {:?}",
        signalled.elapsed()
    );

    // The next process on the same data dir: every payment succeeded, one charge each.
    let api = start_api(&bank.url(), &data, &flags).await;
    let charges = one_charge_each(&bank.url(), N).await;
    for (i, id) in ids {
        let settled = eventually(Duration::from_secs(20), "the payment is settled", || {
            let api = api.url();
            let id = id.clone();
            async move {
                let p = payment(&api, &id).await;
                (p["status"] == "succeeded").then_some(p)
            }
        })
        .await;
        let reference = settled["bank_reference"].as_str().unwrap();
        assert!(charges.contains_key(reference), "drain-{i}: {settled}");
        let (status, replayed, _, _) =
            parts(pay(&api.url(), &format!("drain-{i}"), &body(1000 + i as i64)).await).await;
        assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    }
}

#[tokio::test]
async fn a_payment_whose_client_left_is_finished_before_the_process_exits() {
    let bank = start_bank(&[]).await;
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 1500}})).await;
    let data = temp_dir("drain-detached");
    // A lease and a grace period far longer than the test: if the payment were cut at exit,
    // the next process would answer 409 (lease held) and could not settle it in time. A long
    // drain time too: the API must exit when its work is done, not when the time is up.
    let flags = api_flags(&[
        ("--lease-ms", "60000"),
        ("--reconcile-grace-ms", "60000"),
        ("--drain-timeout-ms", "60000"),
    ]);
    let mut api = start_api(&bank.url(), &data, &flags).await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let cut = impatient
        .post(format!("{}/v1/payments", api.url()))
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", "left-1")
        .json(&body(4321))
        .send()
        .await;
    assert!(cut.is_err_and(|e| e.is_timeout()), "the client gave up");
    // The payment is still at the bank, its client gone, when the API is told to stop.
    wait_at_the_bank(&bank.url(), 1).await;
    let signalled = Instant::now();
    signal(api.child.id(), Signal::SIGTERM);
    let exit = wait_exit(&mut api.child, Duration::from_secs(30)).expect("the API exits");
    assert!(exit.success(), "{exit}");
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "the API exits once its payments are done, not at the end of its drain time: {:?}",
        signalled.elapsed()
    );
    one_charge_each(&bank.url(), 1).await;

    // The next process answers the key at once, from the store: the payment was recorded
    // before the first process exited.
    let api = start_api(&bank.url(), &data, &flags).await;
    let (code, replayed, _, bytes) = parts(pay(&api.url(), "left-1", &body(4321)).await).await;
    assert_eq!(
        (code, replayed.as_deref()),
        (201, Some("true")),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        status(&api.url()).await["reconciler"]["backlog"],
        0,
        "nothing left for the reconciler"
    );
}

#[tokio::test]
async fn payments_still_at_the_bank_when_the_drain_time_ends_are_resumed_by_the_next_process() {
    const N: usize = 4;
    let bank = start_bank(&["--chaos", "blackhole"]).await;
    let data = temp_dir("drain-resumed");
    // The bank never answers and the drain time is short: the payments are still in flight
    // when it ends. Their leases stay in the store, and the next process resumes them.
    let flags = api_flags(&[("--drain-timeout-ms", "300")]);
    let mut api = start_api(&bank.url(), &data, &flags).await;
    let clients = pay_in_background(&api.url(), "resume", 2000, N, |response| async move {
        response.status().as_u16()
    });
    // All N are claimed and at the (silent) bank: every bank call slot they took is in use.
    eventually(Duration::from_secs(10), "the payments at the bank", || {
        let api = api.url();
        async move {
            (status(&api).await["bulkhead"]["in_use"].as_u64()? == N as u64).then_some(())
        }
    })
    .await;
    signal(api.child.id(), Signal::SIGTERM);
    let exit = wait_exit(&mut api.child, Duration::from_secs(10)).expect("the API exits");
    assert!(exit.success(), "{exit}");
    for (i, client) in clients.into_iter().enumerate() {
        // Never a refusal: the connection closes with the process, the payment stays pending.
        if let Ok(status) = client.await.unwrap() {
            assert!(
                status == 201 || status == 202,
                "resume-{i}: answered {status} during the drain"
            );
        }
    }
    assert!(ledger(&bank.url()).await.is_empty());

    set_chaos(&bank.url(), "healthy").await;
    let api = start_api(&bank.url(), &data, &flags).await;
    for i in 0..N {
        let (replayed, bytes) = eventually(
            Duration::from_secs(30),
            "the next process settles the payment once the lease expires",
            || {
                let api = api.url();
                async move {
                    let (status, replayed, _, bytes) =
                        parts(pay(&api, &format!("resume-{i}"), &body(2000 + i as i64)).await)
                            .await;
                    (status == 201).then_some((replayed, bytes))
                }
            },
        )
        .await;
        assert_eq!(
            replayed.as_deref(),
            Some("true"),
            "resume-{i}: resumed, not restarted"
        );
        assert_eq!(json_of(&bytes)["status"], "succeeded");
    }
    let charges = one_charge_each(&bank.url(), N).await;
    for payment in http()
        .get(format!("{}/v1/payments?limit=100", api.url()))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
    {
        assert_eq!(payment["status"], "succeeded", "{payment}");
        assert!(charges.contains_key(payment["bank_reference"].as_str().unwrap()));
    }
    assert!(
        status(&api.url()).await["reconciler"]["stats"]["settled"]
            .as_u64()
            .unwrap()
            >= N as u64,
        "the next process's reconciler settled them"
    );
}
