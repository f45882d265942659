//! The page's API over fake upstreams on real loopback ports: what reaches the API and the bank
//! (the secrets, the keys, the paths), what comes back to the page (never a secret), and the
//! cross-site checks.

use std::sync::{Arc, Mutex};

use axum::{
    body::Body,
    extract::{OriginalUri, State},
    http::{HeaderMap, Method, Request},
    routing::any,
    Router,
};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::{
    config::{BankTarget, Secrets},
    history::History,
    traffic::Traffic,
    upstream::Upstream,
};

const KEY: &str = "sk_test_dashboard_0123456789";
const OPERATOR_KEY: &str = "sk_test_dashboard_operator_0123456789";
const TOKEN: &str = "bank-admin-token-0123456789";

/// One request a fake upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A fake API and bank in one: answers by path, records every request.
async fn fake_upstream(logs_endpoint: bool) -> (reqwest::Url, Log) {
    let log: Log = Arc::default();
    async fn handle(
        State((log, logs_endpoint)): State<(Log, bool)>,
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        log.lock().unwrap().push(Seen {
            method: method.clone(),
            uri: uri.to_string(),
            headers: headers.clone(),
            body: body.clone(),
        });
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match (method.as_str(), uri.path()) {
            ("GET", "/v1/status") => Json(json!({
                "instance_id": "api-1",
                "breaker": {"state": "closed", "failure_rate": null, "minimum_calls": 10,
                            "in_state_ms": 5, "open_remaining_ms": null},
                "transitions": [],
                "counters": {"succeeded": 1, "bank_attempts": 1, "bank_retries": 0},
                "latency": {"p50_ms": 3},
                "config": {"pipeline": {"breaker": {"failure_rate_threshold": 0.5}}},
                // An upstream that (wrongly) echoed a secret must not leak it to the page.
                "echo": auth,
            }))
            .into_response(),
            ("GET", "/v1/chaos") => Json(json!({"preset": "healthy", "seed": 1})).into_response(),
            ("PUT", "/v1/chaos") => {
                if auth != format!("Bearer {TOKEN}") {
                    return (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"code": "unauthorized"})),
                    )
                        .into_response();
                }
                let body: Value = serde_json::from_str(&body).unwrap();
                Json(json!({"preset": body["preset"], "echo": auth})).into_response()
            }
            ("POST", "/v1/payments") => {
                let replay = log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.uri == "/v1/payments" && s.method == Method::POST)
                    .filter(|s| s.headers.get("idempotency-key") == headers.get("idempotency-key"))
                    .count()
                    > 1;
                (
                    StatusCode::CREATED,
                    [
                        ("idempotent-replayed", if replay { "true" } else { "false" }),
                        ("x-request-id", "req-1"),
                    ],
                    Json(json!({"id": "pay-1", "status": "succeeded", "attempts": 1})),
                )
                    .into_response()
            }
            ("GET", "/v1/payments") => Json(json!({"data": [
                    {"id": "pay-1", "amount": 1999, "currency": "TRY"},
                    {"id": "pay-2", "amount": 1999, "currency": "JPY"},
                    {"id": "pay-3", "amount": 1999, "currency": "KWD"},
                ], "next_cursor": null}))
            .into_response(),
            ("GET", "/v1/payments/pay-1") => {
                Json(json!({"id": "pay-1", "status": "succeeded", "amount": 5, "currency": "EUR"}))
                    .into_response()
            }
            ("GET", "/v1/logs") if logs_endpoint => Json(json!({
                "records": [{"seq": 3, "level": "INFO", "message": "payment succeeded",
                             "fields": {"payment_id": "pay-1"}}],
                "next_after": 3, "oldest_seq": 1, "latest_seq": 3, "missed": 0
            }))
            .into_response(),
            ("POST", path) if path.starts_with("/v1/breaker/") => {
                Json(json!({"state": "forced_open"})).into_response()
            }
            _ => (StatusCode::NOT_FOUND, Json(json!({"code": "not_found"}))).into_response(),
        }
    }
    let app = Router::new()
        .fallback(any(handle))
        .with_state((Arc::clone(&log), logs_endpoint));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url.parse().unwrap(), log)
}

