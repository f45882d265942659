//! A payment through real processes: the API binary calls the bank binary over HTTP.

use e2e::{start_api, start_bank, temp_dir, TEST_API_KEY};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn pay(api: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{api}/v1/payments"))
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", key)
        .header("X-Request-Id", format!("req-{key}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payment_is_charged_by_the_bank_and_answered_201() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("pay"), &[]).await;

    let response = pay(
        &api.url(),
        "order-1",
        json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "req-order-1");
    assert_eq!(response.headers()["idempotent-replayed"], "false");
    let payment: Value = response.json().await.unwrap();
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["amount"], 1999);
    assert_eq!(payment["currency"], "TRY");

    // The bank's own record is the ground truth: the charge is there, under the payment's reference.
    let reference = payment["bank_reference"].as_str().unwrap();
    let charge: Value = client()
        .get(format!("{}/v1/charges/{reference}", bank.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(charge["amount"], 1999);
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["id"], payment["bank_charge_id"]);
}

#[tokio::test]
async fn a_declined_card_is_402_with_its_decline_code() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("decline"), &[]).await;
    let response = pay(
        &api.url(),
        "order-2",
        json!({"amount": 500, "currency": "EUR", "source": "tok_insufficient_funds"}),
    )
    .await;
    assert_eq!(response.status(), 402);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "card_declined");
    assert_eq!(problem["decline_code"], "insufficient_funds");
}

#[tokio::test]
async fn bad_requests_get_problem_json_with_stable_codes() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("bad"), &[]).await;
    let url = format!("{}/v1/payments", api.url());
    let body = json!({"amount": 100, "currency": "TRY", "source": "tok_visa"});

    let no_auth = client()
        .post(&url)
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    let wrong_auth = client()
        .post(&url)
        .bearer_auth("sk_wrong_0123456789abcdef")
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    let no_key = client()
        .post(&url)
        .bearer_auth(TEST_API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let bad_amount = pay(
        &api.url(),
        "k2",
        json!({"amount": -5, "currency": "TRY", "source": "tok_visa"}),
    )
    .await;
    let unknown_field = pay(
        &api.url(),
        "k3",
        json!({"amount": 5, "currency": "TRY", "source": "tok_visa", "admin": true}),
    )
    .await;

    for (response, status, code) in [
        (no_auth, 401, "unauthenticated"),
        (wrong_auth, 401, "unauthenticated"),
        (no_key, 400, "idempotency_key_missing"),
        (bad_amount, 422, "invalid_amount"),
        (unknown_field, 422, "invalid_body"),
    ] {
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{code}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code);
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// Runs the API binary with `args` and `env` until it exits (it is expected to refuse to start).
fn start_refused(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = temp_dir("lease-refused");
    let keys = format!("e2e:{TEST_API_KEY}");
    let output = std::process::Command::new(e2e::binary("payment-api"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env("PAYMENT_API_KEYS", keys)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_api_refuses_to_start_with_a_lease_its_payments_could_outlive() {
    // Under deadline + max(2 s, 20%): refused at start, naming both flags and the minimum.
    let (started, stderr) = start_refused(&["--deadline-ms", "10000", "--lease-ms", "11999"], &[]);
    assert!(!started);
    for needle in ["--lease-ms", "--deadline-ms", "11999", "12000"] {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    // The environment variable is held to the same rule.
    let (started, stderr) = start_refused(&[], &[("PAYMENT_API_LEASE_MS", "10000")]);
    assert!(!started);
    assert!(stderr.contains("--lease-ms"), "{stderr}");
}
