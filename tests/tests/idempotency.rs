//! docs/contract.md §2's table, one test per row, through HTTP against the real API and bank binaries;
//! plus concurrency, restart and tenant scoping. The bank's ledger is the ground truth.

use std::time::Duration;

use e2e::{
    client::{body, http, ledger, parts, pay, payment, set_chaos, status},
    eventually, start_api, start_bank, temp_dir, FAST_API, TEST_API_KEY,
};
use serde_json::{json, Value};

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn a_charged_payment_is_201_and_its_replay_is_byte_identical() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("row1"), FAST_API).await;
    let (status, replayed, _, first) = parts(pay(&api.url(), "row1", &body(1999)).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("false")));
    let (status, replayed, _, again) = parts(pay(&api.url(), "row1", &body(1999)).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(first, again, "a replay must be byte-identical");
    assert_eq!(
        ledger(&bank.url()).await.len(),
        1,
        "one charge, however often the key is sent"
    );
}

#[tokio::test]
async fn a_decline_is_402_and_stored_under_the_key() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("row2"), FAST_API).await;
    let decline = json!({"amount": 700, "currency": "TRY", "source": "tok_decline"});
    let (status, _, _, first) = parts(pay(&api.url(), "row2", &decline).await).await;
    assert_eq!(status, 402);
    assert_eq!(json_of(&first)["decline_code"], "card_declined");
    let (status, replayed, _, again) = parts(pay(&api.url(), "row2", &decline).await).await;
    assert_eq!((status, replayed.as_deref()), (402, Some("true")));
    assert_eq!(first, again);
}

#[tokio::test]
async fn an_unknown_outcome_is_202_pending_then_settled_by_the_reconciler() {
    let bank = start_bank(&["--chaos", "blackhole"]).await;
    let api = start_api(&bank.url(), &temp_dir("row3"), FAST_API).await;
    let response = pay(&api.url(), "row3", &body(1234)).await;
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, _, _, first) = parts(response).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&first));
    let pending = json_of(&first);
    assert_eq!(pending["status"], "pending");
    let id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/payments/{id}").as_str())
    );

    // While pending, a replay shows the current state.
    let (status, replayed, _, _) = parts(pay(&api.url(), "row3", &body(1234)).await).await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));

    // The bank recovers: the reconciler finds no charge, re-sends it with the same reference.
    set_chaos(&bank.url(), "healthy").await;
    let settled = eventually(
        Duration::from_secs(20),
        "the reconciler settles the payment",
        || {
            let api = api.url();
            let id = id.clone();
            async move {
                let p = payment(&api, &id).await;
                (p["status"] == "succeeded").then_some(p)
            }
        },
    )
    .await;
    let (status, replayed, _, final_body) = parts(pay(&api.url(), "row3", &body(1234)).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(json_of(&final_body)["id"], settled["id"]);
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["reference"], settled["bank_reference"]);
}

