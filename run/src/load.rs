//! The traffic generator: open-loop payments at a chosen rate for a chosen time, with duplicate
//! sends and careful client retries, recording every answer per key for the audit.
//!
//! Open loop: payment *i* is due at `i / rate` whatever the answers' latency, as real users
//! arrive; a bound on requests in progress keeps a stalled system from piling up connections
//! without limit, and payments due while it is reached are shed and counted (never silently
//! delayed). A client waiting out a `Retry-After` or a backoff gives its slot back and takes one
//! again to send (waiting for it), so waiting clients do not shed the offered load; the report
//! prints the share of offered payments that were started.
//!
//! With several API URLs (several instances on one database) each attempt, first send or retry,
//! goes to an instance picked at random, as behind a load balancer.
//!
//! A client retries the same key on a transport error or timeout, 409, 429, 500, 503 and 504,
//! waiting `Retry-After` (capped) or an exponential backoff with jitter, until it gets an answer
//! about the key or [`LoadConfig::give_up_after`] passes. A share of payments is sent twice:
//! at once (a double click, racing the first: 409 or a replay) or after the first answer (a user
//! whose connection dropped trying again: a replay). Latency goes into HDR histograms, per HTTP
//! request and per payment (retries included).
//!
//! [`run`] is a library function: `run load` prints its [`LoadReport`], the chaos verifier
//! audits its [`KeyRecord`]s.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::json;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::audit::{ClientAnswer, KeyRecord, KEY_FIELD};

/// Everything the generator needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URLs of the API instances (at least one); each attempt picks one.
    pub api_urls: Vec<String>,
    pub api_key: String,
    /// Payments started per second.
    pub rate: f64,
    /// How long new payments are started.
    pub duration: Duration,
    /// Requests in progress at once (a client waiting to retry holds no slot).
    pub max_in_flight: usize,
    /// When set, payment *i* is sent with amount `base + i`: every key has an amount of its
    /// own, so the audit can tie a ledger charge to its key without trusting the API.
    pub unique_amounts: Option<i64>,
    pub duplicate_share: f64,
    pub decline_share: f64,
    pub request_timeout: Duration,
    pub give_up_after: Duration,
    pub seed: u64,
    /// Keys are `{key_prefix}-{i}`.
    pub key_prefix: String,
    /// Print a progress line every second.
    pub progress: bool,
}

/// What a finished load run saw.
#[derive(Debug)]
pub struct LoadReport {
    /// How long payments were started for, and how long until the last one finished.
    pub sending: Duration,
    pub total: Duration,
    /// Payments due by the schedule.
    pub offered: u64,
    /// Payments shed because [`LoadConfig::max_in_flight`] requests were in progress.
    pub shed: u64,
    /// Second sends with the same key.
    pub duplicates: u64,
    /// HTTP requests sent (retries and duplicates included).
    pub requests: u64,
    /// How payments ended for their client: `succeeded`, `declined`, `failed`, `pending`,
    /// `gave_up`, `rejected` (another 4xx).
    pub payments: BTreeMap<&'static str, u64>,
    /// Every HTTP answer by status, plus `transport_error` and `timeout`.
    pub answers: BTreeMap<String, u64>,
    /// Per HTTP request, microseconds.
    pub request_latency: Histogram<u64>,
    /// Per payment from first send to its answer, retries included, microseconds.
    pub payment_latency: Histogram<u64>,
    /// Every answer each key got, sorted by key.
    pub records: Vec<KeyRecord>,
    /// The body sent under each key (payments that were started, not shed).
    pub bodies: BTreeMap<String, serde_json::Value>,
}

/// What the tasks share while the run goes on.
#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    config: LoadConfig,
    requests: AtomicU64,
    duplicates: AtomicU64,
    finished: AtomicU64,
    /// The in-flight bound: a request holds a slot while it is sent and answered.
    slots: Option<Arc<Semaphore>>,
    /// One lock for all figures: a few microseconds per request, far from the bottleneck.
    stats: Mutex<Stats>,
}

