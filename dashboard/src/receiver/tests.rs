//! The receiver over the real router (`oneshot`) and registration against a fake payment API on a
//! loopback port: what is registered, what verifies, what the page sees (never a secret), and the
//! chaos with injected draws.

use std::sync::{Arc, Mutex};

use axum::{
    body::Body,
    extract::{OriginalUri, State},
    http::{HeaderMap, Method, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Json, Router,
};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::{
    config::{BankTarget, Config, ConfigError, Secrets},
    history::History,
    routes::{router, AppState},
    traffic::Traffic,
};

const KEY: &str = "sk_test_dashboard_0123456789";
const RECEIVER_URL: &str = "http://127.0.0.1:8501/webhooks/receiver";

/// The fake API's webhook endpoints and what it was asked.
#[derive(Debug, Default)]
struct FakeApi {
    /// Existing endpoints: (id, url).
    endpoints: Vec<(String, String)>,
    /// Answer 404 to this many list calls first (an older API, or one still starting).
    not_found_first: u32,
    /// The secret the next create or rotate hands out.
    next_secret: String,
    /// (method, path, authorization, body) of every request.
    seen: Vec<(String, String, String, Value)>,
}

type Fake = Arc<Mutex<FakeApi>>;

async fn fake_api(fake: Fake) -> reqwest::Url {
    async fn handle(
        State(fake): State<Fake>,
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let mut api = fake.lock().unwrap();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let path = uri.path().to_owned();
        api.seen
            .push((method.to_string(), path.clone(), auth, body.clone()));
        match (method.as_str(), path.as_str()) {
            ("GET", "/v1/webhook-endpoints") if api.not_found_first > 0 => {
                api.not_found_first -= 1;
                (StatusCode::NOT_FOUND, Json(json!({"code": "not_found"}))).into_response()
            }
            ("GET", "/v1/webhook-endpoints") => Json(json!({"data": api
                .endpoints
                .iter()
                .map(|(id, url)| json!({"id": id, "url": url, "event_types": EVENT_TYPES,
                                         "created_at": "2026-11-30T00:00:00Z"}))
                .collect::<Vec<_>>()}))
            .into_response(),
            ("POST", "/v1/webhook-endpoints") => {
                let id = format!("we_{}", api.endpoints.len() + 1);
                let url = body["url"].as_str().unwrap().to_owned();
                api.endpoints.push((id.clone(), url.clone()));
                (
                    StatusCode::CREATED,
                    Json(
                        json!({"id": id, "url": url, "event_types": body["event_types"],
                                "created_at": "2026-11-30T00:00:00Z",
                                "secret": api.next_secret}),
                    ),
                )
                    .into_response()
            }
            ("POST", p) if p.ends_with("/rotate-secret") => {
                let id = p.split('/').nth(3).unwrap();
                Json(json!({"id": id, "secret": api.next_secret})).into_response()
            }
            _ => (StatusCode::NOT_FOUND, Json(json!({"code": "not_found"}))).into_response(),
        }
    }
    let app = Router::new().fallback(any(handle)).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url.parse().unwrap()
}

fn upstream(api: reqwest::Url) -> Arc<Upstream> {
    let bank = BankTarget {
        name: "bank".into(),
        url: "http://127.0.0.1:1".parse().unwrap(),
    };
    let secrets = Secrets {
        api_key: Some(SecretString::from(KEY.to_owned())),
        ..Secrets::default()
    };
    Arc::new(Upstream::new(api, vec![bank], secrets))
}

fn app(receiver: Arc<Receiver>) -> Router {
    let upstream = upstream("http://127.0.0.1:1".parse().unwrap());
    router(Arc::new(AppState {
        traffic: Arc::new(Traffic::new(Arc::clone(&upstream))),
        history: Arc::new(History::default()),
        webhooks: receiver,
        upstream,
    }))
}

const FAST: Backoff = Backoff {
    first: Duration::from_millis(1),
    max: Duration::from_millis(5),
};

/// Runs the registration in the background and waits (on its watch, not a clock) until it has
/// registered.
async fn registered(receiver: &Arc<Receiver>, api: reqwest::Url) -> Registration {
    let mut watch = receiver.registration();
    tokio::spawn(register(
        upstream(api),
        Arc::clone(receiver),
        RECEIVER_URL.to_owned(),
        FAST,
    ));
    let state = watch
        .wait_for(|r| matches!(r, Registration::Registered { .. }))
        .await
        .unwrap();
    state.clone()
}

fn now_secs() -> i64 {
    (crate::now_ms() / 1000) as i64
}

fn event(id: &str, status: &str) -> String {
    json!({"id": id, "type": format!("payment.{status}"), "created_at": "2026-11-30T00:00:00Z",
           "data": {"id": "pay_1", "status": status, "amount": 1234, "currency": "EUR"}})
    .to_string()
}

fn delivery(id: &str, ts: i64, signature: &str, body: &str) -> Request<Body> {
    Request::post("/webhooks/receiver")
        .header("host", "api.internal:9999")
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn signed(secrets: &[&Secret], id: &str, status: &str) -> Request<Body> {
    let body = event(id, status);
    let ts = now_secs();
    delivery(
        id,
        ts,
        &webhooks::signature_header(secrets, id, ts, body.as_bytes()),
        &body,
    )
}

async fn call(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn page_get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "127.0.0.1:8501")
        .body(Body::empty())
        .unwrap()
}

fn put_chaos(body: Value, csrf: bool) -> Request<Body> {
    let mut request = Request::put("/api/webhooks/receiver-chaos")
        .header("host", "127.0.0.1:8501")
        .header("origin", "http://127.0.0.1:8501")
        .header("content-type", "application/json");
    if csrf {
        request = request.header("x-dashboard", "1");
    }
    request.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn registration_creates_the_endpoint_and_deliveries_verify_with_its_secret() {
    let secret = Secret::generate();
    let fake: Fake = Arc::new(Mutex::new(FakeApi {
        next_secret: secret.expose(),
        ..FakeApi::default()
    }));
    let receiver = Arc::new(Receiver::default());
    let state = registered(&receiver, fake_api(Arc::clone(&fake)).await).await;
    assert_eq!(
        state,
        Registration::Registered {
            endpoint_id: "we_1".into(),
            action: "created"
        }
    );
    let seen = fake.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("GET", "/v1/webhook-endpoints")
    );
    let (method, path, auth, body) = &seen[1];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1/webhook-endpoints")
    );
    assert_eq!(auth, &format!("Bearer {KEY}"));
    assert_eq!(
        body,
        &json!({"url": RECEIVER_URL, "event_types": EVENT_TYPES})
    );

    let router = app(Arc::clone(&receiver));
    let (status, answer) = call(&router, signed(&[&secret], "evt_1", "succeeded")).await;
    assert_eq!((status, answer), (200, json!({"received": true})));
    let (_, view) = call(&router, page_get("/api/webhooks")).await;
    assert_eq!(view["registration"]["state"], "registered");
    assert_eq!(view["registration"]["endpoint_id"], "we_1");
    assert_eq!(view["receiver_url"], RECEIVER_URL);
    assert_eq!(view["secrets"], 1);
    let d = &view["deliveries"][0];
    assert_eq!(d["verified"], true);
    assert_eq!(d["event_id"], "evt_1");
    assert_eq!(d["event_type"], "payment.succeeded");
    assert_eq!(
        (d["payment_id"].as_str(), d["payment_status"].as_str()),
        (Some("pay_1"), Some("succeeded"))
    );
    // The page never sees the secret (nor the key).
    let text = view.to_string();
    assert!(!text.contains(secret.expose().trim_start_matches("whsec_")) && !text.contains(KEY));
}