#[tokio::test]
async fn definite_refusals_are_503_with_retry_after_and_leave_the_key_free() {
    let bank = start_bank(&["--chaos", "down"]).await;
    let api = start_api(&bank.url(), &temp_dir("row4"), FAST_API).await;
    let (status, _, retry_after, problem) = parts(pay(&api.url(), "row4", &body(500)).await).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&problem));
    assert!(
        ["bank_unavailable", "breaker_open"].contains(&json_of(&problem)["code"].as_str().unwrap())
    );
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    assert!(ledger(&bank.url()).await.is_empty());

    // The key was not consumed: once the bank and the breaker recover, the same key charges.
    set_chaos(&bank.url(), "healthy").await;
    let charged = eventually(Duration::from_secs(15), "the same key succeeds", || {
        let api = api.url();
        async move {
            let (status, replayed, _, bytes) = parts(pay(&api, "row4", &body(500)).await).await;
            (status == 201).then_some((replayed, bytes))
        }
    })
    .await;
    assert_eq!(
        charged.0.as_deref(),
        Some("false"),
        "the first success is not a replay"
    );
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn an_open_breaker_refuses_new_payments_without_calling_the_bank_but_serves_replays() {
    let bank = start_bank(&[]).await;
    let api = start_api(
        &bank.url(),
        &temp_dir("breaker"),
        &e2e::fast_api_with(&[
            ("--breaker-open-ms", "3000"),
            ("--breaker-max-open-ms", "3000"),
        ]),
    )
    .await;
    let (first_status, _, _, stored) =
        parts(pay(&api.url(), "before-outage", &body(100)).await).await;
    assert_eq!(first_status, 201);

    set_chaos(&bank.url(), "down").await;
    eventually(Duration::from_secs(15), "the breaker opens", || {
        let api = api.url();
        async move {
            let _ = pay(
                &api,
                &format!("outage-{}", uuid::Uuid::new_v4()),
                &body(100),
            )
            .await;
            (status(&api).await["breaker"]["state"] == "open").then_some(())
        }
    })
    .await;

    let bank_requests_before: Value = http()
        .get(format!("{}/v1/status", bank.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status_code, _, retry_after, problem) =
        parts(pay(&api.url(), "during-outage", &body(100)).await).await;
    assert_eq!(status_code, 503);
    assert_eq!(json_of(&problem)["code"], "breaker_open");
    assert!(retry_after.is_some());
    let bank_requests_after: Value = http()
        .get(format!("{}/v1/status", bank.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        bank_requests_before["chaos_requests"], bank_requests_after["chaos_requests"],
        "no bank call while the breaker is open"
    );
    let (status_code, replayed, _, replay) =
        parts(pay(&api.url(), "before-outage", &body(100)).await).await;
    assert_eq!((status_code, replayed.as_deref()), (201, Some("true")));
    assert_eq!(
        replay, stored,
        "replays are served while the breaker is open"
    );

    set_chaos(&bank.url(), "healthy").await;
    eventually(
        Duration::from_secs(20),
        "half-open probes close the breaker",
        || {
            let api = api.url();
            async move {
                let _ = pay(
                    &api,
                    &format!("recovery-{}", uuid::Uuid::new_v4()),
                    &body(100),
                )
                .await;
                (status(&api).await["breaker"]["state"] == "closed").then_some(())
            }
        },
    )
    .await;
    let transitions = status(&api.url()).await["transitions"]
        .as_array()
        .cloned()
        .unwrap();
    let states: Vec<&str> = transitions
        .iter()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert!(
        states.contains(&"open") && states.contains(&"half_open") && states.contains(&"closed"),
        "{states:?}"
    );
}

#[tokio::test]
async fn rejected_input_is_4xx_and_does_not_consume_the_key() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("row5"), FAST_API).await;
    let url = format!("{}/v1/payments", api.url());
    let bad = [
        (
            json!({"amount": 0, "currency": "TRY", "source": "tok_visa"}),
            422,
        ),
        (
            json!({"amount": 5, "currency": "TRY", "source": "tok_visa", "extra": 1}),
            422,
        ),
        (
            json!({"amount": 5, "currency": "try", "source": "tok_visa"}),
            422,
        ),
    ];
    for (payload, want) in bad {
        let (status, _, _, _) = parts(pay(&api.url(), "row5", &payload).await).await;
        assert_eq!(status, want, "{payload}");
    }
    let too_large = http()
        .post(&url)
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", "row5")
        .header("Content-Type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    let unauthenticated = http()
        .post(&url)
        .header("Idempotency-Key", "row5")
        .json(&body(5))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let wrong_type = http()
        .post(&url)
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", "row5")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);

    let (status, replayed, _, _) = parts(pay(&api.url(), "row5", &body(5)).await).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (201, Some("false")),
        "the key was still free"
    );
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_the_original_is_untouched() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("row6"), FAST_API).await;
    let (_, _, _, original) = parts(pay(&api.url(), "row6", &body(100)).await).await;
    // Same body, other field order and spacing: the same request.
    let reordered = json!({"source": "tok_visa", "currency": "TRY", "amount": 100});
    let (status, replayed, _, same) = parts(pay(&api.url(), "row6", &reordered).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(same, original);
    let (status, _, _, problem) = parts(pay(&api.url(), "row6", &body(101)).await).await;
    assert_eq!(status, 422);
    assert_eq!(json_of(&problem)["code"], "idempotency_key_reused");
    let (_, _, _, after) = parts(pay(&api.url(), "row6", &body(100)).await).await;
    assert_eq!(after, original);
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn the_same_key_while_in_flight_is_409_with_retry_after() {
    let bank = start_bank(&["--chaos", "blackhole"]).await;
    // A deadline long enough that the first request is surely still in flight when probed,
    // and a lease that outlives it (the API refuses a lease under deadline + margin): the key
    // is freed by the first request's own outcome, never by its lease running out.
    let flags = e2e::fast_api_with(&[
        ("--deadline-ms", "5000"),
        ("--attempt-timeout-ms", "4000"),
        ("--lease-ms", "8000"),
    ]);
    let api = start_api(&bank.url(), &temp_dir("row7"), &flags).await;
    let first = tokio::spawn({
        let api = api.url();
        async move {
            let started = std::time::Instant::now();
            (parts(pay(&api, "row7", &body(100)).await).await, started)
        }
    });
    eventually(
        Duration::from_secs(5),
        "the first request is in flight",
        || {
            let api = api.url();
            async move { (e2e::client::pending_payments(&api).await? == 1).then_some(()) }
        },
    )
    .await;
    let (status, _, retry_after, problem) = parts(pay(&api.url(), "row7", &body(100)).await).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&problem));
    assert_eq!(json_of(&problem)["code"], "idempotency_key_in_use");
    assert!(retry_after.is_some());
    // And a different body is 422 even while in flight (the fingerprint is checked first).
    let (status, _, _, _) = parts(pay(&api.url(), "row7", &body(999)).await).await;
    assert_eq!(status, 422);

    // The first request's own answer (its deadline passed with the bank silent) ends the
    // conflict: 202 pending, well before its 8 s lease would have run out.
    let ((status, _, _, pending), started) = first.await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&pending));
    assert!(
        started.elapsed() < Duration::from_millis(8000),
        "answered within the lease: {:?}",
        started.elapsed()
    );
    let id = json_of(&pending)["id"].as_str().unwrap().to_owned();
    let (status, replayed, _, _) = parts(pay(&api.url(), "row7", &body(100)).await).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (202, Some("true")),
        "once answered, the key shows the pending payment, no longer 409"
    );

    // The bank recovers; the reconciler settles the payment and the key replays its outcome.
    set_chaos(&bank.url(), "healthy").await;
    eventually(Duration::from_secs(20), "the payment settles", || {
        let api = api.url();
        let id = id.clone();
        async move { (payment(&api, &id).await["status"] == "succeeded").then_some(()) }
    })
    .await;
    let (status, replayed, _, settled) = parts(pay(&api.url(), "row7", &body(100)).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(json_of(&settled)["id"], id.as_str());
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_fresh_key_make_exactly_one_charge() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("conc"), FAST_API).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let api = api.url();
            tokio::spawn(async move { parts(pay(&api, "hot-key", &body(4200)).await).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, _, _, bytes) = task.await.unwrap();
        assert!(status == 201 || status == 409, "unexpected {status}");
        if status == 201 {
            bodies.push(bytes);
        }
    }
    assert!(!bodies.is_empty());
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every 201 carries the same body"
    );
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn two_hundred_keys_sent_three_times_concurrently_make_two_hundred_charges() {
    // 200 fresh keys at once would fill the default bulkhead of 64 bank calls (503
    // bulkhead_full, key left free); this test is about idempotency, so the bulkhead is widened.
    let bank = start_bank(&[]).await;
    let api = start_api(
        &bank.url(),
        &temp_dir("conc200"),
        &e2e::fast_api_with(&[("--bulkhead", "1024")]),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        for _ in 0..3 {
            let api = api.url();
            tasks.push(tokio::spawn(async move {
                parts(pay(&api, &format!("k-{i}"), &body(100 + i)).await)
                    .await
                    .0
            }));
        }
    }
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 201 || status == 409, "unexpected {status}");
    }
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 200);
}

