//! `bench`: the end-to-end benchmark of issue 10. It starts the mock bank and the payment API
//! as release processes (JSON logs on, written to files), warms each phase up, drives it
//! closed-loop, and reports throughput and HDR latency percentiles of:
//! - `bank`: `POST /v1/charges` on the bank alone (one hop: the baseline);
//! - `happy`: new payments (fresh keys, healthy instant bank, durable SQLite store);
//! - `replay`: the same keys again (stored final records);
//! - `breaker_open`: new payments with the breaker forced open (fail fast).
//!
//! Every answer is checked (status, and the header or body that proves the path taken); every
//! unexpected answer and transport error is counted and shown. The ratio of each phase's
//! throughput to the baseline, measured in the same run, is what to compare across machines.
//!
//! `--payments N` instead runs the memory test: N new payments, sampling the API's RSS.
//!
//! # Layout
//! - `load`: the closed-loop load generator and its checks.
//! - `services`: starting the binaries, `/proc` figures.
//! - `report`: the table and the JSON file.

mod load;
mod report;
mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use load::{Expect, MakeRequest, Stop};
use report::{MemorySample, Report};
use services::Service;

const TENANT: &str = "bench";
/// The API key the benchmark configures and uses (not a secret: a throwaway local process).
const API_KEY: &str = "sk_bench_0123456789abcdef";
/// The operator key of the benchmark's own API (breaker controls are operator routes).
const OPERATOR_KEY: &str = "sk_bench_operator_0123456789abcdef";
const PAYMENT_BODY: &str = r#"{"amount":1999,"currency":"TRY","source":"tok_visa"}"#;

/// The end-to-end benchmark: bank baseline, happy path, replays, breaker open.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Measured seconds per phase (after its warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Warm-up seconds per phase (answers checked, not measured).
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Concurrent connections (closed loop: one request in flight per connection).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench.json")]
    out: PathBuf,
    /// Where the services' data and logs go (default: a fresh temp directory, kept after).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Use the binaries next to this executable as they are (do not run cargo build).
    #[arg(long)]
    no_build: bool,
    /// Memory test instead of the phases: send this many new payments and sample the API's RSS.
    #[arg(long)]
    payments: Option<u64>,
    /// Memory test: give up after this many seconds (the report says how far it got).
    #[arg(long, default_value_t = 3600)]
    max_secs: u64,
    /// Memory test: seconds between RSS samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let bin = services::binaries(args.no_build)?;
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rp-bench-{}", uuid::Uuid::new_v4().simple()))
    });
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    eprintln!("bench: services' data and logs in {}", work_dir.display());

    let mut bank_args = vec![];
    if let Some(n) = args.payments {
        // The bank's in-memory ledger must hold every charge of the memory test (and warm-up).
        bank_args.extend([
            "--max-charges".to_owned(),
            (n + n / 10 + 100_000).to_string(),
        ]);
    }
    let bank = Service::start(
        "mock-bank",
        &bin.join("mock-bank"),
        &work_dir,
        &bank_args,
        &[],
    )
    .await?;
    let api_keys = format!("{TENANT}:{API_KEY}");
    let operator_keys = format!("bench:{OPERATOR_KEY}");
    let api = Service::start(
        "payment-api",
        &bin.join("payment-api"),
        &work_dir,
        &[
            "--bank-url".to_owned(),
            format!("http://{}", bank.addr),
            "--data-dir".to_owned(),
            work_dir.join("data").display().to_string(),
            // One key sends all the load here. The per-key limit stays on (its check is on the
            // measured path) but set far above what this machine can send.
            "--rate-limit".to_owned(),
            "1000000000".to_owned(),
        ],
        &[
            ("PAYMENT_API_KEYS", api_keys.as_str()),
            ("PAYMENT_API_OPERATOR_KEYS", operator_keys.as_str()),
        ],
    )
    .await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let report = match args.payments {
        Some(total) => memory_test(&args, &bank, &api, &run_id, total).await?,
        None => phases(&args, &bank, &api, &run_id).await?,
    };
    report.print();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("bench: report written to {}", args.out.display());
    Ok(())
}