#[derive(Debug)]
struct Stats {
    payments: BTreeMap<&'static str, u64>,
    answers: BTreeMap<String, u64>,
    request_latency: Histogram<u64>,
    payment_latency: Histogram<u64>,
    records: BTreeMap<String, Vec<ClientAnswer>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What one payment will be, decided up front from the seed.
#[derive(Debug, Clone)]
struct Plan {
    key: String,
    body: serde_json::Value,
    duplicate: Option<Duplicate>,
    rng_seed: u64,
}

#[derive(Debug, Clone, Copy)]
enum Duplicate {
    /// Sent at the same moment as the first.
    DoubleClick,
    /// Sent again this long after the first answer.
    AfterAnswer(Duration),
}

const DECLINING_CARDS: [&str; 3] = ["tok_decline", "tok_insufficient_funds", "tok_expired_card"];

/// Currencies payments are spread over, in turn: two-decimal ones, JPY (no minor unit) and KWD
/// (three decimals), so the API, the bank and the audit are exercised with every exponent.
const CURRENCIES: [&str; 5] = ["TRY", "EUR", "USD", "JPY", "KWD"];

fn plan(config: &LoadConfig, i: u64, rng: &mut SmallRng) -> Plan {
    let key = format!("{}-{i}", config.key_prefix);
    let source = if rng.gen_bool(config.decline_share.clamp(0.0, 1.0)) {
        DECLINING_CARDS[rng.gen_range(0..DECLINING_CARDS.len())]
    } else {
        "tok_visa"
    };
    let duplicate = rng
        .gen_bool(config.duplicate_share.clamp(0.0, 1.0))
        .then(|| {
            if rng.gen_bool(0.5) {
                Duplicate::DoubleClick
            } else {
                Duplicate::AfterAnswer(Duration::from_millis(rng.gen_range(0..500)))
            }
        });
    let amount = match config.unique_amounts {
        Some(base) => base + i as i64,
        None => rng.gen_range(100..100_000),
    };
    Plan {
        body: json!({
            "amount": amount,
            "currency": CURRENCIES[(i % CURRENCIES.len() as u64) as usize],
            "source": source,
            "metadata": { KEY_FIELD: key },
        }),
        key,
        duplicate,
        rng_seed: rng.gen(),
    }
}

/// Runs the load until `config.duration` has passed (or `stop` resolves), waits for the
/// payments in progress, and returns what it saw.
pub async fn run(config: LoadConfig, stop: impl Future<Output = ()>) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        config.rate > 0.0 && config.rate.is_finite(),
        "--rate must be positive"
    );
    anyhow::ensure!(config.max_in_flight > 0, "--max-in-flight must be positive");
    anyhow::ensure!(!config.api_urls.is_empty(), "no API URL to send to");
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(config.max_in_flight)
        .build()
        .context("cannot build an HTTP client")?;
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let shared = Arc::new(Shared {
        client,
        config: config.clone(),
        requests: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        slots: Some(in_flight.clone()),
        stats: Mutex::new(Stats {
            payments: BTreeMap::new(),
            answers: BTreeMap::new(),
            request_latency: histogram(),
            payment_latency: histogram(),
            records: BTreeMap::new(),
        }),
    });
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let mut offered = 0u64;
    let mut shed = 0u64;
    let mut last_progress = started;
    let mut bodies = BTreeMap::new();
    tokio::pin!(stop);

    // Open loop: payment i is due at started + i × period.
    loop {
        let due = started + period.mul_f64(offered as f64);
        if due.duration_since(started) >= config.duration {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            () = &mut stop => break,
        }
        let plan = plan(&config, offered, &mut rng);
        offered += 1;
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                bodies.insert(plan.key.clone(), plan.body.clone());
                let shared = shared.clone();
                tasks.spawn(async move {
                    pay(&shared, plan, permit).await;
                });
            }
            Err(_) => shed += 1,
        }
        // Reap finished tasks so the set stays as small as what is in flight.
        while tasks.try_join_next().is_some() {}
        if config.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            print_progress(&shared, started, offered, shed, tasks.len());
        }
    }
    let sending = started.elapsed();

    // Let the payments in progress finish; each is bounded by give_up_after plus a request.
    let drain = config.give_up_after + config.request_timeout * 2 + Duration::from_secs(5);
    let drained = tokio::time::timeout(drain, async {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = ticker.tick(), if config.progress => {
                    print_progress(&shared, started, offered, shed, tasks.len());
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        eprintln!("[load] some payments did not finish within {drain:?}; abandoning them");
    }
    let total = started.elapsed();
    tasks.abort_all();
    // The tasks are gone; the figures are complete.
    let stats = std::mem::replace(
        &mut *shared.stats.lock().expect("stats lock"),
        Stats {
            payments: BTreeMap::new(),
            answers: BTreeMap::new(),
            request_latency: histogram(),
            payment_latency: histogram(),
            records: BTreeMap::new(),
        },
    );
    Ok(LoadReport {
        sending,
        total,
        offered,
        shed,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        requests: shared.requests.load(Ordering::Relaxed),
        payments: stats.payments,
        answers: stats.answers,
        request_latency: stats.request_latency,
        payment_latency: stats.payment_latency,
        records: stats
            .records
            .into_iter()
            .map(|(key, answers)| KeyRecord { key, answers })
            .collect(),
        bodies,
    })
}

/// Sends every key of `report` once more (retrying transient refusals), as a client asking
/// "what became of my payment?" after the dust settled, and adds the answers to its records:
/// the audit compares them with the first final answers (invariant 5). Returns the number of
/// keys replayed.
pub async fn replay_all(config: &LoadConfig, report: &mut LoadReport) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
        .context("cannot build an HTTP client")?;
    let shared = Arc::new(Shared {
        client,
        config: config.clone(),
        requests: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        slots: None,
        stats: Mutex::new(Stats {
            payments: BTreeMap::new(),
            answers: BTreeMap::new(),
            request_latency: histogram(),
            payment_latency: histogram(),
            records: BTreeMap::new(),
        }),
    });
    let permits = Arc::new(Semaphore::new(config.max_in_flight.clamp(1, 32)));
    let mut tasks = JoinSet::new();
    for (i, (key, body)) in report.bodies.iter().enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let shared = shared.clone();
        let plan = Plan {
            key: key.clone(),
            body: body.clone(),
            duplicate: None,
            rng_seed: config.seed ^ i as u64,
        };
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(plan.rng_seed);
            send_until_answered(&shared, &plan, &mut rng, &mut None).await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let replayed = report.bodies.len();
    let answers = std::mem::take(&mut shared.stats.lock().expect("stats lock").records);
    let mut records: BTreeMap<String, Vec<ClientAnswer>> = std::mem::take(&mut report.records)
        .into_iter()
        .map(|r| (r.key, r.answers))
        .collect();
    for (key, later) in answers {
        records.entry(key).or_default().extend(later);
    }
    report.records = records
        .into_iter()
        .map(|(key, answers)| KeyRecord { key, answers })
        .collect();
    Ok(replayed)
}

