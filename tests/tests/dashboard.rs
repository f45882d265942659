//! The dashboard in a real headless browser (Debian's Chromium driven through ChromeDriver's
//! WebDriver protocol) against the real bank, API and dashboard processes: the page shows the
//! breaker closed, the operator switches the bank to `down` and fires a burst from the page, the
//! page shows it open, the operator heals the bank and runs traffic, the page shows it closed.
//! Neither the page nor any answer it received contains the API key or the bank token.
//!
//! Over two banks (issue 19): the operator puts bank `a` in chaos `down` from a's panel and fires
//! bursts from the page; every payment succeeds (through `b`, the only ledger with charges), a's
//! panel shows its breaker open and b's closed, and a's header badge says reachable *and* `down`
//! (not a plain green check). Each bank's chaos call carries that bank's own token.
//!
//! The Webhooks card (issue 20): deliveries the test signs with the `webhooks` crate show
//! verified or refused, with their repeat count, and the card's chaos control fails the receiver.
//!
//! Without Chromium and ChromeDriver the test prints `SKIPPED: ...` and passes, except under CI
//! (`CI=true`), where that is a failure. `CHROMIUM` and `CHROMEDRIVER` override the paths.
//! The screenshot goes to `target/artifacts/dashboard.png`; with `UPDATE_DOCS_SCREENSHOT=1` it is
//! also copied to `docs/dashboard.png` for the README.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use e2e::{
    client, fast_api_with, free_port, start_api, start_api_with_banks, start_bank, start_banks,
    temp_dir, Process, TempDir, TEST_API_KEY,
};
use serde_json::{json, Value};

const BANK_TOKEN: &str = "bank-admin-token-for-the-browser-test";
/// How long the page may take to show a change (it polls every second).
const UI_TIMEOUT: Duration = Duration::from_secs(20);

fn tool(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.exists().then_some(path)
}

/// Chromium and ChromeDriver, or `None` (the test is skipped, or fails under CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let found = match (
        tool("CHROMIUM", "/usr/bin/chromium"),
        tool("CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) {
        (Some(chromium), Some(chromedriver)) => Ok((chromium, chromedriver)),
        _ => Err(
            "no /usr/bin/chromium or /usr/bin/chromedriver (or $CHROMIUM, $CHROMEDRIVER)"
                .to_owned(),
        ),
    };
    e2e::require(
        "Chromium and ChromeDriver",
        found,
        "`sudo bash .ci/setup` installs them",
    )
}

