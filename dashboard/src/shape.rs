//! Shapes the API's `/v1/status` and the bank's `/v1/status` into the one document the page
//! draws (`GET /api/overview`): pure functions over JSON, so each rule is unit-tested.
//!
//! The page gets figures ready to show: thresholds next to the rates they bound, the next probe
//! as a wall-clock time, trip reasons as sentences, attempts per payment, rolling counts.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The breaker, with its thresholds from the API's effective configuration.
pub(crate) fn breaker(status: &Value, now_ms: u64) -> Value {
    let b = &status["breaker"];
    let config = &status["config"]["pipeline"]["breaker"];
    let open_remaining = b["open_remaining_ms"].as_u64();
    json!({
        "state": b["state"],
        "in_state_ms": b["in_state_ms"],
        "since_unix_ms": b["since_unix_ms"],
        "trip_reason": b["trip_reason"],
        "trip_reason_text": reason_text(&b["trip_reason"]),
        "failure_rate": b["failure_rate"],
        "slow_call_rate": b["slow_call_rate"],
        "failure_rate_threshold": config["failure_rate_threshold"],
        "slow_call_rate_threshold": config["slow_call_rate_threshold"],
        "slow_call_duration_ms": config["slow_call_duration_ms"],
        "minimum_calls": b["minimum_calls"],
        "window": b["window"],
        "enough_calls": b["failure_rate"].is_number(),
        "consecutive_failures": b["consecutive_failures"],
        "consecutive_openings": b["consecutive_openings"],
        "probes_in_flight": b["probes_in_flight"],
        "probes_succeeded": b["probes_succeeded"],
        "probes_permitted": b["probes_permitted"],
        "open_remaining_ms": open_remaining,
        "next_probe_at_ms": open_remaining.map(|ms| now_ms + ms),
        "half_open_remaining_ms": b["half_open_remaining_ms"],
        "rejected_total": b["rejected_total"],
    })
}

/// A transition reason as a short sentence ("failure rate 62% over 20 calls").
pub(crate) fn reason_text(reason: &Value) -> Option<String> {
    let kind = reason["kind"].as_str()?;
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("?".to_owned(), |r| format!("{:.0}%", r * 100.0))
    };
    let n = |v: &Value| v.as_u64().map_or("?".to_owned(), |n| n.to_string());
    Some(match kind {
        "failure_rate" => format!(
            "failure rate {} over {} calls",
            pct(&reason["rate"]),
            n(&reason["calls"])
        ),
        "slow_call_rate" => format!(
            "slow-call rate {} over {} calls",
            pct(&reason["rate"]),
            n(&reason["calls"])
        ),
        "consecutive_failures" => format!("{} failures in a row", n(&reason["count"])),
        "retry_after" => format!(
            "bank asked to wait {} ms (Retry-After)",
            n(&reason["wait_ms"])
        ),
        "open_elapsed" => "open wait elapsed; probing".to_owned(),
        "probes_succeeded" => "every probe succeeded".to_owned(),
        // An operator's action names the operator (the key's configured name, never the key).
        "operator" => {
            let action = reason["action"]
                .as_str()
                .unwrap_or("action")
                .replace('_', " ");
            match reason["actor"].as_str() {
                Some(actor) => format!("operator {action} by {actor}"),
                None => format!("operator {action}"),
            }
        }
        other => other.replace('_', " "),
    })
}

