//! `run chaos`: the chaos verifier. Starts its own system (one or several banks, one or several
//! APIs, supervised), drives open-loop traffic while each bank follows a schedule of chaos presets, the
//! API instances are killed with SIGKILL at random moments (the supervisor restarts them) and
//! the store goes through faults of its own (`store_faults`: SQLite disk full and lock
//! timeouts; PostgreSQL crash-restart, stop and dropped connections), then heals everything,
//! waits for the reconciler to settle every pending payment, replays every key once, and audits
//! the API's payments (with every bank each was sent to) and every answer the clients got
//! against every bank's ledger (docs/contract.md §6, invariants 1–5, 7 and 8). Exits 1 on any
//! violation. For the scenarios that take `bank-a` out, it also prints what the clients saw of
//! the payments started meanwhile (the failover figures of docs/failover.md).
//!
//! Everything random (the schedule, the kill times, the traffic) comes from one seed, printed
//! at the start, so a failing run can be replayed with `--seed`.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use payment_types::{
    bank::{ChaosUpdate, Charge, ChargeStatus, LedgerPage, Preset, ScenarioStep},
    payment::{Payment, PaymentStatus},
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Deserialize;

use crate::{
    audit,
    cli::{ChaosArgs, ScenarioName, Switch, UpArgs},
    load,
    store_faults::{self, FaultKind, PgServer, TmpfsMount},
    supervisor::{Killer, RestartPolicy},
    up::{self, StartOptions},
    webhook_audit, webhook_receiver,
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
    // The API refuses a lease that does not exceed the deadline by a safety margin.
    ("--lease-ms", "5000"),
    // Webhooks: the retry schedule compressed a thousandfold (5 ms, 0.3 s, 1.8 s, 7.2 s, 18 s,
    // 36 s, ...: the 12 attempts span about 4 min 19 s, longer than any run's bad receiver
    // phase), a 1 s attempt bound (the receiver's hangs outlast it) and a quick poll.
    ("--webhook-retry-scale", "0.001"),
    ("--webhook-timeout-ms", WEBHOOK_TIMEOUT_MS),
    ("--webhook-poll-ms", "200"),
];

/// The API's webhook attempt timeout in chaos runs (unless `--api-arg` sets another).
const WEBHOOK_TIMEOUT_MS: &str = "1000";

/// W2's window around each delivery's arrival, in seconds. The API stamps `webhook-timestamp`
/// just before it sends (on this machine's clock, truncated to the second), so an honest
/// delivery arrives 0–1 s after it; 10 s leaves room for a loaded CI machine and is still well
/// under the gaps between later retries (18 s, 36 s at the chaos scale), so a timestamp reused
/// from an earlier attempt, or a replayed old delivery, fails. The reference libraries' 5 minutes
/// would hide that; verifying against the audit's own clock would fail every long run.
const SIGNATURE_TOLERANCE_SECS: i64 = 10;

/// The event types the chaos receiver is registered for: all four.
const EVENT_TYPES: [&str; 4] = [
    "payment.succeeded",
    "payment.declined",
    "payment.failed",
    "payment.pending",
];

/// Payment *i* of a chaos run is sent with amount `AMOUNT_BASE + i`, so each key has an amount
/// of its own and the audit ties ledger charges to keys without trusting the API.
const AMOUNT_BASE: i64 = 1000;

/// The smallest share of offered payments a run must start for its proof to count.
const MIN_STARTED_SHARE: f64 = 0.9;

/// What the bank and the API go through: derived from the scenario, the duration and the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChaosPlan {
    /// Each bank's scenario (`bank-a` first), started with the traffic.
    pub(crate) banks: Vec<Vec<ScenarioStep>>,
    /// For the scenarios that take `bank-a` out while the others stay healthy: when, from the
    /// start of the traffic (the failover figures are about payments started in it).
    pub(crate) outage: Option<(Duration, Duration)>,
    /// When to SIGKILL an API instance, from the start of the traffic (kill *i* goes to
    /// instance *i* mod N). Kept out of the store faults' windows: an API restarting while the
    /// disk is full or the database is down would fail to start, which tests the supervisor's
    /// patience, not the payment flow.
    pub(crate) kills: Vec<Duration>,
    /// Store faults and when they start, from the start of the traffic.
    pub(crate) store_faults: Vec<(Duration, FaultKind)>,
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
    banks: usize,
    kills: Option<usize>,
    fault_kinds: &[FaultKind],
    fault_count: Option<usize>,
) -> ChaosPlan {
    // A stream of its own, so changing the traffic flags does not move the kills.
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6368_616f_735f_706c);
    let at = |share: f64| duration.mul_f64(share);
    let banks = banks.max(1);
    let healthy = || vec![step(Duration::ZERO, Preset::Healthy)];
    // The outage of the failover figures: from 1/6 of the run to its end.
    let outage_from = at(1.0 / 6.0);
    let mut outage = None;
    let first = match scenario {
        ScenarioName::Flaky => vec![step(Duration::ZERO, Preset::Flaky)],
        ScenarioName::Lossy | ScenarioName::Crashes => vec![step(Duration::ZERO, Preset::Lossy)],
        ScenarioName::OutageAndRecovery => vec![
            step(Duration::ZERO, Preset::Healthy),
            step(at(0.15), Preset::Down),
            step(at(0.45), Preset::Flaky),
            step(at(0.70), Preset::Healthy),
        ],
        ScenarioName::Everything => everything(duration, &mut rng),
        ScenarioName::BankADown | ScenarioName::BankABlackhole => {
            outage = Some((outage_from, duration));
            let fault = match scenario {
                ScenarioName::BankADown => Preset::Down,
                _ => Preset::Blackhole,
            };
            vec![
                step(Duration::ZERO, Preset::Healthy),
                step(outage_from, fault),
            ]
        }
        ScenarioName::ALossyBFlaky => vec![step(Duration::ZERO, Preset::Lossy)],
        ScenarioName::AlternatingOutages => alternating(duration, 0),
    };
    let mut schedules = vec![first];
    for i in 1..banks {
        schedules.push(match scenario {
            // Every bank through the same weather.
            ScenarioName::Flaky
            | ScenarioName::Lossy
            | ScenarioName::Crashes
            | ScenarioName::OutageAndRecovery => schedules[0].clone(),
            // A schedule of its own, from a stream of its own: adding banks does not move
            // `bank-a`'s schedule or the kills of a seed.
            ScenarioName::Everything => {
                let mut bank_rng = SmallRng::seed_from_u64(seed ^ (0x6261_6e6b_0000 + i as u64));
                everything(duration, &mut bank_rng)
            }
            ScenarioName::BankADown | ScenarioName::BankABlackhole => healthy(),
            ScenarioName::ALossyBFlaky if i == 1 => vec![step(Duration::ZERO, Preset::Flaky)],
            ScenarioName::ALossyBFlaky => healthy(),
            ScenarioName::AlternatingOutages => alternating(duration, i),
        });
    }
    let default_kills = match scenario {
        ScenarioName::Crashes | ScenarioName::Everything | ScenarioName::AlternatingOutages => {
            ((duration.as_secs() / 30) as usize).max(2)
        }
        _ => 0,
    };
    let count = kills.unwrap_or(default_kills);
    let mut faults_rng = SmallRng::seed_from_u64(seed ^ 0x7374_6f72_655f_6674);
    let store_faults = plan_store_faults(duration, fault_kinds, fault_count, &mut faults_rng);
    let busy = |t: Duration| {
        store_faults.iter().any(|(start, kind)| {
            t + Duration::from_secs(1) >= *start
                && t <= *start + kind.hold() + Duration::from_secs(2)
        })
    };
    let mut kills: Vec<Duration> = (0..count)
        .map(|_| {
            let mut t = at(rng.gen_range(0.1..0.9));
            for _ in 0..100 {
                if !busy(t) {
                    break;
                }
                t = at(rng.gen_range(0.1..0.9));
            }
            t
        })
        .collect();
    kills.sort();
    ChaosPlan {
        banks: schedules,
        outage,
        kills,
        store_faults,
    }
}