#[tokio::test]
async fn stored_keys_survive_a_restart_and_replay_byte_identical() {
    let bank = start_bank(&[]).await;
    let data = temp_dir("restart");
    let mut api = start_api(&bank.url(), &data, FAST_API).await;
    let (_, _, _, first) = parts(pay(&api.url(), "survivor", &body(333)).await).await;
    api.terminate(Duration::from_secs(15))
        .expect("the API stops on SIGTERM");
    let api = start_api(&bank.url(), &data, FAST_API).await;
    let (status, replayed, _, again) = parts(pay(&api.url(), "survivor", &body(333)).await).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first);
    assert_eq!(ledger(&bank.url()).await.len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_by_tenant() {
    let bank = start_bank(&[]).await;
    let data = temp_dir("tenants");
    let other_key = "sk_test_other_tenant_fedcba9876543210";
    let api = e2e::start_api_with_keys(
        &bank.url(),
        &data,
        FAST_API,
        &format!("e2e:{TEST_API_KEY},other:{other_key}"),
    )
    .await;
    let (status, _, _, mine) = parts(pay(&api.url(), "shared-key", &body(100)).await).await;
    assert_eq!(status, 201);
    let theirs = http()
        .post(format!("{}/v1/payments", api.url()))
        .bearer_auth(other_key)
        .header("Idempotency-Key", "shared-key")
        .json(&body(999))
        .send()
        .await
        .unwrap();
    assert_eq!(
        theirs.status(),
        201,
        "another tenant's key neither blocks nor reads mine"
    );
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["id"], json_of(&mine)["id"]);
    // Neither tenant can read the other's payment.
    let peek = http()
        .get(format!(
            "{}/v1/payments/{}",
            api.url(),
            theirs["id"].as_str().unwrap()
        ))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(peek.status(), 404);
    assert_eq!(ledger(&bank.url()).await.len(), 2);
}