/// One payment: its first send (holding `slot`, taken when it was started), and its duplicate
/// if the plan has one.
async fn pay(shared: &Arc<Shared>, plan: Plan, slot: OwnedSemaphorePermit) {
    let mut rng = SmallRng::seed_from_u64(plan.rng_seed);
    let mut slot = Some(slot);
    let started = Instant::now();
    let twin = match plan.duplicate {
        Some(Duplicate::DoubleClick) => {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            let (shared, plan, seed) = (shared.clone(), plan.clone(), rng.gen());
            Some(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed);
                send_until_answered(&shared, &plan, &mut rng, &mut None).await
            }))
        }
        _ => None,
    };
    let outcome = send_until_answered(shared, &plan, &mut rng, &mut slot).await;
    drop(slot);
    let elapsed = started.elapsed();
    if let Some(twin) = twin {
        let _ = twin.await;
    }
    if let Some(Duplicate::AfterAnswer(after)) = plan.duplicate {
        shared.duplicates.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(after).await;
        send_until_answered(shared, &plan, &mut rng, &mut None).await;
    }
    let mut stats = shared.stats.lock().expect("stats lock");
    *stats.payments.entry(outcome).or_default() += 1;
    let _ = stats
        .payment_latency
        .record(elapsed.as_micros().max(1) as u64);
    drop(stats);
    shared.finished.fetch_add(1, Ordering::Relaxed);
}