/// Bank `index`'s part of `alternating-outages`: the run in eighths, bank *i* down in eighths
/// *i*, *i* + 2, *i* + 4, ... (mod 2 for the first two banks), and for one eighth in four the
/// next bank's outage starts before this one's ends, so both are down at once for a while
/// (then nothing can take a payment: 503, `charged: "no"`). Banks past the second stay healthy.
fn alternating(duration: Duration, index: usize) -> Vec<ScenarioStep> {
    if index > 1 {
        return vec![step(Duration::ZERO, Preset::Healthy)];
    }
    let eighth = duration / 8;
    let mut steps = vec![step(Duration::ZERO, Preset::Healthy)];
    for slot in (index..8).step_by(2) {
        let from = eighth * slot as u32;
        // Slots 2 and 6 overrun by a quarter of an eighth into the other bank's outage.
        let to = if slot % 4 == 2 {
            from + eighth + eighth / 4
        } else {
            from + eighth
        };
        if from == Duration::ZERO {
            steps[0] = step(Duration::ZERO, Preset::Down);
        } else {
            steps.push(step(from, Preset::Down));
        }
        if to < duration {
            steps.push(step(to, Preset::Healthy));
        }
    }
    steps
}

/// `count` store faults (default one per 20 s, at least 2), the kinds taken in turn from a
/// seeded shuffle of `kinds`, each at a random moment inside its own slot of 10–85% of the run.
fn plan_store_faults(
    duration: Duration,
    kinds: &[FaultKind],
    count: Option<usize>,
    rng: &mut SmallRng,
) -> Vec<(Duration, FaultKind)> {
    if kinds.is_empty() {
        return Vec::new();
    }
    let count = count.unwrap_or(((duration.as_secs() / 20) as usize).max(2));
    let mut order = kinds.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let (from, to) = (duration.mul_f64(0.1), duration.mul_f64(0.85));
    let slot = (to - from) / count.max(1) as u32;
    (0..count)
        .map(|i| {
            let kind = order[i % order.len()];
            let start = from + slot * i as u32;
            // Inside the slot, leaving room for the fault's hold when the slot has it.
            let room = slot.saturating_sub(kind.hold());
            (start + room.mul_f64(rng.gen_range(0.0..1.0)), kind)
        })
        .collect()
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

/// The store under test and the means to fault it.
#[derive(Debug)]
struct StoreTarget {
    /// The API's data directory (SQLite's `payments.db` lives there).
    data_dir: PathBuf,
    /// PostgreSQL: the server the runner owns, if it does.
    pg: Option<Arc<PgServer>>,
    /// PostgreSQL: the database URL (owned server or `--database-url`).
    database_url: Option<String>,
    /// Size of the tmpfs (disk-full is possible), in MiB.
    disk_mb: Option<u64>,
}

/// `run chaos`.
pub(crate) async fn command(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.traffic.seed.unwrap_or_else(rand::random);
    let duration = args.traffic.duration;
    let scenario = args.scenario.name();
    let postgres = args.postgres || args.database_url.is_some();
    let banks = usize::from(args.banks.unwrap_or(args.scenario.default_banks()));
    if args.api_instances == 0 {
        bail!("--api-instances must be at least 1");
    }
    if args.api_instances > 1 && !postgres {
        bail!(
            "--api-instances {} needs PostgreSQL (several API processes cannot share one SQLite file): pass --postgres for a throwaway server, or --database-url",
            args.api_instances
        );
    }
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

    // Which store faults this environment allows; the disk-full fault needs its tmpfs now,
    // before anything writes into the data directory.
    let root = store_faults::is_root();
    let mut faults = store_faults::available(
        &args.store_faults,
        postgres.then_some(args.database_url.is_none()),
        root,
    )?;
    let mut disk: Option<TmpfsMount> = None;
    if faults.kinds.contains(&FaultKind::DiskFull) {
        match TmpfsMount::mount(&data_dir, args.store_disk_mb) {
            Ok(mount) => disk = Some(mount),
            Err(error) if args.store_faults == store_faults::StoreFaultChoice::Auto => {
                faults.kinds.retain(|k| *k != FaultKind::DiskFull);
                faults.skipped.push((
                    FaultKind::DiskFull,
                    format!("cannot mount a tmpfs on {}: {error:#}", data_dir.display()),
                ));
            }
            Err(error) => return Err(error.context("--store-faults disk-full")),
        }
    }
    let plan = plan(
        args.scenario,
        duration,
        seed,
        banks,
        args.kills,
        &faults.kinds,
        args.store_fault_count,
    );

    println!(
        "[chaos] scenario {scenario}, seed {seed}, {:?} of traffic at {}/s, {banks} bank{}, {} API kills, {} store faults, {} API instance{} on {}",
        duration,
        args.traffic.rate,
        if banks == 1 { "" } else { "s" },
        plan.kills.len(),
        plan.store_faults.len(),
        args.api_instances,
        if args.api_instances == 1 { "" } else { "s" },
        match (args.postgres, &args.database_url) {
            (true, _) => "a throwaway PostgreSQL server".to_owned(),
            (_, Some(_)) => "PostgreSQL (--database-url)".to_owned(),
            _ => match &disk {
                Some(d) => format!("SQLite in a {} MiB tmpfs", d.size_mb()),
                None => "SQLite".to_owned(),
            },
        }
    );
    for (name, steps) in up::BANKS.iter().zip(&plan.banks) {
        let schedule: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1}s {}", s.at_ms as f64 / 1000.0, s.preset))
            .collect();
        println!("[chaos] {name} schedule: {}", schedule.join(", "));
    }
    let kills: Vec<String> = plan
        .kills
        .iter()
        .map(|k| format!("{:.1}s", k.as_secs_f64()))
        .collect();
    println!("[chaos] kills at: {}", kills.join(", "));
    let planned: Vec<String> = plan
        .store_faults
        .iter()
        .map(|(at, kind)| format!("{:.1}s {}", at.as_secs_f64(), kind.name()))
        .collect();
    println!(
        "[chaos] store faults ({}): {}",
        match &args.store_faults {
            store_faults::StoreFaultChoice::None => "none".to_owned(),
            store_faults::StoreFaultChoice::Auto => "auto".to_owned(),
            store_faults::StoreFaultChoice::Only(k) =>
                k.iter().map(|k| k.0.name()).collect::<Vec<_>>().join(","),
        },
        if planned.is_empty() {
            "none".to_owned()
        } else {
            planned.join(", ")
        }
    );
    for (kind, reason) in &faults.skipped {
        println!("[chaos] store fault {} skipped: {reason}", kind.name());
    }
    let receiver_schedule = (args.webhooks == Switch::On).then(|| {
        let timeout_ms: u64 = api_flag_value(&args.api_arg, "--webhook-timeout-ms")
            .unwrap_or(WEBHOOK_TIMEOUT_MS)
            .parse()
            .unwrap_or(10_000);
        webhook_receiver::schedule(duration, seed, Duration::from_millis(timeout_ms))
    });
    match &receiver_schedule {
        Some(schedule) => println!("[chaos] webhook receiver schedule: {schedule}"),
        None => println!("[chaos] webhooks: off"),
    }
    println!(
        "[chaos] replay with: run chaos --scenario {scenario} --duration {}s --seed {seed} --rate {} --banks {banks}{}{}{}{}",
        duration.as_secs(),
        args.traffic.rate,
        args.kills
            .map(|k| format!(" --kills {k}"))
            .unwrap_or_default(),
        if args.postgres { " --postgres" } else { "" },
        if args.api_instances > 1 {
            format!(" --api-instances {}", args.api_instances)
        } else {
            String::new()
        },
        args.store_fault_count
            .map(|n| format!(" --store-fault-count {n}"))
            .unwrap_or_default()
            + if args.webhooks == Switch::Off {
                " --webhooks off"
            } else {
                ""
            }
    );

    let pg = if args.postgres {
        println!("[chaos] starting a throwaway PostgreSQL server");
        let server = tokio::task::spawn_blocking(store_faults::start_pg)
            .await
            .context("the PostgreSQL start-up task failed")?
            .context("cannot start a throwaway PostgreSQL server")?;
        Some(Arc::new(server))
    } else {
        None
    };
    let database_url = pg
        .as_ref()
        .map(|pg| pg.url().to_owned())
        .or_else(|| args.database_url.clone());

    let up_args = UpArgs {
        api_port: 0,
        bank_port: 0,
        banks: banks as u8,
        dashboard_port: 0,
        data_dir: data_dir.clone(),
        database_url: database_url.clone(),
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
        child_env: {
            let mut env = if args.verbose {
                Vec::new()
            } else {
                // Errors only, and not the access log's line for every 5xx chaos provokes.
                vec![("RUST_LOG".to_owned(), "error,tower_http=off".to_owned())]
            };
            // The receiver is on loopback, which the API refuses by default (SSRF;
            // docs/webhooks.md). By environment: a flag given twice would stop the API.
            env.push((
                "PAYMENT_API_WEBHOOK_ALLOW_PRIVATE_URLS".to_owned(),
                "true".to_owned(),
            ));
            env
        },
        api_instances: args.api_instances,
    };
    let Some(mut system) = up::start(&up_args, options).await? else {
        return Ok(());
    };
    let instances: Vec<String> = system
        .apis
        .iter()
        .map(|(name, url)| {
            let pid = system.supervisor.child(name).map(|c| c.pid()).unwrap_or(0);
            format!("{url} (pid {pid})")
        })
        .collect();
    let bank_list: Vec<String> = system
        .banks
        .iter()
        .map(|b| format!("{} {}", b.name, b.url))
        .collect();
    println!(
        "[chaos] system up: API {}, banks {}, data dir {}{}",
        instances.join(", "),
        bank_list.join(", "),
        system.data_dir.display(),
        if args.dashboard {
            format!(", dashboard {}", system.dashboard_url)
        } else {
            String::new()
        }
    );

    let mut apis = Vec::new();
    for (name, url) in &system.apis {
        let killer = system
            .supervisor
            .child(name)
            .ok_or_else(|| anyhow!("the {name} is not running"))?
            .killer();
        apis.push(Api {
            name,
            url: url.clone(),
            killer,
        });
    }
    let target = Target {
        apis,
        banks: system.banks.clone(),
        api_key: system.creds.api_key.clone(),
        operator_key: system.creds.operator_key.clone(),
        store: StoreTarget {
            data_dir: system.data_dir.clone(),
            pg: pg.clone(),
            database_url,
            disk_mb: disk.as_ref().map(TmpfsMount::size_mb),
        },
    };
    let outcome = tokio::select! {
        outcome = verify(&target, &args, &plan, receiver_schedule, seed) => outcome,
        reason = system.supervisor.fatal() => Err(anyhow!("the system failed: {reason}")),
        () = service_runtime::shutdown_signal() => Err(anyhow!("interrupted")),
    };
    println!("[chaos] stopping the system");
    let data_dir = system.data_dir.clone();
    system.supervisor.stop().await;
    let clean = matches!(outcome, Ok(Verdict { violations: 0, .. }));
    if let Some(mount) = disk.take() {
        if !clean || args.keep_data {
            let copy = PathBuf::from(format!("{}-store", data_dir.display()));
            match mount.copy_out(&copy) {
                Ok(()) => println!(
                    "[chaos] the store (on a tmpfs, unmounted now) was copied to {}",
                    copy.display()
                ),
                Err(error) => println!("[chaos] cannot copy the store out of the tmpfs: {error:#}"),
            }
        }
        drop(mount);
    }
    drop(target);
    drop(pg);
    if clean && fresh_dir && !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    } else {
        println!("[chaos] data kept in {}", data_dir.display());
    }
    let verdict = outcome?;
    if verdict.violations > 0 {
        bail!(
            "{} invariant violations (replay with --seed {seed})",
            verdict.violations
        );
    }
    if verdict.started_share < MIN_STARTED_SHARE {
        bail!(
            "only {:.1}% of the offered payments were started (at least {:.0}% needed for the run to prove anything): raise --max-in-flight or lower --rate",
            verdict.started_share * 100.0,
            MIN_STARTED_SHARE * 100.0
        );
    }
    Ok(())
}

