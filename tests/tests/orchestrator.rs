//! `run` as a user runs it: it starts four processes (two banks, the API, the dashboard), prints
//! where they are and curl commands that work (a payment, the status, taking `bank-a` down so the
//! next payment goes to `bank-b`), and leaves no process behind when stopped.

use std::time::Duration;

use e2e::{alive, binary, signal, temp_dir, wait_exit, Process, TempDir};
use nix::sys::signal::Signal;

struct Banner {
    api_url: String,
    /// `bank-a`'s URL.
    bank_url: String,
    bank_b_url: String,
    dashboard_url: String,
    curl: String,
    /// The printed `curl -X PUT .../v1/chaos` that takes `bank-a` down.
    down_curl: String,
    /// The printed `curl .../v1/status` with the operator key.
    status_curl: String,
    pids: Vec<u32>,
}

fn parse_banner(lines: &[String]) -> Banner {
    // Children's output is interleaved before the banner; the banner starts at its title.
    let start = lines
        .iter()
        .position(|l| l == "resilient-payments is ready")
        .expect("a banner");
    let lines = &lines[start..];
    let field = |label: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' line in:\n{}", lines.join("\n")));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let api = field("payment API");
    let bank = field("bank-a");
    let bank_b = field("bank-b");
    let dashboard = field("dashboard");
    let pid = |words: &[String]| words[2].parse::<u32>().unwrap();
    Banner {
        api_url: api[0].clone(),
        bank_url: bank[0].clone(),
        bank_b_url: bank_b[0].clone(),
        dashboard_url: dashboard[0].clone(),
        down_curl: lines
            .iter()
            .find(|l| l.trim_start().starts_with("curl ") && l.contains("/v1/chaos"))
            .unwrap_or_else(|| panic!("no chaos curl in:\n{}", lines.join("\n")))
            .trim()
            .to_owned(),
        curl: lines
            .iter()
            .find(|l| l.trim_start().starts_with("curl "))
            .unwrap()
            .trim()
            .to_owned(),
        status_curl: lines
            .iter()
            .find(|l| l.trim_start().starts_with("curl ") && l.contains("/v1/status"))
            .unwrap_or_else(|| panic!("no status curl in:\n{}", lines.join("\n")))
            .trim()
            .to_owned(),
        pids: vec![pid(&api), pid(&bank), pid(&bank_b), pid(&dashboard)],
    }
}

/// Starts `run` on `data_dir`, which the returned process holds (removed once it is dropped).
fn start_run(data_dir: &TempDir) -> (Process, Banner, Vec<String>) {
    let data = data_dir.to_str().unwrap();
    let mut run = Process::start(
        "run",
        &binary("run"),
        &[
            "--api-port",
            "0",
            "--bank-port",
            "0",
            "--dashboard-port",
            "0",
            "--data-dir",
            data,
        ],
        &[],
    );
    run.hold(data_dir);
    let lines = run.read_until(Duration::from_secs(90), |l| {
        l.starts_with("Open the dashboard")
    });
    let banner = parse_banner(&lines);
    (run, banner, lines)
}

