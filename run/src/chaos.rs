//! `run chaos`: the chaos verifier. Starts its own system (bank and API, supervised), drives
//! open-loop traffic while the bank follows a schedule of chaos presets and the API is killed
//! with SIGKILL at random moments (the supervisor restarts it), then heals the bank, waits for
//! the reconciler to settle every pending payment, replays every key once, and audits the API's
//! payments against the bank's ledger (DESIGN.md §6, invariants 1–5). Exits 1 on any violation.
//!
//! Everything random (the schedule, the kill times, the traffic) comes from one seed, printed
//! at the start, so a failing run can be replayed with `--seed`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use payment_types::{
    bank::{ChaosUpdate, Charge, LedgerPage, Preset, ScenarioStep},
    payment::Payment,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Deserialize;

use crate::{
    audit,
    cli::{ChaosArgs, ScenarioName, UpArgs},
    load,
    supervisor::{Killer, RestartPolicy},
    up::{self, StartOptions},
};

/// The API timings chaos runs with, so a short run crosses many timeouts, leases and reconciler
/// passes. `--api-arg` overrides any of them.
const FAST_API: &[(&str, &str)] = &[
    ("--attempt-timeout-ms", "500"),
    ("--deadline-ms", "2000"),
    ("--backoff-base-ms", "20"),
    ("--backoff-max-ms", "200"),
    ("--breaker-open-ms", "1000"),
    // A failed probe doubles the opening; under `flaky` probes often fail, and without a low
    // cap the breaker would stay open for most of a short run.
    ("--breaker-max-open-ms", "2000"),
    ("--reconcile-interval-ms", "200"),
    ("--reconcile-grace-ms", "500"),
    ("--lease-ms", "3000"),
];

/// What the bank and the API go through: derived from the scenario, the duration and the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChaosPlan {
    /// The bank's scenario, started with the traffic.
    pub(crate) steps: Vec<ScenarioStep>,
    /// When to SIGKILL the API, from the start of the traffic.
    pub(crate) kills: Vec<Duration>,
}

fn step(at: Duration, preset: Preset) -> ScenarioStep {
    ScenarioStep {
        at_ms: at.as_millis() as u64,
        preset,
    }
}

/// The bank accepts at most this many scenario steps.
const MAX_STEPS: usize = 100;

/// Builds the plan of `scenario` over `duration`; the same seed gives the same plan.
pub(crate) fn plan(
    scenario: ScenarioName,
    duration: Duration,
    seed: u64,
    kills: Option<usize>,
) -> ChaosPlan {
    // A stream of its own, so changing the traffic flags does not move the kills.
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6368_616f_735f_706c);
    let at = |share: f64| duration.mul_f64(share);
    let steps = match scenario {
        ScenarioName::Flaky => vec![step(Duration::ZERO, Preset::Flaky)],
        ScenarioName::Lossy | ScenarioName::Crashes => vec![step(Duration::ZERO, Preset::Lossy)],
        ScenarioName::OutageAndRecovery => vec![
            step(Duration::ZERO, Preset::Healthy),
            step(at(0.15), Preset::Down),
            step(at(0.45), Preset::Flaky),
            step(at(0.70), Preset::Healthy),
        ],
        ScenarioName::Everything => everything(duration, &mut rng),
    };
    let default_kills = match scenario {
        ScenarioName::Crashes | ScenarioName::Everything => {
            ((duration.as_secs() / 30) as usize).max(2)
        }
        _ => 0,
    };
    let count = kills.unwrap_or(default_kills);
    let mut kills: Vec<Duration> = (0..count).map(|_| at(rng.gen_range(0.1..0.9))).collect();
    kills.sort();
    ChaosPlan { steps, kills }
}