/// Sends the payment, retrying the same key, until an answer about the key arrives; returns
/// how the payment ended for this client. Each request holds a slot of the in-flight bound
/// (`slot`, taken here when empty); waiting to retry, the client gives it back.
async fn send_until_answered(
    shared: &Shared,
    plan: &Plan,
    rng: &mut SmallRng,
    slot: &mut Option<OwnedSemaphorePermit>,
) -> &'static str {
    let config = &shared.config;
    let deadline = Instant::now() + config.give_up_after;
    let mut backoff = Duration::from_millis(50);
    loop {
        if let (None, Some(slots)) = (slot.as_ref(), &shared.slots) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => *slot = Some(permit),
                _ => return "gave_up",
            }
        }
        let api_url = &config.api_urls[rng.gen_range(0..config.api_urls.len())];
        let sent_at = Instant::now();
        let sent_wall = std::time::SystemTime::now();
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let sent = shared
            .client
            .post(format!("{api_url}/v1/payments"))
            .bearer_auth(&config.api_key)
            .header("Idempotency-Key", &plan.key)
            .json(&plan.body)
            .send()
            .await;
        let mut retry_after = None;
        let label;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match response.bytes().await {
                    Ok(body) => {
                        record(
                            shared,
                            plan,
                            sent_at,
                            status.to_string(),
                            ClientAnswer {
                                sent_at: sent_wall,
                                ..ClientAnswer::new(status, body.to_vec())
                            },
                        );
                        label = match status {
                            201 => Some("succeeded"),
                            402 => Some("declined"),
                            502 => Some("failed"),
                            202 => Some("pending"),
                            409 | 429 | 500 | 503 | 504 => None,
                            _ => Some("rejected"),
                        };
                    }
                    // The answer was cut off: as good as no answer.
                    Err(_) => {
                        let none = ClientAnswer::none("transport_error", sent_wall);
                        record(shared, plan, sent_at, "transport_error".into(), none);
                        label = None;
                    }
                }
            }
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timeout"
                } else {
                    "transport_error"
                };
                record(
                    shared,
                    plan,
                    sent_at,
                    kind.into(),
                    ClientAnswer::none(kind, sent_wall),
                );
                label = None;
            }
        }
        if let Some(label) = label {
            return label;
        }
        let jitter = Duration::from_millis(rng.gen_range(0..=backoff.as_millis() as u64 / 2));
        let wait = retry_after
            .map(|r| r.min(Duration::from_secs(2)))
            .unwrap_or(backoff)
            + jitter;
        if Instant::now() + wait >= deadline {
            return "gave_up";
        }
        // Waiting is not sending: the slot goes back to the bound meanwhile.
        *slot = None;
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn record(shared: &Shared, plan: &Plan, sent_at: Instant, label: String, answer: ClientAnswer) {
    let micros = sent_at.elapsed().as_micros().max(1) as u64;
    let mut stats = shared.stats.lock().expect("stats lock");
    let _ = stats.request_latency.record(micros);
    *stats.answers.entry(label).or_default() += 1;
    stats
        .records
        .entry(plan.key.clone())
        .or_default()
        .push(answer);
}

fn print_progress(shared: &Shared, started: Instant, offered: u64, shed: u64, in_flight: usize) {
    let stats = shared.stats.lock().expect("stats lock");
    let answers: Vec<String> = stats
        .answers
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let ms = |q: f64| stats.request_latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "[load] {:>5.0}s offered {offered} done {} in-flight {in_flight} shed {shed} requests {} | {} | p50 {:.1}ms p99 {:.1}ms",
        started.elapsed().as_secs_f64(),
        shared.finished.load(Ordering::Relaxed),
        shared.requests.load(Ordering::Relaxed),
        answers.join(" "),
        ms(0.5),
        ms(0.99),
    );
}