/// The one bank of `--bank-url`, at `url`.
fn one_bank(url: &reqwest::Url) -> Vec<BankTarget> {
    vec![BankTarget {
        name: "bank".into(),
        url: url.clone(),
    }]
}

struct Harness {
    router: Router,
    log: Log,
}

async fn harness_with(logs_endpoint: bool, api_key: Option<&str>) -> Harness {
    let (url, log) = fake_upstream(logs_endpoint).await;
    let secrets = Secrets {
        api_key: api_key.map(|k| SecretString::from(k.to_owned())),
        operator_key: Some(SecretString::from(OPERATOR_KEY.to_owned())),
        ..Secrets::default()
    }
    .with_bank_token("bank", TOKEN);
    let upstream = Arc::new(Upstream::new(url.clone(), one_bank(&url), secrets));
    let state = Arc::new(AppState {
        traffic: Arc::new(Traffic::new(Arc::clone(&upstream))),
        history: Arc::new(History::default()),
        webhooks: Arc::default(),
        upstream,
    });
    Harness {
        router: router(state),
        log,
    }
}

async fn harness() -> Harness {
    harness_with(true, Some(KEY)).await
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "127.0.0.1:8501")
        .body(Body::empty())
        .unwrap()
}

fn mutate(method: Method, uri: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:8501")
        .header("origin", "http://127.0.0.1:8501")
        .header("sec-fetch-site", "same-origin")
        .header("x-dashboard", "1")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn call(router: &Router, request: Request<Body>) -> (u16, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn call_json(router: &Router, request: Request<Body>) -> (u16, Value) {
    let (status, _, body) = call(router, request).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_strict_same_origin_policy() {
    let h = harness().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let (status, headers, body) = call(&h.router, get(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        // Nothing is loaded from elsewhere (the SVG namespace is a name, not a load).
        let without_svg_ns = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !without_svg_ns.contains("http://") && !without_svg_ns.contains("https://"),
            "{path} refers to another origin"
        );
        assert!(!body.contains(KEY) && !body.contains(TOKEN));
    }
    let (_, _, html) = call(&h.router, get("/")).await;
    assert!(html.contains("<title>resilient-payments dashboard</title>"));
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert!(!html.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn health_answers_ok() {
    let h = harness().await;
    let (status, _, _) = call(&h.router, get("/health")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_overview_combines_api_and_bank_and_never_carries_a_secret() {
    let h = harness().await;
    let (status, _, body) = call(&h.router, get("/api/overview")).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains(KEY) && !body.contains(OPERATOR_KEY) && !body.contains(TOKEN),
        "{body}"
    );
    let o: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(o["api"]["reachable"], true);
    assert_eq!(o["breaker"]["state"], "closed");
    assert_eq!(o["breaker"]["enough_calls"], false);
    assert_eq!(o["breaker"]["failure_rate_threshold"], 0.5);
    assert_eq!(o["bank"]["reachable"], true);
    assert_eq!(o["history"]["interval_ms"], 1000);
    assert_eq!(o["traffic"]["running"], false);
    // The API's status is read with the operator key (and the upstream's echo of it is
    // redacted); the bank's (the same fake) with none, and never the bank's token.
    let seen = h.log.lock().unwrap().clone();
    let auths: Vec<Option<&str>> = seen
        .iter()
        .filter(|s| s.uri == "/v1/status")
        .map(|s| s.headers.get("authorization").and_then(|v| v.to_str().ok()))
        .collect();
    let operator = format!("Bearer {OPERATOR_KEY}");
    assert_eq!(auths.len(), 2, "{seen:?}");
    assert!(auths.contains(&Some(operator.as_str())), "{auths:?}");
    assert!(auths.contains(&None), "{auths:?}");
    // One panel: the one bank of --bank-url, joined with the API's top-level breaker (this
    // fake API predates `banks`), its badge reachable (this fake bank has no preset: `custom`).
    let panels = o["banks"].as_array().unwrap();
    assert_eq!(panels.len(), 1, "{o}");
    assert_eq!(panels[0]["name"], "bank");
    assert_eq!(panels[0]["breaker"]["state"], "closed");
    assert_eq!(panels[0]["badge"]["reach"], "reachable");
    assert_eq!(panels[0]["badge"]["chaos"], "custom");
    assert_eq!(panels[0]["breaker_controls"], true);
}

#[tokio::test]
async fn an_unreachable_api_is_reported_not_an_error() {
    let secrets = Secrets {
        operator_key: Some(SecretString::from(OPERATOR_KEY.to_owned())),
        ..Secrets::default()
    };
    let dead: reqwest::Url = "http://127.0.0.1:1".parse().unwrap();
    let upstream = Arc::new(Upstream::new(dead.clone(), one_bank(&dead), secrets));
    let state = Arc::new(AppState {
        traffic: Arc::new(Traffic::new(Arc::clone(&upstream))),
        history: Arc::new(History::default()),
        webhooks: Arc::default(),
        upstream,
    });
    let (status, o) = call_json(&router(state), get("/api/overview")).await;
    assert_eq!(status, 200);
    assert_eq!(o["api"]["reachable"], false);
    assert_eq!(o["bank"]["reachable"], false);
    assert!(o["api"]["error"].as_str().unwrap().contains("payment API"));
}

#[tokio::test]
async fn without_an_operator_key_the_status_and_breaker_are_refused_here_and_never_sent() {
    let (url, log) = fake_upstream(true).await;
    let secrets = Secrets {
        api_key: Some(SecretString::from(KEY.to_owned())),
        ..Secrets::default()
    };
    let upstream = Arc::new(Upstream::new(url.clone(), one_bank(&url), secrets));
    let state = Arc::new(AppState {
        traffic: Arc::new(Traffic::new(Arc::clone(&upstream))),
        history: Arc::new(History::default()),
        webhooks: Arc::default(),
        upstream,
    });
    let router = router(state);
    let (status, o) = call_json(&router, get("/api/overview")).await;
    assert_eq!(status, 200);
    assert_eq!(o["api"]["reachable"], false);
    assert!(
        o["api"]["error"].as_str().unwrap().contains("operator key"),
        "{o}"
    );
    let (status, body) = call_json(
        &router,
        mutate(Method::POST, "/api/breaker/force-open", json!({})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // The tenant key is never sent in the operator key's place: no breaker call went out, and
    // nothing was sent with a key (the fake is the bank too, whose status is read without one).
    let seen = log.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| !s.uri.starts_with("/v1/breaker") && s.headers.get("authorization").is_none()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_payment_goes_out_with_the_key_and_a_fresh_idempotency_key_and_replays_with_the_same() {
    let h = harness().await;
    let (status, one) = call_json(
        &h.router,
        mutate(Method::POST, "/api/payments/one", json!({"amount": 500})),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["status"], 201);
    assert_eq!(one["replayed"], "false");
    assert_eq!(one["payment_id"], "pay-1");
    assert_eq!(one["request_id"], "req-1");
    let (status, replay) = call_json(
        &h.router,
        mutate(Method::POST, "/api/payments/replay-last", json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replay["replayed"], "true");
    assert_eq!(replay["idempotency_key"], one["idempotency_key"]);

    let seen = h.log.lock().unwrap().clone();
    let posts: Vec<_> = seen.iter().filter(|s| s.uri == "/v1/payments").collect();
    assert_eq!(posts.len(), 2);
    for post in &posts {
        assert_eq!(post.headers["authorization"], format!("Bearer {KEY}"));
        let body: Value = serde_json::from_str(&post.body).unwrap();
        assert_eq!(
            body,
            json!({"amount": 500, "currency": "TRY", "source": "tok_visa"})
        );
    }
    assert_eq!(
        posts[0].headers["idempotency-key"],
        posts[1].headers["idempotency-key"]
    );
}

#[tokio::test]
async fn replay_before_any_payment_says_what_to_do() {
    let h = harness().await;
    let (status, body) = call_json(
        &h.router,
        mutate(Method::POST, "/api/payments/replay-last", json!({})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("send one first"));
}

#[tokio::test]
async fn a_burst_sends_distinct_keys_and_is_bounded() {
    let h = harness().await;
    let (status, summary) = call_json(
        &h.router,
        mutate(Method::POST, "/api/payments/burst", json!({"count": 7})),
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["count"], 7);
    assert_eq!(summary["by_status"]["201"], 7);
    let seen = h.log.lock().unwrap().clone();
    let mut keys: Vec<_> = seen
        .iter()
        .filter(|s| s.uri == "/v1/payments")
        .map(|s| s.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 7);
    for count in [0, 201] {
        let (status, _) = call_json(
            &h.router,
            mutate(Method::POST, "/api/payments/burst", json!({"count": count})),
        )
        .await;
        assert_eq!(status, 400, "count {count}");
    }
}

#[tokio::test]
async fn without_an_api_key_sending_is_refused_with_a_reason() {
    let h = harness_with(true, None).await;
    let (status, body) = call_json(
        &h.router,
        mutate(Method::POST, "/api/payments/one", json!({})),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "no_api_key");
}

#[tokio::test]
async fn mutating_calls_need_the_dashboard_header_a_same_origin_and_a_local_host_name() {
    let h = harness().await;
    let mut no_header = mutate(Method::POST, "/api/breaker/reset", json!({}));
    no_header.headers_mut().remove("x-dashboard");
    let mut cross_origin = mutate(Method::POST, "/api/breaker/reset", json!({}));
    cross_origin
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let mut cross_site = mutate(Method::PUT, "/api/chaos", json!({"preset": "down"}));
    cross_site
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    let mut rebound = mutate(Method::PUT, "/api/chaos", json!({"preset": "down"}));
    rebound
        .headers_mut()
        .insert("host", "evil.example:8501".parse().unwrap());
    rebound
        .headers_mut()
        .insert("origin", "http://evil.example:8501".parse().unwrap());
    for request in [no_header, cross_origin, cross_site, rebound] {
        let (status, body) = call_json(&h.router, request).await;
        assert_eq!(status, 403, "{body}");
    }
    let mut rebound_read = get("/api/overview");
    rebound_read
        .headers_mut()
        .insert("host", "evil.example".parse().unwrap());
    assert_eq!(call(&h.router, rebound_read).await.0, 403);
    assert!(
        h.log.lock().unwrap().is_empty(),
        "nothing reached the upstreams"
    );
}

#[test]
fn local_host_names_are_ip_literals_or_localhost() {
    for ok in [
        "127.0.0.1:8501",
        "127.0.0.1",
        "localhost:8501",
        "[::1]:8501",
        "10.0.0.5:80",
    ] {
        assert!(host_is_local_name(ok), "{ok}");
    }
    for bad in [
        "evil.example",
        "evil.example:8501",
        "",
        "[zz]:1",
        "127.0.0.1.nip.io",
    ] {
        assert!(!host_is_local_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn chaos_goes_to_the_bank_with_its_token_and_bad_bodies_stop_here() {
    let h = harness().await;
    let (status, _, body) = call(
        &h.router,
        mutate(Method::PUT, "/api/chaos", json!({"preset": "down"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(TOKEN),
        "the token echoed by the bank is redacted: {body}"
    );
    assert!(body.contains("[redacted]"));
    let seen = h.log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(seen[0].body, r#"{"preset":"down"}"#);

    for bad in [
        json!("down"),
        json!({"preset": "down", "scenario": []}),
        json!({"scenario": []}),
        json!({"preset": "a&b=c"}),
    ] {
        let (status, _) =
            call_json(&h.router, mutate(Method::PUT, "/api/chaos", bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
    }
    let scenario =
        json!({"scenario": [{"at_ms": 0, "preset": "down"}, {"at_ms": 5000, "preset": "healthy"}]});
    let (status, _) = call_json(&h.router, mutate(Method::PUT, "/api/chaos", scenario)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn breaker_actions_are_passed_with_the_key_and_unknown_ones_refused() {
    let h = harness().await;
    let (status, body) = call_json(
        &h.router,
        mutate(Method::POST, "/api/breaker/force-open", json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "forced_open");
    let (status, _) = call_json(
        &h.router,
        mutate(Method::POST, "/api/breaker/explode", json!({})),
    )
    .await;
    assert_eq!(status, 404);
    let seen = h.log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v1/breaker/force-open");
    // Breaker controls go out with the operator key, never the tenant key.
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OPERATOR_KEY}")
    );
}

#[tokio::test]
async fn logs_are_proxied_with_checked_filters() {
    let h = harness().await;
    let (status, body) = call_json(
        &h.router,
        get("/api/logs?after=2&limit=9999&level=warn&payment_id=pay-1"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["available"], true);
    assert_eq!(body["records"][0]["seq"], 3);
    let seen = h.log.lock().unwrap().clone();
    assert_eq!(
        seen[0].uri,
        "/v1/logs?after=2&limit=500&level=WARN&payment_id=pay-1"
    );
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OPERATOR_KEY}")
    );
    for bad in ["/api/logs?level=loud", "/api/logs?payment_id=a%26b%3Dc"] {
        assert_eq!(call(&h.router, get(bad)).await.0, 400, "{bad}");
    }
}

#[tokio::test]
async fn logs_from_an_api_without_a_log_endpoint_are_unavailable_not_an_error() {
    let h = harness_with(false, Some(KEY)).await;
    let (status, body) = call_json(&h.router, get("/api/logs")).await;
    assert_eq!(status, 200);
    assert_eq!(body["available"], false);
    assert!(body["reason"].as_str().unwrap().contains("/v1/logs"));
}

#[tokio::test]
async fn a_payments_details_come_with_its_log_lines() {
    let h = harness().await;
    let (status, body) = call_json(&h.router, get("/api/payments/pay-1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["payment"]["status"], "succeeded");
    assert_eq!(body["logs"]["records"][0]["fields"]["payment_id"], "pay-1");
    let (status, list) = call_json(&h.router, get("/api/payments?limit=5&status=succeeded")).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], "pay-1");
    // Amounts are shown in each currency's own minor units, not divided by 100 for all.
    let shown: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["amount_display"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, ["19.99 TRY", "1999 JPY", "1.999 KWD"]);
    assert_eq!(body["payment"]["amount_display"], "0.05 EUR");
    let seen = h.log.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|s| s.uri == "/v1/payments?limit=5&status=succeeded"));
}

#[tokio::test]
async fn steady_traffic_starts_bounded_and_stops() {
    let h = harness().await;
    let (status, _) = call_json(
        &h.router,
        mutate(Method::POST, "/api/traffic", json!({"rate_per_s": 1000})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, state) = call_json(
        &h.router,
        mutate(
            Method::POST,
            "/api/traffic",
            json!({"rate_per_s": 50, "duration_s": 30}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state["running"], true);
    // Wait (bounded) until the generator has sent something.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, state) = call_json(&h.router, get("/api/traffic")).await;
        if state["by_status"]["201"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no traffic: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, state) = call_json(
        &h.router,
        mutate(Method::DELETE, "/api/traffic", Value::Null),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state["running"], false);
}

/// How a simple fake answers a request.
type Answerer = fn(&Seen) -> Value;

/// A fake upstream that records every request and answers each with 200 and `answer(request)`.
async fn simple_fake(answer: Answerer) -> (reqwest::Url, Log) {
    let log: Log = Arc::default();
    async fn handle(
        State((log, answer)): State<(Log, Answerer)>,
        method: Method,
        OriginalUri(uri): OriginalUri,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let seen = Seen {
            method,
            uri: uri.to_string(),
            headers,
            body,
        };
        let out = answer(&seen);
        log.lock().unwrap().push(seen);
        Json(out).into_response()
    }
    let app = Router::new()
        .fallback(any(handle))
        .with_state((Arc::clone(&log), answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url.parse().unwrap(), log)
}

const TOKEN_A: &str = "bank-a-admin-token-0123456789";
const TOKEN_B: &str = "bank-b-admin-token-0123456789";

/// A mock bank: its status says `down`; a chaos change echoes the credential it came with (as
/// a careless upstream might).
fn fake_bank(seen: &Seen) -> Value {
    let auth = seen
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if seen.method == Method::PUT {
        return json!({"preset": "down", "echo": auth});
    }
    json!({"instance_id": "bank", "chaos": {"preset": "down"}, "ledger_charges": 0})
}

/// An API over banks `a` and `b` from before per-bank breaker controls.
fn api_without_bank_controls(seen: &Seen) -> Value {
    if seen.uri.starts_with("/v1/breaker/") {
        return json!({"state": "forced_open"});
    }
    json!({
        "instance_id": "api-1",
        "routing": {"mode": "priority"},
        "banks": [
            {"name": "a", "breaker_state": "open", "breaker": {"state": "open"}, "share": 0.1,
             "cascaded_away": 4},
            {"name": "b", "breaker_state": "closed", "breaker": {"state": "closed"}, "share": 0.9},
        ],
        "breaker": {"state": "open"},
    })
}

/// The same API with per-bank breaker controls (each bank reports its own settings).
fn api_with_bank_controls(seen: &Seen) -> Value {
    let mut status = api_without_bank_controls(seen);
    for bank in status["banks"].as_array_mut().into_iter().flatten() {
        bank["settings"] = json!({"breaker": {"failure_rate_threshold": 0.5}});
        bank["transitions"] = json!([]);
    }
    status
}

/// The dashboard over the fake API `api` and two fake banks `a` and `b`, each with its token.
async fn two_banks(api: Answerer) -> (Router, Log, Log, Log) {
    let (api_url, api_log) = simple_fake(api).await;
    let (a, a_log) = simple_fake(fake_bank).await;
    let (b, b_log) = simple_fake(fake_bank).await;
    let secrets = Secrets {
        operator_key: Some(SecretString::from(OPERATOR_KEY.to_owned())),
        ..Secrets::default()
    }
    .with_bank_token("a", TOKEN_A)
    .with_bank_token("b", TOKEN_B);
    let banks = vec![
        BankTarget {
            name: "a".into(),
            url: a,
        },
        BankTarget {
            name: "b".into(),
            url: b,
        },
    ];
    let upstream = Arc::new(Upstream::new(api_url, banks, secrets));
    let state = Arc::new(AppState {
        traffic: Arc::new(Traffic::new(Arc::clone(&upstream))),
        history: Arc::new(History::default()),
        webhooks: Arc::default(),
        upstream,
    });
    (router(state), api_log, a_log, b_log)
}

fn puts(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::PUT)
        .cloned()
        .collect()
}

#[tokio::test]
async fn chaos_goes_to_the_named_bank_with_that_banks_token_only() {
    let (router, _, a_log, b_log) = two_banks(api_without_bank_controls).await;
    let (status, _, body) = call(
        &router,
        mutate(Method::PUT, "/api/chaos?bank=b", json!({"preset": "down"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(TOKEN_B) && body.contains("[redacted]"),
        "{body}"
    );
    assert!(puts(&a_log).is_empty(), "a was not touched");
    let to_b = puts(&b_log);
    assert_eq!(to_b.len(), 1);
    assert_eq!(
        to_b[0].headers["authorization"],
        format!("Bearer {TOKEN_B}")
    );
    // Without a bank: the first, with its own token (the one-bank page's call).
    let (status, _) = call_json(
        &router,
        mutate(Method::PUT, "/api/chaos", json!({"preset": "down"})),
    )
    .await;
    assert_eq!(status, 200);
    let to_a = puts(&a_log);
    assert_eq!(to_a.len(), 1);
    assert_eq!(
        to_a[0].headers["authorization"],
        format!("Bearer {TOKEN_A}")
    );
    // An unknown bank, or a name that is not one, goes nowhere.
    let (status, body) = call_json(
        &router,
        mutate(Method::PUT, "/api/chaos?bank=zz", json!({"preset": "down"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_bank"))
    );
    let (status, _) = call_json(
        &router,
        mutate(
            Method::PUT,
            "/api/chaos?bank=a%26b",
            json!({"preset": "down"}),
        ),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call_json(&router, get("/api/chaos?bank=b")).await;
    assert_eq!((status, body["bank"].as_str()), (200, Some("b")));
    assert_eq!(puts(&a_log).len() + puts(&b_log).len(), 2);
}

#[tokio::test]
async fn the_overview_has_one_panel_per_bank_with_its_badge_and_never_a_token() {
    let (router, _, _, _) = two_banks(api_without_bank_controls).await;
    let (status, _, body) = call(&router, get("/api/overview")).await;
    assert_eq!(status, 200);
    for secret in [TOKEN_A, TOKEN_B, OPERATOR_KEY] {
        assert!(!body.contains(secret), "{body}");
    }
    let o: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(o["routing"]["mode"], "priority");
    let panels = o["banks"].as_array().unwrap();
    let names: Vec<_> = panels.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(panels[0]["breaker"]["state"], "open");
    assert_eq!(panels[1]["breaker"]["state"], "closed");
    assert_eq!(panels[0]["cascaded_away"], 4);
    assert_eq!(panels[1]["share"], 0.9);
    // Reachable, and in `down` chaos: two facts, not one green check.
    assert_eq!(panels[0]["badge"]["reach"], "reachable");
    assert_eq!(panels[0]["badge"]["chaos"], "down");
    assert_eq!(panels[0]["badge"]["level"], "chaos");
    assert_eq!(o["bank"]["preset"], "down", "the first bank, as before");
}

#[tokio::test]
async fn a_breaker_action_names_its_bank_only_when_the_api_can_take_it() {
    let breaker_posts = |log: &Log| -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::POST)
            .map(|s| s.uri.clone())
            .collect()
    };
    // An API without per-bank controls: the first bank's breaker is its only one; any other
    // bank's action is refused here (the API would move the first bank's instead).
    let (router, api_log, _, _) = two_banks(api_without_bank_controls).await;
    let post = |uri: &str| mutate(Method::POST, uri, json!({}));
    let (status, _) = call_json(&router, post("/api/breaker/force-open?bank=a")).await;
    assert_eq!(status, 200);
    let (status, body) = call_json(&router, post("/api/breaker/force-open?bank=b")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_supported"))
    );
    let (status, _) = call_json(&router, post("/api/breaker/reset")).await;
    assert_eq!(status, 200);
    assert_eq!(
        breaker_posts(&api_log),
        ["/v1/breaker/force-open", "/v1/breaker/reset"]
    );
    // An API with them: each bank by the API's name for it.
    let (router, api_log, _, _) = two_banks(api_with_bank_controls).await;
    let (status, _) = call_json(&router, post("/api/breaker/force-open?bank=b")).await;
    assert_eq!(status, 200);
    let (status, _) = call_json(&router, post("/api/breaker/force-open?bank=zz")).await;
    assert_eq!(status, 404);
    assert_eq!(breaker_posts(&api_log), ["/v1/breaker/force-open?bank=b"]);
    let seen = api_log.lock().unwrap().clone();
    assert!(seen
        .iter()
        .all(|s| s.headers["authorization"] == format!("Bearer {OPERATOR_KEY}")));
}