#[tokio::test]
async fn an_existing_endpoint_for_this_url_gets_its_secret_rotated_not_a_second_endpoint() {
    let old = Secret::generate();
    let new = Secret::generate();
    let fake: Fake = Arc::new(Mutex::new(FakeApi {
        endpoints: vec![
            ("we_other".into(), "https://merchant.example/hooks".into()),
            ("we_mine".into(), RECEIVER_URL.into()),
        ],
        next_secret: new.expose(),
        ..FakeApi::default()
    }));
    let receiver = Arc::new(Receiver::default());
    let state = registered(&receiver, fake_api(Arc::clone(&fake)).await).await;
    assert_eq!(
        state,
        Registration::Registered {
            endpoint_id: "we_mine".into(),
            action: "rotated"
        }
    );
    {
        let api = fake.lock().unwrap();
        assert_eq!(api.endpoints.len(), 2, "no endpoint created");
        let (method, path, _, body) = api.seen.last().unwrap();
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/v1/webhook-endpoints/we_mine/rotate-secret")
        );
        assert_eq!(body, &json!({"overlap_seconds": ROTATION_OVERLAP_SECS}));
    }
    let router = app(receiver);
    // During the overlap the API signs with both: the new one verifies.
    let (status, _) = call(&router, signed(&[&new, &old], "evt_1", "succeeded")).await;
    assert_eq!(status, 200);
    // Only the old one (the previous dashboard's, now forgotten) does not.
    let (status, answer) = call(&router, signed(&[&old], "evt_2", "succeeded")).await;
    assert_eq!(status, 401);
    assert!(
        answer["detail"].as_str().unwrap().contains("matches"),
        "{answer}"
    );
}