/// Segments of random presets, weighted toward the ones that lose answers; the bank down or
/// black-holed for at most 10 s at a time (longer only tests the client's patience).
fn everything(duration: Duration, rng: &mut SmallRng) -> Vec<ScenarioStep> {
    const WEIGHTS: [(Preset, u32); 6] = [
        (Preset::Flaky, 3),
        (Preset::Lossy, 3),
        (Preset::Slow, 2),
        (Preset::Healthy, 1),
        (Preset::Down, 1),
        (Preset::Blackhole, 1),
    ];
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let longest = (duration / 6).clamp(
        Duration::from_secs(3),
        Duration::from_secs(30).max(duration / (MAX_STEPS as u32 - 1)),
    );
    let mut steps = Vec::new();
    let mut t = Duration::ZERO;
    let mut previous = None;
    while t < duration && steps.len() < MAX_STEPS {
        let mut roll = rng.gen_range(0..total);
        let preset = WEIGHTS
            .iter()
            .find(|(_, w)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .map(|(p, _)| *p)
            .unwrap_or(Preset::Flaky);
        if previous == Some(preset) {
            continue;
        }
        let mut length = longest.mul_f64(rng.gen_range(0.34..=1.0));
        if matches!(preset, Preset::Down | Preset::Blackhole) {
            length = length.min(Duration::from_secs(10));
        }
        steps.push(step(t, preset));
        previous = Some(preset);
        t += length;
    }
    steps
}

/// `run chaos`.
pub(crate) async fn command(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.traffic.seed.unwrap_or_else(rand::random);
    let duration = args.traffic.duration;
    let plan = plan(args.scenario, duration, seed, args.kills);
    let scenario = args.scenario.name();
    let (data_dir, fresh_dir) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("run-chaos-{seed}-{}", std::process::id())),
            true,
        ),
    };
    if data_dir.join("payments.db").exists() || has_files(&data_dir, "payments") {
        bail!(
            "{} already holds a payment store: the audit needs a fresh one (omit --data-dir)",
            data_dir.display()
        );
    }

    println!(
        "[chaos] scenario {scenario}, seed {seed}, {:?} of traffic at {}/s, {} API kills",
        duration,
        args.traffic.rate,
        plan.kills.len()
    );
    let schedule: Vec<String> = plan
        .steps
        .iter()
        .map(|s| format!("{:.1}s {}", s.at_ms as f64 / 1000.0, s.preset))
        .collect();
    println!("[chaos] bank schedule: {}", schedule.join(", "));
    let kills: Vec<String> = plan
        .kills
        .iter()
        .map(|k| format!("{:.1}s", k.as_secs_f64()))
        .collect();
    println!("[chaos] kills at: {}", kills.join(", "));
    println!(
        "[chaos] replay with: run chaos --scenario {scenario} --duration {}s --seed {seed} --rate {}{}",
        duration.as_secs(),
        args.traffic.rate,
        args.kills
            .map(|k| format!(" --kills {k}"))
            .unwrap_or_default()
    );

    let up_args = UpArgs {
        api_port: 0,
        bank_port: 0,
        dashboard_port: 0,
        data_dir: data_dir.clone(),
        database_url: args.database_url.clone(),
        ready_timeout_secs: 60,
        api_arg: args.api_arg.clone(),
        log: args.log.clone(),
    };
    let options = StartOptions {
        // Ordered kills are not counted; anything else dying this often is a real failure.
        policy: RestartPolicy::default(),
        dashboard: args.dashboard,
        api_defaults: FAST_API
            .iter()
            .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
            .collect(),
        child_env: if args.verbose {
            Vec::new()
        } else {
            // Errors only, and not the access log's line for every 5xx chaos provokes.
            vec![("RUST_LOG".to_owned(), "error,tower_http=off".to_owned())]
        },
    };
    let Some(mut system) = up::start(&up_args, options).await? else {
        return Ok(());
    };
    println!(
        "[chaos] system up: API {} (pid {}), bank {}, data dir {}{}",
        system.api_url,
        system
            .supervisor
            .child(up::API)
            .map(|c| c.pid())
            .unwrap_or(0),
        system.bank_url,
        system.data_dir.display(),
        if args.dashboard {
            format!(", dashboard {}", system.dashboard_url)
        } else {
            String::new()
        }
    );

    let target = Target {
        api_url: system.api_url.clone(),
        bank_url: system.bank_url.clone(),
        api_key: system.creds.api_key.clone(),
        bank_token_file: system.creds.bank_token_file.clone(),
        api: system
            .supervisor
            .child(up::API)
            .ok_or_else(|| anyhow!("the API is not running"))?
            .killer(),
    };
    let outcome = tokio::select! {
        outcome = verify(&target, &args, &plan, seed) => outcome,
        reason = system.supervisor.fatal() => Err(anyhow!("the system failed: {reason}")),
        () = service_runtime::shutdown_signal() => Err(anyhow!("interrupted")),
    };
    println!("[chaos] stopping the system");
    let data_dir = system.data_dir.clone();
    system.supervisor.stop().await;
    let clean = matches!(outcome, Ok(0));
    if clean && fresh_dir && !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!("[chaos] data kept in {}", data_dir.display());
    }
    match outcome? {
        0 => Ok(()),
        n => Err(anyhow!(
            "{n} invariant violations (replay with --seed {seed})"
        )),
    }
}

