//! In-process tests of webhooks: the endpoints and events API through the router (no socket),
//! and the delivery worker against a real receiver on a loopback port 0, driven pass by pass
//! (`worker::pass`), so nothing waits for the worker's poll.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc, Mutex,
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Request},
    Router,
};
use http_body_util::BodyExt;
use payment_store::{DeliveryState, Store};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;
use uuid::Uuid;

use super::{worker, Webhooks};
use crate::{
    config::Config,
    routes::{router, test_state, AppState},
    test_doubles::{Fault, FaultyStore, Op},
};

const ACME: &str = "sk_test_acme_0123456789";
const BETA: &str = "sk_test_beta_0123456789";
const OPS: &str = "sk_test_ops_0123456789";

struct Harness {
    app: Router,
    state: Arc<AppState>,
    store: Arc<FaultyStore>,
    config: Config,
    /// The store's directory, removed when the harness is dropped (after the router, the state
    /// and the store: fields drop in order).
    _dir: tempfile::TempDir,
}

async fn harness(tweak: impl FnOnce(&mut Config)) -> Harness {
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let bank_url = format!("http://{}", bank.local_addr());
    tokio::spawn(bank.run_until_stopped(std::future::pending()));
    let dir = crate::test_doubles::temp_dir("api-webhooks");
    let mut config = Config::for_tests(
        bank_url.parse().unwrap(),
        &format!("acme:{ACME},beta:{BETA}"),
        dir.path().to_path_buf(),
    );
    config.operator_keys = Some(secrecy::SecretString::from(format!("alice:{OPS}")));
    config.webhooks.webhook_allow_private_urls = true;
    // 3 days become 26 ms: the whole schedule runs within a test.
    config.webhooks.webhook_retry_scale = 1e-7;
    config.webhooks.webhook_timeout_ms = 2000;
    tweak(&mut config);
    let inner = payment_store::open(None, dir.path()).await.unwrap();
    let store = Arc::new(FaultyStore::new(inner));
    let state = test_state(&config, store.clone());
    Harness {
        app: router(state.clone()),
        state,
        store,
        config,
        _dir: dir,
    }
}

impl Harness {
    async fn send(&self, method: &str, uri: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"));
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(builder.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Registers `url` for acme; answers the endpoint (with its secret).
    async fn register(&self, url: &str, types: Option<&[&str]>) -> Value {
        let mut body = json!({ "url": url });
        if let Some(types) = types {
            body["event_types"] = json!(types);
        }
        let (status, endpoint) = self
            .send("POST", "/v1/webhook-endpoints", ACME, Some(body))
            .await;
        assert_eq!(status, 201, "{endpoint}");
        endpoint
    }

    /// A payment of acme with `source`; answers its id.
    async fn pay(&self, source: &str) -> String {
        let request = Request::post("/v1/payments")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {ACME}"))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .body(Body::from(
                json!({"amount": 100, "currency": "TRY", "source": source}).to_string(),
            ))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let payment: Value = serde_json::from_slice(&bytes).unwrap();
        payment["id"].as_str().unwrap().to_owned()
    }

    async fn event_of(&self, payment_id: &str) -> Value {
        let (_, page) = self.send("GET", "/v1/events", ACME, None).await;
        let event = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["data"]["payment"]["id"] == payment_id)
            .expect("the payment's event")
            .clone();
        let (status, event) = self
            .send(
                "GET",
                &format!("/v1/events/{}", event["id"].as_str().unwrap()),
                ACME,
                None,
            )
            .await;
        assert_eq!(status, 200);
        event
    }

    async fn pass(&self) -> usize {
        worker::pass(&self.state.webhooks).await
    }
}

/// What the receiver got: headers and body of each request.
type Received = (HeaderMap, Bytes);

/// A receiver on a loopback port 0 answering `status` (changeable), sending each request it
/// gets down a channel.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    got: mpsc::UnboundedReceiver<Received>,
}

async fn receiver(status: u16) -> Receiver {
    let (tx, got) = mpsc::unbounded_channel();
    let status = Arc::new(AtomicU16::new(status));
    let answer = status.clone();
    let tx = Arc::new(Mutex::new(tx));
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let answer = answer.clone();
            let tx = tx.clone();
            async move {
                let _ = tx.lock().unwrap().send((headers, body));
                axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, status, got }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap().to_str().unwrap()
}

