//! The edge limits against the real binaries: a flood from one API key gets 429s while another
//! key is still served, overload is shed with 503 and Retry-After while probes answer, and a
//! client that disconnects mid-payment still gets its outcome. Every refusal happens before any
//! work: the bank's ledger (the ground truth) holds exactly the payments that were answered 201,
//! and every refused key can still be used.

use std::time::Duration;

use e2e::{
    client::{body, http, ledger, put_chaos, status},
    eventually, start_api_with_keys, start_bank, temp_dir, FAST_API,
};
use serde_json::{json, Value};

const FLOOD_KEY: &str = "sk_test_flood_0123456789abcdef";
const CALM_KEY: &str = "sk_test_calm_0123456789abcdef";
const KEYS: &str = "flood:sk_test_flood_0123456789abcdef,calm:sk_test_calm_0123456789abcdef";

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn pay_as(api: &str, api_key: &str, idempotency_key: &str) -> Answer {
    let response = http()
        .post(format!("{api}/v1/payments"))
        .bearer_auth(api_key)
        .header("Idempotency-Key", idempotency_key)
        .json(&body(1000))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Sends `idempotency_key` until it is not refused at the edge (bounded), and returns that answer.
async fn pay_until_admitted(api: &str, api_key: &str, idempotency_key: &str) -> Answer {
    eventually(Duration::from_secs(20), "admitted", || async {
        let answer = pay_as(api, api_key, idempotency_key).await;
        (![429, 503].contains(&answer.status)).then_some(answer)
    })
    .await
}

#[tokio::test]
async fn a_flood_from_one_key_gets_429s_while_another_key_is_served() {
    let bank = start_bank(&[]).await;
    let dir = temp_dir("security-flood");
    let mut args = FAST_API.to_vec();
    args.extend(["--rate-limit", "10", "--rate-limit-burst", "10"]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let flood: Vec<_> = (0..150)
        .map(|i| {
            let api = api_url.clone();
            tokio::spawn(async move { pay_as(&api, FLOOD_KEY, &format!("flood-{i}")).await })
        })
        .collect();
    // The calm key is served while the flood is refused.
    let calm = pay_as(&api_url, CALM_KEY, "calm-1").await;
    assert_eq!(calm.status, 201, "{}", calm.body);

    let mut admitted = Vec::new();
    let mut limited = Vec::new();
    for (i, task) in flood.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match answer.status {
            201 => admitted.push(i),
            429 => {
                assert_eq!(answer.body["code"], "rate_limited");
                let wait: u64 = answer.retry_after.as_deref().unwrap().parse().unwrap();
                assert!((1..=2).contains(&wait), "Retry-After {wait}");
                limited.push(i);
            }
            other => panic!("flood-{i}: unexpected {other}: {}", answer.body),
        }
    }
    // 10 at once plus 10/s refill while the flood lasts.
    assert!(
        (10..=60).contains(&admitted.len()),
        "{} admitted",
        admitted.len()
    );
    assert_eq!(admitted.len() + limited.len(), 150);
    let refused = status(&api_url).await["counters"]["rate_limited"]
        .as_u64()
        .unwrap();
    assert_eq!(refused, limited.len() as u64);
    let metrics = http()
        .get(format!("{api_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "edge_rejections_total{{reason=\"rate_limited\"}} {}",
        limited.len()
    );
    assert!(metrics.contains(&series), "no `{series}` in /metrics");

    // The ledger holds exactly what was answered 201: a refusal charged nothing.
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), admitted.len() + 1);

    // And a refused key was not consumed: sent again once admitted, it is a fresh payment.
    let again = pay_until_admitted(&api_url, FLOOD_KEY, &format!("flood-{}", limited[0])).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(ledger(&bank.url()).await.len(), admitted.len() + 2);
}

#[tokio::test]
async fn over_the_in_flight_limit_payments_are_shed_with_503_and_probes_still_answer() {
    let bank = start_bank(&[]).await;
    // Every charge takes 600 ms, so requests pile up in the API.
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 600}})).await;
    let dir = temp_dir("security-shed");
    let mut args = e2e::fast_api_with(&[
        ("--attempt-timeout-ms", "3000"),
        ("--deadline-ms", "5000"),
        ("--lease-ms", "10000"),
    ]);
    args.extend(["--max-in-flight", "4"]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let burst: Vec<_> = (0..24)
        .map(|i| {
            let api = api_url.clone();
            tokio::spawn(async move { pay_as(&api, FLOOD_KEY, &format!("burst-{i}")).await })
        })
        .collect();
    // Probes are never shed: wait until the API is saturated, then ask for /health.
    eventually(Duration::from_secs(10), "the API saturated", || async {
        let s = status(&api_url).await;
        (s["edge"]["in_flight"].as_u64() >= Some(4)).then_some(())
    })
    .await;
    let health = http()
        .get(format!("{api_url}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let mut admitted = 0;
    let mut shed = Vec::new();
    for (i, task) in burst.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match answer.status {
            201 => admitted += 1,
            503 => {
                assert_eq!(answer.body["code"], "overloaded", "{}", answer.body);
                assert_eq!(answer.retry_after.as_deref(), Some("1"));
                shed.push(i);
            }
            other => panic!("burst-{i}: unexpected {other}: {}", answer.body),
        }
    }
    assert!(admitted >= 4, "{admitted} admitted");
    assert!(
        !shed.is_empty(),
        "a burst of 24 over a limit of 4 sheds some"
    );
    assert_eq!(
        status(&api_url).await["counters"]["shed"].as_u64(),
        Some(shed.len() as u64)
    );
    assert_eq!(ledger(&bank.url()).await.len(), admitted);

    // A shed payment is not lost: sent again, it goes through, once.
    let again = pay_until_admitted(&api_url, FLOOD_KEY, &format!("burst-{}", shed[0])).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(ledger(&bank.url()).await.len(), admitted + 1);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_payment_gets_its_outcome_on_retry() {
    let bank = start_bank(&[]).await;
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 800}})).await;
    let dir = temp_dir("security-disconnect");
    // A long lease: if the payment were abandoned with its request, its key would answer 409
    // for the whole lease and the reconciler would have to settle it.
    let args = e2e::fast_api_with(&[
        ("--attempt-timeout-ms", "3000"),
        ("--deadline-ms", "5000"),
        ("--lease-ms", "60000"),
        ("--reconcile-grace-ms", "60000"),
    ]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let cut = impatient
        .post(format!("{api_url}/v1/payments"))
        .bearer_auth(FLOOD_KEY)
        .header("Idempotency-Key", "impatient-1")
        .json(&body(1000))
        .send()
        .await;
    assert!(cut.is_err_and(|e| e.is_timeout()), "the client gave up");

    let answer = eventually(Duration::from_secs(10), "the outcome", || async {
        let answer = pay_as(&api_url, FLOOD_KEY, "impatient-1").await;
        (answer.status != 409).then_some(answer)
    })
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(ledger(&bank.url()).await.len(), 1);
    let s = status(&api_url).await;
    assert_eq!(s["reconciler"]["stats"]["settled"].as_u64(), Some(0), "{s}");
}