impl LoadReport {
    /// Payments started (offered and not shed).
    pub fn started(&self) -> u64 {
        self.offered - self.shed
    }

    /// The share of offered payments that were started, 0 to 1 (1 when nothing was offered).
    pub fn started_share(&self) -> f64 {
        if self.offered == 0 {
            1.0
        } else {
            self.started() as f64 / self.offered as f64
        }
    }

    /// The final table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let secs = self.sending.as_secs_f64().max(1e-9);
        out.push_str(&format!(
            "load: {:.1}s sending ({:.1}s until the last answer); {} payments offered ({:.1}/s), {} started ({:.1}% of offered), {} shed at the in-flight bound, {} duplicate sends\n",
            self.sending.as_secs_f64(),
            self.total.as_secs_f64(),
            self.offered,
            self.offered as f64 / secs,
            self.started(),
            self.started_share() * 100.0,
            self.shed,
            self.duplicates,
        ));
        out.push_str(&format!(
            "  throughput  {:.1} payments/s answered, {:.1} requests/s ({} requests)\n",
            self.payments.values().sum::<u64>() as f64 / self.total.as_secs_f64().max(1e-9),
            self.requests as f64 / self.total.as_secs_f64().max(1e-9),
            self.requests
        ));
        let join = |map: &mut dyn Iterator<Item = (String, u64)>| {
            map.map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "  payments    {}\n",
            join(&mut self.payments.iter().map(|(k, v)| (k.to_string(), *v)))
        ));
        out.push_str(&format!(
            "  answers     {}\n",
            join(&mut self.answers.iter().map(|(k, v)| (k.clone(), *v)))
        ));
        out.push_str(&format!(
            "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (name, h) in [
            ("per request", &self.request_latency),
            ("per payment (with retries)", &self.payment_latency),
        ] {
            let ms = |v: u64| v as f64 / 1000.0;
            out.push_str(&format!(
                "  {:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
                name,
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            ));
        }
        out
    }
}

/// `run load`: read the key, run, print the table.
pub(crate) async fn command(args: crate::cli::LoadArgs) -> anyhow::Result<()> {
    let api_key = match args.api_key {
        Some(key) => key,
        None => std::fs::read_to_string(&args.api_key_file)
            .with_context(|| {
                format!(
                    "cannot read the API key from {} (start the system with `cargo run -p run`, or pass --api-key-file/--api-key)",
                    args.api_key_file.display()
                )
            })?
            .trim()
            .to_owned(),
    };
    let seed = args.traffic.seed.unwrap_or_else(rand::random);
    let key_prefix = args
        .key_prefix
        .unwrap_or_else(|| format!("load-{seed}-{:08x}", rand::random::<u32>()));
    let config = config_from(&args.traffic, args.api_url, api_key, seed, key_prefix);
    println!(
        "[load] {:.1} payments/s for {:?} against {} (seed {seed}, keys {}-N)",
        config.rate,
        config.duration,
        config.api_urls.join(", "),
        config.key_prefix
    );
    let report = run(config, service_runtime::shutdown_signal()).await?;
    print!("{}", report.table());
    Ok(())
}