/// The value `overrides` (`--api-arg`s) give `flag` (`--flag V` or `--flag=V`), if any.
fn api_flag_value<'a>(overrides: &'a [String], flag: &str) -> Option<&'a str> {
    overrides.iter().enumerate().find_map(|(i, arg)| {
        if arg == flag {
            overrides.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

fn has_files(dir: &std::path::Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    })
}

/// One API instance, as the verifier reaches it.
#[derive(Debug)]
struct Api {
    name: &'static str,
    url: String,
    /// Kills the instance's process.
    killer: Killer,
}

/// The system under test, as the verifier reaches it.
#[derive(Debug)]
struct Target {
    apis: Vec<Api>,
    /// Every bank, `bank-a` first (the API's priority order).
    banks: Vec<up::Bank>,
    api_key: String,
    /// For `/v1/status` (the reconciler's backlog): an operator route.
    operator_key: String,
    store: StoreTarget,
}

/// What a run found.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    violations: usize,
    started_share: f64,
}

/// Traffic, chaos, kills and store faults; then heal, settle, replay and audit.
async fn verify(
    system: &Target,
    args: &ChaosArgs,
    plan: &ChaosPlan,
    receiver_schedule: Option<webhook_receiver::Schedule>,
    seed: u64,
) -> anyhow::Result<Verdict> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build an HTTP client")?;
    let mut tokens = Vec::new();
    for bank in &system.banks {
        let token = std::fs::read_to_string(&bank.token_file)
            .with_context(|| format!("cannot read the admin token of {}", bank.name))?;
        tokens.push(token.trim().to_owned());
    }
    let api_url = system.apis[0].url.clone();
    let mut config = load::config_from(
        &args.traffic,
        api_url.clone(),
        system.api_key.clone(),
        seed,
        format!("chaos-{seed}"),
    );
    config.api_urls = system.apis.iter().map(|a| a.url.clone()).collect();
    config.unique_amounts = Some(AMOUNT_BASE);
    // A faulted store holds requests for seconds (a lock timeout is 5 s); the bound must hold
    // them without shedding what the run offers.
    let sized =
        (args.traffic.rate * (config.request_timeout.as_secs_f64() + 2.0) * 4.0).ceil() as usize;
    if sized > config.max_in_flight {
        println!(
            "[chaos] in-flight bound raised from {} to {sized} (rate × (request timeout + 2 s) × 4), so held requests do not shed the offered load",
            config.max_in_flight
        );
        config.max_in_flight = sized;
    }

    let receiver = match receiver_schedule {
        Some(schedule) => Some(start_receiver(&http, &api_url, &system.api_key, schedule).await?),
        None => None,
    };

    for ((bank, token), steps) in system.banks.iter().zip(&tokens).zip(&plan.banks) {
        set_chaos(&http, bank, token, &ChaosUpdate::Scenario(steps.clone())).await?;
    }
    let started = Instant::now();
    if let Some((receiver, _)) = &receiver {
        receiver.begin(started);
    }
    let started_wall = std::time::SystemTime::now();
    let traffic = tokio::spawn(load::run(config.clone(), std::future::pending()));
    let (kills, injected) = tokio::join!(
        kill_on_schedule(&http, &system.apis, &plan.kills, started),
        inject_store_faults(&system.store, &plan.store_faults, started),
    );
    let mut report = traffic.await.context("the load task failed")??;
    println!(
        "[chaos] traffic done after {:.1}s; {kills} kills, {injected} store faults injected",
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());

    // Heal the banks, then give the reconciler its window to settle everything pending.
    for (bank, token) in system.banks.iter().zip(&tokens) {
        set_chaos(&http, bank, token, &ChaosUpdate::Preset(Preset::Healthy)).await?;
    }
    let settle_started = Instant::now();
    for api in &system.apis {
        let left = args.settle_timeout.saturating_sub(settle_started.elapsed());
        let backlog = wait_for_backlog(
            &http,
            &api.url,
            &system.operator_key,
            "/reconciler/backlog",
            left,
        )
        .await;
        match backlog {
            Some(0) => println!(
                "[chaos] bank healthy; {} reconciler backlog 0 after {:.1}s",
                api.name,
                settle_started.elapsed().as_secs_f64()
            ),
            other => println!(
                "[chaos] {} reconciler backlog still {} after {:?}",
                api.name,
                other.map_or("unknown".to_owned(), |n| n.to_string()),
                args.settle_timeout
            ),
        }
    }
    let replayed = load::replay_all(&config, &mut report).await?;
    println!("[chaos] replayed all {replayed} keys once more");

    // Heal the receiver, then wait for every instance's webhook backlog to drain.
    if let Some((receiver, _)) = &receiver {
        receiver.heal();
        let drain_started = Instant::now();
        for api in &system.apis {
            let left = args.settle_timeout.saturating_sub(drain_started.elapsed());
            let backlog = wait_for_backlog(
                &http,
                &api.url,
                &system.operator_key,
                "/webhooks/backlog",
                left,
            )
            .await;
            match backlog {
                Some(0) => println!(
                    "[chaos] webhook receiver healthy; {} webhook backlog 0 after {:.1}s",
                    api.name,
                    drain_started.elapsed().as_secs_f64()
                ),
                other => println!(
                    "[chaos] {} webhook backlog still {} after {:?}",
                    api.name,
                    other.map_or("unknown".to_owned(), |n| n.to_string()),
                    args.settle_timeout
                ),
            }
        }
    }

    let (payments, routes) = all_payments(&http, &api_url, &system.api_key).await?;
    let mut ledgers = Vec::new();
    for bank in &system.banks {
        ledgers.push(audit::BankLedger {
            bank: bank.name.to_owned(),
            charges: whole_ledger(&http, bank).await?,
        });
    }
    let key_by_amount = keys_by_amount(&report.bodies);
    if let Some(window) = plan.outage {
        let figures = outage_figures(
            &report.records,
            &payments,
            started_wall + window.0,
            started_wall + window.1,
            system.banks[0].name,
        );
        println!(
            "[chaos] {} out from {:.1}s to {:.1}s: {figures}",
            system.banks[0].name,
            window.0.as_secs_f64(),
            window.1.as_secs_f64()
        );
    }
    let audit = audit::audit_banks(
        &payments,
        &routes,
        &ledgers,
        &report.records,
        &key_by_amount,
    );
    println!("{audit}");
    let per_bank: Vec<String> = ledgers
        .iter()
        .map(|l| {
            let won = l
                .charges
                .iter()
                .filter(|c| c.status == ChargeStatus::Succeeded)
                .count();
            let with = payments.iter().filter(|p| p.bank == l.bank).count();
            format!("{} {won} charges succeeded, {with} payments", l.bank)
        })
        .collect();
    println!("[chaos] per bank: {}", per_bank.join("; "));
    let webhooks = receiver.as_ref().map(|(receiver, secret)| {
        let finals: Vec<webhook_audit::FinalPayment> = payments
            .iter()
            .filter(|p| p.status != PaymentStatus::Pending)
            .map(|p| webhook_audit::FinalPayment {
                id: p.id.to_string(),
                status: p.status.as_str().to_owned(),
            })
            .collect();
        webhook_audit::audit(
            &receiver.deliveries(),
            &finals,
            secret,
            SIGNATURE_TOLERANCE_SECS,
        )
    });
    if let Some(webhooks) = &webhooks {
        println!("{webhooks}");
    }
    let violations = audit.violations() + webhooks.as_ref().map_or(0, |w| w.violations());
    let gave_up = report.payments.get("gave_up").copied().unwrap_or(0);
    let answered = report.payments.values().sum::<u64>() - gave_up;
    println!(
        "chaos result: scenario {}, seed {seed}, {:.0}s, {} API instances, {} payments offered, {} started ({:.1}%), {answered} answered, {gave_up} gave up, {} payments, {} answered 201, {} charges, {} charges succeeded, {} keys audited, {} pending, {kills} kills, {injected} store faults, {} events delivered, {violations} violations",
        args.scenario.name(),
        args.traffic.duration.as_secs_f64(),
        system.apis.len(),
        report.offered,
        report.started(),
        report.started_share() * 100.0,
        audit.payments,
        audit.keys_answered_201,
        audit.charges,
        audit.succeeded_charges,
        audit.keys,
        audit.pending,
        webhooks.as_ref().map_or(0, |w| w.events_delivered),
    );
    Ok(Verdict {
        violations,
        started_share: report.started_share(),
    })
}