#[tokio::test]
async fn a_full_bulkhead_is_503_bulkhead_full_with_retry_after_and_leaves_the_key_free() {
    let bank = start_bank(&[]).await;
    // One bank call at a time, and each takes a second and a half at the bank.
    e2e::client::put_chaos(&bank.url(), json!({"latency": {"base_ms": 1500}})).await;
    let flags = e2e::fast_api_with(&[
        ("--bulkhead", "1"),
        ("--deadline-ms", "5000"),
        ("--attempt-timeout-ms", "4000"),
        ("--lease-ms", "8000"),
    ]);
    let api = start_api(&bank.url(), &temp_dir("bulkhead"), &flags).await;
    let first = tokio::spawn({
        let api = api.url();
        async move { parts(pay(&api, "bh-first", &body(100)).await).await }
    });
    eventually(
        Duration::from_secs(10),
        "the first payment holds the only bank call slot",
        || {
            let api = api.url();
            async move { (status(&api).await["bulkhead"]["in_use"].as_u64()? == 1).then_some(()) }
        },
    )
    .await;
    let (status_code, replayed, retry_after, problem) =
        parts(pay(&api.url(), "bh-second", &body(200)).await).await;
    assert_eq!(status_code, 503, "{}", String::from_utf8_lossy(&problem));
    assert_eq!(json_of(&problem)["code"], "bulkhead_full");
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().unwrap() >= 1),
        "Retry-After: {retry_after:?}"
    );
    assert_ne!(replayed.as_deref(), Some("true"));
    assert_eq!(first.await.unwrap().0, 201);

    // The refused key was not consumed: once the slot is free, the same key is a fresh payment.
    let (status_code, replayed, _, bytes) =
        parts(pay(&api.url(), "bh-second", &body(200)).await).await;
    assert_eq!(
        (status_code, replayed.as_deref()),
        (201, Some("false")),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), 2, "one charge per key, none for the refusal");
    assert!(charges.iter().any(|c| c["amount"] == 200));
}

/// A stand-in bank that refuses every request with `422 invalid_request` (the mock bank accepts
/// everything the API can send, so it cannot be made to). Counts the requests it got.
async fn refusing_bank() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{atomic::Ordering, Arc};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                // Read the head and the body (Content-Length), bounded in size and time.
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                let read_all = async {
                    while request.len() < 64 * 1024 {
                        let n = stream.read(&mut buffer).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        if let Some(head_end) = text.find("\r\n\r\n") {
                            let length = text[..head_end]
                                .lines()
                                .find_map(|l| {
                                    let (name, value) = l.split_once(':')?;
                                    name.eq_ignore_ascii_case("content-length")
                                        .then(|| value.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if request.len() >= head_end + 4 + length {
                                return Some(text[..head_end].to_owned());
                            }
                        }
                    }
                    None
                };
                let Ok(Some(head)) = tokio::time::timeout(Duration::from_secs(5), read_all).await
                else {
                    return;
                };
                if head.starts_with("POST /v1/charges ") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let body = json!({
                    "type": "/problems/invalid_request",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "The bank does not accept this request.",
                    "code": "invalid_request",
                })
                .to_string();
                let answer = format!(
                    "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, requests)
}

#[tokio::test]
async fn a_request_the_bank_refuses_is_502_bank_rejected_request_stored_and_not_retried() {
    use std::sync::atomic::Ordering;
    let (bank_url, bank_requests) = refusing_bank().await;
    let api = start_api(&bank_url, &temp_dir("rejected"), FAST_API).await;
    let (status_code, replayed, _, first) =
        parts(pay(&api.url(), "rejected-1", &body(100)).await).await;
    assert_eq!(status_code, 502, "{}", String::from_utf8_lossy(&first));
    assert_eq!(json_of(&first)["code"], "bank_rejected_request");
    assert_eq!(replayed.as_deref(), Some("false"));
    assert_eq!(
        bank_requests.load(Ordering::SeqCst),
        1,
        "a refusal is final: never retried"
    );
    // Stored under the key: the same key replays it, without calling the bank again.
    let (status_code, replayed, _, again) =
        parts(pay(&api.url(), "rejected-1", &body(100)).await).await;
    assert_eq!((status_code, replayed.as_deref()), (502, Some("true")));
    assert_eq!(json_of(&again)["code"], "bank_rejected_request");
    assert_eq!(bank_requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        status(&api.url()).await["breaker"]["state"],
        "closed",
        "a refusal is not a bank failure"
    );
}
