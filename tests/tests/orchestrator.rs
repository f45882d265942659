//! `run` as a user runs it: it starts three processes, prints where they are and a curl command
//! that works, and leaves no process behind when stopped.

use std::time::Duration;

use e2e::{alive, binary, free_port, signal, temp_dir, wait_exit, Process};
use nix::sys::signal::Signal;

struct Banner {
    api_url: String,
    bank_url: String,
    dashboard_url: String,
    api_key: String,
    curl: String,
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
    let bank = field("mock bank");
    let dashboard = field("dashboard");
    let pid = |words: &[String]| words[2].parse::<u32>().unwrap();
    Banner {
        api_url: api[0].clone(),
        bank_url: bank[0].clone(),
        dashboard_url: dashboard[0].clone(),
        api_key: field("dev API key")[0].clone(),
        curl: lines
            .iter()
            .find(|l| l.trim_start().starts_with("curl "))
            .unwrap()
            .trim()
            .to_owned(),
        pids: vec![pid(&api), pid(&bank), pid(&dashboard)],
    }
}

fn start_run(data_dir: &std::path::Path) -> (Process, Banner) {
    let data = data_dir.to_str().unwrap();
    let run = Process::start(
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
    let lines = run.read_until(Duration::from_secs(90), |l| {
        l.starts_with("Open the dashboard")
    });
    let banner = parse_banner(&lines);
    (run, banner)
}

#[tokio::test]
async fn run_starts_three_services_whose_curl_works_and_sigterm_stops_them_all() {
    let data_dir = temp_dir("run");
    let (mut run, banner) = start_run(&data_dir);
    assert_eq!(banner.pids.len(), 3);
    for pid in &banner.pids {
        assert!(alive(*pid), "child {pid} should be running");
        assert_ne!(*pid, run.child.id(), "each service is its own process");
    }

    // The key is kept in the data directory, not in code.
    let stored = std::fs::read_to_string(data_dir.join("dev-api-key")).unwrap();
    assert_eq!(stored.trim(), banner.api_key);

    // Every service answers its health check.
    for url in [&banner.api_url, &banner.bank_url, &banner.dashboard_url] {
        let response = reqwest::get(format!("{url}/health")).await.unwrap();
        assert!(response.status().is_success(), "{url}");
    }

    // The printed curl command works when pasted into a shell.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
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
    } else {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/payments", banner.api_url))
            .bearer_auth(&banner.api_key)
            .header("Idempotency-Key", "demo-order-1")
            .json(&serde_json::json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    let status = run
        .terminate(Duration::from_secs(30))
        .expect("run exits after SIGTERM");
    assert!(status.success(), "run exit status {status}");
    for pid in &banner.pids {
        assert!(!alive(*pid), "child {pid} survived run's SIGTERM");
    }
}

#[tokio::test]
async fn children_exit_on_their_own_when_run_is_killed() {
    let (mut run, banner) = start_run(&temp_dir("run-kill"));
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
            "--bank-port",
            &free_port().to_string(),
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