/// What the clients saw of the payments they started while `bank-a` was out: the failover
/// figures of docs/failover.md.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OutageFigures {
    /// Keys whose first request was sent inside the outage.
    pub(crate) started: usize,
    /// The answers to their first requests: 201, 402, 202, and anything else (refusals, no
    /// answer).
    pub(crate) succeeded: usize,
    pub(crate) declined: usize,
    pub(crate) pending: usize,
    pub(crate) other: usize,
    /// The other answers by status, code and `charged` (as the load table tallies them).
    pub(crate) other_kinds: std::collections::BTreeMap<String, usize>,
    /// p50 and p99 of the first request's latency, over the 201 answers, in ms.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Payments started in the outage that ended with another bank than the one out.
    pub(crate) failed_over: usize,
    /// First answers 202 naming the bank that was out: pending there.
    pub(crate) pending_at_out: usize,
    /// Of those, payments that ended with another bank: must be 0 (a payment that may have
    /// been processed never moves).
    pub(crate) moved_after_pending: usize,
}

impl std::fmt::Display for OutageFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |n: usize| {
            if self.started == 0 {
                0.0
            } else {
                n as f64 * 100.0 / self.started as f64
            }
        };
        write!(
            f,
            "{} payments started; first answers 201 {} ({:.2}%), 402 {}, 202 {}, other {}{} ({:.2}% decided); 201 latency p50 {:.1} ms, p99 {:.1} ms; {} failed over to another bank; {} pending at the bank out, {} of them moved to another bank",
            self.started,
            self.succeeded,
            share(self.succeeded),
            self.declined,
            self.pending,
            self.other,
            if self.other_kinds.is_empty() {
                String::new()
            } else {
                let kinds: Vec<String> = self
                    .other_kinds
                    .iter()
                    .map(|(kind, n)| format!("{kind}: {n}"))
                    .collect();
                format!(" [{}]", kinds.join(", "))
            },
            share(self.succeeded + self.declined),
            self.p50_ms,
            self.p99_ms,
            self.failed_over,
            self.pending_at_out,
            self.moved_after_pending
        )
    }
}