#[tokio::test]
async fn registration_retries_in_the_background_while_the_api_is_down_or_too_old() {
    // Nothing listens: the attempts fail as unreachable and keep going.
    let receiver = Arc::new(Receiver::default());
    let mut watch = receiver.registration();
    let task = tokio::spawn(register(
        upstream("http://127.0.0.1:1".parse().unwrap()),
        Arc::clone(&receiver),
        RECEIVER_URL.to_owned(),
        FAST,
    ));
    let state = watch
        .wait_for(|r| matches!(r, Registration::Pending { attempts, .. } if *attempts >= 3))
        .await
        .unwrap()
        .clone();
    task.abort();
    let Registration::Pending {
        last_error: Some(error),
        ..
    } = state
    else {
        panic!("{state:?}")
    };
    assert!(error.contains("unreachable"), "{error}");
    // Deliveries meanwhile answer 503 (the API keeps them and tries later).
    let router = app(Arc::clone(&receiver));
    let (status, _) = call(&router, signed(&[&Secret::generate()], "evt_1", "pending")).await;
    assert_eq!(status, 503);

    // An API that answers 404 (older, or not ready) twice, then has the endpoints.
    let secret = Secret::generate();
    let fake: Fake = Arc::new(Mutex::new(FakeApi {
        not_found_first: 2,
        next_secret: secret.expose(),
        ..FakeApi::default()
    }));
    let receiver = Arc::new(Receiver::default());
    let state = registered(&receiver, fake_api(Arc::clone(&fake)).await).await;
    assert!(matches!(
        state,
        Registration::Registered {
            action: "created",
            ..
        }
    ));
    let lists = fake
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|s| s.0 == "GET")
        .count();
    assert_eq!(lists, 3);
    let (status, _) = call(
        &app(Arc::clone(&receiver)),
        signed(&[&secret], "evt_1", "succeeded"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_receiver_verifies_signatures_and_counts_each_webhook_ids_arrivals() {
    let secret = Secret::generate();
    let receiver = Arc::new(Receiver::default());
    receiver.set_secrets(vec![secret.clone()]);
    let router = app(Arc::clone(&receiver));

    // Good, and the same event again (a retry): both accepted, the second counted as a duplicate.
    assert_eq!(
        call(&router, signed(&[&secret], "evt_1", "succeeded"))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&router, signed(&[&secret], "evt_1", "succeeded"))
            .await
            .0,
        200
    );
    // Signed with another secret.
    let (status, answer) = call(&router, signed(&[&Secret::generate()], "evt_2", "declined")).await;
    assert_eq!(status, 401, "{answer}");
    // A changed body.
    let body = event("evt_3", "failed");
    let ts = now_secs();
    let sig = webhooks::sign(&secret, "evt_3", ts, body.as_bytes());
    let (status, _) = call(
        &router,
        delivery("evt_3", ts, &sig, &body.replace("1234", "9999")),
    )
    .await;
    assert_eq!(status, 401);
    // Stale: signed eleven minutes ago (a replay).
    let old_ts = ts - 660;
    let sig = webhooks::sign(&secret, "evt_4", old_ts, body.as_bytes());
    let (status, answer) = call(&router, delivery("evt_4", old_ts, &sig, &body)).await;
    assert_eq!(status, 401);
    assert!(
        answer["detail"].as_str().unwrap().contains("old"),
        "{answer}"
    );
    // No signature headers at all.
    let bare = Request::post("/webhooks/receiver")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&router, bare).await.0, 400);

    let (_, view) = call(&router, page_get("/api/webhooks")).await;
    assert_eq!(
        view["totals"],
        json!({"received": 6, "verified": 2, "refused": 4, "duplicates": 1,
               "chaos_failed": 0, "held": 0})
    );
    let deliveries = view["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 6);
    // Newest first; every evt_1 row shows the id arrived twice, the first and second arrival.
    let evt1: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["webhook_id"] == "evt_1")
        .collect();
    assert_eq!(evt1.len(), 2);
    assert!(evt1
        .iter()
        .all(|d| d["arrivals"] == 2 && d["verified"] == true));
    assert_eq!(
        (evt1[0]["arrival"].as_u64(), evt1[1]["arrival"].as_u64()),
        (Some(2), Some(1))
    );
    let stale = deliveries
        .iter()
        .find(|d| d["webhook_id"] == "evt_4")
        .unwrap();
    assert_eq!(stale["verified"], false);
    assert!(stale["refusal"].as_str().unwrap().contains("old"));
    assert_eq!(stale["answered"], 401);
}

