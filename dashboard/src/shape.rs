//! Shapes the API's `/v1/status` and the bank's `/v1/status` into the one document the page
//! draws (`GET /api/overview`): pure functions over JSON, so each rule is unit-tested.
//!
//! The page gets figures ready to show: thresholds next to the rates they bound, the next probe
//! as a wall-clock time, trip reasons as sentences, attempts per payment, rolling counts.
//!
//! With several banks, [`join_banks`] pairs the API's view of each bank (its breaker, share and
//! cascades in `/v1/status` `banks`) with the dashboard's own (`--bank`: its chaos), and
//! [`bank_panel`] shapes one panel each. Every per-bank field may be missing (an API older than
//! a field): the panel then says so instead of failing.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::{config::BankTarget, history::CascadeRate};

/// The breaker, with its thresholds from the API's effective configuration.
pub(crate) fn breaker(status: &Value, now_ms: u64) -> Value {
    breaker_with(
        &status["breaker"],
        &status["config"]["pipeline"]["breaker"],
        now_ms,
    )
}

/// A breaker snapshot `b` with the thresholds of `config` (its breaker settings).
fn breaker_with(b: &Value, config: &Value, now_ms: u64) -> Value {
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

/// One bank as the page shows it: the API's entry for it (when the API routes to it) and the
/// dashboard's target (when the dashboard can reach its chaos).
#[derive(Debug, Clone)]
pub(crate) struct JoinedBank<'a> {
    /// The page's name for it: the target's (what `/api/chaos?bank=` takes), else the API's.
    pub(crate) name: String,
    /// Its entry in the API's `banks` (or, from an API without `banks`, the top-level breaker).
    pub(crate) api: Option<Value>,
    /// The API's name for it (what `/v1/breaker/{action}?bank=` takes).
    pub(crate) api_name: Option<String>,
    /// Its place in the API's priority order, from 1.
    pub(crate) priority: Option<usize>,
    pub(crate) target: Option<&'a BankTarget>,
}

impl JoinedBank<'_> {
    /// Whether the API has per-bank breaker controls (`?bank=`): an API that reports a bank's
    /// own `transitions` or `settings` has them. An older API would ignore `?bank=` and move
    /// the first bank's breaker, so without them only the first bank's breaker is offered.
    pub(crate) fn per_bank_controls(&self) -> bool {
        self.api
            .as_ref()
            .is_some_and(|a| a.get("transitions").is_some() || a.get("settings").is_some())
            && self.api_name.is_some()
    }

    /// Whether the page may offer breaker controls for this bank.
    pub(crate) fn breaker_controls(&self) -> bool {
        self.priority == Some(1) || self.per_bank_controls()
    }
}

/// The URL without its trailing slash, for matching the API's bank URL with the dashboard's.
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Pairs the API's banks (`status`, when it answered) with the dashboard's `targets`: by name,
/// else by URL, else (one bank each side, the old single-bank setup) with each other. The API's
/// priority order first, then the targets the API does not route to.
pub(crate) fn join_banks<'a>(
    status: Option<&Value>,
    targets: &'a [BankTarget],
) -> Vec<JoinedBank<'a>> {
    let entries: Vec<Value> = match status {
        Some(status) => match status["banks"].as_array() {
            Some(banks) => banks.clone(),
            // An API from before several banks: its one bank is the top-level breaker.
            None => vec![json!({
                "breaker_state": status["breaker"]["state"],
                "breaker": status["breaker"],
                "transitions": status["transitions"],
                "retry_budget": status["retry_budget"],
                "bulkhead": status["bulkhead"],
                "attempts": status["counters"]["bank_attempts"],
                "share": 1.0,
                "legacy": true,
            })],
        },
        None => Vec::new(),
    };
    let mut used = vec![false; targets.len()];
    let mut out = Vec::with_capacity(entries.len() + targets.len());
    let single = entries.len() == 1 && targets.len() == 1;
    for (i, entry) in entries.iter().enumerate() {
        let api_name = entry["name"].as_str().map(str::to_owned);
        let by_name = api_name
            .as_deref()
            .and_then(|n| (0..targets.len()).find(|&t| !used[t] && targets[t].name == n));
        let by_url = || {
            let url = entry["url"].as_str()?;
            (0..targets.len()).find(|&t| !used[t] && same_url(targets[t].url.as_str(), url))
        };
        let found = by_name
            .or_else(by_url)
            .or((single && !used[0]).then_some(0));
        if let Some(t) = found {
            used[t] = true;
        }
        let target = found.map(|t| &targets[t]);
        let name = target
            .map(|t| t.name.clone())
            .or_else(|| api_name.clone())
            .unwrap_or_else(|| format!("bank-{}", i + 1));
        let mut entry = entry.clone();
        let legacy = entry.get("legacy").is_some();
        if legacy {
            // Not a per-bank entry: drop the markers so the controls stay the first bank's.
            if let Some(o) = entry.as_object_mut() {
                o.remove("legacy");
                o.remove("transitions");
            }
        }
        out.push(JoinedBank {
            name,
            api: Some(entry),
            api_name,
            priority: Some(i + 1),
            target,
        });
    }
    for (t, target) in targets.iter().enumerate() {
        if !used[t] {
            out.push(JoinedBank {
                name: target.name.clone(),
                api: None,
                api_name: None,
                priority: None,
                target: Some(target),
            });
        }
    }
    out
}