#[tokio::test]
async fn the_operator_watches_the_breaker_open_and_close_while_driving_chaos_from_the_page() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };

    // The real services, with breaker timings sized for a test.
    let bank = start_bank(&["--admin-token", BANK_TOKEN]).await;
    let data_dir = temp_dir("dashboard");
    let api_args = fast_api_with(&[
        ("--breaker-open-ms", "2000"),
        ("--breaker-max-open-ms", "4000"),
    ]);
    let api = start_api(&bank.url(), &data_dir, &api_args).await;
    let dashboard = start_dashboard(
        &api.url(),
        &["--bank-url", &bank.url()],
        &[("DASHBOARD_BANK_ADMIN_TOKEN", BANK_TOKEN)],
    )
    .await;
    let page_url = dashboard.url();

    let driver = WebDriver::start(&chromedriver, &chromium).await;
    driver.goto(&page_url).await;
    driver.record_responses().await;

    // 1. The breaker is closed.
    driver.wait_text("#breaker-state", "closed").await;

    // 2. The bank goes down, from the page; the page shows the bank's answer.
    driver.click("#chaos-down").await;
    driver
        .wait_until("the bank pill says down", |d| async move {
            d.text("#bank-pill").await.contains("down")
        })
        .await;

    // 3. A burst from the page opens the breaker within a few seconds.
    driver.click("#send-burst").await;
    let opened = Instant::now();
    driver.wait_text("#breaker-state", "open").await;
    println!("breaker shown open {:?} after the burst", opened.elapsed());
    let reason = driver.text("#breaker-reason").await;
    assert_ne!(reason, "–", "a trip reason is shown");
    driver
        .screenshot(&artifacts_dir().join("dashboard-open.png"))
        .await;

    // 4. The bank heals; steady traffic from the page lets the breaker probe and close.
    driver.click("#chaos-healthy").await;
    driver
        .wait_until("the bank pill says healthy", |d| async move {
            d.text("#bank-pill").await.contains("healthy")
        })
        .await;
    driver.set_value("#traffic-rate", "10").await;
    driver.click("#traffic-start").await;
    driver.wait_text("#breaker-state", "closed").await;
    driver.click("#traffic-stop").await;
    driver
        .wait_until("the traffic stopped", |d| async move {
            d.text("#traffic-status").await.starts_with("stopped")
        })
        .await;

    // 5. One payment and a replay of its key: the replay header is shown.
    driver.click("#send-one").await;
    driver
        .wait_until("the first answer is shown", |d| async move {
            d.attr("#replayed-header", "data-replayed").await.as_deref() == Some("false")
        })
        .await;
    driver.click("#replay-last").await;
    driver
        .wait_until("the replay is shown as replayed", |d| async move {
            d.attr("#replayed-header", "data-replayed").await.as_deref() == Some("true")
        })
        .await;

    // 6. A recent payment opens its details.
    driver
        .wait_until("a payment is listed", |d| async move {
            d.count("#payments-body tr.payment").await > 0
        })
        .await;
    driver.click("#payments-body tr.payment").await;
    driver
        .wait_until("the payment's details are shown", |d| async move {
            d.text("#payment-details").await.contains("bank reference")
        })
        .await;
    println!("log stream: {}", driver.text("#log-status").await);
    let transitions = driver.text("#transitions").await;
    assert!(
        transitions.contains("open") && transitions.contains("closed"),
        "the timeline lists the transitions: {transitions}"
    );

    // Let one more second of charts land, then the screenshot the README shows.
    let seq = driver.samples().await;
    driver
        .wait_until("another history sample", |d| async move {
            d.samples().await > seq
        })
        .await;
    let shot = artifacts_dir().join("dashboard.png");
    driver.screenshot(&shot).await;
    if std::env::var("UPDATE_DOCS_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(&shot, docs).unwrap();
    }

    // 7. No secret anywhere: the page, its assets, and every answer it received.
    let source = driver.source().await;
    let recorded = driver.recorded_responses().await;
    assert!(
        recorded.len() > 10,
        "the page's requests were recorded: {}",
        recorded.len()
    );
    let urls = driver.resource_urls().await;
    let mut bodies = vec![("page source".to_owned(), source)];
    for r in &recorded {
        bodies.push((r["url"].as_str().unwrap_or("?").to_owned(), r.to_string()));
    }
    let http = reqwest::Client::new();
    for url in &urls {
        assert!(
            url.starts_with(&page_url),
            "the page loaded something from elsewhere: {url}"
        );
        let response = http.get(url).send().await.unwrap();
        let headers = format!("{:?}", response.headers());
        bodies.push((url.clone(), headers + &response.text().await.unwrap()));
    }
    for (what, text) in &bodies {
        assert!(!text.contains(TEST_API_KEY), "the API key is in {what}");
        assert!(
            !text.contains(e2e::TEST_OPERATOR_KEY),
            "the operator key is in {what}"
        );
        assert!(!text.contains(BANK_TOKEN), "the bank token is in {what}");
    }
    println!(
        "checked {} recorded answers and {} resources for secrets; screenshot at {}",
        recorded.len(),
        urls.len(),
        shot.display()
    );

    driver.quit().await;
    drop((dashboard, api, bank));
}

const TOKEN_A: &str = "bank-a-admin-token-for-the-browser-test";
const TOKEN_B: &str = "bank-b-admin-token-for-the-browser-test";