fn has_files(dir: &std::path::Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    })
}

/// The system under test, as the verifier reaches it.
#[derive(Debug)]
struct Target {
    api_url: String,
    bank_url: String,
    api_key: String,
    bank_token_file: std::path::PathBuf,
    /// Kills the API process.
    api: Killer,
}

/// Traffic, chaos and kills; then heal, settle, replay and audit. Returns the violations.
async fn verify(
    system: &Target,
    args: &ChaosArgs,
    plan: &ChaosPlan,
    seed: u64,
) -> anyhow::Result<usize> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")?;
    let token = std::fs::read_to_string(&system.bank_token_file)
        .context("cannot read the bank admin token")?
        .trim()
        .to_owned();
    let config = load::config_from(
        &args.traffic,
        system.api_url.clone(),
        system.api_key.clone(),
        seed,
        format!("chaos-{seed}"),
    );

    set_chaos(
        &http,
        &system.bank_url,
        &token,
        &ChaosUpdate::Scenario(plan.steps.clone()),
    )
    .await?;
    let started = Instant::now();
    let traffic = tokio::spawn(load::run(config.clone(), std::future::pending()));
    let kills = kill_on_schedule(&http, &system.api_url, &system.api, &plan.kills, started).await;
    let mut report = traffic.await.context("the load task failed")??;
    println!(
        "[chaos] traffic done after {:.1}s; {kills} kills",
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());

    // Heal the bank, then give the reconciler its window to settle everything pending.
    set_chaos(
        &http,
        &system.bank_url,
        &token,
        &ChaosUpdate::Preset(Preset::Healthy),
    )
    .await?;
    let settle_started = Instant::now();
    let backlog = wait_for_backlog(&http, &system.api_url, args.settle_timeout).await;
    match backlog {
        Some(0) => println!(
            "[chaos] bank healthy; reconciler backlog 0 after {:.1}s",
            settle_started.elapsed().as_secs_f64()
        ),
        other => println!(
            "[chaos] reconciler backlog still {} after {:?}",
            other.map_or("unknown".to_owned(), |n| n.to_string()),
            args.settle_timeout
        ),
    }
    let replayed = load::replay_all(&config, &mut report).await?;
    println!("[chaos] replayed all {replayed} keys once more");

    let payments = all_payments(&http, &system.api_url, &system.api_key).await?;
    let charges = whole_ledger(&http, &system.bank_url).await?;
    let audit = audit::audit(&payments, &charges, &report.records);
    println!("{audit}");
    let gave_up = report.payments.get("gave_up").copied().unwrap_or(0);
    let answered = report.payments.values().sum::<u64>() - gave_up;
    println!(
        "chaos result: scenario {}, seed {seed}, {:.0}s, {} payments offered, {answered} answered, {gave_up} gave up, {} payments, {} charges, {kills} kills, {} violations",
        args.scenario.name(),
        args.traffic.duration.as_secs_f64(),
        report.offered,
        audit.payments,
        audit.charges,
        audit.violations()
    );
    Ok(audit.violations())
}

