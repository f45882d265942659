//! Business outcomes and idempotency over HTTP.

use std::time::Duration;

use payment_types::bank::{Charge, LedgerPage};
use serde_json::{json, Value};

use crate::helpers::{charge_body, eventually, spawn_bank};

#[tokio::test]
async fn test_tokens_decide_the_outcome_and_repeats_return_the_first_answer() {
    let bank = spawn_bank().await;
    let first = bank.charge("ref-visa", "tok_visa").await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first: Charge = first.json().await.unwrap();
    let again = bank.charge("ref-visa", "tok_visa").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Charge>().await.unwrap(), first);

    let declined = bank.charge("ref-nsf", "tok_insufficient_funds").await;
    assert_eq!(declined.status(), 402);
    assert_eq!(
        declined.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = declined.json().await.unwrap();
    assert_eq!(problem["code"], "card_declined");
    assert_eq!(problem["decline_code"], "insufficient_funds");

    let found = bank.get_charge("ref-visa").await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Charge>().await.unwrap(), first);
    let missing = bank.get_charge("never-sent").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "charge_not_found"
    );
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_reference_make_exactly_one_charge() {
    let bank = spawn_bank().await;
    // Some latency so most requests arrive while the first is still in progress.
    bank.put_chaos(json!({"latency": {"base_ms": 50}})).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let request = bank.charge_request(&bank.client, "ref-race", "tok_visa");
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (
                    response.status().as_u16(),
                    response.json::<Charge>().await.unwrap(),
                )
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, charge) = task.await.unwrap();
        statuses.push(status);
        ids.insert(charge.id);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(ids.len(), 1);
    assert_eq!(bank.ledger().await.len(), 1);
}

#[tokio::test]
async fn a_repeat_while_the_first_is_in_progress_waits_for_it() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"latency": {"base_ms": 400}})).await;
    let first = bank.charge_request(&bank.client, "ref-slow", "tok_visa");
    let first = tokio::spawn(async move { first.send().await.unwrap() });
    eventually(
        Duration::from_secs(2),
        "the first charge to be in flight",
        || async { bank.status().await.in_flight == 1 },
    )
    .await;
    let second = bank.charge("ref-slow", "tok_visa").await;
    assert_eq!(second.status(), 200);
    let second: Charge = second.json().await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(first.json::<Charge>().await.unwrap(), second);
    assert_eq!(bank.ledger().await.len(), 1);
}

#[tokio::test]
async fn a_reference_reused_for_another_charge_is_refused_and_not_charged() {
    let bank = spawn_bank().await;
    assert_eq!(bank.charge("ref-1", "tok_visa").await.status(), 201);
    let response = bank
        .client
        .post(bank.url("/v1/charges"))
        .header("idempotency-key", "ref-1")
        .json(&charge_body("ref-1", "tok_visa", 5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "reference_reused"
    );
    assert_eq!(bank.ledger().await.len(), 1);
}

#[tokio::test]
async fn the_ledger_pages_in_commit_order_with_totals_and_instance() {
    let bank = spawn_bank().await;
    for i in 0..7 {
        bank.charge(&format!("r{i}"), "tok_visa").await;
    }
    bank.charge("d", "tok_decline").await;
    let all = bank.ledger().await;
    let refs: Vec<_> = all.iter().map(|c| c.reference.as_str()).collect();
    assert_eq!(refs, ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "d"]);
    let page: LedgerPage = bank
        .client
        .get(bank.url("/v1/ledger?limit=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.charges.len(), 3);
    assert_eq!(page.next_cursor.as_deref(), Some("3"));
    assert_eq!(page.instance_id, bank.instance_id);
    assert_eq!(page.totals.count, 8);
    let try_totals = serde_json::to_value(&page.totals.by_currency["TRY"]).unwrap();
    assert_eq!(
        try_totals["succeeded"],
        json!({"count": 7, "amount": 7 * 1999})
    );
    assert_eq!(try_totals["declined"], json!({"count": 1, "amount": 1999}));
}

#[tokio::test]
async fn a_restarted_bank_is_a_new_instance_with_an_empty_ledger() {
    let before = spawn_bank().await;
    before.charge("r", "tok_visa").await;
    let health: Value = before
        .client
        .get(before.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["instance_id"], before.instance_id.as_str());
    drop(before);
    let after = spawn_bank().await;
    let page: LedgerPage = after
        .client
        .get(after.url("/v1/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(page.instance_id, health["instance_id"].as_str().unwrap());
    assert!(page.charges.is_empty());
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let bank = spawn_bank().await;
    let response = bank
        .client
        .get(bank.url("/health"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let response = bank.client.get(bank.url("/health")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
}
