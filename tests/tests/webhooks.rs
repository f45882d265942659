//! Webhooks over real processes (issue 20, "Done when"): the API and the mock bank run as OS
//! processes on free ports; the receiver is an axum server on `127.0.0.1:0` inside the test,
//! recording every request it gets (headers, exact body bytes, what it answered, when) down a
//! channel, and answering as the test tells it (a status, 500 for the first N requests, or no
//! answer at all). Every wait is a channel receive or a bounded poll with a deadline.
//!
//! Each test starts its own bank and API, so the tests run in parallel.
//!
//! The reference-library checks need Python's `standardwebhooks` (as `webhook_signing.rs`):
//! without it they print SKIPPED, and fail under `CI=true`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    Router,
};
use e2e::{
    client::{http, parts, pay, payment, set_chaos, status},
    eventually, fast_api_with, signal, start_api, start_api_with_keys, start_bank, temp_dir,
    wait_exit, FAST_API, TEST_API_KEY, TEST_OPERATOR_KEY, TEST_TENANT,
};
use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use webhooks::{verify, Secret, VerifyError, DEFAULT_TOLERANCE_SECS};

/// A second tenant's key (a test fixture, not a secret of any deployment).
const OTHER_KEY: &str = "sk_test_other_0123456789abcdef";

const ALL_TYPES: [&str; 4] = [
    "payment.succeeded",
    "payment.declined",
    "payment.failed",
    "payment.pending",
];

// ---------------------------------------------------------------------------------------------
// The receiver

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered; 0 when it held the request without answering.
    answered: u16,
    /// When the request arrived.
    at: Instant,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("a delivery without a {name} header: {:?}", self.headers))
    }

    fn id(&self) -> &str {
        self.header("webhook-id")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }

    fn payment_id(&self) -> String {
        self.json()["data"]["payment"]["id"]
            .as_str()
            .expect("the body names its payment")
            .to_owned()
    }

    fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_owned()
    }

    /// The `v1,…` entries of `webhook-signature`.
    fn signatures(&self) -> Vec<String> {
        self.header("webhook-signature")
            .split(' ')
            .map(str::to_owned)
            .collect()
    }

    /// Verifies with `secrets` as a Standard Webhooks receiver does (the `webhooks` crate).
    fn verify(&self, secrets: &[&str]) -> Result<(), VerifyError> {
        self.verify_header(secrets, self.header("webhook-signature"))
    }

    /// Like [`Self::verify`], with `signature` as the `webhook-signature` header.
    fn verify_header(&self, secrets: &[&str], signature: &str) -> Result<(), VerifyError> {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::parse(s).unwrap()).collect();
        let secrets: Vec<&Secret> = secrets.iter().collect();
        verify(
            &secrets,
            self.id(),
            self.header("webhook-timestamp"),
            signature,
            &self.body,
            now(),
            DEFAULT_TOLERANCE_SECS,
        )
    }
}

/// How the receiver answers; changeable while it runs.
#[derive(Debug, Default)]
struct Behaviour {
    /// The status of each answer (after the `fail_first` ones).
    status: AtomicU16,
    /// This many requests first are answered 500.
    fail_first: AtomicU32,
    /// Hold every request without answering (the API's attempt timeout ends it).
    hang: AtomicBool,
}

struct Receiver {
    url: String,
    behaviour: Arc<Behaviour>,
    got: mpsc::UnboundedReceiver<Got>,
}

impl Receiver {
    /// Listens on a free loopback port, answering `status` to every `POST /hook`.
    async fn start(status: u16) -> Self {
        let (tx, got) = mpsc::unbounded_channel();
        let behaviour = Arc::new(Behaviour::default());
        behaviour.status.store(status, Ordering::SeqCst);
        let answers = behaviour.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let answers = answers.clone();
                let tx = tx.clone();
                async move {
                    let at = Instant::now();
                    if answers.hang.load(Ordering::SeqCst) {
                        let _ = tx.send(Got {
                            headers,
                            body,
                            answered: 0,
                            at,
                        });
                        // Dropped when the API gives up on the attempt and closes the connection.
                        return std::future::pending::<StatusCode>().await;
                    }
                    let failing = answers
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let answered = if failing {
                        500
                    } else {
                        answers.status.load(Ordering::SeqCst)
                    };
                    let _ = tx.send(Got {
                        headers,
                        body,
                        answered,
                        at,
                    });
                    StatusCode::from_u16(answered).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            behaviour,
            got,
        }
    }