/// The four phases, in one run against the same processes.
async fn phases(
    args: &Args,
    bank: &Service,
    api: &Service,
    run_id: &str,
) -> anyhow::Result<Report> {
    let stop = Stop::Timed {
        warmup: Duration::from_secs(args.warmup_secs),
        measure: Duration::from_secs(args.duration_secs),
    };
    let mut report = Report::new(args.connections, args.duration_secs, args.warmup_secs);
    report.rss_start_bytes = api.rss_bytes();

    // 1. The bank alone: one hop, the baseline.
    let host = bank.addr.to_string();
    let prefix = format!("bench-{run_id}-bank");
    let make: Arc<MakeRequest> = Arc::new(move |conn, seq| {
        let reference = format!("{prefix}-{conn}-{seq}");
        let body = format!(
            r#"{{"amount":1999,"currency":"TRY","source":"tok_visa","reference":"{reference}"}}"#
        );
        Request::post("/v1/charges")
            .header(header::HOST, &host)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", reference)
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    });
    let expect = Expect {
        status: 201,
        header: None,
        body_contains: Some(r#""status":"succeeded""#),
    };
    report.push(
        measure("bank", bank.addr, args, make, expect, stop, 0, &[bank]).await,
        &[bank, api],
    );

    // 2. The happy path: fresh keys, the bank charges, the outcome is stored durably.
    let happy_prefix = format!("bench-{run_id}-pay");
    let make = payment_request(api.addr, happy_prefix.clone());
    let expect = Expect {
        status: 201,
        header: Some(("idempotent-replayed", "false")),
        body_contains: Some(r#""status":"succeeded""#),
    };
    let happy = measure(
        "happy",
        api.addr,
        args,
        make,
        expect,
        stop,
        256,
        &[bank, api],
    )
    .await;
    let keys: Arc<Vec<String>> = Arc::new(
        happy
            .1
            .accepted
            .iter()
            .enumerate()
            .flat_map(|(conn, seqs)| {
                let prefix = happy_prefix.clone();
                seqs.iter().map(move |seq| format!("{prefix}-{conn}-{seq}"))
            })
            .collect(),
    );
    report.push(happy, &[bank, api]);
    if keys.is_empty() {
        bail!("the happy path accepted no payment: nothing to replay (see the logs)");
    }

    // 3. Replays of stored keys (each connection cycles through all of them).
    let host = api.addr.to_string();
    let replay_keys = keys.clone();
    let make: Arc<MakeRequest> = Arc::new(move |conn, seq| {
        let key = &replay_keys[(conn * 7919 + seq as usize) % replay_keys.len()];
        Request::post("/v1/payments")
            .header(header::HOST, &host)
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key.as_str())
            .body(Full::new(Bytes::from_static(PAYMENT_BODY.as_bytes())))
            .expect("valid request")
    });
    let expect = Expect {
        status: 201,
        header: Some(("idempotent-replayed", "true")),
        body_contains: Some(r#""status":"succeeded""#),
    };
    report.push(
        measure(
            "replay",
            api.addr,
            args,
            make,
            expect,
            stop,
            0,
            &[bank, api],
        )
        .await,
        &[bank, api],
    );

    // 4. New payments with the breaker forced open: refused before the store and the bank.
    let (status, body) = simple_request(
        api.addr,
        "POST",
        "/v1/breaker/force-open",
        &[("authorization", &format!("Bearer {OPERATOR_KEY}"))],
        "",
    )
    .await?;
    if !(200..300).contains(&status) {
        bail!("forcing the breaker open answered {status}: {body}");
    }
    let make = payment_request(api.addr, format!("bench-{run_id}-open"));
    let expect = Expect {
        status: 503,
        header: None,
        body_contains: Some(r#""breaker_open""#),
    };
    report.push(
        measure(
            "breaker_open",
            api.addr,
            args,
            make,
            expect,
            stop,
            0,
            &[bank, api],
        )
        .await,
        &[bank, api],
    );
    let _ = simple_request(
        api.addr,
        "POST",
        "/v1/breaker/reset",
        &[("authorization", &format!("Bearer {OPERATOR_KEY}"))],
        "",
    )
    .await;
    report.rss_end_bytes = api.rss_bytes();
    Ok(report)
}

/// New payments: key `<prefix>-<conn>-<seq>`, the same body every time.
fn payment_request(addr: SocketAddr, prefix: String) -> Arc<MakeRequest> {
    let host = addr.to_string();
    Arc::new(move |conn, seq| {
        Request::post("/v1/payments")
            .header(header::HOST, &host)
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", format!("{prefix}-{conn}-{seq}"))
            .body(Full::new(Bytes::from_static(PAYMENT_BODY.as_bytes())))
            .expect("valid request")
    })
}

/// Runs one timed phase and takes the CPU time each process used during it.
#[allow(clippy::too_many_arguments)]
async fn measure(
    name: &'static str,
    addr: SocketAddr,
    args: &Args,
    make: Arc<MakeRequest>,
    expect: Expect,
    stop: Stop,
    keep_ok: usize,
    services: &[&Service],
) -> (&'static str, load::RunResult, Vec<(&'static str, Duration)>) {
    eprintln!("bench: phase {name}");
    let cpu_before: Vec<_> = services.iter().map(|s| s.cpu()).collect();
    let self_before = services::cpu_time("/proc/self/stat");
    let result = load::run(addr, args.connections, make, expect, stop, keep_ok, None).await;
    let mut cpu = Vec::new();
    for (service, before) in services.iter().zip(cpu_before) {
        if let (Some(before), Some(after)) = (before, service.cpu()) {
            cpu.push((service.name, after.saturating_sub(before)));
        }
    }
    if let (Some(before), Some(after)) = (self_before, services::cpu_time("/proc/self/stat")) {
        cpu.push(("bench", after.saturating_sub(before)));
    }
    (name, result, cpu)
}

/// The memory test: `total` new payments, closed-loop, sampling the API's RSS.
async fn memory_test(
    args: &Args,
    bank: &Service,
    api: &Service,
    run_id: &str,
    total: u64,
) -> anyhow::Result<Report> {
    let mut report = Report::new(args.connections, 0, 0);
    report.rss_start_bytes = api.rss_bytes();
    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sampler = {
        let progress = progress.clone();
        let pid = api.pid();
        let every = Duration::from_secs(args.sample_secs.max(1));
        tokio::spawn(async move {
            let mut samples = vec![];
            loop {
                let sample = MemorySample {
                    seconds: started.elapsed().as_secs_f64(),
                    payments: progress.load(Ordering::Relaxed),
                    rss_bytes: services::rss_bytes(pid).unwrap_or(0),
                };
                eprintln!(
                    "bench: {:>8.0} s  {:>9} payments  RSS {:.1} MB",
                    sample.seconds,
                    sample.payments,
                    sample.rss_bytes as f64 / 1e6
                );
                samples.push(sample);
                tokio::time::sleep(every).await;
                if progress.load(Ordering::Relaxed) >= total {
                    break samples;
                }
            }
        })
    };
    let make = payment_request(api.addr, format!("bench-{run_id}-mem"));
    let expect = Expect {
        status: 201,
        header: Some(("idempotent-replayed", "false")),
        body_contains: Some(r#""status":"succeeded""#),
    };
    let stop = Stop::Count {
        total,
        limit: Duration::from_secs(args.max_secs),
    };
    let cpu_before = [bank.cpu(), api.cpu()];
    let result = load::run(
        api.addr,
        args.connections,
        make,
        expect,
        stop,
        0,
        Some(progress.clone()),
    )
    .await;
    // Let the sampler take its last sample even when the time limit stopped the run early.
    progress.fetch_max(total, Ordering::Relaxed);
    let mut samples = sampler.await?;
    if let Some(last) = samples.last_mut() {
        last.payments = result.requests;
    }
    let cpu = [bank, api]
        .iter()
        .zip(cpu_before)
        .filter_map(|(s, before)| Some((s.name, s.cpu()?.saturating_sub(before?))))
        .collect();
    report.push(("memory", result, cpu), &[bank, api]);
    report.rss_end_bytes = api.rss_bytes();
    report.memory = Some(report::Memory {
        target_payments: total,
        samples,
    });
    Ok(report)
}

/// One request on a fresh connection (health checks and operator calls): status and body.
pub(crate) async fn simple_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from_static(body.as_bytes())))?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
