//! Every injected failure mode, as a client on a real socket sees it.

use std::time::{Duration, Instant};

use mock_bank::Config;
use payment_types::bank::Charge;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_bank, spawn_with};

/// Sends `n` sequential charges with fresh references and returns their status codes.
async fn statuses(config: Config, profile: Value, n: usize) -> (Vec<u16>, usize) {
    let bank = spawn_with(config).await;
    bank.put_chaos(profile).await;
    let mut codes = Vec::with_capacity(n);
    for i in 0..n {
        let response = bank.charge(&format!("ref-{i}"), "tok_visa").await;
        if matches!(response.status().as_u16(), 429 | 503) {
            let retry_after = response.headers().get("retry-after").expect("Retry-After");
            assert_eq!(retry_after, "1");
        }
        codes.push(response.status().as_u16());
    }
    (codes, bank.ledger().await.len())
}

#[tokio::test]
async fn error_rates_hold_statistically_and_repeat_exactly_for_a_fixed_seed() {
    let profile = json!({
        "error_rate": 0.3,
        "errors": {"http_500": 1, "http_503": 1, "http_429": 1},
        "error_500_committed_rate": 0.5,
        "retry_after_s": 1
    });
    let n = 600;
    let config = Config {
        seed: Some(42),
        ..Config::for_tests()
    };
    let (codes, ledger_len) = statuses(config.clone(), profile.clone(), n).await;
    let share = |code| codes.iter().filter(|&&c| c == code).count() as f64 / n as f64;
    // Each error kind is 10% of requests; 0.04 is over three standard deviations at n = 600.
    for code in [500, 503, 429] {
        assert!((share(code) - 0.1).abs() < 0.04, "{code}: {}", share(code));
    }
    assert!((share(201) - 0.7).abs() < 0.05, "201: {}", share(201));
    // Ledger = successes + the 500s that came after the commit; 503/429 never process.
    let created = codes.iter().filter(|&&c| c == 201).count();
    let errors_500 = codes.iter().filter(|&&c| c == 500).count();
    assert!(
        ledger_len > created && ledger_len < created + errors_500,
        "{ledger_len}"
    );

    let (again, ledger_again) = statuses(config, profile.clone(), n).await;
    assert_eq!(again, codes, "same seed, same requests: same decisions");
    assert_eq!(ledger_again, ledger_len);
    let other_seed = Config {
        seed: Some(43),
        ..Config::for_tests()
    };
    let (other, _) = statuses(other_seed, profile, n).await;
    assert_ne!(other, codes);
}

#[tokio::test]
async fn down_answers_503_with_retry_after_and_processes_nothing() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"preset": "down"})).await;
    for i in 0..5 {
        let response = bank.charge(&format!("r{i}"), "tok_visa").await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "bank_unavailable");
    }
    assert_eq!(
        bank.get_charge("r0").await.status(),
        503,
        "lookups are down too"
    );
    bank.put_chaos(json!({"preset": "healthy"})).await;
    assert!(bank.ledger().await.is_empty());
    assert_eq!(bank.get_charge("r0").await.status(), 404);
}

#[tokio::test]
async fn a_429_carries_retry_after_and_processes_nothing() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"error_rate": 1.0, "errors": {"http_429": 1}, "retry_after_s": 7}))
        .await;
    let response = bank.charge("r", "tok_visa").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
    assert!(bank.ledger().await.is_empty());
}

#[tokio::test]
async fn a_500_after_commit_is_ambiguous_and_a_retry_replays_the_charge() {
    let bank = spawn_bank().await;
    bank.put_chaos(
        json!({"error_rate": 1.0, "errors": {"http_500": 1}, "error_500_committed_rate": 1.0}),
    )
    .await;
    let response = bank.charge("r-after", "tok_visa").await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "internal_error"
    );
    assert_eq!(
        bank.ledger().await.len(),
        1,
        "the charge committed before the 500"
    );

    bank.put_chaos(json!({"error_rate": 1.0, "errors": {"http_500": 1}}))
        .await;
    assert_eq!(bank.charge("r-before", "tok_visa").await.status(), 500);
    assert_eq!(
        bank.ledger().await.len(),
        1,
        "a 500 before commit processes nothing"
    );

    bank.put_chaos(json!({"preset": "healthy"})).await;
    let retry = bank.charge("r-after", "tok_visa").await;
    assert_eq!(
        retry.status(),
        200,
        "the retry replays the committed charge"
    );
    assert_eq!(bank.charge("r-before", "tok_visa").await.status(), 201);
    assert_eq!(bank.ledger().await.len(), 2);
}

#[tokio::test]
async fn a_lost_response_commits_the_charge_while_the_client_sees_no_answer() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"lost_response_rate": 1.0, "lost_response_mode": "drop"}))
        .await;
    let started = Instant::now();
    let error = bank
        .charge_request(&bank.client, "r-lost", "tok_visa")
        .send()
        .await
        .unwrap_err();
    assert!(
        !error.is_timeout(),
        "dropped at once, not timed out: {error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let ledger = bank.ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].reference, "r-lost");
    assert_eq!(bank.status().await.faults["lost_response"], 1);

    bank.put_chaos(json!({"preset": "healthy"})).await;
    let found = bank.get_charge("r-lost").await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Charge>().await.unwrap(), ledger[0]);
}

#[tokio::test]
async fn a_withheld_response_commits_and_the_client_times_out() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({
        "lost_response_rate": 1.0,
        "lost_response_mode": "withhold",
        "hold_max_ms": 5000
    }))
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = bank
        .charge_request(&impatient, "r-held", "tok_visa")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(bank.ledger().await.len(), 1);
}

#[tokio::test]
async fn a_hang_is_cut_by_the_client_timeout_and_bounded_by_the_server() {
    let bank = spawn_bank().await;
    bank.put_chaos(json!({"hang_rate": 1.0, "hold_max_ms": 600}))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let error = bank
        .charge_request(&impatient, "r-hang", "tok_visa")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");

    // A patient client is let go by the server's bound, without an answer.
    let started = Instant::now();
    let error = bank
        .charge_request(&bank.client, "r-hang-2", "tok_visa")
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    eventually(
        Duration::from_secs(2),
        "held connections to be released",
        || async { bank.status().await.held == 0 },
    )
    .await;
    assert!(bank.ledger().await.is_empty(), "a hang never processes");
    assert_eq!(bank.status().await.faults["hang"], 2);
}

#[tokio::test]
async fn blackhole_hangs_every_charge() {
    let bank = spawn_bank().await;
    let state = bank.put_chaos(json!({"preset": "blackhole"})).await;
    assert_eq!(state.profile.hang_rate, 1.0);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for i in 0..3 {
        let error = bank
            .charge_request(&impatient, &format!("r{i}"), "tok_visa")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
    }
    assert!(bank.ledger().await.is_empty());
}

#[tokio::test]
async fn latency_and_the_slow_tail_delay_the_answer() {
    let bank = spawn_bank().await;
    bank.put_chaos(
        json!({"latency": {"base_ms": 100, "jitter_ms": 0, "tail_rate": 1.0, "tail_ms": 200}}),
    )
    .await;
    let started = Instant::now();
    assert_eq!(bank.charge("r", "tok_visa").await.status(), 201);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(bank.status().await.faults["slow_tail"], 1);
}
