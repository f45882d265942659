//! Logs an operator can read (issue 16, point 4), over the real binaries at `RUST_LOG=info`:
//! a minute of the dashboard's polling, compressed (every read the page, probes and scrapers make,
//! [`POLL_ROUNDS`] times back to back), writes no INFO line in the API's, the bank's or the
//! dashboard's log; a payment, a chaos change and an operator action still do.
//!
//! Each window is bounded in the log stream by lines the test causes itself: a start marker (a
//! request to an unknown path, which logs at INFO) and the action that ends it, so the test waits
//! for lines, never for time.

use std::time::Duration;

use e2e::{client, free_port, temp_dir, Process, TEST_API_KEY, TEST_TENANT};
use serde_json::{json, Value};

/// One poll a second for a minute.
const POLL_ROUNDS: usize = 60;
/// How long a line the test caused may take to appear.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `name` on a free port with `RUST_LOG=info` (whatever the test's own environment says)
/// and JSON logs, and waits until it is healthy.
async fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["--listen", listen.as_str(), "--log-format", "json"];
    all.extend_from_slice(args);
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info"));
    let mut process = Process::start(name, &e2e::binary(name), &all, &env);
    process.addr = Some(listen.parse().unwrap());
    process.wait_healthy(Duration::from_secs(30)).await;
    process
}

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON record ({e}): {line}"))
}

fn is(line: &str, check: impl Fn(&Value) -> bool) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|r| check(&r))
}

/// Lines at INFO or above.
fn loud(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| record(l))
        .filter(|r| r["level"] != "DEBUG" && r["level"] != "TRACE")
        .collect()
}

