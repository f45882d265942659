//! Hostile input against the real API (in-process, over a real socket, with a real mock bank):
//! arbitrary methods, paths, headers, keys, content types and bodies. Every answer must be a
//! well-formed 4xx problem or a documented success — never a 5xx, never a hang — and a rejected
//! request must leave the store unchanged.

mod support;

use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::Value;
use support::System;

const KEY: &str = "sk_test_hostile_0123456789abcdef";

async fn start() -> System {
    start_with(|_| {}).await
}

/// The system, with `tune` applied to the API's configuration first.
async fn start_with(tune: impl FnOnce(&mut payment_api::Config)) -> System {
    support::start("hostile", &format!("acme:{KEY}"), tune).await
}

/// How many payments the tenant has (every page).
async fn payment_count(system: &System) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{}/v1/payments?limit=100", system.api);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = system
            .client
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return count,
        }
    }
    panic!("paging did not end")
}

#[derive(Clone)]
struct Hostile {
    method: &'static str,
    path: String,
    auth: Option<String>,
    key: Option<Vec<u8>>,
    content_type: Option<String>,
    /// Extra header fields: usually none, sometimes a flood of them or a huge one.
    extra: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        f.debug_struct("Hostile")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("auth", &self.auth)
            .field(
                "key",
                &self
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
            )
            .field("content_type", &self.content_type)
            .field(
                "extra",
                &format!(
                    "{} fields, {} bytes",
                    self.extra.len(),
                    self.extra
                        .iter()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>()
                ),
            )
            .field("body", &body)
            .finish()
    }
}

fn valid_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            6 => (1i64..100_000).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => Just(Value::from("12")),
            1 => Just(Value::Null),
            1 => any::<f64>().prop_map(Value::from),
        ],
        prop_oneof![6 => Just("TRY".to_owned()), 1 => "[A-Za-z0-9]{0,5}", 1 => ".{0,8}"],
        prop_oneof![
            6 => Just("tok_visa".to_owned()),
            1 => Just("tok_decline".to_owned()),
            1 => ".{0,80}",
        ],
        proptest::option::weighted(0.15, ".{0,600}"),
        proptest::option::weighted(
            0.15,
            proptest::collection::btree_map(
                ".{0,50}",
                prop_oneof![
                    ".{0,600}".prop_map(Value::from),
                    any::<i64>().prop_map(Value::from)
                ],
                0..25,
            ),
        ),
        proptest::option::weighted(0.05, (".{1,10}", any::<bool>())),
    )
        .prop_map(|(amount, currency, source, description, metadata, extra)| {
            let mut body =
                serde_json::json!({"amount": amount, "currency": currency, "source": source});
            if let Some(d) = description {
                body["description"] = Value::from(d);
            }
            if let Some(m) = metadata {
                body["metadata"] = Value::Object(m.into_iter().collect());
            }
            if let Some((k, v)) = extra {
                body[k] = Value::from(v);
            }
            serde_json::to_vec(&body).unwrap()
        })
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        prop_oneof![6 => Just("POST"), 1 => Just("GET"), 1 => Just("PUT"), 1 => Just("DELETE"), 1 => Just("PATCH")],
        prop_oneof![
            10 => Just("/v1/payments".to_owned()),
            1 => "/v1/payments/[a-z0-9-]{0,40}",
            1 => Just("/v1/payments?limit=0&status=nope".to_owned()),
            1 => "/v1/payments\\?[a-z=&%0-9]{0,30}",
            1 => "/v1/breaker/[a-z-]{0,15}",
            1 => "/[a-zA-Z0-9/_.-]{0,30}",
        ],
        prop_oneof![
            8 => Just(Some(format!("Bearer {KEY}"))),
            1 => Just(None),
            1 => "[ -~]{0,80}".prop_map(Some),
        ],
        prop_oneof![
            8 => "[!-~]{1,40}".prop_map(|k| Some(k.into_bytes())),
            1 => Just(None),
            1 => proptest::collection::vec(32u8..127, 0..300).prop_map(Some),
            1 => "\"[ -~]{0,20}\"".prop_map(|k| Some(k.into_bytes())),
        ],
        prop_oneof![
            8 => Just(Some("application/json".to_owned())),
            1 => Just(None),
            1 => "[a-z/+;= -]{0,30}".prop_map(Some),
        ],
        prop_oneof![
            8 => valid_body(),
            1 => proptest::collection::vec(any::<u8>(), 0..200),
            1 => "\\PC{0,100}".prop_map(String::into_bytes),
        ],
        prop_oneof![
            8 => Just(Vec::new()),
            1 => proptest::collection::vec(extra_header(64), 1..120),
            1 => proptest::collection::vec(extra_header(20_000), 1..4),
        ],
    )
        .prop_map(|(method, path, auth, key, content_type, body, extra)| Hostile {
            method,
            path,
            auth,
            key,
            content_type,
            extra,
            body,
        })
}

/// One header field with a value of up to `max_value` bytes (any byte a header may carry).
fn extra_header(max_value: usize) -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        "x-[a-z0-9-]{1,20}",
        proptest::collection::vec(prop_oneof![32u8..127, 128u8..=255], 0..max_value),
    )
}