/// The figures of the keys whose first request was sent in `[from, to)`, `out` being the bank
/// that was out then.
pub(crate) fn outage_figures(
    records: &[audit::KeyRecord],
    payments: &[Payment],
    from: std::time::SystemTime,
    to: std::time::SystemTime,
    out: &str,
) -> OutageFigures {
    let bank_of: HashMap<&str, &str> = payments
        .iter()
        .filter_map(|p| {
            let key = p.metadata.as_ref()?.get(audit::KEY_FIELD)?.as_str()?;
            Some((key, p.bank.as_str()))
        })
        .collect();
    let mut figures = OutageFigures::default();
    let mut latencies = Vec::new();
    for record in records {
        // The answer to the key's first request. A double click sends two at once, and the one
        // that loses the race is answered 409 `idempotency_key_in_use`: that says the other is in
        // flight, not what the payment got, so it counts only when nothing else was answered.
        let in_flight = |a: &&audit::ClientAnswer| {
            a.status == 409 && a.code().as_deref() == Some("idempotency_key_in_use")
        };
        let Some(first) = record
            .answers
            .iter()
            .filter(|a| !in_flight(a))
            .min_by_key(|a| a.sent_at)
            .or_else(|| record.answers.iter().min_by_key(|a| a.sent_at))
        else {
            continue;
        };
        if first.sent_at < from || first.sent_at >= to {
            continue;
        }
        figures.started += 1;
        match first.status {
            201 => {
                figures.succeeded += 1;
                let latency = first
                    .received_at
                    .duration_since(first.sent_at)
                    .unwrap_or_default();
                latencies.push(latency.as_secs_f64() * 1000.0);
            }
            402 => figures.declined += 1,
            202 => figures.pending += 1,
            _ => {
                figures.other += 1;
                *figures.other_kinds.entry(first.tally_label()).or_default() += 1;
            }
        }
        let final_bank = bank_of.get(record.key.as_str()).copied();
        if final_bank.is_some_and(|bank| bank != out) {
            figures.failed_over += 1;
        }
        let pending_here = first.status == 202
            && serde_json::from_slice::<serde_json::Value>(&first.body)
                .is_ok_and(|body| body["bank"].as_str() == Some(out));
        if pending_here {
            figures.pending_at_out += 1;
            if final_bank.is_some_and(|bank| bank != out) {
                figures.moved_after_pending += 1;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    figures.p50_ms = quantile(0.50);
    figures.p99_ms = quantile(0.99);
    figures
}

/// Each key's amount → the key, for amounts that are unique (all of them in a chaos run).
fn keys_by_amount(
    bodies: &std::collections::BTreeMap<String, serde_json::Value>,
) -> HashMap<i64, String> {
    let mut seen: HashMap<i64, Option<String>> = HashMap::new();
    for (key, body) in bodies {
        if let Some(amount) = body["amount"].as_i64() {
            seen.entry(amount)
                .and_modify(|k| *k = None)
                .or_insert_with(|| Some(key.clone()));
        }
    }
    seen.into_iter()
        .filter_map(|(amount, key)| Some((amount, key?)))
        .collect()
}

/// Injects each planned store fault at its moment; returns how many were injected.
async fn inject_store_faults(
    store: &StoreTarget,
    faults: &[(Duration, FaultKind)],
    started: Instant,
) -> usize {
    let mut done = 0;
    for (i, (moment, kind)) in faults.iter().enumerate() {
        tokio::time::sleep_until((started + *moment).into()).await;
        let at = started.elapsed().as_secs_f64();
        let label = format!("store fault {} of {}: {}", i + 1, faults.len(), kind.name());
        match inject(store, *kind).await {
            Ok(what) => {
                done += 1;
                println!("[chaos] {at:.1}s: {label}: {what}");
            }
            Err(error) => println!("[chaos] {at:.1}s: {label} FAILED to inject: {error:#}"),
        }
    }
    done
}

/// One store fault, from start to end; returns what was done.
async fn inject(store: &StoreTarget, kind: FaultKind) -> anyhow::Result<String> {
    let hold = kind.hold();
    let blocking = |f: Box<dyn FnOnce() -> anyhow::Result<String> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .context("the fault task failed")?
    };
    match kind {
        FaultKind::DiskFull => {
            let dir = store.data_dir.clone();
            let max_mb = store
                .disk_mb
                .ok_or_else(|| anyhow!("the data directory is not a tmpfs"))?;
            let filled = {
                let dir = dir.clone();
                blocking(Box::new(move || {
                    // Empty the WAL first, so the API's writes need new space at once.
                    let frames = store_faults::truncate_wal(&dir.join("payments.db"))?;
                    let mb = store_faults::fill_disk(&dir, max_mb)?;
                    Ok(format!(
                        "WAL checkpointed ({frames} frames) and truncated, disk filled ({mb} MiB of filler"
                    ))
                }))
                .await?
            };
            tokio::time::sleep(hold).await;
            store_faults::free_disk(&dir)?;
            Ok(format!(
                "{filled}, writes get ENOSPC), held {hold:?}, freed"
            ))
        }
        FaultKind::Lock => {
            let db = store.data_dir.join("payments.db");
            blocking(Box::new(move || {
                let waited = store_faults::hold_sqlite_lock(&db, hold)?;
                Ok(format!(
                    "SQLite write lock (BEGIN IMMEDIATE) held {hold:?}, longer than the API's 5 s busy timeout (took {:.0} ms to get)",
                    waited.as_secs_f64() * 1000.0
                ))
            }))
            .await
        }
        FaultKind::PgRestart => {
            let pg = owned_pg(store)?;
            let begun = Instant::now();
            blocking(Box::new(move || {
                pg.crash_restart().map_err(anyhow::Error::msg)?;
                Ok(String::new())
            }))
            .await?;
            Ok(format!(
                "PostgreSQL crash-restarted (pg_ctl restart -m immediate), accepting connections again after {:.1}s",
                begun.elapsed().as_secs_f64()
            ))
        }
        FaultKind::PgStop => {
            let pg = owned_pg(store)?;
            {
                let pg = pg.clone();
                blocking(Box::new(move || {
                    pg.stop().map_err(anyhow::Error::msg)?;
                    Ok(String::new())
                }))
                .await?;
            }
            tokio::time::sleep(hold).await;
            let begun = Instant::now();
            blocking(Box::new(move || {
                pg.start_again().map_err(anyhow::Error::msg)?;
                Ok(String::new())
            }))
            .await?;
            Ok(format!(
                "PostgreSQL stopped (immediate) for {hold:?}, then started ({:.1}s to accept connections)",
                begun.elapsed().as_secs_f64()
            ))
        }
        FaultKind::PgDrop => {
            let url = store
                .database_url
                .as_deref()
                .ok_or_else(|| anyhow!("no PostgreSQL database"))?;
            let dropped = store_faults::drop_pg_connections(url).await?;
            Ok(format!(
                "{dropped} PostgreSQL connections terminated (pg_terminate_backend)"
            ))
        }
    }
}

fn owned_pg(store: &StoreTarget) -> anyhow::Result<Arc<PgServer>> {
    store
        .pg
        .clone()
        .ok_or_else(|| anyhow!("the runner does not own the PostgreSQL server"))
}

/// SIGKILLs an API instance at each planned moment, in turn across the instances (once the
/// killed one answers again). Returns how many kills happened.
async fn kill_on_schedule(
    http: &reqwest::Client,
    apis: &[Api],
    at: &[Duration],
    started: Instant,
) -> usize {
    let mut done = 0;
    for (i, moment) in at.iter().enumerate() {
        tokio::time::sleep_until((started + *moment).into()).await;
        let api = &apis[i % apis.len()];
        let Some(pid) = api.killer.kill() else {
            println!(
                "[chaos] kill {}: the {} was not running; skipped",
                i + 1,
                api.name
            );
            continue;
        };
        let api_url = &api.url;
        done += 1;
        let killed_at = Instant::now();
        println!(
            "[chaos] {:.1}s: SIGKILL to the {} (pid {pid}), kill {} of {}",
            started.elapsed().as_secs_f64(),
            api.name,
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
                    "[chaos] the {} answers again {:.0} ms after the kill",
                    api.name,
                    killed_at.elapsed().as_secs_f64() * 1000.0
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done
}

/// Starts the webhook receiver and registers it for the tenant (all four event types); returns
/// it with the secret the API answered.
async fn start_receiver(
    http: &reqwest::Client,
    api_url: &str,
    api_key: &str,
    schedule: webhook_receiver::Schedule,
) -> anyhow::Result<(webhook_receiver::Receiver, webhooks::Secret)> {
    let receiver = webhook_receiver::Receiver::start(schedule).await?;
    let body = serde_json::json!({"url": receiver.url, "event_types": EVENT_TYPES});
    // A store that is still opening may answer 503 for a moment.
    let mut last = String::new();
    for _ in 0..20 {
        let answer = http
            .post(format!("{api_url}/v1/webhook-endpoints"))
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                let endpoint: serde_json::Value = response
                    .json()
                    .await
                    .context("the webhook endpoint's answer did not parse")?;
                let secret = endpoint["secret"]
                    .as_str()
                    .ok_or_else(|| anyhow!("the webhook endpoint's answer has no secret"))?;
                let secret = webhooks::Secret::parse(secret)
                    .context("the webhook endpoint's secret does not parse")?;
                println!(
                    "[chaos] webhook receiver {} registered as endpoint {} for {}",
                    receiver.url,
                    endpoint["id"].as_str().unwrap_or("?"),
                    EVENT_TYPES.join(", ")
                );
                return Ok((receiver, secret));
            }
            Ok(response) if response.status().is_server_error() => {
                last = format!("{}", response.status());
            }
            Ok(response) => bail!(
                "the API refused the webhook endpoint: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("cannot register the webhook receiver: {last}")
}

async fn set_chaos(
    http: &reqwest::Client,
    bank: &up::Bank,
    token: &str,
    update: &ChaosUpdate,
) -> anyhow::Result<()> {
    let response = http
        .put(format!("{}/v1/chaos", bank.url))
        .bearer_auth(token)
        .json(update)
        .send()
        .await
        .with_context(|| format!("cannot reach {} to set chaos", bank.name))?;
    if !response.status().is_success() {
        bail!(
            "{} refused the chaos update: {} {}",
            bank.name,
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Polls the backlog at `pointer` in `/v1/status` (`/reconciler/backlog`, `/webhooks/backlog`)
/// until it is 0 (or `timeout`); returns the last value seen.
async fn wait_for_backlog(
    http: &reqwest::Client,
    api_url: &str,
    operator_key: &str,
    pointer: &str,
    timeout: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let status = http
            .get(format!("{api_url}/v1/status"))
            .bearer_auth(operator_key)
            .send()
            .await;
        if let Ok(response) = status {
            if let Ok(status) = response.json::<serde_json::Value>().await {
                last = status.pointer(pointer).and_then(|v| v.as_u64()).or(last);
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
    data: Vec<RoutedPayment>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// A payment with `?expand=routes`: every bank it was ever sent to.
#[derive(Debug, Deserialize)]
struct RoutedPayment {
    #[serde(flatten)]
    payment: Payment,
    #[serde(default)]
    routes: Vec<RouteView>,
}

/// One entry of a payment's `routes`.
#[derive(Debug, Deserialize)]
struct RouteView {
    bank: String,
    reference: String,
}

/// Every payment of the tenant with its routes, paging `GET /v1/payments?expand=routes`.
async fn all_payments(
    http: &reqwest::Client,
    api_url: &str,
    api_key: &str,
) -> anyhow::Result<(Vec<Payment>, HashMap<uuid::Uuid, Vec<audit::Route>>)> {
    let mut payments = Vec::new();
    let mut routes = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100_000 {
        let mut request = http
            .get(format!("{api_url}/v1/payments"))
            .bearer_auth(api_key)
            .query(&[("limit", "100"), ("expand", "routes")]);
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
        for routed in page.data {
            let route = routed
                .routes
                .into_iter()
                .map(|r| audit::Route {
                    bank: r.bank,
                    reference: r.reference,
                })
                .collect();
            routes.insert(routed.payment.id, route);
            payments.push(routed.payment);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((payments, routes)),
        }
    }
    bail!("the API's payment list did not end")
}

/// The whole bank ledger, paging `GET /v1/ledger`; fails if the bank restarted meanwhile.
async fn whole_ledger(http: &reqwest::Client, bank: &up::Bank) -> anyhow::Result<Vec<Charge>> {
    let bank_url = &bank.url;
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
            bail!("{} restarted while its ledger was read", bank.name);
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
        let a = plan(ScenarioName::Everything, minutes, 7, 1, None, &[], None);
        assert_eq!(
            a,
            plan(ScenarioName::Everything, minutes, 7, 1, None, &[], None)
        );
        assert_ne!(
            a,
            plan(ScenarioName::Everything, minutes, 8, 1, None, &[], None)
        );
    }

    #[test]
    fn everything_covers_the_run_with_valid_steps_and_kills_inside_it() {
        for seed in 0..50 {
            for secs in [10, 20, 120, 600, 3600] {
                let duration = Duration::from_secs(secs);
                let p = plan(ScenarioName::Everything, duration, seed, 1, None, &[], None);
                assert!(!p.banks[0].is_empty() && p.banks[0].len() <= MAX_STEPS);
                assert_eq!(p.banks[0][0].at_ms, 0);
                assert!(p.banks[0].windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                assert!(p.banks[0].windows(2).all(|w| w[0].preset != w[1].preset));
                assert!(p.kills.len() >= 2);
                assert!(p.kills.windows(2).all(|w| w[0] <= w[1]));
                assert!(p.kills.iter().all(|k| *k >= duration / 10 && *k < duration));
            }
        }
    }

    #[test]
    fn a_long_everything_run_visits_every_preset() {
        let p = plan(
            ScenarioName::Everything,
            Duration::from_secs(600),
            1,
            1,
            None,
            &[],
            None,
        );
        for preset in Preset::ALL {
            assert!(
                p.banks[0].iter().any(|s| s.preset == preset),
                "{preset} missing"
            );
        }
        assert_eq!(p.kills.len(), 20);
    }

    #[test]
    fn kills_default_by_scenario_and_can_be_set() {
        let minute = Duration::from_secs(60);
        assert!(plan(ScenarioName::Lossy, minute, 1, 1, None, &[], None)
            .kills
            .is_empty());
        assert_eq!(
            plan(ScenarioName::Crashes, minute, 1, 1, None, &[], None)
                .kills
                .len(),
            2
        );
        assert_eq!(
            plan(ScenarioName::Flaky, minute, 1, 1, Some(3), &[], None)
                .kills
                .len(),
            3
        );
        let outage = plan(
            ScenarioName::OutageAndRecovery,
            minute,
            1,
            1,
            None,
            &[],
            None,
        );
        let presets: Vec<Preset> = outage.banks[0].iter().map(|s| s.preset).collect();
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

    #[test]
    fn store_faults_take_turns_inside_the_run_and_kills_keep_out_of_their_windows() {
        let kinds = [FaultKind::PgRestart, FaultKind::PgStop, FaultKind::PgDrop];
        for seed in 0..50 {
            let duration = Duration::from_secs(40);
            let p = plan(
                ScenarioName::Everything,
                duration,
                seed,
                1,
                Some(3),
                &kinds,
                Some(3),
            );
            assert_eq!(p.store_faults.len(), 3);
            let mut seen: Vec<FaultKind> = p.store_faults.iter().map(|f| f.1).collect();
            seen.sort();
            assert_eq!(seen, kinds, "each kind once");
            assert!(p.store_faults.windows(2).all(|w| w[0].0 < w[1].0));
            for (start, kind) in &p.store_faults {
                assert!(*start >= duration / 10 && *start + kind.hold() <= duration);
            }
            assert_eq!(
                p,
                plan(
                    ScenarioName::Everything,
                    duration,
                    seed,
                    1,
                    Some(3),
                    &kinds,
                    Some(3)
                )
            );
        }
        let sqlite = plan(
            ScenarioName::Everything,
            Duration::from_secs(600),
            3,
            1,
            None,
            &[FaultKind::DiskFull, FaultKind::Lock],
            None,
        );
        assert_eq!(sqlite.store_faults.len(), 30);
        for kill in &sqlite.kills {
            assert!(
                sqlite
                    .store_faults
                    .iter()
                    .all(|(start, kind)| *kill + Duration::from_secs(1) < *start
                        || *kill > *start + kind.hold() + Duration::from_secs(2)),
                "kill at {kill:?} inside a fault window"
            );
        }
        assert!(plan(
            ScenarioName::Flaky,
            Duration::from_secs(60),
            1,
            1,
            None,
            &[],
            None
        )
        .store_faults
        .is_empty());
    }

    #[test]
    fn an_api_arg_overrides_a_flag_in_either_form() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let flag = "--webhook-timeout-ms";
        assert_eq!(
            api_flag_value(&args(&["--x", "1", flag, "2500"]), flag),
            Some("2500")
        );
        assert_eq!(
            api_flag_value(&args(&["--webhook-timeout-ms=300"]), flag),
            Some("300")
        );
        assert_eq!(
            api_flag_value(&args(&["--webhook-timeout-msx=1"]), flag),
            None
        );
        assert_eq!(api_flag_value(&args(&[flag]), flag), None);
    }

    #[test]
    fn keys_are_found_by_unique_amounts_only() {
        let bodies = [
            ("a".to_owned(), serde_json::json!({"amount": 1000})),
            ("b".to_owned(), serde_json::json!({"amount": 1001})),
            ("c".to_owned(), serde_json::json!({"amount": 1001})),
        ]
        .into_iter()
        .collect();
        let map = keys_by_amount(&bodies);
        assert_eq!(map.len(), 1);
        assert_eq!(map[&1000], "a");
    }

    /// The preset bank `index` of `p` is in at `t`.
    fn preset_at(p: &ChaosPlan, index: usize, t: Duration) -> Preset {
        p.banks[index]
            .iter()
            .rev()
            .find(|s| Duration::from_millis(s.at_ms) <= t)
            .map_or(Preset::Healthy, |s| s.preset)
    }

    #[test]
    fn bank_a_down_takes_only_bank_a_out_from_a_sixth_of_the_run() {
        let minute = Duration::from_secs(72);
        for (scenario, fault) in [
            (ScenarioName::BankADown, Preset::Down),
            (ScenarioName::BankABlackhole, Preset::Blackhole),
        ] {
            let p = plan(scenario, minute, 1, 2, None, &[], None);
            assert_eq!(p.banks.len(), 2);
            assert_eq!(p.outage, Some((Duration::from_secs(12), minute)));
            assert_eq!(preset_at(&p, 0, Duration::from_secs(11)), Preset::Healthy);
            assert_eq!(preset_at(&p, 0, Duration::from_secs(12)), fault);
            assert_eq!(preset_at(&p, 0, Duration::from_secs(71)), fault);
            for t in [0, 12, 40, 71] {
                assert_eq!(preset_at(&p, 1, Duration::from_secs(t)), Preset::Healthy);
            }
            assert!(p.kills.is_empty());
            // One bank: the same outage, of the only bank (the baseline of the figures).
            let alone = plan(scenario, minute, 1, 1, None, &[], None);
            assert_eq!(alone.banks, p.banks[..1]);
        }
        assert_eq!(
            plan(ScenarioName::Everything, minute, 1, 2, None, &[], None).outage,
            None
        );
    }

    #[test]
    fn alternating_outages_take_turns_and_overlap_twice() {
        let run = Duration::from_secs(80);
        let p = plan(ScenarioName::AlternatingOutages, run, 1, 3, None, &[], None);
        for steps in &p.banks {
            assert!(steps.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
            assert!(steps.windows(2).all(|w| w[0].preset != w[1].preset));
            assert!(steps.iter().all(|s| Duration::from_millis(s.at_ms) < run));
        }
        let (mut only_a, mut only_b, mut both, mut neither) = (0, 0, 0, 0);
        for tenth in 0..800 {
            let t = Duration::from_millis(tenth * 100 + 50);
            let down = |i| preset_at(&p, i, t) == Preset::Down;
            match (down(0), down(1)) {
                (true, false) => only_a += 1,
                (false, true) => only_b += 1,
                (true, true) => both += 1,
                (false, false) => neither += 1,
            }
            assert_eq!(
                preset_at(&p, 2, t),
                Preset::Healthy,
                "a third bank stays up"
            );
        }
        // Each bank is out for about half the run; both for 2 × 1/32 of it.
        assert!(only_a > 300 && only_b > 300, "{only_a} {only_b}");
        assert_eq!(both, 50, "two overlaps of 2.5 s");
        assert_eq!(neither, 0);
        assert!(p.kills.len() >= 2, "alternating outages kill the API too");
    }

    #[test]
    fn more_banks_do_not_move_bank_a_or_the_kills_and_each_bank_has_its_own_weather() {
        let run = Duration::from_secs(300);
        let one = plan(ScenarioName::Everything, run, 9, 1, None, &[], None);
        let two = plan(ScenarioName::Everything, run, 9, 2, None, &[], None);
        assert_eq!(two.banks[0], one.banks[0]);
        assert_eq!(two.kills, one.kills);
        assert_ne!(two.banks[1], two.banks[0]);
        let lossy_flaky = plan(ScenarioName::ALossyBFlaky, run, 9, 2, None, &[], None);
        assert_eq!(preset_at(&lossy_flaky, 0, run / 2), Preset::Lossy);
        assert_eq!(preset_at(&lossy_flaky, 1, run / 2), Preset::Flaky);
        let flaky = plan(ScenarioName::Flaky, run, 9, 3, None, &[], None);
        assert!(flaky.banks.iter().all(|b| *b == flaky.banks[0]));
    }

    fn keyed(
        key: &str,
        sent: std::time::SystemTime,
        status: u16,
        body: serde_json::Value,
        ms: u64,
    ) -> audit::KeyRecord {
        audit::KeyRecord {
            key: key.to_owned(),
            answers: vec![audit::ClientAnswer {
                status,
                body: body.to_string().into_bytes(),
                sent_at: sent,
                received_at: sent + Duration::from_millis(ms),
            }],
        }
    }

    fn paid(key: &str, bank: &str) -> Payment {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::new_v4(),
            "status": "succeeded",
            "amount": 1000,
            "currency": "EUR",
            "source": "tok_visa",
            "metadata": {"load_key": key},
            "bank_reference": "r",
            "bank": bank,
            "attempts": 1,
            "created_at": "2026-11-30T00:00:00Z",
            "updated_at": "2026-11-30T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn outage_figures_count_the_keys_started_in_the_window_only() {
        let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let records = vec![
            keyed(
                "before",
                at(1),
                201,
                serde_json::json!({"bank": "bank-a"}),
                5,
            ),
            keyed("b1", at(10), 201, serde_json::json!({"bank": "bank-b"}), 10),
            keyed("b2", at(11), 201, serde_json::json!({"bank": "bank-b"}), 30),
            keyed("d", at(12), 402, serde_json::json!({}), 3),
            keyed("p", at(13), 202, serde_json::json!({"bank": "bank-a"}), 500),
            keyed("r", at(14), 503, serde_json::json!({"charged": "no"}), 1),
            // A double click: the twin that lost the race (409) is not the payment's answer.
            audit::KeyRecord {
                key: "twin".to_owned(),
                answers: vec![
                    audit::ClientAnswer {
                        status: 409,
                        body: br#"{"code":"idempotency_key_in_use"}"#.to_vec(),
                        sent_at: at(15),
                        received_at: at(15),
                    },
                    audit::ClientAnswer {
                        status: 201,
                        body: br#"{"bank":"bank-b"}"#.to_vec(),
                        sent_at: at(15),
                        received_at: at(15) + Duration::from_millis(20),
                    },
                ],
            },
            keyed(
                "after",
                at(20),
                201,
                serde_json::json!({"bank": "bank-a"}),
                5,
            ),
        ];
        let payments = vec![
            paid("before", "bank-a"),
            paid("b1", "bank-b"),
            paid("b2", "bank-b"),
            paid("d", "bank-a"),
            paid("p", "bank-a"),
            paid("twin", "bank-b"),
            paid("after", "bank-a"),
        ];
        let figures = outage_figures(&records, &payments, at(10), at(20), "bank-a");
        assert_eq!(
            (
                figures.started,
                figures.succeeded,
                figures.declined,
                figures.pending,
                figures.other
            ),
            (6, 3, 1, 1, 1)
        );
        assert_eq!((figures.p50_ms, figures.p99_ms), (20.0, 30.0));
        assert_eq!(figures.failed_over, 3);
        assert_eq!(
            (figures.pending_at_out, figures.moved_after_pending),
            (1, 0)
        );
        // A payment answered pending at the bank that was out and later with another bank is
        // what must never happen: the figure shows it.
        let moved = vec![paid("p", "bank-b")];
        let figures = outage_figures(&records, &moved, at(10), at(20), "bank-a");
        assert_eq!(
            (figures.pending_at_out, figures.moved_after_pending),
            (1, 1)
        );
        assert!(figures.to_string().contains("1 of them moved"));
    }
}
