//! The edge limits against the real binaries: a flood from one API key gets 429s while another
//! key is still served, overload is shed with 503 and Retry-After while probes answer, and a
//! client that disconnects mid-payment still gets its outcome. Every refusal happens before any
//! work: the bank's ledger (the ground truth) holds exactly the payments that were answered 201,
//! and every refused key can still be used.
//!
//! Roles, with two tenant keys and one operator key: the operator surface refuses both tenants
//! (403, nothing changes), a tenant reaches nothing of the other's, the operator's actions are
//! named in the breaker history and the logs, and no key appears in any log line or answer.

use std::time::Duration;

use e2e::{
    client::{body, http, ledger, put_chaos, status},
    eventually, start_api_with_keys, start_bank, temp_dir, FAST_API,
};
use serde_json::{json, Value};

const FLOOD_KEY: &str = "sk_test_flood_0123456789abcdef";
const CALM_KEY: &str = "sk_test_calm_0123456789abcdef";
const KEYS: &str = "flood:sk_test_flood_0123456789abcdef,calm:sk_test_calm_0123456789abcdef";

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn pay_as(api: &str, api_key: &str, idempotency_key: &str) -> Answer {
    let response = http()
        .post(format!("{api}/v1/payments"))
        .bearer_auth(api_key)
        .header("Idempotency-Key", idempotency_key)
        .json(&body(1000))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Sends `idempotency_key` until it is not refused at the edge (bounded), and returns that answer.
async fn pay_until_admitted(api: &str, api_key: &str, idempotency_key: &str) -> Answer {
    eventually(Duration::from_secs(20), "admitted", || async {
        let answer = pay_as(api, api_key, idempotency_key).await;
        (![429, 503].contains(&answer.status)).then_some(answer)
    })
    .await
}

#[tokio::test]
async fn a_flood_from_one_key_gets_429s_while_another_key_is_served() {
    let bank = start_bank(&[]).await;
    let dir = temp_dir("security-flood");
    let mut args = FAST_API.to_vec();
    args.extend(["--rate-limit", "10", "--rate-limit-burst", "10"]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let flood: Vec<_> = (0..150)
        .map(|i| {
            let api = api_url.clone();
            tokio::spawn(async move { pay_as(&api, FLOOD_KEY, &format!("flood-{i}")).await })
        })
        .collect();
    // The calm key is served while the flood is refused.
    let calm = pay_as(&api_url, CALM_KEY, "calm-1").await;
    assert_eq!(calm.status, 201, "{}", calm.body);

    let mut admitted = Vec::new();
    let mut limited = Vec::new();
    for (i, task) in flood.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match answer.status {
            201 => admitted.push(i),
            429 => {
                assert_eq!(answer.body["code"], "rate_limited");
                let wait: u64 = answer.retry_after.as_deref().unwrap().parse().unwrap();
                assert!((1..=2).contains(&wait), "Retry-After {wait}");
                limited.push(i);
            }
            other => panic!("flood-{i}: unexpected {other}: {}", answer.body),
        }
    }
    // 10 at once plus 10/s refill while the flood lasts.
    assert!(
        (10..=60).contains(&admitted.len()),
        "{} admitted",
        admitted.len()
    );
    assert_eq!(admitted.len() + limited.len(), 150);
    let refused = status(&api_url).await["counters"]["rate_limited"]
        .as_u64()
        .unwrap();
    assert_eq!(refused, limited.len() as u64);
    let metrics = http()
        .get(format!("{api_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "edge_rejections_total{{reason=\"rate_limited\"}} {}",
        limited.len()
    );
    assert!(metrics.contains(&series), "no `{series}` in /metrics");

    // The ledger holds exactly what was answered 201: a refusal charged nothing.
    let charges = ledger(&bank.url()).await;
    assert_eq!(charges.len(), admitted.len() + 1);

    // And a refused key was not consumed: sent again once admitted, it is a fresh payment.
    let again = pay_until_admitted(&api_url, FLOOD_KEY, &format!("flood-{}", limited[0])).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(ledger(&bank.url()).await.len(), admitted.len() + 2);
}

#[tokio::test]
async fn over_the_in_flight_limit_payments_are_shed_with_503_and_probes_still_answer() {
    let bank = start_bank(&[]).await;
    // Every charge takes 600 ms, so requests pile up in the API.
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 600}})).await;
    let dir = temp_dir("security-shed");
    let mut args = e2e::fast_api_with(&[
        ("--attempt-timeout-ms", "3000"),
        ("--deadline-ms", "5000"),
        ("--lease-ms", "10000"),
    ]);
    args.extend(["--max-in-flight", "4"]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let burst: Vec<_> = (0..24)
        .map(|i| {
            let api = api_url.clone();
            tokio::spawn(async move { pay_as(&api, FLOOD_KEY, &format!("burst-{i}")).await })
        })
        .collect();
    // Probes are never shed: wait until the API is saturated, then ask for /health.
    eventually(Duration::from_secs(10), "the API saturated", || async {
        let s = status(&api_url).await;
        (s["edge"]["in_flight"].as_u64() >= Some(4)).then_some(())
    })
    .await;
    let health = http()
        .get(format!("{api_url}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let mut admitted = 0;
    let mut shed = Vec::new();
    for (i, task) in burst.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match answer.status {
            201 => admitted += 1,
            503 => {
                assert_eq!(answer.body["code"], "overloaded", "{}", answer.body);
                assert_eq!(answer.retry_after.as_deref(), Some("1"));
                shed.push(i);
            }
            other => panic!("burst-{i}: unexpected {other}: {}", answer.body),
        }
    }
    assert!(admitted >= 4, "{admitted} admitted");
    assert!(
        !shed.is_empty(),
        "a burst of 24 over a limit of 4 sheds some"
    );
    assert_eq!(
        status(&api_url).await["counters"]["shed"].as_u64(),
        Some(shed.len() as u64)
    );
    assert_eq!(ledger(&bank.url()).await.len(), admitted);

    // A shed payment is not lost: sent again, it goes through, once.
    let again = pay_until_admitted(&api_url, FLOOD_KEY, &format!("burst-{}", shed[0])).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(ledger(&bank.url()).await.len(), admitted + 1);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_payment_gets_its_outcome_on_retry() {
    let bank = start_bank(&[]).await;
    put_chaos(&bank.url(), json!({"latency": {"base_ms": 800}})).await;
    let dir = temp_dir("security-disconnect");
    // A long lease: if the payment were abandoned with its request, its key would answer 409
    // for the whole lease and the reconciler would have to settle it.
    let args = e2e::fast_api_with(&[
        ("--attempt-timeout-ms", "3000"),
        ("--deadline-ms", "5000"),
        ("--lease-ms", "60000"),
        ("--reconcile-grace-ms", "60000"),
    ]);
    let api = start_api_with_keys(&bank.url(), &dir, &args, KEYS).await;
    let api_url = api.url();

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let cut = impatient
        .post(format!("{api_url}/v1/payments"))
        .bearer_auth(FLOOD_KEY)
        .header("Idempotency-Key", "impatient-1")
        .json(&body(1000))
        .send()
        .await;
    assert!(cut.is_err_and(|e| e.is_timeout()), "the client gave up");

    let answer = eventually(Duration::from_secs(10), "the outcome", || async {
        let answer = pay_as(&api_url, FLOOD_KEY, "impatient-1").await;
        (answer.status != 409).then_some(answer)
    })
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(ledger(&bank.url()).await.len(), 1);
    let s = status(&api_url).await;
    assert_eq!(s["reconciler"]["stats"]["settled"].as_u64(), Some(0), "{s}");
}

/// Two tenants and one operator (docs/security.md, "Who may call what").
const ACME_KEY: &str = "sk_test_acme_0123456789abcdef";
const BETA_KEY: &str = "sk_test_beta_0123456789abcdef";
const ROLE_KEYS: &str = "acme:sk_test_acme_0123456789abcdef,beta:sk_test_beta_0123456789abcdef";
const METRICS_TOKEN: &str = "metrics_token_e2e_0123456789abcdef";

/// Every route of the operator surface (the breaker actions all of them).
const OPERATOR_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/status"),
    ("GET", "/v1/logs?limit=1000"),
    ("POST", "/v1/breaker/force-open"),
    ("POST", "/v1/breaker/force-closed"),
    ("POST", "/v1/breaker/disable"),
    ("POST", "/v1/breaker/metrics-only"),
    ("POST", "/v1/breaker/reset"),
];

/// `method url` with `key` (if any): the status and the body, the body also kept in `seen`.
async fn call(method: &str, url: &str, key: Option<&str>, seen: &mut Vec<String>) -> (u16, Value) {
    let mut request = http().request(method.parse().unwrap(), url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    seen.push(text.clone());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The breaker as the operator sees it: state and number of transitions.
async fn breaker(api: &str) -> (Value, usize) {
    let s = status(api).await;
    (
        s["breaker"]["state"].clone(),
        s["transitions"].as_array().unwrap().len(),
    )
}

#[tokio::test]
async fn tenants_cannot_touch_the_operator_surface_or_each_other_and_the_operator_is_named() {
    let bank = start_bank(&[]).await;
    let dir = temp_dir("security-roles");
    let mut args = FAST_API.to_vec();
    args.extend(["--metrics-token", METRICS_TOKEN]);
    let mut api = start_api_with_keys(&bank.url(), &dir, &args, ROLE_KEYS).await;
    let api_url = api.url();
    let operator = e2e::TEST_OPERATOR_KEY;
    let mut seen = Vec::new();

    // Each tenant pays, with the same idempotency key: scoped per tenant, neither blocks the
    // other.
    let acme = pay_as(&api_url, ACME_KEY, "order-1").await;
    let beta = pay_as(&api_url, BETA_KEY, "order-1").await;
    assert_eq!(
        (acme.status, beta.status),
        (201, 201),
        "{} {}",
        acme.body,
        beta.body
    );
    let acme_id = acme.body["id"].as_str().unwrap().to_owned();
    let beta_id = beta.body["id"].as_str().unwrap().to_owned();
    assert_ne!(acme_id, beta_id);
    seen.extend([acme.body.to_string(), beta.body.to_string()]);

    // 1. Every operator route refuses both tenant keys with 403 `forbidden`, and nothing
    //    changes; without a key it is 401.
    let before = breaker(&api_url).await;
    for (method, path) in OPERATOR_ROUTES {
        for key in [ACME_KEY, BETA_KEY] {
            let (code, body) =
                call(method, &format!("{api_url}{path}"), Some(key), &mut seen).await;
            assert_eq!(code, 403, "{method} {path}: {body}");
            assert_eq!(body["code"], "forbidden", "{method} {path}");
        }
        let (code, body) = call(method, &format!("{api_url}{path}"), None, &mut seen).await;
        assert_eq!(code, 401, "{method} {path} without a key: {body}");
    }
    assert_eq!(
        breaker(&api_url).await,
        before,
        "a tenant changed the breaker"
    );
    // The breaker still admits payments: no tenant forced it open.
    assert_eq!(pay_as(&api_url, ACME_KEY, "order-2").await.status, 201);

    // /metrics with a token: the token or the operator key; a tenant key is 403.
    for (key, expected) in [
        (None, 401),
        (Some(ACME_KEY), 403),
        (Some(METRICS_TOKEN), 200),
        (Some(operator), 200),
    ] {
        let (code, _) = call("GET", &format!("{api_url}/metrics"), key, &mut seen).await;
        assert_eq!(code, expected, "/metrics with {key:?}");
    }
    // /health and /ready stay open.
    for path in ["/health", "/ready"] {
        assert_eq!(
            call("GET", &format!("{api_url}{path}"), None, &mut seen)
                .await
                .0,
            200
        );
    }

    // 2. The operator key works on every operator route; a forced-open breaker refuses payments
    //    until the operator resets it.
    for (method, path) in OPERATOR_ROUTES {
        let (code, body) = call(
            method,
            &format!("{api_url}{path}"),
            Some(operator),
            &mut seen,
        )
        .await;
        assert_eq!(code, 200, "{method} {path}: {body}");
        if path.ends_with("force-open") {
            let refused = pay_as(&api_url, BETA_KEY, "while-forced-open").await;
            assert_eq!(refused.status, 503, "{}", refused.body);
            assert_eq!(refused.body["code"], "breaker_open");
        }
    }
    assert_eq!(
        pay_as(&api_url, BETA_KEY, "while-forced-open").await.status,
        201
    );

    // 3. The history names the operator who acted (its configured name, never the key).
    let s = status(&api_url).await;
    let actions: Vec<&Value> = s["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["reason"]["kind"] == "operator")
        .collect();
    // force-open, force-closed (disabled), metrics-only, reset; `disable` again changes nothing.
    assert_eq!(actions.len(), 4, "{}", s["transitions"]);
    for t in &actions {
        assert_eq!(t["reason"]["actor"], e2e::TEST_OPERATOR, "{t}");
    }
    seen.push(s.to_string());

    // 4. A tenant reads its own payments only; naming the other tenant is refused.
    let get = |id: &str| format!("{api_url}/v1/payments/{id}");
    assert_eq!(
        call("GET", &get(&acme_id), Some(ACME_KEY), &mut seen)
            .await
            .0,
        200
    );
    assert_eq!(
        call("GET", &get(&beta_id), Some(ACME_KEY), &mut seen)
            .await
            .0,
        404
    );
    assert_eq!(
        call("GET", &get(&acme_id), Some(BETA_KEY), &mut seen)
            .await
            .0,
        404
    );
    let (code, page) = call(
        "GET",
        &format!("{api_url}/v1/payments"),
        Some(BETA_KEY),
        &mut seen,
    )
    .await;
    assert_eq!(code, 200);
    let tenants_ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(tenants_ids.contains(&beta_id.as_str()) && !tenants_ids.contains(&acme_id.as_str()));
    let (code, body) = call(
        "GET",
        &format!("{api_url}/v1/payments?tenant=acme"),
        Some(BETA_KEY),
        &mut seen,
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    // 5. The operator reads any tenant's payment (named with its tenant) and creates none.
    let (code, read) = call("GET", &get(&beta_id), Some(operator), &mut seen).await;
    assert_eq!(
        (code, read["tenant"].as_str()),
        (200, Some("beta")),
        "{read}"
    );
    let (_, page) = call(
        "GET",
        &format!("{api_url}/v1/payments?tenant=acme&limit=100"),
        Some(operator),
        &mut seen,
    )
    .await;
    let rows = page["data"].as_array().unwrap();
    assert!(
        rows.len() >= 2 && rows.iter().all(|p| p["tenant"] == "acme"),
        "{page}"
    );
    let charges = ledger(&bank.url()).await.len();
    let by_operator = pay_as(&api_url, operator, "operator-pays").await;
    assert_eq!(by_operator.status, 403, "{}", by_operator.body);
    assert_eq!(by_operator.body["code"], "forbidden");
    assert_eq!(
        ledger(&bank.url()).await.len(),
        charges,
        "an operator key charged"
    );

    // 6. The logs say who acted, and no key appears in any log line or answer.
    let (_, logs) = call(
        "GET",
        &format!("{api_url}/v1/logs?limit=1000&level=info"),
        Some(operator),
        &mut seen,
    )
    .await;
    let acted = logs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["message"] == "operator changed the breaker")
        .count();
    assert_eq!(acted, 5, "one line per operator action");
    assert!(logs["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["message"] == "operator changed the breaker"
            && r["fields"]["operator"] == e2e::TEST_OPERATOR));
    api.terminate(Duration::from_secs(20));
    let mut lines = Vec::new();
    while let Some(line) = api.next_line(Duration::from_secs(2)) {
        lines.push(line);
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("operator changed the breaker") && l.contains(e2e::TEST_OPERATOR)));
    let everything = format!("{}\n{}", lines.join("\n"), seen.join("\n"));
    assert!(everything.len() > 5000, "too little to judge");
    for secret in [ACME_KEY, BETA_KEY, operator, METRICS_TOKEN] {
        assert!(
            !everything.contains(secret),
            "a key in a log line or an answer: {secret}"
        );
        assert!(
            !everything.contains(&secret[secret.len() - 12..]),
            "a key's tail: {secret}"
        );
    }
}
