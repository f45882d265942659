//! [`BankClient`]'s reading of every answer the bank can give (docs/contract.md §3 step 4), against a
//! scripted bank: a tiny HTTP server on 127.0.0.1:0 that gives one fixed answer to any request
//! and records what it was sent. What each answer is classified as decides whether the retry
//! loop may retry, whether the payment may be reported "not processed", and whether it must go
//! pending: a wrong class here is a double charge or a false "no charge" there.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use chrono::Utc;
use payment_types::bank::{Charge, ChargeRequest, ChargeStatus};
use serde_json::json;

use super::*;

/// What the scripted bank answers.
#[derive(Debug, Clone)]
enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    /// Accepts the request and never answers.
    Never,
}

fn answer(status: u16, body: impl Into<String>) -> Reply {
    Reply::Answer {
        status,
        headers: vec![("content-type", "application/json")],
        body: body.into(),
    }
}

fn answer_with(status: u16, headers: Vec<(&'static str, &'static str)>, body: &str) -> Reply {
    Reply::Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One request the scripted bank received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    idempotency_key: Option<String>,
    request_id: Option<String>,
}

struct ScriptedBank {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedBank {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ScriptedBank {
    async fn start(reply: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let router = Router::new().fallback(move |request: Request| {
            let reply = reply.clone();
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            record.lock().unwrap().push(Seen {
                method: request.method().to_string(),
                path: request.uri().path().to_owned(),
                idempotency_key: header(headers::IDEMPOTENCY_KEY),
                request_id: header(headers::REQUEST_ID),
            });
            async move {
                match reply {
                    Reply::Never => std::future::pending::<Response>().await,
                    Reply::Answer {
                        status,
                        headers,
                        body,
                    } => {
                        let mut response = Response::builder().status(status);
                        for (name, value) in headers {
                            response = response.header(name, value);
                        }
                        response.body(Body::from(body)).unwrap()
                    }
                }
            }
        });
        let server = tokio::spawn(async move {
            let _ = service_runtime::serve(listener, router, std::future::pending()).await;
        });
        Self { addr, seen, server }
    }

