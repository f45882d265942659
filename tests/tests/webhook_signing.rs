//! Our Standard Webhooks signatures against an independent implementation: the specification's
//! reference Python library (`standardwebhooks` on PyPI), run as a subprocess (issue 20, "Done
//! when"). We sign and Python verifies; Python signs and we verify; a secret rotation (two
//! signatures in one header) both ways; and the specification's test vector through both.
//!
//! Without Python's `standardwebhooks` the tests print SKIPPED, and fail under `CI=true`
//! (`.ci/setup` installs it).

use serde_json::json;
use webhooks::{sign, signature_header, verify, Secret, VerifyError, DEFAULT_TOLERANCE_SECS};

use e2e::reference_webhooks::{available as reference_library, run as python};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A body shaped like a payment event, with a non-ASCII character so the bytes are not ASCII.
fn event_body() -> String {
    json!({
        "id": "evt_0190b1f2-7c3e-7aa1-9c4e-1f2d3c4b5a69",
        "type": "payment.succeeded",
        "created_at": "2026-11-30T12:00:00Z",
        "data": {"id": "pay_1", "status": "succeeded", "amount": 1234, "currency": "EUR",
                 "description": "Café crème"}
    })
    .to_string()
}

fn python_verifies(secret: &Secret, id: &str, ts: i64, signature: &str, body: &str) -> String {
    python(&json!({
        "mode": "verify", "secret": secret.expose(), "id": id, "timestamp": ts,
        "signature": signature, "body": body,
    }))
}

fn python_signs(secrets: &[&Secret], id: &str, ts: i64, body: &str) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| s.expose()).collect();
    python(&json!({"mode": "sign", "secrets": secrets, "id": id, "timestamp": ts, "body": body}))
}

#[test]
fn the_specification_test_vector_agrees_in_both_implementations() {
    let Some(()) = reference_library() else {
        return;
    };
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        r#"{"test": 2432232314}"#,
    );
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(sign(&secret, id, ts, body.as_bytes()), expected);
    assert_eq!(python_signs(&[&secret], id, ts, body), expected);
}

#[test]
fn a_signature_we_make_verifies_with_the_reference_library() {
    let Some(()) = reference_library() else {
        return;
    };
    let secret = Secret::generate();
    let body = event_body();
    let ts = now();
    let header = signature_header(&[&secret], "evt_1", ts, body.as_bytes());
    assert_eq!(
        python_verifies(&secret, "evt_1", ts, &header, &body),
        "verified"
    );
    // The check is not vacuous: the library refuses a changed body, id or secret.
    let changed = body.replace("1234", "1235");
    assert!(python_verifies(&secret, "evt_1", ts, &header, &changed).starts_with("refused"));
    assert!(python_verifies(&secret, "evt_2", ts, &header, &body).starts_with("refused"));
    let other = Secret::generate();
    assert!(python_verifies(&other, "evt_1", ts, &header, &body).starts_with("refused"));
}

#[test]
fn during_a_rotation_both_secrets_verify_with_the_reference_library_then_only_the_new() {
    let Some(()) = reference_library() else {
        return;
    };
    let (old, new) = (Secret::generate(), Secret::generate());
    let body = event_body();
    let ts = now();
    let both = signature_header(&[&new, &old], "evt_1", ts, body.as_bytes());
    assert_eq!(both.split(' ').count(), 2);
    assert_eq!(python_verifies(&old, "evt_1", ts, &both, &body), "verified");
    assert_eq!(python_verifies(&new, "evt_1", ts, &both, &body), "verified");
    // After the overlap only the new secret signs: a receiver still holding the old one refuses.
    let only_new = signature_header(&[&new], "evt_1", ts, body.as_bytes());
    assert_eq!(
        python_verifies(&new, "evt_1", ts, &only_new, &body),
        "verified"
    );
    assert!(python_verifies(&old, "evt_1", ts, &only_new, &body).starts_with("refused"));
}

#[test]
fn a_signature_the_reference_library_makes_verifies_with_ours_including_a_rotation() {
    let Some(()) = reference_library() else {
        return;
    };
    let (old, new) = (Secret::generate(), Secret::generate());
    let body = event_body();
    let ts = now();
    let check = |secrets: &[&Secret], header: &str, body: &str| {
        verify(
            secrets,
            "evt_1",
            &ts.to_string(),
            header,
            body.as_bytes(),
            now(),
            DEFAULT_TOLERANCE_SECS,
        )
    };
    let single = python_signs(&[&new], "evt_1", ts, &body);
    check(&[&new], &single, &body).unwrap();
    assert_eq!(check(&[&old], &single, &body), Err(VerifyError::Mismatch));

    let both = python_signs(&[&new, &old], "evt_1", ts, &body);
    assert_eq!(both.split(' ').count(), 2);
    check(&[&old], &both, &body).unwrap();
    check(&[&new], &both, &body).unwrap();
    // Byte for byte the same signatures as ours.
    assert_eq!(
        both,
        signature_header(&[&new, &old], "evt_1", ts, body.as_bytes())
    );
    let changed = body.replace("Café", "Cafe");
    assert_eq!(
        check(&[&new, &old], &both, &changed),
        Err(VerifyError::Mismatch)
    );
}