/// The transitions, oldest first, each with its reason as text.
pub(crate) fn transitions(status: &Value) -> Vec<Value> {
    status["transitions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| {
                    json!({
                        "from": t["from"],
                        "to": t["to"],
                        "at_ms": t["at_unix_ms"],
                        "open_for_ms": t["open_for_ms"],
                        "reason": t["reason"],
                        "reason_text": reason_text(&t["reason"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bank attempts per payment that reached the bank: each such payment makes one first attempt
/// and zero or more retries, so attempts / (attempts − retries).
pub(crate) fn attempts_per_payment(counts: &Value) -> Option<f64> {
    let attempts = counts["bank_attempts"].as_u64()?;
    let retries = counts["bank_retries"].as_u64().unwrap_or(0);
    let first = attempts.checked_sub(retries).filter(|n| *n > 0)?;
    Some(attempts as f64 / first as f64)
}

/// The whole overview. `api` and `bank` are the upstream statuses, or why they are missing.
pub(crate) fn overview(
    api: Result<&Value, String>,
    bank: Result<&Value, String>,
    rolling_10s: &BTreeMap<String, u64>,
    rolling_60s: &BTreeMap<String, u64>,
    now_ms: u64,
) -> Value {
    let mut out = Map::new();
    out.insert("now_ms".into(), json!(now_ms));
    match api {
        Ok(status) => {
            let counters = &status["counters"];
            out.insert(
                "api".into(),
                json!({
                    "reachable": true,
                    "instance_id": status["instance_id"],
                    "uptime_seconds": status["uptime_seconds"],
                    "store": status["store"],
                }),
            );
            out.insert("breaker".into(), breaker(status, now_ms));
            out.insert("transitions".into(), json!(transitions(status)));
            out.insert("counters".into(), counters.clone());
            out.insert(
                "rolling".into(),
                json!({
                    "window_10s": rolling_10s,
                    "window_60s": rolling_60s,
                    "attempts_per_payment_60s": attempts_per_payment(&json!(rolling_60s)),
                }),
            );
            out.insert(
                "attempts_per_payment".into(),
                json!(attempts_per_payment(counters)),
            );
            for key in ["latency", "retry_budget", "bulkhead", "reconciler"] {
                out.insert(key.into(), status[key].clone());
            }
            let pipeline = &status["config"]["pipeline"];
            out.insert(
                "config".into(),
                json!({
                    "attempt_timeout_ms": pipeline["attempt_timeout_ms"],
                    "deadline_ms": pipeline["deadline_ms"],
                    "breaker": pipeline["breaker"],
                    "retry": pipeline["retry"],
                }),
            );
        }
        Err(reason) => {
            out.insert("api".into(), json!({ "reachable": false, "error": reason }));
        }
    }
    out.insert(
        "bank".into(),
        match bank {
            Ok(status) => {
                let chaos = if status["chaos"].is_object() {
                    &status["chaos"]
                } else {
                    status
                };
                json!({
                    "reachable": true,
                    "instance_id": status["instance_id"],
                    "preset": chaos["preset"],
                    "scenario": chaos["scenario"],
                    "seed": chaos["seed"],
                    "changed_at": chaos["changed_at"],
                    "outcomes": status["outcomes"],
                    "faults": status["faults"],
                    "in_flight": status["in_flight"],
                    "held": status["held"],
                    "ledger_charges": status["ledger_charges"],
                })
            }
            Err(reason) => json!({ "reachable": false, "error": reason }),
        },
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Value {
        json!({
            "instance_id": "api-1",
            "breaker": {
                "state": "open", "in_state_ms": 1200, "since_unix_ms": 1000,
                "trip_reason": {"kind": "failure_rate", "rate": 0.625, "calls": 16},
                "failure_rate": 0.625, "slow_call_rate": 0.0, "minimum_calls": 10,
                "window": {"calls": 16, "failures": 10, "slow": 0},
                "open_remaining_ms": 800, "probes_in_flight": 0, "rejected_total": 4
            },
            "transitions": [{"from": "closed", "to": "open", "at_unix_ms": 1000,
                             "reason": {"kind": "consecutive_failures", "count": 5},
                             "open_for_ms": 2000}],
            "counters": {"succeeded": 3, "bank_attempts": 12, "bank_retries": 4},
            "latency": {"p50_ms": 5},
            "config": {"pipeline": {"breaker": {"failure_rate_threshold": 0.5,
                "slow_call_rate_threshold": 0.8, "slow_call_duration_ms": 1000}}}
        })
    }

    #[test]
    fn the_breaker_carries_its_thresholds_and_the_next_probe_time() {
        let b = breaker(&status(), 10_000);
        assert_eq!(b["state"], "open");
        assert_eq!(b["failure_rate_threshold"], 0.5);
        assert_eq!(b["slow_call_rate_threshold"], 0.8);
        assert_eq!(b["next_probe_at_ms"], 10_800);
        assert_eq!(b["enough_calls"], true);
        assert_eq!(b["trip_reason_text"], "failure rate 62% over 16 calls");
    }

    #[test]
    fn too_few_calls_is_shown_as_not_enough_calls() {
        let mut s = status();
        s["breaker"]["failure_rate"] = Value::Null;
        s["breaker"]["open_remaining_ms"] = Value::Null;
        let b = breaker(&s, 10_000);
        assert_eq!(b["enough_calls"], false);
        assert_eq!(b["next_probe_at_ms"], Value::Null);
    }

    #[test]
    fn every_reason_reads_as_a_sentence() {
        for (reason, text) in [
            (
                json!({"kind": "slow_call_rate", "rate": 0.9, "calls": 20}),
                "slow-call rate 90% over 20 calls",
            ),
            (
                json!({"kind": "consecutive_failures", "count": 5}),
                "5 failures in a row",
            ),
            (
                json!({"kind": "retry_after", "wait_ms": 2000}),
                "bank asked to wait 2000 ms (Retry-After)",
            ),
            (
                json!({"kind": "open_elapsed"}),
                "open wait elapsed; probing",
            ),
            (json!({"kind": "operator_reset"}), "operator reset"),
            (
                json!({"kind": "operator", "action": "force_open", "actor": "alice"}),
                "operator force open by alice",
            ),
            (
                json!({"kind": "operator", "action": "reset"}),
                "operator reset",
            ),
        ] {
            assert_eq!(reason_text(&reason).unwrap(), text);
        }
        assert_eq!(reason_text(&Value::Null), None);
    }

    #[test]
    fn attempts_per_payment_counts_retries_against_first_attempts() {
        assert_eq!(attempts_per_payment(&status()["counters"]), Some(1.5));
        assert_eq!(
            attempts_per_payment(&json!({"bank_attempts": 0, "bank_retries": 0})),
            None
        );
    }

    #[test]
    fn an_unreachable_api_still_gives_the_bank_half() {
        let bank =
            json!({"instance_id": "b", "chaos": {"preset": "down", "seed": 7}, "in_flight": 0});
        let o = overview(
            Err("connection refused".into()),
            Ok(&bank),
            &BTreeMap::new(),
            &BTreeMap::new(),
            5,
        );
        assert_eq!(o["api"]["reachable"], false);
        assert_eq!(o["api"]["error"], "connection refused");
        assert!(o.get("breaker").is_none());
        assert_eq!(o["bank"]["preset"], "down");
        assert_eq!(o["bank"]["seed"], 7);
    }

    #[test]
    fn the_overview_has_transitions_with_text_and_rolling_counts() {
        let rolling: BTreeMap<String, u64> = [("succeeded".to_owned(), 4)].into();
        let o = overview(Ok(&status()), Err("down".into()), &rolling, &rolling, 5);
        assert_eq!(o["transitions"][0]["reason_text"], "5 failures in a row");
        assert_eq!(o["transitions"][0]["at_ms"], 1000);
        assert_eq!(o["rolling"]["window_10s"]["succeeded"], 4);
        assert_eq!(o["attempts_per_payment"], 1.5);
        assert_eq!(o["bank"]["reachable"], false);
    }
}
