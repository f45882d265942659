//! Observability over the real binaries: one request id finds a payment's whole story in both
//! services' logs; no credential appears in any log line or `/v1/logs` record; `/metrics` is
//! Prometheus text with the documented series; `/openapi.json` lists every route and `/docs`
//! works offline.

use std::{collections::BTreeSet, time::Duration};

use e2e::{
    client, fast_api_with, start_api, start_api_with_env, start_bank, temp_dir, Process,
    TEST_API_KEY,
};
use serde_json::{json, Value};

/// The bank's admin token in these tests (a fixture; it must never be logged).
const BANK_TOKEN: &str = "bank_admin_token_e2e_9f8e7d6c5b4a";
/// A key nobody configured: presented, refused, and never logged either.
const WRONG_KEY: &str = "sk_wrong_key_e2e_00112233445566";

/// Every line the process printed until it has been quiet for `quiet`.
fn drain(process: &Process, quiet: Duration) -> Vec<String> {
    std::iter::from_fn(|| process.next_line(quiet)).collect()
}

/// The JSON records among `lines` (every line is one, with `--log-format json`).
fn records(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON record ({e}): {l}")))
        .collect()
}

fn with_request_id<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["fields"]["request_id"] == id)
        .collect()
}

fn messages(records: &[&Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn put_chaos(bank: &str, body: Value) {
    let response = client::http()
        .put(format!("{bank}/v1/chaos"))
        .bearer_auth(BANK_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn pay_with(api: &str, request_id: &str, key: &str, body: Value) -> (u16, Value) {
    let response = client::http()
        .post(format!("{api}/v1/payments"))
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", key)
        .header("X-Request-Id", request_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], request_id);
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_text(url: &str) -> (u16, String) {
    let response = client::http().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Every `/v1/logs` record of a service, paged with the cursor.
async fn all_log_records(base: &str) -> Vec<Value> {
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let page: Value = client::http()
            .get(format!(
                "{base}/v1/logs?after={after}&limit=1000&level=trace"
            ))
            // The API's logs are an operator route; the bank's are open and ignore the key.
            .bearer_auth(e2e::TEST_OPERATOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = page["records"].as_array().unwrap().clone();
        if records.is_empty() {
            return out;
        }
        after = page["next_after"].as_u64().unwrap();
        out.extend(records);
    }
}

#[tokio::test]
async fn one_request_id_tells_a_payments_story_in_both_services_and_no_secret_is_ever_logged() {
    let bank = start_bank(&["--admin-token", BANK_TOKEN]).await;
    let dir = temp_dir("obs");
    // The step lines (claimed, bank attempt, settled) are DEBUG: an operator following one
    // payment turns them on for the flow's modules, as here.
    let keys = format!("{}:{TEST_API_KEY}", e2e::TEST_TENANT);
    let api = start_api_with_env(
        &bank.url(),
        &dir,
        &fast_api_with(&[]),
        &keys,
        &[(
            "RUST_LOG",
            "info,payment_api::payments=debug,payment_api::bank=debug",
        )],
    )
    .await;
    let (api_url, bank_url) = (api.url(), bank.url());

    // 1. A plain payment: every line of it, in both services, names its request id.
    let rid = format!("obs-{}", uuid::Uuid::new_v4().simple());
    let (status, payment) = pay_with(&api_url, &rid, "obs-1", client::body(1999)).await;
    assert_eq!(status, 201, "{payment}");
    let payment_id = payment["id"].as_str().unwrap().to_owned();

    // 2. A payment whose every attempt fails: the same request id reaches the bank each time.
    put_chaos(
        &bank_url,
        json!({"error_rate": 1.0, "errors": {"http_500": 1}, "error_500_committed_rate": 0.0}),
    )
    .await;
    let retried = format!("obs-retry-{}", uuid::Uuid::new_v4().simple());
    let (status, pending) = pay_with(&api_url, &retried, "obs-2", client::body(500)).await;
    assert_eq!(status, 202, "{pending}");
    put_chaos(&bank_url, json!({"preset": "healthy"})).await;

    // 3. Traffic carrying every credential: X-API-Key, a wrong key, the bank's admin token.
    let declined = client::http()
        .post(format!("{api_url}/v1/payments"))
        .header("X-API-Key", TEST_API_KEY)
        .header("Idempotency-Key", "obs-3")
        .json(&json!({"amount": 700, "currency": "TRY", "source": "tok_insufficient_funds"}))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 402);
    let refused = client::http()
        .post(format!("{api_url}/v1/payments"))
        .bearer_auth(WRONG_KEY)
        .header("Idempotency-Key", "obs-4")
        .json(&client::body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let _ = client::http()
        .put(format!("{bank_url}/v1/chaos"))
        .bearer_auth(WRONG_KEY)
        .json(&json!({"preset": "healthy"}))
        .send()
        .await
        .unwrap();
    // A replay, and a read of the payment.
    let (status, _) = pay_with(&api_url, &rid, "obs-1", client::body(1999)).await;
    assert_eq!(status, 201);
    let _ = client::payment(&api_url, &payment_id).await;

    // The reconciler settles the pending payment once the bank is healthy again.
    let pending_id = pending["id"].as_str().unwrap().to_owned();
    e2e::eventually(Duration::from_secs(15), "the reconciler settles", || {
        let api_url = api_url.clone();
        let id = pending_id.clone();
        async move { (client::payment(&api_url, &id).await["status"] != "pending").then_some(()) }
    })
    .await;

    let api_logs = all_log_records(&api_url).await;
    let bank_logs = all_log_records(&bank_url).await;
    let api_lines = drain(&api, Duration::from_millis(500));
    let bank_lines = drain(&bank, Duration::from_millis(500));
    let api_records = records(&api_lines);
    let bank_records = records(&bank_lines);

    // Every line is a complete record.
    for record in api_records.iter().chain(&bank_records) {
        for field in [
            "timestamp",
            "level",
            "service",
            "target",
            "message",
            "fields",
        ] {
            assert!(!record[field].is_null(), "{field} missing: {record}");
        }
    }
    assert!(api_records.iter().all(|r| r["service"] == "payment-api"));
    assert!(bank_records.iter().all(|r| r["service"] == "mock-bank"));

    // The API's side of payment 1: claimed, one bank attempt, settled, all with its ids.
    let api_story = with_request_id(&api_records, &rid);
    let api_messages = messages(&api_story);
    for expected in [
        "payment claimed",
        "bank attempt",
        "payment settled",
        "request finished",
    ] {
        assert!(
            api_messages.iter().any(|m| m == expected),
            "API lines for {rid} lack {expected:?}: {api_messages:?}"
        );
    }
    let settled = api_story
        .iter()
        .find(|r| r["message"] == "payment settled")
        .unwrap();
    assert_eq!(settled["fields"]["payment_id"], payment_id.as_str());
    assert_eq!(settled["fields"]["tenant"], e2e::TEST_TENANT);
    assert_eq!(settled["fields"]["idempotency_key"], "obs-1");
    assert_eq!(settled["fields"]["status"], "succeeded");
    let attempt = api_story
        .iter()
        .find(|r| r["message"] == "bank attempt")
        .unwrap();
    assert_eq!(attempt["fields"]["attempt"], 1);
    assert_eq!(attempt["fields"]["outcome"], "charged");
    assert_eq!(attempt["fields"]["breaker_state"], "closed");
    assert_eq!(attempt["fields"]["payment_id"], payment_id.as_str());

    // The bank's side of payment 1, found by the same id.
    let bank_messages = messages(&with_request_id(&bank_records, &rid));
    assert!(
        bank_messages.iter().any(|m| m == "charge processed"),
        "bank lines for {rid}: {bank_messages:?}"
    );

    // Payment 2: several attempts, each in the API's log with its number and in the bank's
    // log under the same request id.
    let api_attempts: BTreeSet<i64> = with_request_id(&api_records, &retried)
        .iter()
        .filter(|r| r["message"] == "bank attempt")
        .map(|r| r["fields"]["attempt"].as_i64().unwrap())
        .collect();
    assert!(api_attempts.len() >= 2, "attempts {api_attempts:?}");
    let bank_requests = with_request_id(&bank_records, &retried)
        .iter()
        .filter(|r| r["message"] == "request finished")
        .count();
    assert_eq!(
        bank_requests,
        api_attempts.len(),
        "one bank request per attempt"
    );

    // /v1/logs holds the same story, filterable by request id and payment id.
    let page: Value = client::http()
        .get(format!("{api_url}/v1/logs?request_id={rid}&limit=1000"))
        .bearer_auth(e2e::TEST_OPERATOR_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let filtered = page["records"].as_array().unwrap();
    assert!(!filtered.is_empty());
    assert!(filtered
        .iter()
        .all(|r| r["fields"]["request_id"] == rid.as_str()));
    let by_payment: Value = client::http()
        .get(format!(
            "{api_url}/v1/logs?payment_id={payment_id}&level=info"
        ))
        .bearer_auth(e2e::TEST_OPERATOR_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(by_payment["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["message"] == "request finished" && r["fields"]["outcome"] == "succeeded"));
    let bank_page: Value = client::http()
        .get(format!("{bank_url}/v1/logs?request_id={retried}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bank_page["records"].as_array().unwrap().len() >= api_attempts.len());

    // No credential, anywhere: not in a log line, not in a /v1/logs record.
    let everything = [
        api_lines.join("\n"),
        bank_lines.join("\n"),
        serde_json::to_string(&api_logs).unwrap(),
        serde_json::to_string(&bank_logs).unwrap(),
    ]
    .join("\n");
    assert!(everything.len() > 1000, "too little logged to judge");
    for secret in [TEST_API_KEY, e2e::TEST_OPERATOR_KEY, WRONG_KEY, BANK_TOKEN] {
        assert!(
            !everything.contains(secret),
            "a credential was logged: {secret}"
        );
    }
    // Nor the key's tail, in case something logged a truncated or masked copy.
    assert!(!everything.contains(&TEST_API_KEY[8..]));
    assert!(!everything.contains(&e2e::TEST_OPERATOR_KEY[8..]));
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A minimal check of the Prometheus text format (0.0.4): every line is blank, a `# HELP` /
/// `# TYPE` comment, or `name{label="value",...} number`. Returns the samples.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type: {line}"
                );
                assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                let labels = split_labels(rest)
                    .into_iter()
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_documented_series_after_traffic() {
    let bank = start_bank(&[]).await;
    let dir = temp_dir("obs-metrics");
    let api = start_api(&bank.url(), &dir, &[]).await;
    let api_url = api.url();
    let first = client::pay(&api_url, "m-1", &client::body(100)).await;
    assert_eq!(first.status(), 201);
    let replay = client::pay(&api_url, "m-1", &client::body(100)).await;
    assert_eq!(replay.status(), 201);
    let mismatch = client::pay(&api_url, "m-1", &client::body(101)).await;
    assert_eq!(mismatch.status(), 422);

    let response = client::http()
        .get(format!("{api_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text);
    let has = |name: &str, labels: &[(&str, &str)]| sample(&samples, name, labels);

    assert_eq!(
        has(
            "http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/payments"),
                ("status", "201")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(has(
        "http_request_duration_seconds_bucket",
        &[("route", "/v1/payments"), ("status", "201"), ("le", "+Inf")]
    )
    .is_some());
    assert_eq!(
        has("payments_total", &[("outcome", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(has("idempotency_replays_total", &[]), Some(1.0));
    assert_eq!(has("idempotency_mismatches_total", &[]), Some(1.0));
    assert_eq!(has("idempotency_conflicts_total", &[]), Some(0.0));
    assert_eq!(
        has("bank_attempts_total", &[("classification", "success")]),
        Some(1.0)
    );
    assert_eq!(has("bank_retries_total", &[]), Some(0.0));
    assert!(has("retry_budget_balance", &[]).is_some());
    assert_eq!(has("breaker_state", &[("state", "closed")]), Some(1.0));
    assert_eq!(has("breaker_state", &[("state", "open")]), Some(0.0));
    assert!(has("bulkhead_permits_in_use", &[]).is_some());
    assert!(has("bulkhead_rejections_total", &[]).is_some());
    assert_eq!(has("reconciler_backlog", &[]), Some(0.0));
    assert!(has("reconciler_settled_total", &[]).is_some());
    // The SQLite writer committed the claims and settlements in batches of at least one.
    let batches = has("store_writer_batches_total", &[]).unwrap_or(0.0);
    let writes = has("store_writer_writes_total", &[]).unwrap_or(0.0);
    assert!(
        batches >= 1.0 && writes >= batches,
        "{batches} batches, {writes} writes"
    );
    assert_eq!(has("store_writer_reopens_total", &[]), Some(0.0));
    assert!(has(
        "store_operation_duration_seconds_count",
        &[("operation", "claim")]
    )
    .is_some_and(|n| n >= 1.0));

    // A breaker transition is counted with its reason.
    let forced = client::http()
        .post(format!("{api_url}/v1/breaker/force-open"))
        .bearer_auth(e2e::TEST_OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 200);
    let text = e2e::eventually(Duration::from_secs(5), "the transition is counted", || {
        let url = format!("{api_url}/metrics");
        async move {
            let (_, text) = get_text(&url).await;
            text.contains("breaker_transitions_total").then_some(text)
        }
    })
    .await;
    let samples = parse_prometheus(&text);
    assert_eq!(
        sample(
            &samples,
            "breaker_transitions_total",
            &[
                ("from", "closed"),
                ("to", "forced_open"),
                ("reason", "operator")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&samples, "breaker_state", &[("state", "forced_open")]),
        Some(1.0)
    );

    // The bank exports its own: requests by outcome and injected faults.
    let (status, bank_text) = get_text(&format!("{}/metrics", bank.url())).await;
    assert_eq!(status, 200);
    let bank_samples = parse_prometheus(&bank_text);
    assert!(bank_samples
        .iter()
        .any(|(n, _, v)| n == "mock_bank_responses_total" && *v >= 1.0));
    assert!(bank_text.contains("# TYPE mock_bank_faults_total counter"));
}

/// Every route each service serves, as the OpenAPI document must list it.
const API_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("post", "/v1/payments"),
    ("get", "/v1/payments"),
    ("get", "/v1/payments/{id}"),
    ("get", "/v1/status"),
    ("get", "/v1/logs"),
    ("get", "/metrics"),
    ("post", "/v1/breaker/{action}"),
    ("post", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints"),
    ("get", "/v1/webhook-endpoints/{id}"),
    ("delete", "/v1/webhook-endpoints/{id}"),
    ("post", "/v1/webhook-endpoints/{id}/rotate-secret"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("post", "/v1/events/{id}/redeliver"),
];
const BANK_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/v1/status"),
    ("get", "/v1/logs"),
    ("post", "/v1/charges"),
    ("get", "/v1/charges/{reference}"),
    ("get", "/v1/ledger"),
    ("get", "/v1/chaos"),
    ("put", "/v1/chaos"),
    ("get", "/v1/chaos/presets"),
];

async fn check_openapi(base: &str, routes: &[(&str, &str)]) {
    let (status, text) = get_text(&format!("{base}/openapi.json")).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string());
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        listed, expected,
        "the document lists exactly the routes served"
    );
    // Every operation has responses, and every schema it references exists.
    for (method, path) in &expected {
        let op = &doc["paths"][path][method];
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    // Every listed route is really served: it does not reach the fallback's plain 404.
    let http = client::http();
    for (method, path) in routes {
        let url = format!(
            "{base}{}",
            path.replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{reference}", "pay_none")
                .replace("{action}", "reset")
        );
        let request = match *method {
            "get" => http.get(&url),
            "post" => http.post(&url),
            "put" => http.put(&url),
            "delete" => http.delete(&url),
            _ => unreachable!(),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status != 404 && status != 405
                || body["code"].as_str().is_some_and(|c| c != "not_found"),
            "{method} {path} is not served: {status} {body}"
        );
    }
    // Swagger UI, with its assets served locally (no CDN).
    let (status, html) = get_text(&format!("{base}/docs/")).await;
    assert_eq!(status, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("://"),
        "/docs must not load anything from elsewhere"
    );
    let (status, css) = get_text(&format!("{base}/docs/swagger-ui.css")).await;
    assert_eq!(status, 200);
    assert!(css.len() > 1000);
    let (status, init) = get_text(&format!("{base}/docs/swagger-initializer.js")).await;
    assert_eq!(status, 200);
    assert!(init.contains("/openapi.json"), "{init}");
}

#[tokio::test]
async fn openapi_lists_every_route_of_both_services_and_docs_work_offline() {
    let bank = start_bank(&[]).await;
    let dir = temp_dir("obs-openapi");
    let api = start_api(&bank.url(), &dir, &[]).await;
    check_openapi(&api.url(), API_ROUTES).await;
    check_openapi(&bank.url(), BANK_ROUTES).await;
}

/// At the default level a payment that went well is one API line: its canonical "request
/// finished" line, carrying the whole story (ids, outcome, attempts, time at the bank, breaker
/// state). A payment that went badly still logs what went wrong at WARN.
#[tokio::test]
async fn at_the_default_level_a_payment_is_one_canonical_line_and_a_failed_attempt_a_warning() {
    let bank = start_bank(&["--admin-token", BANK_TOKEN]).await;
    let dir = temp_dir("obs-canonical");
    let api = start_api(&bank.url(), &dir, &fast_api_with(&[])).await;
    let (api_url, bank_url) = (api.url(), bank.url());

    let rid = format!("canon-{}", uuid::Uuid::new_v4().simple());
    let (status, payment) = pay_with(&api_url, &rid, "canon-1", client::body(1999)).await;
    assert_eq!(status, 201, "{payment}");
    put_chaos(
        &bank_url,
        json!({"error_rate": 1.0, "errors": {"http_500": 1}, "error_500_committed_rate": 0.0}),
    )
    .await;
    let failing = format!("canon-fail-{}", uuid::Uuid::new_v4().simple());
    let (status, _) = pay_with(&api_url, &failing, "canon-2", client::body(500)).await;
    assert_eq!(status, 202);
    put_chaos(&bank_url, json!({"preset": "healthy"})).await;

    // Every line the API printed so far (the pending payment's reconciliation may add more).
    let lines = drain(&api, Duration::from_millis(500));
    let all = records(&lines);
    let story = with_request_id(&all, &rid);
    assert_eq!(
        messages(&story),
        ["request finished"],
        "one line for a payment that went well: {story:?}"
    );
    let line = story[0];
    assert_eq!(line["level"], "INFO");
    let fields = &line["fields"];
    assert_eq!(fields["payment_id"], payment["id"]);
    assert_eq!(fields["tenant"], e2e::TEST_TENANT);
    assert_eq!(fields["idempotency_key"], "canon-1");
    assert_eq!(fields["outcome"], "succeeded");
    assert_eq!(fields["status"], 201);
    assert_eq!(fields["attempts"], 1);
    assert_eq!(fields["breaker_state"], "closed");
    assert!(fields["bank_ms"].as_f64().is_some(), "{line}");

    // The failed attempts are warnings, each naming its attempt and outcome.
    let failed = with_request_id(&all, &failing);
    let attempts: Vec<&&Value> = failed
        .iter()
        .filter(|r| r["message"] == "bank attempt")
        .collect();
    assert!(!attempts.is_empty(), "{failed:?}");
    for attempt in attempts {
        assert_eq!(attempt["level"], "WARN");
        assert_ne!(attempt["fields"]["outcome"], "charged");
        assert!(attempt["fields"]["attempt"].as_u64().is_some());
    }
}
