//! The Prometheus rules in `docs/prometheus/` (issue 16, point 6): `promtool check rules` accepts
//! them, their unit tests (`promtool test rules`) pass, and every series they read is one the
//! real API exports at `GET /metrics`, so a renamed metric cannot leave an alert silently
//! watching nothing.
//!
//! promtool is the Debian package `prometheus` (`.ci/setup` installs it). Without it the promtool
//! test is skipped with a printed reason, except in CI (`CI=true`), where it fails.

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use e2e::{client, start_api, start_bank, temp_dir};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus")
}

/// `promtool`, or `None` (after saying why) when it is missing outside CI.
fn promtool() -> Option<&'static str> {
    let found = match Command::new("promtool").arg("--version").output() {
        Ok(output) if output.status.success() => Ok("promtool"),
        Ok(output) => Err(format!("promtool --version failed: {}", output.status)),
        Err(e) => Err(format!("promtool not found: {e}")),
    };
    e2e::require(
        "promtool",
        found,
        "`sudo bash .ci/setup` installs the Debian package prometheus",
    )
}

/// Runs `promtool args...` in the rules directory; panics with its output if it fails.
fn run_promtool(promtool: &str, args: &[&str]) -> String {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let checked = run_promtool(promtool, &["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(promtool, &["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a unit test (and so a firing case).
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("alerts_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "{alert} has no test that expects it to fire"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")),
            "{alert} has no test that expects it to stay quiet"
        );
    }
}

/// PromQL words that are not series names.
const PROMQL: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "rate",
    "increase",
    "deriv",
    "min_over_time",
    "max_over_time",
    "histogram_quantile",
];

/// The series every `expr:` of `rules` reads: identifiers outside label matchers, grouping
/// clauses and ranges, minus PromQL words and recorded series (`level:metric:operations`).
fn series_read(rules: &str) -> BTreeSet<String> {
    let mut exprs = String::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            exprs.push_str(rest.trim_start_matches(" |"));
            exprs.push('\n');
            in_expr = true;
        } else if in_expr && line.starts_with("          ") {
            exprs.push_str(trimmed);
            exprs.push('\n');
        } else {
            in_expr = false;
        }
    }
    // Drop {...}, [...] and the (...) after by/without.
    let mut plain = String::new();
    let mut depth = 0;
    for c in exprs.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => plain.push(c),
        }
    }
    let plain = plain
        .split(" by (")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once(')').map_or(part, |(_, rest)| rest)
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    plain
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic()))
        .filter(|w| !w.contains(':') && !PROMQL.contains(w))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_series_the_rules_read_is_exported_by_the_api() {
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yml")).unwrap();
    let wanted = series_read(&rules);
    for name in [
        "breaker_state",
        "reconciler_backlog",
        "store_up",
        "store_errors_total",
        "retry_budget_exhausted_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
    ] {
        assert!(wanted.contains(name), "{name} not found in {wanted:?}");
    }

    let bank = start_bank(&[]).await;
    let data_dir = temp_dir("alerts");
    let api = start_api(&bank.url(), &data_dir, &[]).await;
    // A payment (latency histograms, outcomes) and a breaker transition, so the series that
    // appear only once something happened are there too.
    let response = client::pay(&api.url(), "alerts-1", &client::body(500)).await;
    assert_eq!(response.status(), 201);
    for action in ["force-open", "reset"] {
        let response = client::http()
            .post(format!("{}/v1/breaker/{action}", api.url()))
            .bearer_auth(e2e::TEST_OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{action}: {}",
            response.status()
        );
    }
    // Transitions are counted by a task listening to the breaker; wait until it has.
    let exported = e2e::eventually(Duration::from_secs(10), "a breaker transition", || {
        let url = format!("{}/metrics", api.url());
        async move {
            let text = client::http()
                .get(url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let names: BTreeSet<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_owned)
                .collect();
            names.contains("breaker_transitions_total").then_some(names)
        }
    })
    .await;
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the rules read series the API does not export: {missing:?}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn series_read_finds_series_and_not_labels_functions_or_recorded_names() {
    let rules = "      - record: job:x:ratio_rate5m\n        expr: |\n          sum by (job, le) (rate(a_total{status=~\"5..\"}[5m]))\n          /\n          histogram_quantile(0.99, b_bucket)\n\n      - alert: A\n        expr: min_over_time(c[10m]) > 0 and job:x:ratio_rate5m > 0.05\n        for: 5m\n        annotations:\n          summary: \"{{ $value | humanize }} on {{ $labels.instance }}\"\n";
    let found: Vec<String> = series_read(rules).into_iter().collect();
    assert_eq!(found, ["a_total", "b_bucket", "c"]);
    // The real file: only series names.
    let real = series_read(&std::fs::read_to_string(rules_dir().join("alerts.yml")).unwrap());
    assert!(real
        .iter()
        .all(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}