/// SIGKILLs the API at each planned moment (once it answers again after the previous kill).
/// Returns how many kills happened.
async fn kill_on_schedule(
    http: &reqwest::Client,
    api_url: &str,
    killer: &Killer,
    at: &[Duration],
    started: Instant,
) -> usize {
    let mut done = 0;
    for (i, moment) in at.iter().enumerate() {
        tokio::time::sleep_until((started + *moment).into()).await;
        let Some(pid) = killer.kill() else {
            println!("[chaos] kill {}: the API was not running; skipped", i + 1);
            continue;
        };
        done += 1;
        let killed_at = Instant::now();
        println!(
            "[chaos] {:.1}s: SIGKILL to the payment API (pid {pid}), kill {} of {}",
            started.elapsed().as_secs_f64(),
            i + 1,
            at.len()
        );
        // Wait until the restarted API answers, so kills do not pile onto a restart.
        let deadline = killed_at + Duration::from_secs(60);
        tokio::time::sleep(Duration::from_millis(100)).await;
        while Instant::now() < deadline {
            if http
                .get(format!("{api_url}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                println!(
                    "[chaos] the payment API answers again {:.0} ms after the kill",
                    killed_at.elapsed().as_secs_f64() * 1000.0
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done
}

async fn set_chaos(
    http: &reqwest::Client,
    bank_url: &str,
    token: &str,
    update: &ChaosUpdate,
) -> anyhow::Result<()> {
    let response = http
        .put(format!("{bank_url}/v1/chaos"))
        .bearer_auth(token)
        .json(update)
        .send()
        .await
        .context("cannot reach the bank to set chaos")?;
    if !response.status().is_success() {
        bail!(
            "the bank refused the chaos update: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Polls `reconciler.backlog` until it is 0 (or `timeout`); returns the last value seen.
async fn wait_for_backlog(http: &reqwest::Client, api_url: &str, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(response) = http.get(format!("{api_url}/v1/status")).send().await {
            if let Ok(status) = response.json::<serde_json::Value>().await {
                last = status["reconciler"]["backlog"].as_u64().or(last);
            }
        }
        if last == Some(0) || Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(Debug, Deserialize)]
struct PaymentPage {
    data: Vec<Payment>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// Every payment of the tenant, paging `GET /v1/payments`.
async fn all_payments(
    http: &reqwest::Client,
    api_url: &str,
    api_key: &str,
) -> anyhow::Result<Vec<Payment>> {
    let mut payments = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100_000 {
        let mut request = http
            .get(format!("{api_url}/v1/payments"))
            .bearer_auth(api_key)
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: PaymentPage = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("cannot list the API's payments")?
            .json()
            .await
            .context("the API's payment list did not parse")?;
        payments.extend(page.data);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(payments),
        }
    }
    bail!("the API's payment list did not end")
}

/// The whole bank ledger, paging `GET /v1/ledger`; fails if the bank restarted meanwhile.
async fn whole_ledger(http: &reqwest::Client, bank_url: &str) -> anyhow::Result<Vec<Charge>> {
    let mut charges = Vec::new();
    let mut after: Option<String> = None;
    let mut instance: Option<String> = None;
    for _ in 0..100_000 {
        let mut request = http
            .get(format!("{bank_url}/v1/ledger"))
            .query(&[("limit", "1000")]);
        if let Some(after) = &after {
            request = request.query(&[("after", after)]);
        }
        let page: LedgerPage = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("cannot read the bank's ledger")?
            .json()
            .await
            .context("the bank's ledger did not parse")?;
        if instance.get_or_insert_with(|| page.instance_id.clone()) != &page.instance_id {
            bail!("the bank restarted while its ledger was read");
        }
        charges.extend(page.charges);
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => return Ok(charges),
        }
    }
    bail!("the bank's ledger did not end")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let minutes = Duration::from_secs(600);
        let a = plan(ScenarioName::Everything, minutes, 7, None);
        assert_eq!(a, plan(ScenarioName::Everything, minutes, 7, None));
        assert_ne!(a, plan(ScenarioName::Everything, minutes, 8, None));
    }

    #[test]
    fn everything_covers_the_run_with_valid_steps_and_kills_inside_it() {
        for seed in 0..50 {
            for secs in [10, 20, 120, 600, 3600] {
                let duration = Duration::from_secs(secs);
                let p = plan(ScenarioName::Everything, duration, seed, None);
                assert!(!p.steps.is_empty() && p.steps.len() <= MAX_STEPS);
                assert_eq!(p.steps[0].at_ms, 0);
                assert!(p.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                assert!(p.steps.windows(2).all(|w| w[0].preset != w[1].preset));
                assert!(p.kills.len() >= 2);
                assert!(p.kills.windows(2).all(|w| w[0] <= w[1]));
                assert!(p.kills.iter().all(|k| *k >= duration / 10 && *k < duration));
            }
        }
    }

    #[test]
    fn a_long_everything_run_visits_every_preset() {
        let p = plan(ScenarioName::Everything, Duration::from_secs(600), 1, None);
        for preset in Preset::ALL {
            assert!(
                p.steps.iter().any(|s| s.preset == preset),
                "{preset} missing"
            );
        }
        assert_eq!(p.kills.len(), 20);
    }

    #[test]
    fn kills_default_by_scenario_and_can_be_set() {
        let minute = Duration::from_secs(60);
        assert!(plan(ScenarioName::Lossy, minute, 1, None).kills.is_empty());
        assert_eq!(plan(ScenarioName::Crashes, minute, 1, None).kills.len(), 2);
        assert_eq!(plan(ScenarioName::Flaky, minute, 1, Some(3)).kills.len(), 3);
        let outage = plan(ScenarioName::OutageAndRecovery, minute, 1, None);
        let presets: Vec<Preset> = outage.steps.iter().map(|s| s.preset).collect();
        assert_eq!(
            presets,
            [
                Preset::Healthy,
                Preset::Down,
                Preset::Flaky,
                Preset::Healthy
            ]
        );
    }
}