    /// Requests until one satisfies `pred`, within `timeout`; returns every request read (the
    /// matching one last). Panics, naming `what`, when none comes in time.
    async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Got) -> bool,
    ) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.got.recv()).await {
                Ok(Some(got)) => {
                    let done = pred(&got);
                    seen.push(got);
                    if done {
                        return seen;
                    }
                }
                _ => panic!(
                    "no delivery within {timeout:?}: {what}; got meanwhile: {:?}",
                    seen.iter()
                        .map(|g| (g.id().to_owned(), g.answered))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The first request about `payment_id`'s `event_type` event, within `timeout`.
    async fn event(&mut self, timeout: Duration, payment_id: &str, event_type: &str) -> Got {
        let what = format!("{event_type} of {payment_id}");
        self.until(timeout, &what, |g| {
            g.payment_id() == payment_id && g.event_type() == event_type
        })
        .await
        .pop()
        .unwrap()
    }

    /// Whatever arrived and was not read yet.
    fn drain(&mut self) -> Vec<Got> {
        let mut all = Vec::new();
        while let Ok(got) = self.got.try_recv() {
            all.push(got);
        }
        all
    }
}

// ---------------------------------------------------------------------------------------------
// The API

/// The test-sized API flags ([`FAST_API`], a 1.5 s deadline) plus the webhook ones: a loopback
/// receiver allowed, a 50 ms poll, the retry schedule compressed 1000× (first retry after 5 ms);
/// `overrides` replace any of these values.
fn api_flags(overrides: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut pairs = vec![
        ("--webhook-poll-ms", "50"),
        ("--webhook-retry-scale", "0.001"),
    ];
    pairs.extend_from_slice(overrides);
    let mut args = fast_api_with(&pairs);
    args.push("--webhook-allow-private-urls");
    args
}

/// A request with `key`; the status and the JSON body (`Null` when empty).
async fn call(method: Method, url: String, key: &str, json: Option<Value>) -> (u16, Value) {
    let mut request = http().request(method, url).bearer_auth(key);
    if let Some(json) = json {
        request = request.json(&json);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

async fn get(api: &str, path: &str, key: &str) -> (u16, Value) {
    call(Method::GET, format!("{api}{path}"), key, None).await
}

async fn post(api: &str, path: &str, key: &str, json: Value) -> (u16, Value) {
    call(Method::POST, format!("{api}{path}"), key, Some(json)).await
}

/// Registers `url` for the test tenant (every event type); the answer, with its secret.
async fn register(api: &str, url: &str) -> Value {
    let (status, endpoint) = post(
        api,
        "/v1/webhook-endpoints",
        TEST_API_KEY,
        json!({ "url": url }),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    endpoint
}

fn secret_of(endpoint: &Value) -> String {
    endpoint["secret"].as_str().expect("a secret").to_owned()
}

/// Pays `amount` from `source` with a fresh idempotency key; asserts the status, returns the
/// answer's body.
async fn pay_from(api: &str, source: &str, expected: u16) -> Value {
    let key = uuid::Uuid::new_v4().simple().to_string();
    let answer = json!({"amount": 1999, "currency": "TRY", "source": source});
    let (status, _, _, bytes) = parts(pay(api, &key, &answer).await).await;
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

/// A payment that succeeds (201); its id.
async fn pay_ok(api: &str) -> String {
    pay_from(api, "tok_visa", 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /v1/events/{id}` with `key`, asserting 200.
async fn event(api: &str, id: &str, key: &str) -> Value {
    let (status, event) = get(api, &format!("/v1/events/{id}"), key).await;
    assert_eq!(status, 200, "{event}");
    event
}

/// The delivery of `event` (as `GET /v1/events/{id}` shows it) to `endpoint_id`.
fn delivery(event: &Value, endpoint_id: &Value) -> Value {
    event["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["endpoint_id"] == *endpoint_id)
        .cloned()
        .unwrap_or_else(|| panic!("no delivery to {endpoint_id}: {event}"))
}

/// Polls `GET /v1/events/{id}` until the delivery to `endpoint_id` is in `state`; then reads it
/// once more, and returns that read. The second read is needed because one read of an event is
/// not one snapshot of the store: it reads the attempts, then the deliveries, so it may show a
/// delivery's new state without the attempt that brought it (a bug: see
/// `an_event_read_never_shows_a_delivery_state_without_its_attempt`). A read started after the
/// state was seen sees that attempt too (both are committed in one transaction).
async fn delivery_in(api: &str, id: &str, endpoint_id: &Value, state: &str) -> Value {
    let what = format!("the delivery of {id} to {endpoint_id} is {state}");
    eventually(Duration::from_secs(20), &what, || async move {
        let (_, event) = get(api, &format!("/v1/events/{id}"), TEST_API_KEY).await;
        let delivery = event["deliveries"]
            .as_array()?
            .iter()
            .find(|d| d["endpoint_id"] == *endpoint_id)?
            .clone();
        (delivery["state"] == state).then_some(delivery)
    })
    .await;
    let again = event(api, id, TEST_API_KEY).await;
    let delivery = delivery(&again, endpoint_id);
    assert_eq!(delivery["state"], state, "{again}");
    delivery
}

/// The test tenant's event of type `event_type` about `payment_id` (`GET /v1/events`).
async fn event_of(api: &str, payment_id: &str, event_type: &str) -> Value {
    let what = format!("a {event_type} event for {payment_id}");
    eventually(Duration::from_secs(10), &what, || async move {
        let (_, page) = get(
            api,
            &format!("/v1/events?type={event_type}&limit=100"),
            TEST_API_KEY,
        )
        .await;
        page["data"]
            .as_array()?
            .iter()
            .find(|e| e["data"]["payment"]["id"] == payment_id)
            .cloned()
    })
    .await
}

fn statuses(delivery: &Value) -> Vec<Value> {
    delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].clone())
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// The reference library (Python's standardwebhooks), as in webhook_signing.rs

use e2e::reference_webhooks::available as reference_library;

/// What the reference library says of `got` under `secret`: "verified" or "refused: …".
fn python_verifies(got: &Got, secret: &str) -> String {
    let request = json!({
        "secret": secret,
        "id": got.id(),
        "timestamp": got.header("webhook-timestamp"),
        "signature": got.header("webhook-signature"),
        "body": std::str::from_utf8(&got.body).expect("a UTF-8 body"),
    });
    e2e::reference_webhooks::run(&request)
}

// ---------------------------------------------------------------------------------------------
// 1. Registration, a delivery, its signature (ours and the reference library), its body

#[tokio::test]
async fn a_settled_payment_is_delivered_signed_with_the_payment_as_get_shows_it() {
    let python = reference_library();
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("wh-deliver"), &api_flags(&[])).await;
    let api = api.url();
    let mut hook = Receiver::start(200).await;

    // Registration: 201 with the secret, shown once.
    let endpoint = register(&api, &hook.url).await;
    let secret = secret_of(&endpoint);
    assert!(secret.starts_with("whsec_"), "{endpoint}");
    Secret::parse(&secret).expect("a Standard Webhooks secret");
    assert!(endpoint["id"].as_str().unwrap().starts_with("we_"));
    assert_eq!(endpoint["url"], hook.url.as_str());
    assert_eq!(endpoint["event_types"], json!(ALL_TYPES));
    let endpoint_id = endpoint["id"].as_str().unwrap();
    // Never again: neither the endpoint nor the list shows it, under any name.
    let (status, one) = get(
        &api,
        &format!("/v1/webhook-endpoints/{endpoint_id}"),
        TEST_API_KEY,
    )
    .await;
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none(), "{one}");
    assert_eq!(one["id"], endpoint["id"]);
    let (status, list) = get(&api, "/v1/webhook-endpoints", TEST_API_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["data"][0].get("secret").is_none());
    let key_part = secret.trim_start_matches("whsec_");
    assert!(!one.to_string().contains(key_part) && !list.to_string().contains(key_part));

    let payment_id = pay_ok(&api).await;
    let got = hook
        .event(Duration::from_secs(15), &payment_id, "payment.succeeded")
        .await;
    assert_eq!(got.answered, 200);
    assert_eq!(got.header("content-type"), "application/json");

    // The signature verifies with the webhooks crate, and not with another secret.
    got.verify(&[&secret]).expect("the delivery verifies");
    let other = Secret::generate().expose();
    assert_eq!(got.verify(&[&other]), Err(VerifyError::Mismatch));
    assert_eq!(got.signatures().len(), 1, "one secret, one signature");
    // And with the reference library (an independent implementation).
    if python.is_some() {
        assert_eq!(python_verifies(&got, &secret), "verified");
        assert!(python_verifies(&got, &other).starts_with("refused"));
    }

    // The body: the payment as GET shows it, and the event as GET /v1/events lists it.
    let body = got.json();
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(
        body["data"]["payment"],
        payment(&api, &payment_id).await,
        "the payment as GET /v1/payments/{{id}} shows it"
    );
    let id = body["id"].as_str().unwrap();
    assert_eq!(got.id(), id, "webhook-id is the event id");
    assert!(
        id.len() == 36 && id.starts_with("evt_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let (status, events) = get(&api, "/v1/events", TEST_API_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(events["data"][0]["id"], id, "{events}");
    assert_eq!(events["data"][0], body, "the list shows the delivered body");
    let listed = event_of(&api, &payment_id, "payment.succeeded").await;
    assert_eq!(listed["id"], id);
    // The event read alone: the same members, and the delivery recorded with its 2xx.
    let delivered = delivery_in(&api, id, &endpoint["id"], "delivered").await;
    assert_eq!(statuses(&delivered), vec![json!(200)]);
    assert!(delivered["attempts"][0]["error"].is_null());
    let alone = event(&api, id, TEST_API_KEY).await;
    for member in ["id", "type", "timestamp", "data"] {
        assert_eq!(alone[member], body[member], "{member}");
    }
    // A 201 payment reaches one state: exactly one event, delivered once.
    assert!(hook.drain().is_empty(), "no second delivery");
}

// ---------------------------------------------------------------------------------------------
// 2. Declined; pending (bank blackholed) then succeeded through the reconciler

#[tokio::test]
async fn declined_and_pending_then_reconciled_payments_announce_each_state() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("wh-states"), &api_flags(&[])).await;
    let api = api.url();
    let mut hook = Receiver::start(200).await;
    let endpoint = register(&api, &hook.url).await;
    let secret = secret_of(&endpoint);

    // A decline: 402, then payment.declined with the declined payment.
    pay_from(&api, "tok_decline", 402).await;
    let declined = hook
        .until(Duration::from_secs(15), "payment.declined", |g| {
            g.event_type() == "payment.declined"
        })
        .await
        .pop()
        .unwrap();
    declined.verify(&[&secret]).unwrap();
    let declined_payment = declined.json()["data"]["payment"].clone();
    assert_eq!(declined_payment["status"], "declined");
    assert_eq!(
        declined_payment,
        payment(&api, declined_payment["id"].as_str().unwrap()).await
    );

    // The bank hangs: the 1.5 s deadline answers 202, announced as payment.pending.
    set_chaos(&bank.url(), "blackhole").await;
    let pending = pay_from(&api, "tok_visa", 202).await;
    assert_eq!(pending["status"], "pending");
    let id = pending["id"].as_str().unwrap().to_owned();
    let announced = hook
        .event(Duration::from_secs(15), &id, "payment.pending")
        .await;
    announced.verify(&[&secret]).unwrap();
    assert_eq!(announced.json()["data"]["payment"]["status"], "pending");

    // The bank heals: the reconciler settles it, announced as payment.succeeded.
    set_chaos(&bank.url(), "healthy").await;
    let settled = hook
        .event(Duration::from_secs(30), &id, "payment.succeeded")
        .await;
    settled.verify(&[&secret]).unwrap();
    assert_ne!(settled.id(), announced.id(), "one event per state");
    assert_eq!(
        settled.json()["data"]["payment"],
        payment(&api, &id).await,
        "the settled payment as GET shows it"
    );
    assert_eq!(settled.json()["data"]["payment"]["status"], "succeeded");
    // Both listed, each once.
    assert_eq!(
        event_of(&api, &id, "payment.pending").await["id"],
        announced.id()
    );
    assert_eq!(
        event_of(&api, &id, "payment.succeeded").await["id"],
        settled.id()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A kill between the state change and the send

/// How the event is kept from being sent before the kill: the first process polls for due
/// deliveries every 10 minutes (`--webhook-poll-ms 600000`; its first pass runs as it starts,
/// before the endpoint exists), so the payment's event is committed with its pending delivery
/// and no pass picks it up. As a second guard, should a pass race the registration, the receiver
/// answers 503 during the first process's life: nothing can be delivered before the kill.
#[tokio::test]
async fn an_event_committed_before_a_kill_is_delivered_by_the_next_process() {
    let bank = start_bank(&[]).await;
    let data = temp_dir("wh-kill");
    let mut hook = Receiver::start(503).await;
    let mut first = start_api(
        &bank.url(),
        &data,
        &api_flags(&[("--webhook-poll-ms", "600000")]),
    )
    .await;
    let endpoint = register(&first.url(), &hook.url).await;
    let secret = secret_of(&endpoint);
    let payment_id = pay_ok(&first.url()).await;
    // The state change and its event are committed; the delivery waits, undelivered.
    let written = event_of(&first.url(), &payment_id, "payment.succeeded").await;
    let event_id = written["id"].as_str().unwrap().to_owned();
    let before = event(&first.url(), &event_id, TEST_API_KEY).await;
    assert_eq!(
        delivery(&before, &endpoint["id"])["state"],
        "pending",
        "{before}"
    );
    assert!(
        hook.drain().iter().all(|g| g.answered == 503),
        "nothing was delivered before the kill"
    );

    signal(first.child.id(), Signal::SIGKILL);
    wait_exit(&mut first.child, Duration::from_secs(5)).expect("the API dies on SIGKILL");
    drop(first);

    hook.behaviour.status.store(200, Ordering::SeqCst);
    let second = start_api(&bank.url(), &data, &api_flags(&[])).await;
    let seen = hook
        .until(
            Duration::from_secs(20),
            "the new process delivers the event",
            |g| g.answered == 200 && g.payment_id() == payment_id,
        )
        .await;
    let got = seen.last().unwrap();
    assert_eq!(got.id(), event_id);
    got.verify(&[&secret]).unwrap();
    assert_eq!(
        got.json(),
        written,
        "the body committed before the kill, byte for byte"
    );
    // Every request about this payment (a racing 503'd one, or a duplicate) is the same event.
    for g in &seen {
        if g.payment_id() == payment_id {
            assert_eq!(g.id(), event_id);
            assert_eq!(g.body, got.body);
        }
    }
    let delivered = delivery_in(&second.url(), &event_id, &endpoint["id"], "delivered").await;
    assert_eq!(
        statuses(&delivered).last(),
        Some(&json!(200)),
        "{delivered}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Retries, the attempt log, giving up, redelivery

/// A receiver failing its first 3 requests gets the event on the 4th attempt; the event's read
/// lists every attempt. A receiver that always answers 500 has its delivery `failed` after the
/// schedule's last attempt (compressed 100 000×: 3 days become 2.6 s); a redelivery then reaches
/// it once it is healthy.
///
/// The endpoint's breaker opens after 5 consecutive failures and holds its deliveries for 5 s
/// doubling per opening, a wait `--webhook-retry-scale` does not compress: 12 attempts in a row
/// would take over 10 minutes. The breaker lives in the process's memory and the failure count
/// in the store, so the test restarts the API (SIGTERM: the batch in progress is recorded) each
/// time the breaker opens, which also shows the schedule resuming from the stored count.
#[tokio::test]
async fn a_failing_endpoint_is_retried_each_attempt_logged_then_failed_then_redelivered() {
    let bank = start_bank(&[]).await;
    let data = temp_dir("wh-retry");
    let flags = api_flags(&[("--webhook-retry-scale", "0.00001")]);
    let mut api = start_api(&bank.url(), &data, &flags).await;
    let mut flaky = Receiver::start(200).await;
    flaky.behaviour.fail_first.store(3, Ordering::SeqCst);
    let mut dead = Receiver::start(500).await;
    let flaky_endpoint = register(&api.url(), &flaky.url).await;
    let dead_endpoint = register(&api.url(), &dead.url).await;
    let flaky_secret = secret_of(&flaky_endpoint);

    let payment_id = pay_ok(&api.url()).await;
    let seen = flaky
        .until(
            Duration::from_secs(15),
            "the flaky receiver's first 2xx",
            |g| g.answered == 200,
        )
        .await;
    assert_eq!(
        seen.iter().map(|g| g.answered).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    let event_id = seen[0].id().to_owned();
    for g in &seen {
        assert_eq!(g.id(), event_id, "the same webhook-id on every retry");
        assert_eq!(g.body, seen[0].body, "the same body on every retry");
        g.verify(&[&flaky_secret])
            .expect("every attempt is signed afresh");
    }
    let delivered = delivery_in(&api.url(), &event_id, &flaky_endpoint["id"], "delivered").await;
    assert_eq!(
        statuses(&delivered),
        vec![json!(500), json!(500), json!(500), json!(200)]
    );
    for (n, attempt) in delivered["attempts"].as_array().unwrap().iter().enumerate() {
        assert!(attempt["at"].is_string(), "{attempt}");
        assert!(attempt["latency_ms"].is_u64(), "{attempt}");
        assert_eq!(attempt["error"].is_null(), n == 3, "{attempt}");
    }

    // The always-failing endpoint: every attempt of the schedule, then failed.
    let max = status(&api.url()).await["webhooks"]["retry_schedule_max_attempts"]
        .as_u64()
        .unwrap();
    assert_eq!(max, 12);
    let dead_id = dead_endpoint["id"].as_str().unwrap().to_owned();
    let mut lives = 1;
    let failed = loop {
        assert!(lives <= 4, "the schedule ended within 4 process lives");
        // Until the delivery is failed, or this process's breaker for the endpoint opened.
        let done = eventually(
            Duration::from_secs(20),
            "the dead endpoint's delivery fails or its breaker opens",
            || {
                let api = api.url();
                let (event_id, dead_id) = (event_id.clone(), dead_id.clone());
                async move {
                    let (_, event) =
                        get(&api, &format!("/v1/events/{event_id}"), TEST_API_KEY).await;
                    let delivery = event["deliveries"]
                        .as_array()?
                        .iter()
                        .find(|d| d["endpoint_id"] == dead_id.as_str())?
                        .clone();
                    if delivery["state"] == "failed" {
                        return Some(true);
                    }
                    let status = status(&api).await;
                    let open = status["webhooks"]["endpoints"]
                        .as_array()?
                        .iter()
                        .any(|e| e["id"] == dead_id.as_str() && e["breaker_state"] == "open");
                    open.then_some(false)
                }
            },
        )
        .await;
        if done {
            // Read again: the read that saw `failed` may lack the last attempt (see
            // `delivery_in`).
            let read = event(&api.url(), &event_id, TEST_API_KEY).await;
            break delivery(&read, &dead_endpoint["id"]);
        }
        api.terminate(Duration::from_secs(15))
            .expect("the API stops on SIGTERM");
        drop(api);
        api = start_api(&bank.url(), &data, &flags).await;
        lives += 1;
    };
    assert_eq!(
        statuses(&failed),
        vec![json!(500); max as usize],
        "every attempt of the schedule, no more: {failed}"
    );
    let sent = dead.drain();
    assert_eq!(sent.len() as u64, max, "the receiver got every attempt");
    assert!(sent.iter().all(|g| g.id() == event_id));
    let (_, failed_events) =
        get(&api.url(), "/v1/events?delivery_state=failed", TEST_API_KEY).await;
    assert_eq!(failed_events["data"][0]["id"], event_id.as_str());

    // Redelivery once the receiver is healthy: the same event, delivered.
    dead.behaviour.status.store(200, Ordering::SeqCst);
    let (status_code, queued) = post(
        &api.url(),
        &format!("/v1/events/{event_id}/redeliver"),
        TEST_API_KEY,
        json!({}),
    )
    .await;
    assert_eq!(status_code, 202, "{queued}");
    assert_eq!(queued["id"], event_id.as_str());
    assert_eq!(queued["queued"], 2, "both endpoints match: {queued}");
    let again = dead
        .until(Duration::from_secs(15), "the redelivery", |g| {
            g.answered == 200
        })
        .await;
    assert!(again.iter().all(|g| g.id() == event_id));
    again
        .last()
        .unwrap()
        .verify(&[&secret_of(&dead_endpoint)])
        .unwrap();
    let redelivered = delivery_in(&api.url(), &event_id, &dead_endpoint["id"], "delivered").await;
    assert_eq!(
        statuses(&redelivered).last(),
        Some(&json!(200)),
        "{redelivered}"
    );
    assert_eq!(seen[0].payment_id(), payment_id);
}

// ---------------------------------------------------------------------------------------------
// 5. Secret rotation

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new() {
    let python = reference_library();
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("wh-rotate"), &api_flags(&[])).await;
    let api = api.url();
    let mut hook = Receiver::start(200).await;
    let endpoint = register(&api, &hook.url).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let old = secret_of(&endpoint);

    let before = pay_ok(&api).await;
    let got = hook
        .event(Duration::from_secs(15), &before, "payment.succeeded")
        .await;
    assert_eq!(got.signatures().len(), 1);
    got.verify(&[&old]).unwrap();

    // Rotate with a 3 s overlap.
    let (status_code, rotated) = post(
        &api,
        &format!("/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
        TEST_API_KEY,
        json!({"overlap_seconds": 3}),
    )
    .await;
    assert_eq!(status_code, 200, "{rotated}");
    let new = secret_of(&rotated);
    assert!(new.starts_with("whsec_") && new != old);
    let expires = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("previous_secret_expires_at")
        .to_owned();
    let (_, shown) = get(
        &api,
        &format!("/v1/webhook-endpoints/{endpoint_id}"),
        TEST_API_KEY,
    )
    .await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["previous_secret_expires_at"], expires.as_str());

    // During the overlap: two signatures, the new first, each verifying with one secret.
    let during = pay_ok(&api).await;
    let got = hook
        .event(Duration::from_secs(15), &during, "payment.succeeded")
        .await;
    let signatures = got.signatures();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    got.verify_header(&[&new], &signatures[0]).unwrap();
    assert_eq!(
        got.verify_header(&[&old], &signatures[0]),
        Err(VerifyError::Mismatch)
    );
    got.verify_header(&[&old], &signatures[1]).unwrap();
    assert_eq!(
        got.verify_header(&[&new], &signatures[1]),
        Err(VerifyError::Mismatch)
    );
    // A receiver holding either secret accepts the delivery, with ours and the reference library.
    got.verify(&[&old]).unwrap();
    got.verify(&[&new]).unwrap();
    if python.is_some() {
        assert_eq!(python_verifies(&got, &old), "verified");
        assert_eq!(python_verifies(&got, &new), "verified");
    }

    // After the overlap: only the new secret signs. Polled by paying until a delivery carries a
    // single signature (bounded); none may carry a single one before the overlap ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        assert!(
            Instant::now() < deadline,
            "no delivery signed by the new secret only within 20 s (the overlap was 3 s)"
        );
        let id = pay_ok(&api).await;
        let got = hook
            .event(Duration::from_secs(15), &id, "payment.succeeded")
            .await;
        match got.signatures().len() {
            1 => break got,
            2 => got.verify(&[&old]).unwrap(),
            n => panic!("{n} signatures"),
        }
    };
    let expires_at = chrono_secs(&expires);
    let signed_at: i64 = after.header("webhook-timestamp").parse().unwrap();
    assert!(
        signed_at >= expires_at,
        "single-signed at {signed_at}, before the overlap ended at {expires_at}"
    );
    after.verify(&[&new]).unwrap();
    assert_eq!(after.verify(&[&old]), Err(VerifyError::Mismatch));
    if python.is_some() {
        assert_eq!(python_verifies(&after, &new), "verified");
        assert!(python_verifies(&after, &old).starts_with("refused"));
    }
}

/// Whole seconds since the epoch of an RFC 3339 UTC time (`2026-11-30T23:05:12.345Z`), rounded
/// down (enough for comparing with `webhook-timestamp`).
fn chrono_secs(text: &str) -> i64 {
    let (date, time) = text.split_once('T').expect("an RFC 3339 time");
    let mut d = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let time = time.trim_end_matches('Z');
    let mut t = time.split(':');
    let (h, min) = (
        t.next().unwrap().parse::<i64>().unwrap(),
        t.next().unwrap().parse::<i64>().unwrap(),
    );
    let s = t
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h * 3600 + min * 60 + s
}

// ---------------------------------------------------------------------------------------------
// 6. Tenant isolation and the URL policy

#[tokio::test]
async fn another_tenant_cannot_see_or_touch_an_endpoint_or_event_and_private_urls_are_refused() {
    let bank = start_bank(&[]).await;
    let keys = format!("{TEST_TENANT}:{TEST_API_KEY},other:{OTHER_KEY}");
    let api =
        start_api_with_keys(&bank.url(), &temp_dir("wh-tenants"), &api_flags(&[]), &keys).await;
    let api = api.url();
    let mut hook = Receiver::start(200).await;
    let endpoint = register(&api, &hook.url).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let payment_id = pay_ok(&api).await;
    let got = hook
        .event(Duration::from_secs(15), &payment_id, "payment.succeeded")
        .await;
    let event_id = got.id().to_owned();
    let endpoint_path = format!("/v1/webhook-endpoints/{endpoint_id}");
    let event_path = format!("/v1/events/{event_id}");

    // Another tenant: absent everywhere (404), and its own lists are empty.
    let (status_code, list) = get(&api, "/v1/webhook-endpoints", OTHER_KEY).await;
    assert_eq!((status_code, list["data"].clone()), (200, json!([])));
    let (status_code, problem) = get(&api, &endpoint_path, OTHER_KEY).await;
    assert_eq!(
        (status_code, problem["code"].as_str()),
        (404, Some("webhook_endpoint_not_found"))
    );
    let (status_code, problem) = call(
        Method::DELETE,
        format!("{api}{endpoint_path}"),
        OTHER_KEY,
        None,
    )
    .await;
    assert_eq!(
        (status_code, problem["code"].as_str()),
        (404, Some("webhook_endpoint_not_found"))
    );
    let (status_code, _) = post(
        &api,
        &format!("{endpoint_path}/rotate-secret"),
        OTHER_KEY,
        json!({}),
    )
    .await;
    assert_eq!(status_code, 404);
    let (status_code, events) = get(&api, "/v1/events", OTHER_KEY).await;
    assert_eq!((status_code, events["data"].clone()), (200, json!([])));
    let (status_code, problem) = get(&api, &event_path, OTHER_KEY).await;
    assert_eq!(
        (status_code, problem["code"].as_str()),
        (404, Some("event_not_found"))
    );
    let (status_code, _) = post(
        &api,
        &format!("{event_path}/redeliver"),
        OTHER_KEY,
        json!({}),
    )
    .await;
    assert_eq!(status_code, 404);
    // Its attempts changed nothing: the owner still has the endpoint, and got no redelivery.
    let (status_code, _) = get(&api, &endpoint_path, TEST_API_KEY).await;
    assert_eq!(status_code, 200);

    // An operator reads every tenant's, with the tenant, but registers none.
    let (status_code, seen) = get(&api, &endpoint_path, TEST_OPERATOR_KEY).await;
    assert_eq!(status_code, 200, "{seen}");
    assert_eq!(seen["tenant"], TEST_TENANT);
    assert!(seen.get("secret").is_none());
    let (_, all) = get(&api, "/v1/webhook-endpoints", TEST_OPERATOR_KEY).await;
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == endpoint_id && e["tenant"] == TEST_TENANT));
    let read = event(&api, &event_id, TEST_OPERATOR_KEY).await;
    assert_eq!(read["tenant"], TEST_TENANT);
    assert_eq!(read["data"], got.json()["data"]);
    let (status_code, problem) = post(
        &api,
        "/v1/webhook-endpoints",
        TEST_OPERATOR_KEY,
        json!({"url": hook.url}),
    )
    .await;
    assert_eq!(
        (status_code, problem["code"].as_str()),
        (403, Some("forbidden"))
    );
    // The owner deletes it.
    let (status_code, _) = call(
        Method::DELETE,
        format!("{api}{endpoint_path}"),
        TEST_API_KEY,
        None,
    )
    .await;
    assert_eq!(status_code, 204);
    let (status_code, _) = get(&api, &endpoint_path, TEST_API_KEY).await;
    assert_eq!(status_code, 404);
    assert!(
        hook.drain().is_empty(),
        "no delivery came from the other tenant's calls"
    );

    // The URL policy of an API without --webhook-allow-private-urls: private and loopback
    // addresses are refused (SSRF), a public name is accepted.
    let strict = start_api(&bank.url(), &temp_dir("wh-strict"), FAST_API).await;
    let strict = strict.url();
    assert_eq!(
        status(&strict).await["config"]["webhooks"]["allow_private_urls"],
        false
    );
    for url in [
        hook.url.as_str(),
        "http://localhost:8080/hook",
        "http://10.0.0.5:5432/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
        "http://2130706433/hook",
    ] {
        let (status_code, problem) = post(
            &strict,
            "/v1/webhook-endpoints",
            TEST_API_KEY,
            json!({ "url": url }),
        )
        .await;
        assert_eq!(
            (status_code, problem["code"].as_str()),
            (422, Some("invalid_url")),
            "{url}: {problem}"
        );
    }
    let (status_code, list) = get(&strict, "/v1/webhook-endpoints", TEST_API_KEY).await;
    assert_eq!((status_code, list["data"].clone()), (200, json!([])));
    let (status_code, public) = post(
        &strict,
        "/v1/webhook-endpoints",
        TEST_API_KEY,
        json!({"url": "https://example.com/hooks"}),
    )
    .await;
    assert_eq!(status_code, 201, "{public}");
}

// ---------------------------------------------------------------------------------------------
// 7. One dead endpoint does not slow another

/// Pays 8 times, one after the other, with a healthy receiver and `other` registered on the same
/// tenant; each payment's delivery to the healthy receiver must arrive within 5 s of its 201
/// (measured from the answer to the request's arrival). Returns the healthy endpoint's id.
async fn healthy_deliveries_stay_prompt(api: &str, other: &str) -> Value {
    let mut healthy = Receiver::start(200).await;
    register(api, other).await;
    let healthy_endpoint = register(api, &healthy.url).await;
    let bound = Duration::from_secs(5);
    for n in 0..8 {
        let id = pay_ok(api).await;
        let paid = Instant::now();
        let got = healthy
            .until(
                bound,
                &format!("payment {n}'s delivery to the healthy endpoint within {bound:?}"),
                |g| g.payment_id() == id,
            )
            .await
            .pop()
            .unwrap();
        let took = got.at.saturating_duration_since(paid);
        assert!(took <= bound, "payment {n}: {took:?}");
    }
    let status = status(api).await;
    let endpoints = status["webhooks"]["endpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .any(|e| e["id"] == healthy_endpoint["id"] && e["breaker_state"] == "closed"),
        "{status}"
    );
    healthy_endpoint["id"].clone()
}

/// A dead endpoint (a loopback port nobody listens on: every attempt is a refused connection)
/// opens its own breaker; the healthy endpoint's deliveries keep arriving within 5 s each.
#[tokio::test]
async fn a_dead_endpoint_does_not_slow_a_healthy_one() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("wh-dead"), &api_flags(&[])).await;
    let api = api.url();
    // Port 1 (tcpmux): below the ephemeral range, so no receiver of a test running alongside
    // can be given it (a port bound and released would be).
    healthy_deliveries_stay_prompt(&api, "http://127.0.0.1:1/hook").await;
    // The dead endpoint's own breaker took the failures (5 refused attempts open it).
    let dead = eventually(
        Duration::from_secs(15),
        "the dead endpoint's breaker opens",
        || {
            let api = api.clone();
            async move {
                let status = status(&api).await;
                status["webhooks"]["endpoints"]
                    .as_array()?
                    .iter()
                    .find(|e| e["breaker_state"] == "open")
                    .cloned()
            }
        },
    )
    .await;
    let (_, list) = get(&api, "/v1/webhook-endpoints", TEST_API_KEY).await;
    assert_eq!(list["data"][0]["id"], dead["id"], "the dead one is open");
}

/// The same with a hanging endpoint (it accepts the request and never answers), with the API's
/// default 10 s attempt timeout.
#[tokio::test]
async fn a_hanging_endpoint_does_not_slow_a_healthy_one() {
    let bank = start_bank(&[]).await;
    let api = start_api(&bank.url(), &temp_dir("wh-hang"), &api_flags(&[])).await;
    let api = api.url();
    let mut hanging = Receiver::start(200).await;
    hanging.behaviour.hang.store(true, Ordering::SeqCst);
    healthy_deliveries_stay_prompt(&api, &hanging.url).await;
    assert!(
        !hanging.drain().is_empty(),
        "the hanging endpoint was called"
    );
}

// ---------------------------------------------------------------------------------------------
// A store read that is not one snapshot

/// While payments are delivered to a healthy receiver, readers keep reading the newest events:
/// a delivery shown `delivered` must show the 2xx attempt that made it so (the worker records
/// both in one transaction).
#[tokio::test]
async fn an_event_read_never_shows_a_delivery_state_without_its_attempt() {
    let bank = start_bank(&[]).await;
    let api = start_api(
        &bank.url(),
        &temp_dir("wh-skew"),
        &api_flags(&[("--webhook-poll-ms", "5"), ("--rate-limit", "0")]),
    )
    .await;
    let api = api.url();
    let hook = Receiver::start(200).await;
    register(&api, &hook.url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let payers: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    pay_ok(&api).await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut reads = 0u64;
                while Instant::now() < deadline {
                    let (_, page) = get(&api, "/v1/events?limit=3", TEST_API_KEY).await;
                    for listed in page["data"].as_array().cloned().unwrap_or_default() {
                        let id = listed["id"].as_str().unwrap();
                        let (_, read) = get(&api, &format!("/v1/events/{id}"), TEST_API_KEY).await;
                        reads += 1;
                        for d in read["deliveries"].as_array().cloned().unwrap_or_default() {
                            let last = d["attempts"].as_array().and_then(|a| a.last().cloned());
                            let explained = last.is_some_and(|a| {
                                a["status"]
                                    .as_u64()
                                    .is_some_and(|s| (200..300).contains(&s))
                            });
                            if d["state"] == "delivered" && !explained {
                                return Err(format!(
                                    "after {reads} reads, {id}: deliveries {}",
                                    read["deliveries"]
                                ));
                            }
                        }
                    }
                }
                Ok(reads)
            })
        })
        .collect();
    let mut reads = 0;
    for reader in readers {
        match reader.await.unwrap() {
            Ok(n) => reads += n,
            Err(shown) => panic!("a delivered delivery without its 2xx attempt: {shown}"),
        }
    }
    for payer in payers {
        payer.await.unwrap();
    }
    println!("{reads} event reads, each consistent");
}