#[tokio::test]
async fn with_bank_a_down_payments_go_through_b_and_each_bank_has_its_own_panel_and_badge() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let banks = start_banks(&[&["--admin-token", TOKEN_A], &["--admin-token", TOKEN_B]]).await;
    let (a, b) = (banks[0].url(), banks[1].url());
    let data_dir = temp_dir("dashboard-banks");
    // A's breaker stays open long enough for the page (polling once a second) to show it.
    let api_args = fast_api_with(&[
        ("--breaker-open-ms", "8000"),
        ("--breaker-max-open-ms", "16000"),
    ]);
    let api = start_api_with_banks(&[("a", &a), ("b", &b)], &data_dir, &api_args).await;
    // A's token from a file (NAME=PATH), b's by value (NAME=TOKEN): each reaches only its bank.
    let token_file = data_dir.join("a-admin-token");
    std::fs::write(&token_file, format!("{TOKEN_A}\n")).unwrap();
    let dashboard = start_dashboard(
        &api.url(),
        &[
            "--bank",
            &format!("a={a}"),
            "--bank",
            &format!("b={b}"),
            "--bank-admin-token-file",
            &format!("a={}", token_file.display()),
        ],
        &[("DASHBOARD_BANK_ADMIN_TOKEN", &format!("b={TOKEN_B}"))],
    )
    .await;
    let page_url = dashboard.url();
    let driver = WebDriver::start(&chromedriver, &chromium).await;
    driver.goto(&page_url).await;
    driver.record_responses().await;

    let panel = |bank: &str, inner: &str| format!(".bank-panel[data-bank=\"{bank}\"] {inner}");
    let pill = |bank: &str| format!(".bank-pill[data-bank=\"{bank}\"]");

    // 1. Both breakers closed, both banks reachable and healthy.
    driver
        .wait_text(&panel("a", ".bank-breaker-state"), "closed")
        .await;
    driver
        .wait_text(&panel("b", ".bank-breaker-state"), "closed")
        .await;
    for bank in ["a", "b"] {
        let p = pill(bank);
        driver
            .wait_until(&format!("{bank}'s badge: reachable and healthy"), |d| {
                let p = p.clone();
                async move { d.attr(&p, "data-level").await.as_deref() == Some("ok") }
            })
            .await;
    }

    // 2. Bank a goes down from a's own chaos control; b is untouched.
    driver
        .click(&panel("a", "button[data-bank-chaos=\"down\"]"))
        .await;
    let pill_a = pill("a");
    driver
        .wait_until("a's badge: reachable, chaos down", |d| {
            let p = pill_a.clone();
            async move {
                d.attr(&p, "data-reach").await.as_deref() == Some("reachable")
                    && d.attr(&p, "data-chaos").await.as_deref() == Some("down")
            }
        })
        .await;
    // Reachable and down are shown apart, and not as a plain healthy check.
    assert_eq!(
        driver.attr(&pill_a, "data-level").await.as_deref(),
        Some("chaos")
    );
    let text = driver.text(&pill_a).await;
    assert!(
        text.contains("reachable") && text.contains("down"),
        "a's badge: {text}"
    );
    assert_eq!(
        driver.attr(&pill("b"), "data-level").await.as_deref(),
        Some("ok")
    );
    assert_eq!(chaos_preset(&a).await, "down", "the page's call reached a");
    assert_eq!(chaos_preset(&b).await, "healthy", "b was not touched");

    // 3. A burst from the page: every payment succeeds (through b); a's breaker opens.
    driver.set_value("#burst-count", "30").await;
    driver.click("#send-burst").await;
    wait_burst(&driver, "201:30").await;
    driver
        .wait_text(&panel("a", ".bank-breaker-state"), "open")
        .await;
    assert_eq!(
        driver.text(&panel("b", ".bank-breaker-state")).await,
        "closed"
    );

    // 4. While a's breaker is open, payments keep succeeding (they start at b).
    driver.set_value("#burst-count", "10").await;
    driver.click("#send-burst").await;
    wait_burst(&driver, "201:10").await;
    assert_eq!(
        driver.text(&panel("a", ".bank-breaker-state")).await,
        "open"
    );
    assert_eq!(
        driver.text(&panel("b", ".bank-breaker-state")).await,
        "closed"
    );
    let share_b = panel("b", ".f-share");
    driver
        .wait_until("b's route share is shown", |d| {
            let s = share_b.clone();
            async move { d.text(&s).await.contains("of attempts") }
        })
        .await;
    // Cascades away from a per minute, from the dashboard's successive polls of the API's
    // cumulative counters: the bursts' cascades show as a rate above zero.
    let why_a = panel("a", ".f-why");
    driver
        .wait_until("a's cascades per minute are above zero", |d| {
            let w = why_a.clone();
            async move {
                let text = d.text(&w).await;
                text.split("/min")
                    .next()
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .is_some_and(|n| n > 0.0)
            }
        })
        .await;
    println!(
        "a: share {:?}, cascaded {:?}, per minute {:?}, next probe {:?}; b: share {:?}",
        driver.text(&panel("a", ".f-share")).await,
        driver.text(&panel("a", ".f-cascades")).await,
        driver.text(&panel("a", ".f-why")).await,
        driver.text(&panel("a", ".f-probe")).await,
        driver.text(&share_b).await,
    );
    driver
        .screenshot(&artifacts_dir().join("dashboard-banks.png"))
        .await;

    // 5. b's own breaker control moves b's breaker (the API has per-bank controls), not a's.
    driver
        .click(&panel("b", "button[data-bank-breaker=\"force-open\"]"))
        .await;
    driver
        .wait_text(&panel("b", ".bank-breaker-state"), "forced_open")
        .await;
    assert_eq!(
        driver.text(&panel("a", ".bank-breaker-state")).await,
        "open"
    );
    driver
        .click(&panel("b", "button[data-bank-breaker=\"reset\"]"))
        .await;
    driver
        .wait_text(&panel("b", ".bank-breaker-state"), "closed")
        .await;

    // 6. The ledgers agree: b holds every charge, a none.
    assert_eq!(client::ledger(&a).await.len(), 0, "a charged nothing");
    assert_eq!(
        client::ledger(&b).await.len(),
        40,
        "b charged every payment"
    );

    // 7. No secret in anything the page received.
    let mut bodies = vec![("page source".to_owned(), driver.source().await)];
    for r in driver.recorded_responses().await {
        bodies.push((r["url"].as_str().unwrap_or("?").to_owned(), r.to_string()));
    }
    for (what, text) in &bodies {
        for secret in [TEST_API_KEY, e2e::TEST_OPERATOR_KEY, TOKEN_A, TOKEN_B] {
            assert!(!text.contains(secret), "a secret is in {what}");
        }
    }
    driver.quit().await;
    drop((dashboard, api, banks));
}

