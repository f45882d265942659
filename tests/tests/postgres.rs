//! Scaling out: two API processes share one PostgreSQL store. Whatever instance a request lands
//! on, a key is charged once, both instances give the same answer, and an instance that dies
//! leaves nothing stuck: the other one settles its pending payments.

use std::{collections::HashMap, time::Duration};

use e2e::{
    client::{body, http, ledger, parts, set_chaos, status},
    eventually, signal, start_api, start_bank, temp_dir, wait_exit, FAST_API, TEST_API_KEY,
};
use nix::sys::signal::Signal;
use serde_json::Value;

fn database() -> Option<String> {
    let server = payment_store::test_support::pg_or_skip()?;
    Some(server.new_database().expect("a fresh database"))
}

/// Sends `key` to `apis[first]`, then on 409/503/202/transport error retries it across the
/// instances in turn (bounded), like a client behind a load balancer. Returns every answer.
async fn send_across(apis: &[String], key: &str, amount: i64, first: usize) -> Vec<(u16, Vec<u8>)> {
    let mut answers = Vec::new();
    for attempt in 0..60 {
        let api = &apis[(first + attempt) % apis.len()];
        let sent = http()
            .post(format!("{api}/v1/payments"))
            .bearer_auth(TEST_API_KEY)
            .header("Idempotency-Key", key)
            .json(&body(amount))
            .send()
            .await;
        if let Ok(response) = sent {
            let (status, _, _, bytes) = parts(response).await;
            answers.push((status, bytes));
            if matches!(status, 201 | 402) {
                return answers;
            }
        }
        tokio::time::sleep(Duration::from_millis(50 + 10 * attempt as u64)).await;
    }
    answers
}

#[tokio::test]
async fn two_instances_on_one_database_charge_each_key_once_under_a_lossy_bank() {
    let Some(url) = database() else { return };
    let bank = start_bank(&["--chaos", "lossy", "--seed", "7"]).await;
    let flags = [FAST_API, &["--database-url", &url]].concat();
    let a = start_api(&bank.url(), &temp_dir("pg-a"), &flags).await;
    let b = start_api(&bank.url(), &temp_dir("pg-b"), &flags).await;
    let apis = vec![a.url(), b.url()];

    // Each key is sent to both instances at the same moment, then retried across them.
    let mut tasks = Vec::new();
    for i in 0..60 {
        for first in 0..2 {
            let apis = apis.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("pg-key-{i}");
                (key.clone(), send_across(&apis, &key, 100 + i, first).await)
            }));
        }
    }
    let mut finals: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for task in tasks {
        let (key, answers) = task.await.unwrap();
        let last = answers.last().expect("at least one answer");
        assert!(
            matches!(last.0, 201 | 402),
            "{key} never got a final answer: {:?}",
            answers.iter().map(|a| a.0).collect::<Vec<_>>()
        );
        finals.entry(key).or_default().push(last.1.clone());
    }
    for (key, bodies) in &finals {
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "{key}: the two instances answered differently"
        );
    }

    set_chaos(&bank.url(), "healthy").await;
    for api in &apis {
        eventually(Duration::from_secs(30), "no payment pending", || {
            let api = api.clone();
            async move { (status(&api).await["reconciler"]["backlog"] == 0).then_some(()) }
        })
        .await;
    }
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 60, "exactly one charge per key");
    let mut references: Vec<&str> = charges
        .iter()
        .map(|c| c["reference"].as_str().unwrap())
        .collect();
    references.sort_unstable();
    references.dedup();
    assert_eq!(references.len(), 60);
    assert_eq!(status(&apis[0]).await["store"]["kind"], "postgres");
}

#[tokio::test]
async fn when_one_instance_dies_the_other_settles_its_pending_payments() {
    let Some(url) = database() else { return };
    let bank = start_bank(&["--chaos", "blackhole"]).await;
    let flags = [FAST_API, &["--database-url", &url]].concat();
    // The doomed instance waits long on the bank (so its payments are surely in flight when it
    // dies); its leases are as short as its deadline allows (deadline + margin), so the
    // survivor can take over soon after.
    let mut doomed_flags = e2e::fast_api_with(&[
        ("--deadline-ms", "6000"),
        ("--attempt-timeout-ms", "5000"),
        ("--lease-ms", "9000"),
    ]);
    doomed_flags.extend(["--database-url", url.as_str()]);
    let mut doomed = start_api(&bank.url(), &temp_dir("pg-doomed"), &doomed_flags).await;
    let survivor = start_api(&bank.url(), &temp_dir("pg-survivor"), &flags).await;

    // Payments sent to the doomed instance hang at the bank; kill it while they are in flight.
    let mut in_flight = Vec::new();
    for i in 0..5 {
        let api = doomed.url();
        in_flight.push(tokio::spawn(async move {
            http()
                .post(format!("{api}/v1/payments"))
                .bearer_auth(TEST_API_KEY)
                .header("Idempotency-Key", format!("orphan-{i}"))
                .json(&body(500 + i))
                .send()
                .await
        }));
    }
    // All five are claimed (pending, in flight on the doomed instance): read-only check through
    // the survivor, which shares the database.
    eventually(
        Duration::from_secs(10),
        "the payments are in flight",
        || {
            let api = survivor.url();
            async move { (e2e::client::pending_payments(&api).await? == 5).then_some(()) }
        },
    )
    .await;
    signal(doomed.child.id(), Signal::SIGKILL);
    wait_exit(&mut doomed.child, Duration::from_secs(5)).expect("the instance dies");
    for task in in_flight {
        let _ = task.await.unwrap();
    }

    set_chaos(&bank.url(), "healthy").await;
    // The survivor's reconciler takes over once the dead instance's leases expire.
    for i in 0..5 {
        let answer = eventually(
            Duration::from_secs(30),
            "the survivor settles the orphan",
            || {
                let api = survivor.url();
                async move {
                    let response = http()
                        .post(format!("{api}/v1/payments"))
                        .bearer_auth(TEST_API_KEY)
                        .header("Idempotency-Key", format!("orphan-{i}"))
                        .json(&body(500 + i))
                        .send()
                        .await
                        .ok()?;
                    (response.status() == 201).then_some(response)
                }
            },
        )
        .await;
        assert_eq!(answer.headers()["idempotent-replayed"], "true");
    }
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 5, "one charge per orphaned payment");
    let reconciled: Value = status(&survivor.url()).await["reconciler"]["stats"]["settled"].clone();
    assert!(
        reconciled.as_u64().unwrap() >= 5,
        "the survivor's reconciler settled them: {reconciled}"
    );
}
