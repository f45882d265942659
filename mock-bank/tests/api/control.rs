//! The admin token, the starting preset, status and metrics.

use mock_bank::{Config, Secret};
use payment_types::bank::{BankStatus, Preset};
use serde_json::{json, Value};

use crate::helpers::{spawn_bank, spawn_with};

#[tokio::test]
async fn a_token_file_protects_chaos_control_but_reading_stays_open() {
    let file = temp_file("mock-bank-token-", "file-token\n");
    let bank = spawn_with(Config {
        admin_token_file: Some(file.path().to_path_buf()),
        ..Config::for_tests()
    })
    .await;
    let put = |auth: Option<&'static str>| {
        let mut request = bank
            .client
            .put(bank.url("/v1/chaos"))
            .json(&json!({"preset": "down"}));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let refused = put(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "unauthorized"
    );
    assert_eq!(put(Some("Bearer nope")).await.unwrap().status(), 401);
    assert_eq!(
        bank.chaos().await.preset,
        Some(Preset::Healthy),
        "a refused PUT changes nothing"
    );
    assert_eq!(put(Some("Bearer file-token")).await.unwrap().status(), 200);
    assert_eq!(bank.chaos().await.preset, Some(Preset::Down));
    file.close().unwrap();
}

#[tokio::test]
async fn a_token_flag_works_the_same_and_an_empty_token_file_is_an_error() {
    let bank = spawn_with(Config {
        admin_token: Some(Secret::from("flag-token".to_owned())),
        ..Config::for_tests()
    })
    .await;
    let response = bank
        .client
        .put(bank.url("/v1/chaos"))
        .bearer_auth("flag-token")
        .json(&json!({"error_rate": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let file = temp_file("mock-bank-empty-", "  \n");
    let error = mock_bank::Application::build(Config {
        admin_token_file: Some(file.path().to_path_buf()),
        ..Config::for_tests()
    })
    .await
    .unwrap_err();
    assert!(error.to_string().contains("empty"), "{error}");
    file.close().unwrap();
}

#[tokio::test]
async fn the_starting_preset_applies_from_the_first_request() {
    let bank = spawn_with(Config {
        chaos: Preset::Down,
        ..Config::for_tests()
    })
    .await;
    assert_eq!(bank.charge("r", "tok_visa").await.status(), 503);
}

#[tokio::test]
async fn status_and_metrics_count_outcomes_and_faults() {
    let bank = spawn_bank().await;
    bank.charge("a", "tok_visa").await;
    bank.charge("a", "tok_visa").await;
    bank.charge("d", "tok_decline").await;
    bank.put_chaos(json!({"preset": "down"})).await;
    bank.charge("b", "tok_visa").await;
    let status: BankStatus = bank.status().await;
    assert_eq!(status.outcomes["created"], 1);
    assert_eq!(status.outcomes["replayed"], 1);
    assert_eq!(status.outcomes["declined"], 1);
    assert_eq!(status.faults["http_503"], 1);
    assert_eq!(status.chaos_requests, 4);
    assert_eq!(status.ledger_charges, 2);
    assert_eq!(status.chaos.preset, Some(Preset::Down));
    assert_eq!(status.instance_id, bank.instance_id);

    let presets: Value = bank
        .client
        .get(bank.url("/v1/chaos/presets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(presets.as_array().unwrap().len(), 6);

    let metrics = bank
        .client
        .get(bank.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mock_bank_responses_total{outcome=\"created\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mock_bank_faults_total{fault=\"http_503\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mock_bank_ledger_charges 2"), "{metrics}");
}

/// A fresh file under the system temp dir holding `text`, removed when dropped (pass or fail).
fn temp_file(prefix: &str, text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().prefix(prefix).tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}