/// A request to a path no service serves: a 404, logged at INFO, marking a point in the log.
async fn mark(base: &str, marker: &str) {
    let response = client::http()
        .get(format!("{base}/{marker}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "{base}/{marker}");
}

fn reads_marker(marker: &'static str) -> impl Fn(&str) -> bool {
    move |line| {
        is(line, |r| {
            r["message"] == "request finished"
                && r["fields"]["path"].as_str() == Some(&format!("/{marker}"))
        })
    }
}

/// `GET url` (with `key` if any), asserting a 2xx answer.
async fn read(http: &reqwest::Client, url: &str, key: Option<&str>) {
    let mut request = http.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

#[tokio::test]
async fn a_minute_of_polling_writes_no_info_line_but_payments_and_chaos_changes_do() {
    const TOKEN: &str = "bank_admin_token_quiet_logs_0123456789";
    let data_dir = temp_dir("quiet-logs");
    let bank = start("mock-bank", &["--admin-token", TOKEN], &[]).await;
    let keys = format!("{TEST_TENANT}:{TEST_API_KEY}");
    let operators = format!("{}:{}", e2e::TEST_OPERATOR, e2e::TEST_OPERATOR_KEY);
    let api = start(
        "payment-api",
        &[
            "--bank-url",
            &bank.url(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("PAYMENT_API_KEYS", &keys),
            ("PAYMENT_API_OPERATOR_KEYS", &operators),
        ],
    )
    .await;
    let dashboard = start(
        "dashboard",
        &["--api-url", &api.url(), "--bank-url", &bank.url()],
        &[
            ("DASHBOARD_API_KEY", TEST_API_KEY),
            ("DASHBOARD_OPERATOR_KEY", e2e::TEST_OPERATOR_KEY),
            ("DASHBOARD_BANK_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    let (api_url, bank_url, dash_url) = (api.url(), bank.url(), dashboard.url());
    let http = client::http();

    // A payment the page then shows (and polls) before the idle window starts.
    let response = client::pay(&api_url, "quiet-1", &client::body(1250)).await;
    assert_eq!(response.status(), 201);
    let first: Value = response.json().await.unwrap();
    let first_id = first["id"].as_str().unwrap().to_owned();

    // Start of the window: everything each process logged so far (start lines, the first
    // payment) is behind its marker.
    mark(&api_url, "quiet-logs-start").await;
    mark(&bank_url, "quiet-logs-start").await;
    api.read_until(LINE_TIMEOUT, reads_marker("quiet-logs-start"));
    bank.read_until(LINE_TIMEOUT, reads_marker("quiet-logs-start"));
    dashboard.read_until(LINE_TIMEOUT, |l| {
        is(l, |r| r["message"] == "dashboard listening")
    });

    // A minute of polling, compressed: what the page asks the dashboard for every second (and
    // the dashboard asks the API and the bank for), plus what probes and scrapers read.
    for _ in 0..POLL_ROUNDS {
        for path in [
            "/api/overview",
            "/api/logs?limit=200",
            "/api/payments?limit=20",
            &format!("/api/payments/{first_id}"),
            "/api/chaos",
            "/api/traffic",
        ] {
            read(&http, &format!("{dash_url}{path}"), None).await;
        }
        for path in [
            "/health",
            "/ready",
            "/v1/status",
            "/v1/logs?limit=100",
            "/metrics",
            "/v1/payments?limit=20",
            &format!("/v1/payments/{first_id}"),
        ] {
            // The operator surface with the operator key, payments with the tenant key.
            let key = if path.starts_with("/v1/status") || path.starts_with("/v1/logs") {
                Some(e2e::TEST_OPERATOR_KEY)
            } else if path.starts_with("/v1/") {
                Some(TEST_API_KEY)
            } else {
                None
            };
            read(&http, &format!("{api_url}{path}"), key).await;
        }
        for path in [
            "/health",
            "/v1/status",
            "/v1/logs?limit=100",
            "/metrics",
            "/v1/chaos",
            "/v1/chaos/presets",
            "/v1/ledger?limit=20",
        ] {
            read(&http, &format!("{bank_url}{path}"), None).await;
        }
    }

    // End of the window: a chaos change through the dashboard (an operator action) and a
    // payment, each of which must be logged at INFO.
    let response = http
        .put(format!("{dash_url}/api/chaos"))
        .header("x-dashboard", "1")
        .json(&json!({"preset": "healthy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rid = format!("quiet-pay-{}", uuid::Uuid::new_v4().simple());
    let response = http
        .post(format!("{api_url}/v1/payments"))
        .bearer_auth(TEST_API_KEY)
        .header("Idempotency-Key", "quiet-2")
        .header("X-Request-Id", &rid)
        .json(&client::body(990))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let dash_lines = dashboard.read_until(LINE_TIMEOUT, |l| {
        is(l, |r| r["message"] == "chaos changed from the dashboard")
    });
    let bank_lines = bank.read_until(LINE_TIMEOUT, |l| {
        is(l, |r| {
            r["message"] == "request finished"
                && r["fields"]["method"] == "PUT"
                && r["fields"]["path"] == "/v1/chaos"
        })
    });
    let api_lines = api.read_until(LINE_TIMEOUT, |l| {
        is(l, |r| {
            r["message"] == "request finished" && r["fields"]["request_id"] == rid.as_str()
        })
    });

    // The dashboard: the chaos change and nothing else.
    let dash_loud = loud(&dash_lines);
    assert_eq!(dash_loud.len(), 1, "{dash_loud:#?}");
    assert_eq!(dash_loud[0]["level"], "INFO");

    // The bank: the chaos change (its request line and the preset line) and nothing else.
    let bank_loud = loud(&bank_lines);
    let bank_messages: Vec<&str> = bank_loud
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        bank_messages,
        ["chaos preset applied", "request finished"],
        "{bank_loud:#?}"
    );
    assert!(bank_loud.iter().all(|r| r["level"] == "INFO"));

    // The API: the payment's own lines and nothing else.
    let api_loud = loud(&api_lines);
    assert!(
        api_loud
            .iter()
            .all(|r| r["fields"]["request_id"] == rid.as_str()),
        "INFO lines from polling: {:#?}",
        api_loud
            .iter()
            .filter(|r| r["fields"]["request_id"] != rid.as_str())
            .collect::<Vec<_>>()
    );
    let finished = api_loud
        .iter()
        .find(|r| r["message"] == "request finished")
        .unwrap();
    assert_eq!(finished["level"], "INFO");
    // The payment's canonical line: everything about it on one line.
    let fields = &finished["fields"];
    assert_eq!(fields["status"], 201);
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["route"], "/v1/payments");
    assert_eq!(fields["tenant"], TEST_TENANT);
    assert_eq!(fields["idempotency_key"], "quiet-2");
    assert_eq!(fields["outcome"], "succeeded");
    assert_eq!(fields["attempts"], 1);
    assert_eq!(fields["breaker_state"], "closed");
    assert!(fields["payment_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let bank_ms = fields["bank_ms"].as_f64().expect("bank_ms");
    let latency_ms = fields["latency_ms"].as_f64().expect("latency_ms");
    assert!(bank_ms > 0.0 && bank_ms <= latency_ms, "{fields}");
    // Both in milliseconds with at most three decimals (whole microseconds), as printed.
    for name in ["bank_ms", "latency_ms"] {
        let printed = fields[name].to_string();
        let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{name} printed as {printed}: {fields}");
    }

    // The polling did happen and was answered: the API counted every read.
    let metrics = reqwest::get(format!("{api_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status_reads: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(r#"route="/v1/status""#)
                && l.contains(r#"status="200""#)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // The test's own reads, the dashboard's (one per overview) and its background sampler's.
    assert!(
        status_reads >= (2 * POLL_ROUNDS) as f64,
        "{status_reads} reads of /v1/status"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