/// Verifies a received delivery with `secrets` (as Standard Webhooks receivers do).
fn verifies(received: &Received, secrets: &[&str]) -> bool {
    let secrets: Vec<::webhooks::Secret> = secrets
        .iter()
        .map(|s| ::webhooks::Secret::parse(s).unwrap())
        .collect();
    let secrets: Vec<&::webhooks::Secret> = secrets.iter().collect();
    let (headers, body) = received;
    ::webhooks::verify(
        &secrets,
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
        body,
        chrono::Utc::now().timestamp(),
        ::webhooks::DEFAULT_TOLERANCE_SECS,
    )
    .is_ok()
}

fn deliveries_of(event: &Value) -> &Vec<Value> {
    event["deliveries"].as_array().unwrap()
}

#[tokio::test]
async fn a_settled_payment_is_delivered_signed_with_the_payment_as_get_shows_it() {
    let h = harness(|_| {}).await;
    let mut hook = receiver(200).await;
    let endpoint = h.register(&hook.url, None).await;
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        endpoint["event_types"],
        json!(payment_store::webhooks::EVENT_TYPES)
    );

    let payment_id = h.pay("tok_visa").await;
    assert_eq!(h.pass().await, 1);
    let received = hook.got.try_recv().expect("one delivery");
    assert!(hook.got.try_recv().is_err(), "exactly one");
    let (headers, body) = &received;
    assert_eq!(header(headers, "content-type"), "application/json");
    assert!(verifies(&received, &[secret]), "the signature verifies");
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(sent["type"], "payment.succeeded");
    assert_eq!(sent["id"], header(headers, "webhook-id"));
    let (_, payment) = h
        .send("GET", &format!("/v1/payments/{payment_id}"), ACME, None)
        .await;
    assert_eq!(
        sent["data"]["payment"], payment,
        "the payment as GET shows it"
    );

    let event = h.event_of(&payment_id).await;
    assert_eq!(event["id"], sent["id"]);
    let deliveries = deliveries_of(&event);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["state"], "delivered");
    assert_eq!(deliveries[0]["endpoint_id"], endpoint["id"]);
    assert_eq!(deliveries[0]["attempts"][0]["status"], 200);
    assert!(deliveries[0]["attempts"][0]["error"].is_null());

    // Nothing is due any more; a redelivery sends the same event (same id and body) again.
    assert_eq!(h.pass().await, 0);
    let (status, queued) = h
        .send(
            "POST",
            &format!("/v1/events/{}/redeliver", sent["id"].as_str().unwrap()),
            ACME,
            None,
        )
        .await;
    assert_eq!((status, queued["queued"].as_u64()), (202, Some(1)));
    assert_eq!(h.pass().await, 1);
    let again = hook.got.try_recv().unwrap();
    assert_eq!(
        header(&again.0, "webhook-id"),
        header(headers, "webhook-id")
    );
    assert_eq!(again.1, *body);

    let (_, status) = h.send("GET", "/v1/status", OPS, None).await;
    let hooks = &status["webhooks"];
    assert_eq!(
        (
            hooks["delivered"].as_u64(),
            hooks["attempts"].as_u64(),
            hooks["backlog"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(hooks["endpoints"][0]["breaker_state"], "closed");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_on_the_schedule_then_marked_failed() {
    let h = harness(|_| {}).await;
    // A breaker that never trips here: this test is about the schedule.
    let mut webhooks = Webhooks::new(
        h.state.webhooks.store.clone(),
        super::WebhookSettings::from_args(&h.config.webhooks),
        "retry-test".into(),
    )
    .unwrap();
    webhooks.settings.breaker.consecutive_failures = 0;
    webhooks.settings.breaker.minimum_calls = 1000;
    webhooks.settings.breaker.window = resilience::breaker::WindowKind::CountBased { size: 1000 };
    let mut hook = receiver(500).await;
    h.register(&hook.url, None).await;
    let payment_id = h.pay("tok_visa").await;
    let max = webhooks.settings.schedule.max_attempts();
    let mut rounds = 0;
    loop {
        worker::pass(&webhooks).await;
        let event = h.event_of(&payment_id).await;
        if deliveries_of(&event)[0]["state"] == "failed" {
            break;
        }
        rounds += 1;
        assert!(rounds < 5000, "the schedule ends");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let event = h.event_of(&payment_id).await;
    let attempts = deliveries_of(&event)[0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        attempts.len() as u32,
        max,
        "every attempt of the schedule, no more"
    );
    assert!(attempts
        .iter()
        .all(|a| a["status"] == 500 && a["error"].is_string()));
    let mut sent = 0;
    while hook.got.try_recv().is_ok() {
        sent += 1;
    }
    assert_eq!(sent, max);
    let (_, failed) = h
        .send("GET", "/v1/events?delivery_state=failed", ACME, None)
        .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);

    // A redelivery starts the schedule again, and a healthy endpoint takes it.
    hook.status.store(204, Ordering::SeqCst);
    let event_id = event["id"].as_str().unwrap();
    h.send(
        "POST",
        &format!("/v1/events/{event_id}/redeliver"),
        ACME,
        None,
    )
    .await;
    assert_eq!(worker::pass(&webhooks).await, 1);
    let event = h.event_of(&payment_id).await;
    assert_eq!(deliveries_of(&event)[0]["state"], "delivered");
}

#[tokio::test]
async fn a_dead_endpoint_opens_its_own_breaker_and_does_not_hold_back_another() {
    let h = harness(|_| {}).await;
    let mut live = receiver(200).await;
    // A port nobody listens on: every attempt is a refused connection.
    let dead_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let dead = h.register(&dead_url, None).await;
    let live_endpoint = h.register(&live.url, None).await;
    for _ in 0..8 {
        h.pay("tok_visa").await;
    }
    let mut rounds = 0;
    let mut live_got = 0;
    // Until the live endpoint has every event and the dead one's breaker has held back some.
    while live_got < 8 || h.state.webhooks.stats.postponed.load(Ordering::Relaxed) == 0 {
        h.pass().await;
        while live.got.try_recv().is_ok() {
            live_got += 1;
        }
        rounds += 1;
        assert!(rounds < 1000);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (_, status) = h.send("GET", "/v1/status", OPS, None).await;
    let endpoints = status["webhooks"]["endpoints"].as_array().unwrap();
    let state_of = |id: &Value| {
        endpoints
            .iter()
            .find(|e| e["id"] == *id)
            .map(|e| e["breaker_state"].clone())
            .unwrap()
    };
    assert_eq!(state_of(&dead["id"]), "open", "{status}");
    assert_eq!(state_of(&live_endpoint["id"]), "closed");
    assert!(
        status["webhooks"]["postponed"].as_u64().unwrap() > 0,
        "the dead endpoint's deliveries wait without a call"
    );
    assert!(status["webhooks"]["backlog"].as_u64().unwrap() >= 1);
    // The refused attempts were recorded with their error.
    let (_, page) = h
        .send("GET", "/v1/events?delivery_state=pending", ACME, None)
        .await;
    let id = page["data"][0]["id"].as_str().unwrap();
    let (_, event) = h.send("GET", &format!("/v1/events/{id}"), ACME, None).await;
    let dead_delivery = deliveries_of(&event)
        .iter()
        .find(|d| d["endpoint_id"] == dead["id"])
        .unwrap()
        .clone();
    let attempts = dead_delivery["attempts"].as_array().unwrap();
    assert!(
        attempts
            .iter()
            .all(|a| a["status"].is_null() && a["error"].as_str().unwrap().starts_with("connect")),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn a_crash_between_the_state_change_and_the_send_still_delivers() {
    let h = harness(|_| {}).await;
    let mut hook = receiver(200).await;
    h.register(&hook.url, None).await;
    let payment_id = h.pay("tok_visa").await;
    // A worker leased the delivery and died before sending (its lease runs out at once), and
    // the process that wrote the event never ran a worker: a new one on the same store
    // delivers it.
    let now = chrono::Utc::now();
    let taken = h
        .store
        .lease_deliveries("crashed/webhooks/1", now, now, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    drop(taken);
    let fresh = Webhooks::new(
        h.state.webhooks.store.clone(),
        super::WebhookSettings::from_args(&h.config.webhooks),
        "restarted".into(),
    )
    .unwrap();
    assert_eq!(worker::pass(&fresh).await, 1);
    let received = hook.got.try_recv().unwrap();
    let sent: Value = serde_json::from_slice(&received.1).unwrap();
    assert_eq!(
        (
            sent["type"].as_str(),
            sent["data"]["payment"]["id"].as_str()
        ),
        (Some("payment.succeeded"), Some(payment_id.as_str()))
    );
}

#[tokio::test]
async fn a_store_fault_when_recording_never_marks_delivered_and_the_delivery_comes_again() {
    let h = harness(|_| {}).await;
    let mut hook = receiver(200).await;
    h.register(&hook.url, None).await;
    let payment_id = h.pay("tok_visa").await;
    let mut webhooks = Webhooks::new(
        h.state.webhooks.store.clone(),
        super::WebhookSettings::from_args(&h.config.webhooks),
        "faulty".into(),
    )
    .unwrap();
    webhooks.settings.lease = std::time::Duration::from_millis(20);
    h.store.fail_next(Op::RecordDelivery, Fault::Fail, 1);
    assert_eq!(worker::pass(&webhooks).await, 1);
    let first = hook.got.try_recv().expect("sent");
    let event = h.event_of(&payment_id).await;
    assert_eq!(
        deliveries_of(&event)[0]["state"],
        "pending",
        "never delivered without a recorded 2xx"
    );
    assert_eq!(
        worker::pass(&webhooks).await,
        0,
        "leased until the lease runs out"
    );
    let mut rounds = 0;
    while worker::pass(&webhooks).await == 0 {
        rounds += 1;
        assert!(rounds < 1000);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let second = hook.got.try_recv().expect("sent again");
    assert_eq!(
        header(&first.0, "webhook-id"),
        header(&second.0, "webhook-id")
    );
    assert_eq!(first.1, second.1);
    let event = h.event_of(&payment_id).await;
    assert_eq!(deliveries_of(&event)[0]["state"], "delivered");
    assert_eq!(webhooks.stats.store_errors.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_during_the_overlap_then_with_the_new_only() {
    let h = harness(|_| {}).await;
    let mut hook = receiver(200).await;
    let endpoint = h.register(&hook.url, None).await;
    let id = endpoint["id"].as_str().unwrap();
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    let (status, rotated) = h
        .send(
            "POST",
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            ACME,
            Some(json!({"overlap_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());

    h.pay("tok_visa").await;
    h.pass().await;
    let during = hook.got.try_recv().unwrap();
    assert_eq!(header(&during.0, "webhook-signature").split(' ').count(), 2);
    assert!(verifies(&during, &[&new]) && verifies(&during, &[&old]));

    // No overlap: the previous secret stops signing at once.
    let (status, rotated) = h
        .send(
            "POST",
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            ACME,
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(status, 200);
    let newest = rotated["secret"].as_str().unwrap().to_owned();
    h.pay("tok_visa").await;
    h.pass().await;
    let after = hook.got.try_recv().unwrap();
    assert_eq!(header(&after.0, "webhook-signature").split(' ').count(), 1);
    assert!(verifies(&after, &[&newest]));
    assert!(!verifies(&after, &[&new]) && !verifies(&after, &[&old]));

    // The overlap is bounded; the body is optional.
    let (status, problem) = h
        .send(
            "POST",
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            ACME,
            Some(json!({"overlap_seconds": 604801})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_overlap"))
    );
    let (status, _) = h
        .send(
            "POST",
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            ACME,
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn endpoints_and_events_belong_to_their_tenant_and_operators_see_all() {
    let h = harness(|config| config.webhooks.webhook_allow_private_urls = false).await;
    // Loopback and private addresses are refused without the flag (SSRF).
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.1/",
        "http://[::1]/",
        "ftp://example.com/",
    ] {
        let (status, problem) = h
            .send(
                "POST",
                "/v1/webhook-endpoints",
                ACME,
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("invalid_url")),
            "{url}"
        );
    }
    for types in [
        json!([]),
        json!(["payment.refunded"]),
        json!(["payment.failed", "payment.failed"]),
    ] {
        let (status, problem) = h
            .send(
                "POST",
                "/v1/webhook-endpoints",
                ACME,
                Some(json!({"url": "https://example.com/h", "event_types": types})),
            )
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("invalid_event_types"))
        );
    }
    let (status, _) = h
        .send(
            "POST",
            "/v1/webhook-endpoints",
            ACME,
            Some(json!({"url": "https://example.com/h", "extra": 1})),
        )
        .await;
    assert_eq!(status, 422, "unknown fields are refused");
    let (status, problem) = h
        .send(
            "POST",
            "/v1/webhook-endpoints",
            OPS,
            Some(json!({"url": "https://example.com/h"})),
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));

    let (status, mine) = h
        .send(
            "POST",
            "/v1/webhook-endpoints",
            ACME,
            Some(json!({"url": "https://example.com/h", "event_types": ["payment.failed"]})),
        )
        .await;
    assert_eq!(status, 201);
    let id = mine["id"].as_str().unwrap();
    assert!(id.starts_with("we_"));
    let (status, one) = h
        .send("GET", &format!("/v1/webhook-endpoints/{id}"), ACME, None)
        .await;
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none(), "the secret is shown once");
    assert_eq!(one["event_types"], json!(["payment.failed"]));
    let (_, list) = h.send("GET", "/v1/webhook-endpoints", ACME, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none());
    let (_, theirs) = h.send("GET", "/v1/webhook-endpoints", BETA, None).await;
    assert!(theirs["data"].as_array().unwrap().is_empty());
    for (method, path) in [
        ("GET", format!("/v1/webhook-endpoints/{id}")),
        ("DELETE", format!("/v1/webhook-endpoints/{id}")),
        ("POST", format!("/v1/webhook-endpoints/{id}/rotate-secret")),
    ] {
        let (status, problem) = h.send(method, &path, BETA, None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("webhook_endpoint_not_found")),
            "{method} {path}"
        );
    }
    let (_, all) = h.send("GET", "/v1/webhook-endpoints", OPS, None).await;
    assert_eq!(all["data"][0]["tenant"], "acme");
    let (status, _) = h
        .send(
            "POST",
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            OPS,
            None,
        )
        .await;
    assert_eq!(status, 403, "operators do not rotate a tenant's secret");

    let payment_id = h.pay("tok_visa").await;
    let event = h.event_of(&payment_id).await;
    assert!(
        deliveries_of(&event).is_empty(),
        "the endpoint takes payment.failed only"
    );
    let event_id = event["id"].as_str().unwrap();
    let (status, problem) = h
        .send("GET", &format!("/v1/events/{event_id}"), BETA, None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("event_not_found"))
    );
    let (status, _) = h
        .send(
            "POST",
            &format!("/v1/events/{event_id}/redeliver"),
            BETA,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, page) = h.send("GET", "/v1/events", BETA, None).await;
    assert!(page["data"].as_array().unwrap().is_empty());
    let (status, seen) = h
        .send("GET", &format!("/v1/events/{event_id}"), OPS, None)
        .await;
    assert_eq!((status, seen["tenant"].as_str()), (200, Some("acme")));
    for query in [
        "type=payment.refunded",
        "delivery_state=lost",
        "limit=0",
        "limit=101",
        "cursor=nope",
        "bogus=1",
    ] {
        let (status, problem) = h
            .send("GET", &format!("/v1/events?{query}"), ACME, None)
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_query")),
            "{query}"
        );
    }
    let (_, typed) = h
        .send(
            "GET",
            "/v1/events?type=payment.succeeded&limit=1",
            ACME,
            None,
        )
        .await;
    assert_eq!(typed["data"].as_array().unwrap().len(), 1);
    assert_eq!(typed["next_cursor"], event["id"]);
    let (_, next) = h
        .send(
            "GET",
            &format!("/v1/events?type=payment.succeeded&limit=1&cursor={event_id}"),
            ACME,
            None,
        )
        .await;
    assert!(next["data"].as_array().unwrap().is_empty());

    let (status, _) = h
        .send("DELETE", &format!("/v1/webhook-endpoints/{id}"), ACME, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = h
        .send("GET", &format!("/v1/webhook-endpoints/{id}"), ACME, None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused_at_delivery_time() {
    // Registered while private URLs were allowed; delivered by a worker that refuses them (as
    // if the name had been rebound to a private address since).
    let h = harness(|_| {}).await;
    let mut hook = receiver(200).await;
    let url = hook.url.replace("127.0.0.1", "localhost");
    h.register(&url, None).await;
    let payment_id = h.pay("tok_visa").await;
    let mut settings = super::WebhookSettings::from_args(&h.config.webhooks);
    settings.policy.allow_private = false;
    let strict = Webhooks::new(h.state.webhooks.store.clone(), settings, "strict".into()).unwrap();
    assert_eq!(worker::pass(&strict).await, 1);
    assert!(
        hook.got.try_recv().is_err(),
        "nothing reached the private address"
    );
    let event = h.event_of(&payment_id).await;
    let attempt = &deliveries_of(&event)[0]["attempts"][0];
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("no address deliveries may go to"),
        "{attempt}"
    );
    assert_eq!(
        deliveries_of(&event)[0]["state"],
        "pending",
        "retried later"
    );
    let _ = DeliveryState::Pending;
}

#[test]
fn the_openapi_document_lists_every_webhook_route() {
    let doc = crate::routes::openapi();
    for (path, method) in [
        ("/v1/webhook-endpoints", "post"),
        ("/v1/webhook-endpoints", "get"),
        ("/v1/webhook-endpoints/{id}", "get"),
        ("/v1/webhook-endpoints/{id}", "delete"),
        ("/v1/webhook-endpoints/{id}/rotate-secret", "post"),
        ("/v1/events", "get"),
        ("/v1/events/{id}", "get"),
        ("/v1/events/{id}/redeliver", "post"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path}");
        assert_eq!(operation["tags"], json!(["webhooks"]), "{method} {path}");
    }
    let params = doc["paths"]["/v1/events"]["get"]["parameters"].clone();
    let type_param = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "type")
        .unwrap();
    assert_eq!(
        type_param["schema"]["enum"],
        json!(payment_store::webhooks::EVENT_TYPES)
    );
}

/// Two instances' workers on one PostgreSQL database, passing at once: every delivery is sent
/// exactly once (each batch leases its rows with `FOR UPDATE SKIP LOCKED`), none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_never_send_one_delivery_twice() {
    let Some(server) = payment_store::test_support::pg_or_skip() else {
        return;
    };
    let url = server.new_database().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(payment_store::PostgresStore::connect(&url).await.unwrap());
    let mut hook = receiver(200).await;
    let now = chrono::Utc::now();
    store
        .create_endpoint(&payment_store::NewEndpoint {
            id: "we_pg".into(),
            tenant: "acme".into(),
            url: hook.url.clone(),
            event_types: payment_store::webhooks::EVENT_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            secret: ::webhooks::Secret::generate().expose(),
            now,
        })
        .await
        .unwrap();
    for n in 0..40 {
        let id = Uuid::now_v7();
        let new = payment_store::NewPayment {
            id,
            tenant: "acme".into(),
            idempotency_key: format!("k{n}"),
            fingerprint: "fp".into(),
            amount: 100,
            currency: "TRY".into(),
            source: "tok_visa".into(),
            description: None,
            metadata: None,
            bank_reference: format!("pay_{id}"),
            bank: "bank".into(),
            lease_owner: "h".into(),
            lease_expires_at: now + chrono::Duration::seconds(30),
            now,
        };
        store.claim(&new).await.unwrap();
        let settled = payment_store::Settlement::Succeeded {
            charge_id: format!("ch_{n}"),
        };
        let response = payment_store::StoredResponse {
            status: 201,
            headers: vec![],
            body: vec![],
        };
        assert!(store.settle(id, &settled, 1, &response, now).await.unwrap());
    }
    let mut config = Config::for_tests(
        "http://127.0.0.1:9".parse().unwrap(),
        "acme:k",
        std::env::temp_dir(),
    );
    config.webhooks.webhook_allow_private_urls = true;
    let instance = |name: &str| {
        let mut settings = super::WebhookSettings::from_args(&config.webhooks);
        settings.batch = 7;
        Arc::new(Webhooks::new(store.clone(), settings, name.into()).unwrap())
    };
    let (a, b) = (instance("api-a"), instance("api-b"));
    loop {
        let (sent_a, sent_b) = tokio::join!(worker::pass(&a), worker::pass(&b));
        if sent_a + sent_b == 0 {
            break;
        }
    }
    let mut seen = std::collections::HashSet::new();
    while let Ok((headers, _)) = hook.got.try_recv() {
        assert!(
            seen.insert(header(&headers, "webhook-id").to_owned()),
            "sent twice"
        );
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(store.delivery_backlog().await.unwrap(), 0);
    let delivered = |w: &Webhooks| w.stats.delivered.load(Ordering::Relaxed);
    assert_eq!(delivered(&a) + delivered(&b), 40);
}