/// What a bank's header badge says, reachability and chaos apart: `reach` is whether the bank
/// answered (`reachable`, `unreachable`, or `unknown` for a bank the dashboard has no URL for),
/// `chaos` its preset (`custom` for a profile, `scenario` while one runs), and `level` the
/// colour: `ok` (reachable and healthy), `chaos` (reachable, with chaos on), `down`
/// (unreachable), `unknown`.
pub(crate) fn badge(chaos: Option<Result<&Value, &str>>) -> Value {
    match chaos {
        None => json!({"reach": "unknown", "chaos": null, "level": "unknown"}),
        Some(Err(error)) => {
            json!({"reach": "unreachable", "chaos": null, "level": "down", "error": error})
        }
        Some(Ok(status)) => {
            let chaos = chaos_of(status);
            let scenario_running = chaos["scenario"].is_object()
                && chaos["scenario"]["finished"].as_bool() != Some(true);
            let preset = if scenario_running {
                "scenario".to_owned()
            } else {
                chaos["preset"].as_str().unwrap_or("custom").to_owned()
            };
            let level = if preset == "healthy" { "ok" } else { "chaos" };
            json!({"reach": "reachable", "chaos": preset, "level": level})
        }
    }
}

/// The chaos part of a bank answer: `/v1/status` has it under `chaos`, `/v1/chaos` at the top.
fn chaos_of(status: &Value) -> &Value {
    if status["chaos"].is_object() {
        &status["chaos"]
    } else {
        status
    }
}