#[tokio::test]
async fn run_starts_four_services_whose_curls_work_and_sigterm_stops_them_all() {
    let data_dir = temp_dir("run");
    let (mut run, banner, mut output) = start_run(&data_dir);
    assert_eq!(banner.pids.len(), 4);
    for pid in &banner.pids {
        assert!(alive(*pid), "child {pid} should be running");
        assert_ne!(*pid, run.child.id(), "each service is its own process");
    }

    // The key is kept in the data directory, not in code; captured output never shows it.
    let api_key = std::fs::read_to_string(data_dir.join("dev-api-key")).unwrap();
    let api_key = api_key.trim().to_owned();
    let bank_token = std::fs::read_to_string(data_dir.join("bank-a-admin-token")).unwrap();
    let bank_token = bank_token.trim().to_owned();
    let bank_b_token = std::fs::read_to_string(data_dir.join("bank-b-admin-token")).unwrap();
    let bank_b_token = bank_b_token.trim().to_owned();
    assert_ne!(
        bank_token, bank_b_token,
        "each bank has its own admin token"
    );
    // The dev operator key sits next to it (0600), and is a different key.
    let operator_file = data_dir.join("dev-operator-key");
    let operator_key = std::fs::read_to_string(&operator_file).unwrap();
    let operator_key = operator_key.trim().to_owned();
    assert!(api_key.len() >= 16 && bank_token.len() >= 16 && operator_key.len() >= 16);
    assert_ne!(api_key, operator_key);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&operator_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the operator key file is private");
    }

    // Every service answers its health check.
    for url in [
        &banner.api_url,
        &banner.bank_url,
        &banner.bank_b_url,
        &banner.dashboard_url,
    ] {
        let response = reqwest::get(format!("{url}/health")).await.unwrap();
        assert!(response.status().is_success(), "{url}");
    }

    // The printed curl command works when pasted into a shell (curl is needed in CI; without
    // it, outside CI, the same request is sent another way and the paste is not checked).
    let curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("curl: {e}"));
    if e2e::require("curl", curl, "`sudo bash .ci/setup` installs it").is_some() {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&banner.curl)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.starts_with("HTTP/1.1 201"), "curl printed:\n{text}");
        assert!(
            text.contains("\"status\":\"succeeded\""),
            "curl printed:\n{text}"
        );
        // The printed status read works too: it carries the operator key.
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&banner.status_curl)
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status curl: {e}: {:?}", output));
        assert!(status["breaker"]["state"].is_string(), "{status}");
        let banks: Vec<&str> = status["banks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap())
            .collect();
        assert_eq!(banks, ["bank-a", "bank-b"], "{status}");

        // The walk-through: `bank-a` down with the printed command, a payment goes to
        // `bank-b`, and its replay answers the same.
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&banner.down_curl)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let down: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("chaos curl: {e}: {output:?}"));
        assert_eq!(down["preset"], "down", "{down}");
        let failover = banner.curl.replace("demo-order-1", "demo-order-2");
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(&failover)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(text.starts_with("HTTP/1.1 201"), "curl printed:\n{text}");
            assert!(
                text.contains("\"bank\":\"bank-b\""),
                "curl printed:\n{text}"
            );
            bodies.push(text.rsplit("\r\n\r\n").next().unwrap().to_owned());
        }
        assert_eq!(bodies[0], bodies[1], "the replay is the same answer");
        let healed = reqwest::Client::new()
            .put(format!("{}/v1/chaos", banner.bank_url))
            .bearer_auth(&bank_token)
            .json(&serde_json::json!({"preset": "healthy"}))
            .send()
            .await
            .unwrap();
        assert!(healed.status().is_success());
    } else {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/payments", banner.api_url))
            .bearer_auth(&api_key)
            .header("Idempotency-Key", "demo-order-1")
            .json(&serde_json::json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    // The dashboard's demo receiver was registered for the dev tenant at start: the payments
    // above arrive there as signed events, verified by the dashboard.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let webhooks = loop {
        let view: serde_json::Value = client
            .get(format!("{}/api/webhooks", banner.dashboard_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["totals"]["verified"].as_u64().unwrap_or(0) >= 1 {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no verified webhook at the dashboard within 30 s: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(webhooks["totals"]["refused"], 0, "{webhooks}");
    let events: serde_json::Value = client
        .get(format!("{}/v1/events", banner.api_url))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"payment.succeeded"), "{events}");

    // Use every credential, rightly and wrongly, then read every operator surface.
    let answers = exercise_and_read_everything(&banner, &api_key, &operator_key, &bank_token).await;

    let status = run
        .terminate(Duration::from_secs(30))
        .expect("run exits after SIGTERM");
    assert!(status.success(), "run exit status {status}");
    for pid in &banner.pids {
        assert!(!alive(*pid), "child {pid} survived run's SIGTERM");
    }

    // The secret scan: every line `run` and its three children printed, and every answer
    // read above. No configured secret, nor a long piece of one.
    while let Some(line) = run.next_line(Duration::from_secs(2)) {
        output.push(line);
    }
    let everything = format!("{}\n{}", output.join("\n"), answers.join("\n"));
    assert!(output.len() > 20, "too little output to judge: {output:?}");
    for (name, secret) in [
        ("dev API key", &api_key),
        ("dev operator key", &operator_key),
        ("bank-a admin token", &bank_token),
        ("bank-b admin token", &bank_b_token),
    ] {
        for piece in [secret.as_str(), &secret[secret.len() - 12..]] {
            assert!(
                !everything.contains(piece),
                "the {name} appears in a full run's output or answers"
            );
        }
    }
}

/// Pays, replays, is refused with a wrong key, switches chaos with the admin token (and once
/// without it), then reads every status, log, metrics and document endpoint of the three
/// services; returns every answer body.
async fn exercise_and_read_everything(
    banner: &Banner,
    api_key: &str,
    operator_key: &str,
    bank_token: &str,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut answers = Vec::new();
    let pay = |key: &str, idempotency_key: &str| {
        client
            .post(format!("{}/v1/payments", banner.api_url))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency_key)
            .json(&serde_json::json!({"amount": 500, "currency": "EUR", "source": "tok_visa"}))
            .send()
    };
    for (key, idempotency_key, expected) in [
        (api_key, "scan-1", 201),
        (api_key, "scan-1", 201),
        ("sk_wrong_0123456789abcdef", "scan-2", 401),
    ] {
        let response = pay(key, idempotency_key).await.unwrap();
        assert_eq!(response.status(), expected);
        answers.push(response.text().await.unwrap());
    }
    let chaos = |token: Option<&str>| {
        let request = client
            .put(format!("{}/v1/chaos", banner.bank_url))
            .json(&serde_json::json!({"preset": "healthy"}));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let refused = chaos(None).await.unwrap();
    assert_eq!(refused.status(), 401, "the bank's chaos needs its token");
    answers.push(refused.text().await.unwrap());
    let allowed = chaos(Some(bank_token)).await.unwrap();
    assert!(allowed.status().is_success());
    answers.push(allowed.text().await.unwrap());

    // The operator surface refuses the tenant key (403) and answers the operator key.
    for path in ["/v1/status", "/v1/logs?limit=10"] {
        let response = client
            .get(format!("{}{path}", banner.api_url))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path} with the tenant key");
        answers.push(response.text().await.unwrap());
    }
    let reset = client
        .post(format!("{}/v1/breaker/reset", banner.api_url))
        .bearer_auth(operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    answers.push(reset.text().await.unwrap());
    let operator_reads = [
        format!("{}/v1/status", banner.api_url),
        format!("{}/v1/logs?limit=1000", banner.api_url),
        format!("{}/v1/payments?limit=100", banner.api_url),
    ];
    for url in operator_reads {
        let response = client
            .get(&url)
            .bearer_auth(operator_key)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        answers.push(response.text().await.unwrap());
    }
    let reads = [
        format!("{}/metrics", banner.api_url),
        format!("{}/openapi.json", banner.api_url),
        format!("{}/v1/payments?limit=100", banner.api_url),
        format!("{}/v1/status", banner.bank_url),
        format!("{}/v1/logs?limit=1000", banner.bank_url),
        format!("{}/v1/chaos", banner.bank_url),
        format!("{}/v1/ledger", banner.bank_url),
        format!("{}/", banner.dashboard_url),
        format!("{}/api/overview", banner.dashboard_url),
        format!("{}/api/logs", banner.dashboard_url),
        format!("{}/api/payments", banner.dashboard_url),
        format!("{}/api/chaos", banner.dashboard_url),
        format!("{}/api/traffic", banner.dashboard_url),
    ];
    // The dashboard pays with its own copy of the key; its answer must not echo it.
    let sent = client
        .post(format!("{}/api/payments/one", banner.dashboard_url))
        .header("X-Dashboard", "1")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.status());
    answers.push(sent.text().await.unwrap());
    for url in reads {
        let response = client.get(&url).bearer_auth(api_key).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        answers.push(response.text().await.unwrap());
    }
    answers
}

#[tokio::test]
async fn children_exit_on_their_own_when_run_is_killed() {
    let (mut run, banner, _) = start_run(&temp_dir("run-kill"));
    signal(run.child.id(), Signal::SIGKILL);
    wait_exit(&mut run.child, Duration::from_secs(10)).expect("run dies on SIGKILL");
    // Children notice their stdin pipe closing and shut down.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while banner.pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &banner.pids {
        assert!(!alive(*pid), "child {pid} outlived a killed run");
    }
}

#[test]
fn a_taken_port_is_a_clear_error_naming_the_port_and_the_flag() {
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let data = temp_dir("run-port");
    let output = std::process::Command::new(binary("run"))
        .args([
            "--api-port",
            &port.to_string(),
            // Free ports for the banks: a fixed first port takes the next ones too (bank-b),
            // which another test may hold.
            "--bank-port",
            "0",
        ])
        .args([
            "--dashboard-port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&port.to_string()) && stderr.contains("--api-port"),
        "stderr: {stderr}"
    );
}