#[test]
fn no_input_produces_a_5xx_and_rejected_input_changes_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let system = runtime.block_on(start());
    // 300 cases in CI; `HOSTILE_CASES=5000` for a longer hunt.
    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases,
        ..Default::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&hostile(), |case| {
            let (status, body, before, after) = runtime.block_on(async {
                let before = payment_count(&system).await;
                let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
                let mut request = system
                    .client
                    .request(method, format!("{}{}", system.api, case.path));
                if let Some(auth) = &case.auth {
                    if let Ok(value) = reqwest::header::HeaderValue::from_str(auth) {
                        request = request.header("authorization", value);
                    }
                }
                if let Some(key) = &case.key {
                    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(key) {
                        request = request.header("idempotency-key", value);
                    }
                }
                for (name, value) in &case.extra {
                    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
                        request = request.header(name.as_str(), value);
                    }
                }
                if let Some(content_type) = &case.content_type {
                    if let Ok(value) = reqwest::header::HeaderValue::from_str(content_type) {
                        request = request.header("content-type", value);
                    }
                }
                let response = request
                    .body(case.body.clone())
                    .send()
                    .await
                    .expect("an answer, never a hang");
                let status = response.status().as_u16();
                if matches!(status, 429 | 503) {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "{status} without Retry-After for {case:?}"
                    );
                }
                let content_type = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                let body = response.bytes().await.unwrap();
                let after = payment_count(&system).await;
                if status >= 400 {
                    assert_eq!(
                        content_type.as_deref(),
                        Some("application/problem+json"),
                        "{status} for {case:?}"
                    );
                }
                (status, body, before, after)
            });
            *seen.lock().unwrap().entry(status).or_default() += 1;
            prop_assert!(
                status < 500,
                "{} answered {}: {}",
                case.path,
                status,
                String::from_utf8_lossy(&body)
            );
            if status >= 400 && status != 402 {
                let problem: Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(
                    problem["code"].as_str().is_some_and(|c| !c.is_empty()),
                    "{problem}"
                );
                prop_assert_eq!(
                    before,
                    after,
                    "a rejected request changed the store: {:?}",
                    case
                );
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner().unwrap();
    println!("hostile inputs by answer: {seen:?}");
    assert!(
        seen.keys().any(|s| *s >= 400),
        "the generator must reach rejections"
    );
    assert!(
        seen.contains_key(&201),
        "the generator must reach successes too: {seen:?}"
    );
}

/// A request that reuses a few keys with a few bodies, so repeats reach the idempotency answers.
#[derive(Debug, Clone)]
struct Repeat {
    key: &'static str,
    body: &'static str,
}

fn repeat() -> impl Strategy<Value = Repeat> {
    (
        prop_oneof![Just("order-1"), Just("order-2"), Just("order-3")],
        prop_oneof![
            2 => Just(r#"{"amount":1999,"currency":"TRY","source":"tok_visa"}"#),
            1 => Just(r#"{"amount":2500,"currency":"TRY","source":"tok_visa"}"#),
            1 => Just(r#"{"amount":500,"currency":"JPY","source":"tok_insufficient_funds"}"#),
        ],
    )
        .prop_map(|(key, body)| Repeat { key, body })
}

#[test]
fn repeated_keys_reach_replays_reuse_refusals_and_rate_limits_and_replays_never_change() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A burst of 60 requests passes (repeats reach replays and reuse refusals), then a rate
    // limit low enough that the rest of a quick run crosses it.
    let system = runtime.block_on(start_with(|config| {
        config.edge.rate_limit = 10;
        config.edge.rate_limit_burst = 60;
    }));
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases: 300,
        ..Default::default()
    });
    // What each key first answered (body and status), to compare every replay against.
    let first =
        std::sync::Mutex::new(std::collections::HashMap::<&str, (u16, Vec<u8>, String)>::new());
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    runner
        .run(&repeat(), |case| {
            let (status, replayed, retry_after, body) = runtime.block_on(async {
                let response = system
                    .client
                    .post(format!("{}/v1/payments", system.api))
                    .bearer_auth(KEY)
                    .header("idempotency-key", case.key)
                    .header("content-type", "application/json")
                    .body(case.body)
                    .send()
                    .await
                    .expect("an answer");
                let status = response.status().as_u16();
                let replayed = response
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v == "true");
                let retry_after = response.headers().contains_key("retry-after");
                (
                    status,
                    replayed,
                    retry_after,
                    response.bytes().await.unwrap().to_vec(),
                )
            });
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned));
            let label = match (status, replayed, &code) {
                (_, true, _) => format!("{status} replay"),
                (_, false, Some(code)) => format!("{status} {code}"),
                _ => status.to_string(),
            };
            *seen.lock().unwrap().entry(label).or_default() += 1;
            prop_assert!(status < 500, "{status}: {}", String::from_utf8_lossy(&body));
            if matches!(status, 429 | 503 | 409) {
                prop_assert!(retry_after, "{status} without Retry-After");
            }
            let mut first = first.lock().unwrap();
            match (status, replayed) {
                (201 | 402, false) => {
                    prop_assert!(
                        !first.contains_key(case.key),
                        "a second first answer for {}",
                        case.key
                    );
                    first.insert(case.key, (status, body, case.body.to_owned()));
                }
                (_, true) => {
                    let (first_status, first_body, first_request) = &first[case.key];
                    prop_assert_eq!(
                        first_request.as_str(),
                        case.body,
                        "a replay for another body"
                    );
                    prop_assert_eq!(*first_status, status);
                    prop_assert_eq!(first_body, &body, "a replay differs from the first answer");
                }
                (422, false) => {
                    prop_assert_eq!(code.as_deref(), Some("idempotency_key_reused"));
                    let (_, _, first_request) = &first[case.key];
                    prop_assert_ne!(first_request.as_str(), case.body);
                }
                (429, false) => prop_assert_eq!(code.as_deref(), Some("rate_limited")),
                (status, _) => prop_assert!(false, "unexpected {status} {code:?}"),
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner().unwrap();
    println!("repeated keys by answer: {seen:?}");
    for expected in [
        "201 replay",
        "422 idempotency_key_reused",
        "429 rate_limited",
    ] {
        assert!(
            seen.contains_key(expected),
            "never reached {expected}: {seen:?}"
        );
    }
}