/// A bank's chaos preset, read from the bank itself.
/// The Webhooks card (issue 20): deliveries signed in the test with the `webhooks` crate (the
/// dashboard verifies with the secret from `--webhook-secret-file`) show with a verified or
/// refused badge and the duplicate count; the card's chaos control makes the receiver answer
/// 500; neither the page nor its answers carry the secret.
#[tokio::test]
async fn the_webhooks_card_shows_verified_refused_and_repeated_deliveries_and_drives_the_receivers_chaos(
) {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let secret = webhooks::Secret::generate();
    let dir = temp_dir("dashboard-webhooks");
    let secret_file = dir.join("webhook-secret");
    std::fs::write(&secret_file, secret.expose()).unwrap();
    // Nothing needs to answer at the API and bank addresses: the receiver works without them.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let dashboard = start_dashboard(
        &nowhere,
        &["--bank-url", &nowhere],
        &[(
            "DASHBOARD_WEBHOOK_SECRET_FILE",
            secret_file.to_str().unwrap(),
        )],
    )
    .await;
    let receiver = format!("{}/webhooks/receiver", dashboard.url());
    let http = reqwest::Client::new();
    let deliver = |secret: &webhooks::Secret, id: &str, status: &str| {
        let body = json!({"id": id, "type": format!("payment.{status}"),
                          "created_at": "2026-11-30T00:00:00Z",
                          "data": {"id": format!("pay_{id}"), "status": status}})
        .to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        http.post(&receiver)
            .header("content-type", "application/json")
            .header(webhooks::HEADER_ID, id)
            .header(webhooks::HEADER_TIMESTAMP, ts.to_string())
            .header(
                webhooks::HEADER_SIGNATURE,
                webhooks::sign(secret, id, ts, body.as_bytes()),
            )
            .body(body)
            .send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.unwrap().status().as_u16();
    assert_eq!(status(deliver(&secret, "evt_a", "succeeded").await), 200);
    assert_eq!(status(deliver(&secret, "evt_a", "succeeded").await), 200);
    let stranger = webhooks::Secret::generate();
    assert_eq!(status(deliver(&stranger, "evt_b", "declined").await), 401);

    let driver = WebDriver::start(&chromedriver, &chromium).await;
    driver.goto(&dashboard.url()).await;
    driver.record_responses().await;
    driver
        .wait_until("three deliveries on the card", |d| async move {
            d.count("#webhooks-body tr.delivery").await == 3
        })
        .await;
    assert_eq!(
        driver
            .count("#webhooks-body tr.delivery[data-verified=\"true\"]")
            .await,
        2
    );
    assert_eq!(
        driver
            .count("#webhooks-body tr.delivery[data-verified=\"false\"]")
            .await,
        1
    );
    driver.wait_text("#wh-verified", "2").await;
    driver.wait_text("#wh-refused", "1").await;
    driver.wait_text("#wh-duplicates", "1").await;
    assert!(driver
        .text("#wh-registration")
        .await
        .contains("secret from"));
    let refused = driver
        .text("#webhooks-body tr.delivery[data-verified=\"false\"]")
        .await;
    assert!(
        refused.contains("refused") && refused.contains("evt_b"),
        "{refused}"
    );

    // The card's chaos control: every delivery fails until healed.
    driver.set_value("#wh-fail", "100").await;
    driver.click("#wh-chaos-apply").await;
    driver
        .wait_until("the receiver's chaos applied", |d| async move {
            d.text("#wh-chaos-current").await.contains("fail 100%")
        })
        .await;
    assert_eq!(status(deliver(&secret, "evt_c", "failed").await), 500);
    driver.click("#wh-chaos-heal").await;
    driver
        .wait_until("the receiver healed", |d| async move {
            d.text("#wh-chaos-current").await.contains("fail 0%")
        })
        .await;
    assert_eq!(status(deliver(&secret, "evt_c", "failed").await), 200);
    driver.wait_text("#wh-chaos-failed", "1").await;

    let encoded = secret.expose();
    let key = encoded.trim_start_matches("whsec_");
    for answer in driver.recorded_responses().await {
        assert!(
            !answer.to_string().contains(key),
            "the secret reached the page"
        );
    }
    assert!(!driver.source().await.contains(key));
    driver.quit().await;
    drop(dashboard);
}