/// A bank's chaos facts: its preset, scenario and ledger, or why it did not answer.
fn bank_chaos(bank: Result<&Value, &str>) -> Value {
    match bank {
        Ok(status) => {
            let chaos = chaos_of(status);
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
    }
}

/// The breaker settings a bank's rates are measured against: its own (`settings`, per-bank
/// resilience settings) when the API reports them, else the shared ones.
fn bank_breaker_config<'v>(entry: &'v Value, status: Option<&'v Value>) -> &'v Value {
    let own = &entry["settings"]["breaker"];
    if own.is_object() {
        return own;
    }
    if entry["settings"]["failure_rate_threshold"].is_number() {
        return &entry["settings"];
    }
    status.map_or(&Value::Null, |s| &s["config"]["pipeline"]["breaker"])
}

/// One bank's panel: its breaker (state, rates against thresholds, next probe), route share,
/// cascades (totals and per minute, by reason), budget and bulkhead, health score, chaos and
/// badge. `status` is the API's `/v1/status`; `chaos` the bank's own status (`None`: the
/// dashboard has no URL for it); `rate` its cascades per minute.
pub(crate) fn bank_panel(
    bank: &JoinedBank<'_>,
    status: Option<&Value>,
    chaos: Option<Result<&Value, &str>>,
    rate: Option<&CascadeRate>,
    now_ms: u64,
) -> Value {
    let mut out = json!({
        "name": bank.name,
        "api_name": bank.api_name,
        "url": bank.target.map(|t| t.url.as_str()),
        "priority": bank.priority,
        "in_api": bank.api.is_some(),
        "chaos_controls": bank.target.is_some(),
        "breaker_controls": bank.breaker_controls(),
        "badge": badge(chaos),
        "chaos": chaos.map(bank_chaos),
        "cascades_per_minute": rate,
    });
    if let Some(entry) = &bank.api {
        let config = bank_breaker_config(entry, status);
        let mut breaker = breaker_with(&entry["breaker"], config, now_ms);
        if breaker["state"].is_null() {
            breaker["state"] = entry["breaker_state"].clone();
        }
        out["breaker"] = breaker;
        out["api_url"] = entry["url"].clone();
        for key in [
            "share",
            "attempts",
            "cascaded_away",
            "cascades",
            "retry_budget",
            "bulkhead",
            "score",
            "settings",
        ] {
            out[key] = entry[key].clone();
        }
        out["transitions"] = json!(transitions(entry));
    }
    out
}

/// The API's routing (`mode`, and whatever else it says), `null` from an API without it.
pub(crate) fn routing(status: &Value) -> Value {
    status["routing"].clone()
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
        bank_chaos(bank.as_ref().map(|b| *b).map_err(String::as_str)),
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

    fn target(name: &str, url: &str) -> BankTarget {
        BankTarget {
            name: name.into(),
            url: url.parse().unwrap(),
        }
    }

    fn two_bank_status() -> Value {
        json!({
            "instance_id": "api-1",
            "routing": {"mode": "priority"},
            "banks": [
                {"name": "a", "url": "http://127.0.0.1:8001/", "breaker_state": "open",
                 "breaker": {"state": "open", "failure_rate": 1.0, "open_remaining_ms": 500},
                 "share": 0.2, "attempts": 2, "cascaded_away": 7,
                 "cascades": {"bank_refused": 5, "breaker_open": 2},
                 "transitions": [{"from": "closed", "to": "open", "at_unix_ms": 9,
                                  "reason": {"kind": "consecutive_failures", "count": 5}}],
                 "settings": {"breaker": {"failure_rate_threshold": 0.3}}},
                {"name": "b", "url": "http://127.0.0.1:8002", "breaker_state": "closed",
                 "breaker": {"state": "closed"}, "share": 0.8, "attempts": 8, "cascaded_away": 0},
            ],
            "breaker": {"state": "open"},
            "config": {"pipeline": {"breaker": {"failure_rate_threshold": 0.5}}},
        })
    }

    #[test]
    fn banks_join_by_name_then_by_url_then_the_one_each_side() {
        let status = two_bank_status();
        // `b` is named differently here but has the same URL (without the trailing slash).
        let targets = [
            target("a", "http://127.0.0.1:8001"),
            target("bank-b", "http://127.0.0.1:8002"),
            target("c", "http://127.0.0.1:8003"),
        ];
        let joined = join_banks(Some(&status), &targets);
        let names: Vec<_> = joined.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "bank-b", "c"],
            "API priority order, then the rest"
        );
        assert_eq!(joined[1].api_name.as_deref(), Some("b"));
        assert_eq!(joined[1].priority, Some(2));
        assert!(joined[2].api.is_none() && joined[2].priority.is_none());
        // One bank each side with other names and URLs (--bank-url against a renamed bank).
        let one = json!({"banks": [{"name": "x", "url": "http://10.0.0.1:1"}]});
        let targets = [target("bank", "http://127.0.0.1:8001")];
        let joined = join_banks(Some(&one), &targets);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].name, "bank");
        assert_eq!(joined[0].api_name.as_deref(), Some("x"));
        // The API down: the dashboard's banks, without API data.
        let joined = join_banks(None, &targets);
        assert_eq!(joined.len(), 1);
        assert!(joined[0].api.is_none());
    }

    #[test]
    fn an_api_without_banks_gives_its_one_breaker_to_the_first_bank() {
        let targets = [target("bank", "http://127.0.0.1:8001")];
        let joined = join_banks(Some(&status()), &targets);
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].priority, Some(1));
        // Its breaker controls are the API's only ones, which move this (the first) bank.
        assert!(!joined[0].per_bank_controls());
        assert!(joined[0].breaker_controls());
        let panel = bank_panel(&joined[0], Some(&status()), None, None, 10_000);
        assert_eq!(panel["breaker"]["state"], "open");
        assert_eq!(panel["breaker"]["failure_rate_threshold"], 0.5);
        assert_eq!(panel["breaker"]["next_probe_at_ms"], 10_800);
        assert_eq!(panel["cascades"], Value::Null, "absent, not an error");
    }

    #[test]
    fn a_bank_panel_has_breaker_share_cascades_and_its_own_thresholds() {
        let status = two_bank_status();
        let targets = [
            target("a", "http://127.0.0.1:8001"),
            target("b", "http://127.0.0.1:8002"),
        ];
        let joined = join_banks(Some(&status), &targets);
        let chaos = json!({"chaos": {"preset": "down"}, "ledger_charges": 0});
        let rate = CascadeRate {
            per_minute: 12.0,
            by_reason: [("bank_refused".to_owned(), 12.0)].into(),
            over_ms: 5_000,
        };
        let a = bank_panel(
            &joined[0],
            Some(&status),
            Some(Ok(&chaos)),
            Some(&rate),
            1_000,
        );
        assert_eq!(a["breaker"]["state"], "open");
        assert_eq!(a["breaker"]["next_probe_at_ms"], 1_500);
        assert_eq!(
            a["breaker"]["failure_rate_threshold"], 0.3,
            "the bank's own setting wins over the shared one"
        );
        assert_eq!(a["share"], 0.2);
        assert_eq!(a["cascaded_away"], 7);
        assert_eq!(a["cascades"]["bank_refused"], 5);
        assert_eq!(a["cascades_per_minute"]["per_minute"], 12.0);
        assert_eq!(a["transitions"][0]["reason_text"], "5 failures in a row");
        assert_eq!(a["chaos"]["preset"], "down");
        assert_eq!(a["badge"]["level"], "chaos");
        assert_eq!(a["breaker_controls"], true);
        // b: the API reports no per-bank transitions or settings for it, so only the first
        // bank's breaker may be moved (an older API would ignore ?bank= and move a's).
        let b = bank_panel(&joined[1], Some(&status), Some(Err("refused")), None, 1_000);
        assert_eq!(b["breaker"]["failure_rate_threshold"], 0.5);
        assert_eq!(b["breaker_controls"], false);
        assert_eq!(b["badge"]["reach"], "unreachable");
        assert_eq!(b["chaos"]["reachable"], false);
    }

    #[test]
    fn a_badge_says_reachability_and_chaos_apart() {
        let healthy = json!({"chaos": {"preset": "healthy"}});
        let down = json!({"preset": "down"});
        let scenario =
            json!({"chaos": {"preset": "down", "scenario": {"steps": [], "finished": false}}});
        let finished = json!({"chaos": {"preset": "healthy", "scenario": {"finished": true}}});
        let profile = json!({"chaos": {"preset": null}});
        for (chaos, reach, preset, level) in [
            (Some(Ok(&healthy)), "reachable", json!("healthy"), "ok"),
            (Some(Ok(&down)), "reachable", json!("down"), "chaos"),
            (Some(Ok(&scenario)), "reachable", json!("scenario"), "chaos"),
            (Some(Ok(&finished)), "reachable", json!("healthy"), "ok"),
            (Some(Ok(&profile)), "reachable", json!("custom"), "chaos"),
            (
                Some(Err("connection refused")),
                "unreachable",
                Value::Null,
                "down",
            ),
            (None, "unknown", Value::Null, "unknown"),
        ] {
            let b = badge(chaos);
            assert_eq!(
                (
                    b["reach"].as_str().unwrap(),
                    &b["chaos"],
                    b["level"].as_str().unwrap()
                ),
                (reach, &preset, level),
                "{chaos:?}"
            );
        }
    }
}