#[tokio::test]
async fn the_receiver_keeps_only_the_last_deliveries() {
    let secret = Secret::generate();
    let receiver = Arc::new(Receiver::default());
    receiver.set_secrets(vec![secret.clone()]);
    let router = app(Arc::clone(&receiver));
    for i in 0..MAX_DELIVERIES + 5 {
        call(
            &router,
            signed(&[&secret], &format!("evt_{i}"), "succeeded"),
        )
        .await;
    }
    let (_, view) = call(&router, page_get("/api/webhooks")).await;
    let deliveries = view["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), MAX_DELIVERIES);
    assert_eq!(
        deliveries[0]["webhook_id"],
        format!("evt_{}", MAX_DELIVERIES + 4)
    );
    assert_eq!(view["totals"]["received"], MAX_DELIVERIES + 5);
}

#[tokio::test]
async fn the_chaos_fails_and_holds_the_shares_it_is_given() {
    // Draws in order: (hang, fail) for each delivery.
    let draws = Arc::new(Mutex::new(vec![0.9, 0.1, 0.9, 0.6, 0.1, 0.9].into_iter()));
    let next = Arc::clone(&draws);
    let receiver = Arc::new(Receiver::with_draw(Box::new(move || {
        next.lock().unwrap().next().expect("a draw")
    })));
    let secret = Secret::generate();
    receiver.set_secrets(vec![secret.clone()]);
    let router = app(Arc::clone(&receiver));

    // The chaos is a mutating call: without the page's header it is refused.
    let chaos = json!({"fail_share": 0.5, "hang_share": 0.5, "hang_ms": 30});
    assert_eq!(call(&router, put_chaos(chaos.clone(), false)).await.0, 403);
    for bad in [
        json!({"fail_share": 1.5}),
        json!({"hang_share": -0.1}),
        json!({"hang_ms": MAX_HANG_MS + 1}),
        json!({"fail": 1}),
    ] {
        assert_eq!(
            call(&router, put_chaos(bad.clone(), true)).await.0,
            400,
            "{bad}"
        );
    }
    let (status, set) = call(&router, put_chaos(chaos.clone(), true)).await;
    assert_eq!((status, &set), (200, &chaos));
    assert_eq!(
        call(&router, page_get("/api/webhooks/receiver-chaos"))
            .await
            .1,
        chaos
    );

    // hang 0.9 (no), fail 0.1 (yes): 500 at once.
    let (status, answer) = call(&router, signed(&[&secret], "evt_1", "succeeded")).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (500, Some("receiver_chaos"))
    );
    // hang 0.9 (no), fail 0.6 (no): accepted (the retry of a failed one goes through).
    assert_eq!(
        call(&router, signed(&[&secret], "evt_1", "succeeded"))
            .await
            .0,
        200
    );
    // hang 0.1 (yes), fail 0.9 (no): held 30 ms, then accepted.
    let started = std::time::Instant::now();
    assert_eq!(
        call(&router, signed(&[&secret], "evt_2", "succeeded"))
            .await
            .0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(30));

    let (_, view) = call(&router, page_get("/api/webhooks")).await;
    assert_eq!(view["totals"]["chaos_failed"], 1);
    assert_eq!(view["totals"]["held"], 1);
    assert_eq!(view["totals"]["duplicates"], 1);
    let answered: Vec<(u64, u64)> = view["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["answered"].as_u64().unwrap(),
                d["held_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(answered, [(200, 30), (200, 0), (500, 0)]);
    assert!(
        draws.lock().unwrap().next().is_none(),
        "two draws per delivery"
    );
}

#[test]
fn a_secret_file_gives_one_secret_per_line_and_a_bad_line_is_named_not_shown() {
    let dir = tempfile::Builder::new()
        .prefix("dashboard-whsec-")
        .tempdir()
        .unwrap();
    let (a, b) = (Secret::generate(), Secret::generate());
    let good = dir.path().join("good");
    std::fs::write(&good, format!("{}\n\n{}\n", a.expose(), b.expose())).unwrap();
    let mut config = Config::for_tests(
        "http://127.0.0.1:1".parse().unwrap(),
        "http://127.0.0.1:2".parse().unwrap(),
    );
    assert!(config.webhook_secrets().unwrap().is_empty());
    config.webhook_secret_file = Some(good);
    let secrets = config.webhook_secrets().unwrap();
    assert_eq!(
        secrets.iter().map(Secret::expose).collect::<Vec<_>>(),
        [a.expose(), b.expose()]
    );
    let bad = dir.path().join("bad");
    std::fs::write(&bad, format!("{}\nnot-a-secret-but-private\n", a.expose())).unwrap();
    config.webhook_secret_file = Some(bad);
    let error = config.webhook_secrets().unwrap_err();
    assert!(
        matches!(error, ConfigError::WebhookSecret { line: 2, .. }),
        "{error}"
    );
    assert!(!error.to_string().contains("not-a-secret"), "{error}");
    dir.close().unwrap();
}

#[test]
fn register_and_a_secret_file_are_one_or_the_other() {
    use clap::Parser as _;
    let parsed = crate::Cli::try_parse_from([
        "dashboard",
        "--webhook-register",
        "--webhook-secret-file",
        "/tmp/x",
    ]);
    assert!(parsed.is_err());
    let cli = crate::Cli::try_parse_from(["dashboard", "--webhook-register"]).unwrap();
    assert!(cli.config.webhook_register);
    let cli = crate::Cli::try_parse_from(["dashboard"]).unwrap();
    assert!(!cli.config.webhook_register);
}
