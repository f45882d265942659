//! Several banks over real processes (issue 19, docs/failover.md): two mock banks `a` and `b`
//! (priority order). With `a` down (every charge refused with 503, which the bank's contract
//! says leaves nothing), new payments keep succeeding through `b`, each names `b`, `a`'s ledger
//! holds none of them, and a replay returns the same answer.

use std::collections::HashSet;

use e2e::{
    client::{self, ledger, parts, pay, set_chaos},
    start_api_with_banks, start_bank, temp_dir, FAST_API,
};
use serde_json::Value;

#[tokio::test]
async fn with_bank_a_down_payments_succeed_through_b_and_a_never_charges_them() {
    let a = start_bank(&[]).await;
    let b = start_bank(&[]).await;
    let api = start_api_with_banks(
        &[("a", a.url().as_str()), ("b", b.url().as_str())],
        &temp_dir("failover"),
        FAST_API,
    )
    .await;
    let api_url = api.url();

    // Both healthy: the first bank in priority order takes the payment.
    let response = pay(&api_url, "healthy-1", &client::body(1000)).await;
    assert_eq!(response.status(), 201);
    let healthy: Value = response.json().await.unwrap();
    assert_eq!(healthy["bank"], "a", "{healthy}");

    set_chaos(&a.url(), "down").await;
    let mut answers = Vec::new();
    for i in 0..6 {
        let key = format!("down-{i}");
        let (status, replayed, _, bytes) =
            parts(pay(&api_url, &key, &client::body(2000 + i)).await).await;
        let payment: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 201, "{key}: {payment}");
        assert_eq!(replayed.as_deref(), Some("false"));
        assert_eq!(payment["status"], "succeeded", "{payment}");
        assert_eq!(
            payment["bank"], "b",
            "the 201 names the bank that charged: {payment}"
        );
        answers.push((key, payment, bytes));
    }

    // Ground truth: each charge is in b's ledger under the payment's reference, none in a's.
    let a_ledger: HashSet<String> = ledger(&a.url())
        .await
        .iter()
        .map(|c| c["reference"].as_str().unwrap().to_owned())
        .collect();
    let b_ledger: Vec<Value> = ledger(&b.url()).await;
    for (key, payment, _) in &answers {
        let id = payment["id"].as_str().unwrap().replace('-', "");
        let reference = payment["bank_reference"].as_str().unwrap();
        assert!(
            !a_ledger.iter().any(|r| r.contains(&id)),
            "{key}: bank a has a charge for payment {id}"
        );
        let charges: Vec<&Value> = b_ledger
            .iter()
            .filter(|c| c["reference"].as_str().unwrap().contains(&id))
            .collect();
        assert_eq!(charges.len(), 1, "{key}: exactly one charge at b");
        assert_eq!(charges[0]["reference"], reference);
        assert_eq!(charges[0]["id"], payment["bank_charge_id"]);
        assert_eq!(charges[0]["status"], "succeeded");
    }
    assert_eq!(
        a_ledger.len(),
        1,
        "a only holds the payment made while it was healthy"
    );

    // A replay is the same answer, byte for byte; a read names the bank too.
    for (key, payment, bytes) in &answers {
        let (status, replayed, _, again) = parts(
            pay(
                &api_url,
                key,
                &client::body(payment["amount"].as_i64().unwrap()),
            )
            .await,
        )
        .await;
        assert_eq!((status, replayed.as_deref()), (201, Some("true")), "{key}");
        assert_eq!(&again, bytes, "{key}");
        let read = client::payment(&api_url, payment["id"].as_str().unwrap()).await;
        assert_eq!(read["bank"], "b");
    }
    assert_eq!(
        ledger(&b.url()).await.len(),
        answers.len(),
        "replays charge nothing"
    );

    // The status names both banks, the routing mode, and a's breaker is not closed.
    let status = client::status(&api_url).await;
    assert_eq!(status["routing"]["mode"], "priority");
    let banks = status["banks"].as_array().unwrap();
    let names: Vec<&str> = banks.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_ne!(banks[0]["breaker_state"], "closed", "{}", banks[0]);
    assert!(banks[1]["share"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_bad_bank_list_is_refused_at_start_with_a_clear_error() {
    let data = temp_dir("failover-bad");
    let output = std::process::Command::new(e2e::binary("payment-api"))
        .args([
            "--bank",
            "a=http://127.0.0.1:1",
            "--bank",
            "a=http://127.0.0.1:2",
        ])
        .env(
            "PAYMENT_API_KEYS",
            format!("{}:{}", e2e::TEST_TENANT, e2e::TEST_API_KEY),
        )
        .env("PAYMENT_API_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("--bank") && stderr.contains("twice"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_bank_a_blackholed_a_payment_that_reached_a_stays_pending_at_a_and_never_goes_to_b() {
    let a = start_bank(&[]).await;
    let b = start_bank(&[]).await;
    let api = start_api_with_banks(
        &[("a", a.url().as_str()), ("b", b.url().as_str())],
        &temp_dir("failover-blackhole"),
        FAST_API,
    )
    .await;
    let api_url = api.url();
    // Every charge at a hangs: each attempt there is ambiguous (a may commit it later).
    set_chaos(&a.url(), "blackhole").await;
    let mut pending = Vec::new();
    let mut through_b = Vec::new();
    for i in 0..5 {
        let key = format!("hole-{i}");
        let response = pay(&api_url, &key, &client::body(3000 + i)).await;
        let status = response.status().as_u16();
        let payment: Value = response.json().await.unwrap();
        match status {
            // It reached a: it must stay with a.
            202 => {
                assert_eq!(payment["bank"], "a", "{key}: {payment}");
                pending.push(payment);
            }
            // a's breaker had opened: no call to a was made, so it started at b.
            201 => {
                assert_eq!(payment["bank"], "b", "{key}: {payment}");
                through_b.push(payment);
            }
            other => panic!("{key}: unexpected {other}: {payment}"),
        }
    }
    assert!(
        !pending.is_empty(),
        "the first payments reach a before its breaker opens"
    );

    // a heals: the reconciler settles the pending payments at a, by a's reference.
    set_chaos(&a.url(), "healthy").await;
    for payment in &pending {
        let id = payment["id"].as_str().unwrap();
        let settled = e2e::eventually(
            std::time::Duration::from_secs(30),
            "the reconciler settles the payment at a",
            || async {
                let read = client::payment(&api_url, id).await;
                (read["status"] != "pending").then_some(read)
            },
        )
        .await;
        assert_eq!(settled["status"], "succeeded", "{settled}");
        assert_eq!(settled["bank"], "a", "{settled}");
    }
    let ids = |payments: &[Value]| -> HashSet<String> {
        payments
            .iter()
            .map(|p| p["id"].as_str().unwrap().replace('-', ""))
            .collect()
    };
    let in_ledger = |charges: &[Value], id: &str| {
        charges
            .iter()
            .filter(|c| c["reference"].as_str().unwrap().contains(id))
            .count()
    };
    let a_ledger = ledger(&a.url()).await;
    let b_ledger = ledger(&b.url()).await;
    for id in ids(&pending) {
        assert_eq!(in_ledger(&a_ledger, &id), 1, "{id}: one charge at a");
        assert_eq!(in_ledger(&b_ledger, &id), 0, "{id}: never sent to b");
    }
    for id in ids(&through_b) {
        assert_eq!(in_ledger(&a_ledger, &id), 0, "{id}: never sent to a");
        assert_eq!(in_ledger(&b_ledger, &id), 1, "{id}: one charge at b");
    }
}