async fn chaos_preset(bank: &str) -> String {
    let chaos: Value = client::http()
        .get(format!("{bank}/v1/chaos"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    chaos["preset"].as_str().unwrap_or("?").to_owned()
}

/// Waits until the page shows a burst's statuses as `want` ("201:30").
async fn wait_burst(driver: &WebDriver, want: &str) {
    driver
        .wait_until(&format!("a burst answered {want}"), |d| async move {
            d.attr("#send-result", "data-by-status").await.as_deref() == Some(want)
        })
        .await;
}

/// Starts the dashboard against the API with `banks` (its bank flags) and `env` (its tokens),
/// with the test's API and operator keys.
async fn start_dashboard(api_url: &str, banks: &[&str], env: &[(&str, &str)]) -> Process {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", &listen, "--api-url", api_url];
    args.extend_from_slice(banks);
    args.extend(["--log-format", "json"]);
    let mut vars = vec![
        ("DASHBOARD_API_KEY", TEST_API_KEY),
        ("DASHBOARD_OPERATOR_KEY", e2e::TEST_OPERATOR_KEY),
    ];
    vars.extend_from_slice(env);
    let mut dashboard = Process::start("dashboard", &e2e::binary("dashboard"), &args, &vars);
    dashboard.addr = Some(listen.parse().unwrap());
    dashboard.wait_healthy(Duration::from_secs(30)).await;
    dashboard
}

/// `target/artifacts`, next to the profile directory of this test executable.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<exe>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test executable is under target/<profile>/deps");
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal WebDriver client: the handful of W3C endpoints this test needs, over reqwest.
struct WebDriver {
    http: reqwest::Client,
    session: String,
    _chromedriver: Process,
    /// Removed when the driver is dropped, after chromedriver is killed (fields drop in order).
    _profile: TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    async fn start(chromedriver: &Path, chromium: &Path) -> Self {
        let port = free_port();
        let port_arg = format!("--port={port}");
        let process = Process::start("chromedriver", chromedriver, &[&port_arg], &[]);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = temp_dir("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1440,1700", "--hide-scrollbars",
                ],
            },
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {response}"));
        Self {
            http,
            session: format!("{base}/session/{session}"),
            _chromedriver: process,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {value}");
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    async fn text(&self, selector: &str) -> String {
        self.script(
            "const n = document.querySelector(arguments[0]); return n ? n.textContent.trim() : '';",
            json!([selector]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn attr(&self, selector: &str, name: &str) -> Option<String> {
        self.script(
            "const n = document.querySelector(arguments[0]); return n ? n.getAttribute(arguments[1]) : null;",
            json!([selector, name]),
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    async fn count(&self, selector: &str) -> u64 {
        self.script(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([selector]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    }

    async fn samples(&self) -> u64 {
        // The seq of the newest history sample the page has drawn.
        self.script(
            "return Number(document.body.dataset.lastSeq || 0);",
            json!([]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    }

    async fn element(&self, selector: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// A real click (WebDriver scrolls the element into view and clicks it); a disabled button
    /// (an action still running) is waited for first.
    async fn click(&self, selector: &str) {
        let sel = selector.to_owned();
        self.wait_until(&format!("{selector} is enabled"), |d| {
            let sel = sel.clone();
            async move {
                d.script(
                    "const n = document.querySelector(arguments[0]); return !!n && !n.disabled;",
                    json!([sel]),
                )
                .await
                    == true
            }
        })
        .await;
        let id = self.element(selector).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn set_value(&self, selector: &str, value: &str) {
        let id = self.element(selector).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": value })),
        )
        .await;
    }

    /// Polls `check` every 50 ms until it holds, within [`UI_TIMEOUT`].
    async fn wait_until<'a, F, Fut>(&'a self, what: &str, check: F)
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + UI_TIMEOUT;
        while !check(self).await {
            if Instant::now() > deadline {
                let state = self.text("#breaker-state").await;
                let bank = self.text("#bank-pill").await;
                let result = self.text("#send-result").await;
                self.screenshot(&artifacts_dir().join("dashboard-failure.png"))
                    .await;
                panic!(
                    "timed out after {UI_TIMEOUT:?} waiting for: {what} (breaker {state:?}, {bank:?}, last send {result:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_text(&self, selector: &str, expected: &str) {
        let sel = selector.to_owned();
        let want = expected.to_owned();
        self.wait_until(&format!("{selector} to read {expected:?}"), |d| {
            let sel = sel.clone();
            let want = want.clone();
            async move { d.text(&sel).await == want }
        })
        .await;
    }

    /// Wraps the page's `fetch` so every answer it receives (headers and body) is kept.
    async fn record_responses(&self) {
        self.script(
            r#"
            if (!window.__recorded) {
              window.__recorded = [];
              const original = window.fetch;
              window.fetch = async (...args) => {
                const response = await original(...args);
                const copy = response.clone();
                copy.text().then((body) => window.__recorded.push({
                  url: String(args[0]), status: response.status,
                  headers: [...response.headers].map(([k, v]) => k + ': ' + v).join('\n'),
                  body,
                }));
                return response;
              };
            }
            return true;"#,
            json!([]),
        )
        .await;
    }

    async fn recorded_responses(&self) -> Vec<Value> {
        self.script("return window.__recorded || [];", json!([]))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every URL the page loaded (document, assets, fetches), from the resource timing buffer.
    async fn resource_urls(&self) -> Vec<String> {
        let urls = self
            .script(
                "return [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)];",
                json!([]),
            )
            .await;
        let mut urls: Vec<String> = urls
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&self, path: &Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(data.as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Standard base64 (the screenshot), without a dependency for one call.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_like_the_standard() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8hIQ=="), b"hello!!");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