    fn url(&self) -> reqwest::Url {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A client of `bank_url` with a short attempt timeout (the client's own backstop timeout is
/// the attempt timeout plus one second).
fn client(bank_url: reqwest::Url) -> BankClient {
    let settings = crate::config::ResilienceArgs {
        attempt_timeout_ms: 200,
        ..Default::default()
    };
    BankClient::new(&settings, &bank_url).unwrap()
}

fn request() -> ChargeRequest {
    ChargeRequest {
        amount: 1999,
        currency: "TRY".to_owned(),
        source: "tok_visa".to_owned(),
        reference: "pay_0123456789abcdef".to_owned(),
    }
}

fn charge_body(status: ChargeStatus) -> String {
    serde_json::to_string(&Charge {
        id: "ch_test_1".to_owned(),
        reference: "pay_0123456789abcdef".to_owned(),
        amount: 1999,
        currency: "TRY".to_owned(),
        status,
        decline_code: None,
        created_at: Utc::now(),
    })
    .unwrap()
}

fn problem(status: u16, code: &str, extra: serde_json::Value) -> String {
    let mut body = json!({
        "type": format!("/problems/{code}"),
        "title": code,
        "status": status,
        "detail": "scripted",
        "code": code,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}

/// One charge attempt against a bank answering `reply`, bounded in time.
async fn charge_against(reply: Reply) -> (AttemptOutcome, Vec<Seen>) {
    let bank = ScriptedBank::start(reply).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client(bank.url()).charge(&request(), "req-test-1"),
    )
    .await
    .expect("an attempt ends within the client's timeout");
    (outcome, bank.seen())
}

async fn lookup_against(reply: Reply) -> (Lookup, Vec<Seen>) {
    let bank = ScriptedBank::start(reply).await;
    let found = tokio::time::timeout(
        Duration::from_secs(10),
        client(bank.url()).lookup("pay_0123456789abcdef", "req-test-2"),
    )
    .await
    .expect("a lookup ends within the client's timeout");
    (found, bank.seen())
}

/// An address nothing listens on (bound, then released).
async fn closed_port() -> reqwest::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}").parse().unwrap()
}

#[tokio::test]
async fn a_201_with_a_charge_is_charged_and_the_attempt_carries_the_reference_as_its_key() {
    let (outcome, seen) = charge_against(answer(201, charge_body(ChargeStatus::Succeeded))).await;
    match outcome {
        AttemptOutcome::Charged(charge) => {
            assert_eq!(charge.id, "ch_test_1");
            assert_eq!(charge.reference, "pay_0123456789abcdef");
        }
        other => panic!("expected charged, got {other:?}"),
    }
    assert_eq!(seen.len(), 1, "one attempt is one request");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/charges");
    assert_eq!(
        seen[0].idempotency_key.as_deref(),
        Some("pay_0123456789abcdef"),
        "the bank reference is the bank's Idempotency-Key"
    );
    assert_eq!(seen[0].request_id.as_deref(), Some("req-test-1"));
}

#[tokio::test]
async fn a_2xx_whose_body_cannot_be_read_is_ambiguous() {
    for reply in [
        answer(201, "{not json"),
        answer(200, ""),
        answer(201, r#"{"id": "ch_1"}"#),
        answer_with(201, vec![("content-type", "text/plain")], "charged"),
    ] {
        let (outcome, _) = charge_against(reply.clone()).await;
        assert!(
            matches!(&outcome, AttemptOutcome::Ambiguous { reason } if reason.contains("unreadable")),
            "{reply:?}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_402_is_declined_with_its_decline_code_or_card_declined() {
    let (outcome, _) = charge_against(answer(
        402,
        problem(
            402,
            "card_declined",
            json!({"decline_code": "insufficient_funds"}),
        ),
    ))
    .await;
    assert!(
        matches!(&outcome, AttemptOutcome::Declined { decline_code } if decline_code == "insufficient_funds"),
        "{outcome:?}"
    );

    for body in [
        problem(402, "card_declined", json!({})),
        "garbage".to_owned(),
    ] {
        let (outcome, _) = charge_against(answer(402, body.clone())).await;
        assert!(
            matches!(&outcome, AttemptOutcome::Declined { decline_code } if decline_code == "card_declined"),
            "{body}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_503_or_429_is_not_processed_with_its_retry_after() {
    for (status, retry_after, want) in [
        (503, Some("7"), Some(Duration::from_secs(7))),
        (429, Some("2"), Some(Duration::from_secs(2))),
        (429, Some(" 3 "), Some(Duration::from_secs(3))),
        (503, None, None),
        (503, Some("soon"), None),
    ] {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(retry_after.map(|v| ("retry-after", v)));
        let reply = answer_with(status, headers, &problem(status, "busy", json!({})));
        let (outcome, _) = charge_against(reply).await;
        match outcome {
            AttemptOutcome::NotProcessed {
                status: got,
                retry_after: wait,
            } => {
                assert_eq!(got, Some(status));
                assert_eq!(wait, want, "{status} Retry-After {retry_after:?}");
            }
            other => panic!("{status}: expected not processed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_500_502_or_504_is_ambiguous() {
    for status in [500, 502, 504] {
        let (outcome, _) = charge_against(answer(status, problem(status, "oops", json!({})))).await;
        assert!(
            matches!(&outcome, AttemptOutcome::Ambiguous { reason } if reason.contains(&status.to_string())),
            "{status}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn another_4xx_is_refused_with_the_banks_code() {
    for (status, code) in [
        (400, "invalid_body"),
        (409, "reference_reused"),
        (422, "invalid_request"),
    ] {
        let (outcome, _) = charge_against(answer(status, problem(status, code, json!({})))).await;
        match outcome {
            AttemptOutcome::Refused {
                status: got,
                code: got_code,
            } => {
                assert_eq!((got, got_code.as_str()), (status, code));
            }
            other => panic!("{status}: expected refused, got {other:?}"),
        }
    }
    // A 4xx without a problem body is still refused, with no code.
    let (outcome, _) = charge_against(answer(422, "nope")).await;
    assert!(
        matches!(&outcome, AttemptOutcome::Refused { status: 422, code } if code.is_empty()),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_not_processed() {
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client(closed_port().await).charge(&request(), "req-test-3"),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcome,
            AttemptOutcome::NotProcessed {
                status: None,
                retry_after: None
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_bank_that_accepts_and_never_answers_is_an_ambiguous_timeout() {
    let started = std::time::Instant::now();
    let (outcome, seen) = charge_against(Reply::Never).await;
    assert!(
        matches!(&outcome, AttemptOutcome::Ambiguous { reason } if reason == "timeout"),
        "{outcome:?}"
    );
    assert_eq!(seen.len(), 1, "the request reached the bank");
    // The client's backstop: the attempt timeout (200 ms) plus one second.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_closed_after_the_request_was_sent_is_ambiguous() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // Reads the request, then hangs up without a word.
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0_u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        drop(stream);
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client(format!("http://{addr}").parse().unwrap()).charge(&request(), "req-test-4"),
    )
    .await
    .unwrap();
    assert!(
        matches!(&outcome, AttemptOutcome::Ambiguous { .. }),
        "{outcome:?}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_lookup_is_found_not_found_or_unavailable() {
    let (found, seen) = lookup_against(answer(200, charge_body(ChargeStatus::Succeeded))).await;
    assert!(
        matches!(&found, Lookup::Found(charge) if charge.id == "ch_test_1"),
        "{found:?}"
    );
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/charges/pay_0123456789abcdef");
    assert_eq!(seen[0].request_id.as_deref(), Some("req-test-2"));

    let (found, _) = lookup_against(answer(200, charge_body(ChargeStatus::Declined))).await;
    assert!(
        matches!(&found, Lookup::Found(charge) if charge.status == ChargeStatus::Declined),
        "{found:?}"
    );

    let (found, _) = lookup_against(answer(404, problem(404, "not_found", json!({})))).await;
    assert!(matches!(found, Lookup::NotFound), "{found:?}");

    for reply in [
        answer(500, problem(500, "oops", json!({}))),
        answer(503, problem(503, "busy", json!({}))),
        answer(200, "garbage"),
        answer(429, ""),
    ] {
        let (found, _) = lookup_against(reply.clone()).await;
        assert!(matches!(found, Lookup::Unavailable), "{reply:?}: {found:?}");
    }

    let found = client(closed_port().await)
        .lookup("pay_0123456789abcdef", "req-test-5")
        .await;
    assert!(matches!(found, Lookup::Unavailable), "{found:?}");

    let (found, _) = lookup_against(Reply::Never).await;
    assert!(matches!(found, Lookup::Unavailable), "{found:?}");
}