/// A [`LoadConfig`] from the traffic flags.
pub(crate) fn config_from(
    traffic: &crate::cli::TrafficArgs,
    api_url: String,
    api_key: String,
    seed: u64,
    key_prefix: String,
) -> LoadConfig {
    LoadConfig {
        api_urls: vec![api_url.trim_end_matches('/').to_owned()],
        api_key,
        rate: traffic.rate,
        duration: traffic.duration,
        max_in_flight: traffic.max_in_flight,
        unique_amounts: None,
        duplicate_share: traffic.duplicate_share,
        decline_share: traffic.decline_share,
        request_timeout: Duration::from_millis(traffic.request_timeout_ms),
        give_up_after: traffic.give_up_after,
        seed,
        key_prefix,
        progress: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            api_urls: vec!["http://127.0.0.1:9".into()],
            api_key: "k".into(),
            rate: 100.0,
            duration: Duration::from_secs(1),
            max_in_flight: 4,
            unique_amounts: None,
            duplicate_share: 0.5,
            decline_share: 0.2,
            request_timeout: Duration::from_millis(100),
            give_up_after: Duration::from_millis(100),
            seed: 42,
            key_prefix: "t".into(),
            progress: false,
        }
    }

    #[test]
    fn the_same_seed_plans_the_same_payments() {
        let plans = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..50)
                .map(|i| {
                    let p = plan(&config(), i, &mut rng);
                    (p.key, p.body, format!("{:?}", p.duplicate))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(plans(1), plans(1));
        assert_ne!(plans(1), plans(2));
        let bodies = plans(1);
        assert!(bodies.iter().any(|(_, b, _)| b["source"] != "tok_visa"));
        assert!(bodies
            .iter()
            .all(|(k, b, _)| b["metadata"][KEY_FIELD] == *k));
    }

    #[tokio::test]
    async fn an_unreachable_api_ends_in_gave_up_within_the_bounds() {
        let report = run(
            LoadConfig {
                duration: Duration::from_millis(200),
                ..config()
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(report.offered >= 15, "{}", report.table());
        assert_eq!(report.payments.get("succeeded"), None);
        assert!(report.payments.get("gave_up").copied().unwrap_or(0) > 0);
        assert!(report.total < Duration::from_secs(5));
        assert!(report.table().contains("per request"));
    }

    /// A loopback server answering every request `503` with `Retry-After: 1` and
    /// `"charged": "no"`; returns its URL.
    async fn always_503() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the head and the (small) body, then answer and close.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request);
                        if let Some(head_end) = text.find("\r\n\r\n") {
                            let length = text[..head_end]
                                .lines()
                                .find_map(|l| {
                                    let (name, value) = l.split_once(':')?;
                                    name.eq_ignore_ascii_case("content-length")
                                        .then(|| value.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if request.len() >= head_end + 4 + length {
                                break;
                            }
                        }
                    }
                    let body = r#"{"status":503,"code":"breaker_open","charged":"no"}"#;
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn clients_waiting_out_retry_after_give_their_slot_back() {
        let url = always_503().await;
        let report = run(
            LoadConfig {
                api_urls: vec![url],
                rate: 50.0,
                duration: Duration::from_millis(400),
                max_in_flight: 2,
                duplicate_share: 0.0,
                request_timeout: Duration::from_secs(2),
                give_up_after: Duration::from_millis(2500),
                unique_amounts: Some(1000),
                ..config()
            },
            std::future::pending(),
        )
        .await
        .unwrap();
        // Every client waits 1 s (Retry-After) between attempts: holding their slots through
        // those waits, 2 slots would have shed 18 of the 20 payments.
        assert_eq!(report.offered, 20, "{}", report.table());
        assert!(
            report.started_share() >= 0.9,
            "{} of {} started:\n{}",
            report.started(),
            report.offered,
            report.table()
        );
        assert!(report.table().contains("% of offered)"));
        // Every answer is recorded per key, with its time and its `charged` member.
        let record = &report.records[0];
        assert!(record.answers.len() >= 2, "{record:?}");
        let answer = &record.answers[0];
        assert_eq!(answer.status, 503);
        assert_eq!(answer.charged_member().as_deref(), Some("no"));
        assert!(answer.received_at >= answer.sent_at);
        // Amounts are unique per key: 1000 + i.
        let mut amounts: Vec<i64> = report
            .bodies
            .values()
            .map(|b| b["amount"].as_i64().unwrap())
            .collect();
        amounts.sort_unstable();
        assert_eq!(amounts, (1000..1020).collect::<Vec<_>>());
    }
}
