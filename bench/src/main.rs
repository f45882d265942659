//! `bench`: the end-to-end benchmark of issues 10 and 18. It starts the mock bank, the payment
//! API and three reference servers of our own as release processes (the services' JSON logs
//! on, written to files), warms each phase up, drives it closed-loop, and reports throughput
//! and HDR latency percentiles of, in this order:
//! - `bank`: `POST /v1/charges` on the mock bank alone (one hop: the baseline of `replay` and
//!   `breaker_open`);
//! - `two_hop`: `POST /v1/payments` on the proxy, forwarded to the stub bank (two hops, no
//!   logic: **the ceiling**, ratio 1.00);
//! - `minimal`: new payments on the minimal durable payment server (one SQLite table, group
//!   commit, `synchronous=FULL`) in front of the stub;
//! - `happy`: new payments on the payment API (durable SQLite store) in front of the same stub;
//! - `replay`: the keys `happy` stored, sent again (stored final records);
//! - `breaker_open`: new payments with the API's breaker forced open (fail fast);
//! - `postgres`: new payments on a second payment API on PostgreSQL (a throwaway server),
//!   in front of the same stub; skipped, saying why, when PostgreSQL cannot be started.
//!
//! The API's bank is the stub, not the mock bank: `two_hop`, `minimal`, `happy` and
//! `postgres` then differ only by the server in front of one and the same bank, so their
//! ratios (`vs ceiling`, `vs minimal`) measure that server alone. The report judges issue 18's
//! targets on them (happy ≥ 0.50 of the ceiling and ≥ 0.85 of minimal in req/s, happy p99 ≤
//! 2 × the ceiling's) and says how quiet the machine was (load average, CPU steal and iowait).
//!
//! Every answer is checked (status, and the header or body that proves the path taken); every
//! unexpected answer and transport error is counted and shown. The ratios, measured in the same
//! run, are what to compare across machines.
//!
//! `--payments N` instead runs the memory test: N new payments on the API in front of the mock
//! bank, sampling the API's RSS.
//!
//! # Layout
//! - `phases`: the phases of one run and the processes they use.
//! - `load`: the closed-loop load generator and its checks.
//! - `services`: starting the binaries and reference servers, `/proc` figures.
//! - `serve`: the hidden `bench serve stub|proxy|minimal` subcommand (reference servers):
//!   `stub`, `proxy`, `minimal`.
//! - `pg`: the throwaway PostgreSQL server of the `postgres` phase.
//! - `machine`: load average, CPU steal and iowait.
//! - `report`: the ratios, the targets, the table and the JSON file.

mod load;
mod machine;
mod minimal;
mod pg;
mod phases;
mod proxy;
mod report;
mod serve;
mod services;
mod stub;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use machine::CpuTicks;
use report::{Measured, MemorySample, Report};
use services::{CpuUser, Service};

/// mimalloc, as in the API: the reference servers run in this binary (and the load generator
/// is lighter on the shared cores with it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "bench";
/// The API key the benchmark configures and uses (not a secret: a throwaway local process).
const API_KEY: &str = "sk_bench_0123456789abcdef";
/// The operator key of the benchmark's own API (breaker controls are operator routes).
const OPERATOR_KEY: &str = "sk_bench_operator_0123456789abcdef";
const PAYMENT_BODY: &str = r#"{"amount":1999,"currency":"TRY","source":"tok_visa"}"#;

/// The end-to-end benchmark: bank baseline, the two-hop ceiling, the minimal durable server,
/// the API's happy path, replays, breaker open, and the API on PostgreSQL.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
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

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Runs a reference server (the bench starts them itself).
    #[command(hide = true)]
    Serve(serve::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Sub::Serve(serve)) = args.command.take() {
        return serve::run(serve).await;
    }
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
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let mut report = match args.payments {
        Some(total) => {
            // The bank's in-memory ledger must hold every charge of the memory test (and
            // warm-up).
            let bank_args = [
                "--max-charges".to_owned(),
                (total + total / 10 + 100_000).to_string(),
            ];
            let bank = Service::start(
                "mock-bank",
                &bin.join("mock-bank"),
                &work_dir,
                &bank_args,
                &[],
            )
            .await?;
            let api = start_api("payment-api", &bin, &work_dir, bank.addr, &[]).await?;
            memory_test(&args, &bank, &api, &run_id, total).await?
        }
        None => phases::run(&args, &bin, &work_dir, &run_id).await?,
    };
    report.finish();
    report.print();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("bench: report written to {}", args.out.display());
    Ok(())
}

/// Starts a payment API named `name` in front of the bank at `bank`, with the benchmark's keys,
/// its data under `work_dir/<name>`, and `extra` flags (e.g. `--database-url`).
async fn start_api(
    name: &'static str,
    bin: &Path,
    work_dir: &Path,
    bank: SocketAddr,
    extra: &[String],
) -> anyhow::Result<Service> {
    let api_keys = format!("{TENANT}:{API_KEY}");
    let operator_keys = format!("bench:{OPERATOR_KEY}");
    let mut flags = vec![
        "--bank-url".to_owned(),
        format!("http://{bank}"),
        "--data-dir".to_owned(),
        work_dir.join(name).display().to_string(),
        // One key sends all the load here. The per-key limit stays on (its check is on the
        // measured path) but set far above what this machine can send.
        "--rate-limit".to_owned(),
        "1000000000".to_owned(),
    ];
    flags.extend_from_slice(extra);
    Service::start(
        name,
        &bin.join("payment-api"),
        work_dir,
        &flags,
        &[
            ("PAYMENT_API_KEYS", api_keys.as_str()),
            ("PAYMENT_API_OPERATOR_KEYS", operator_keys.as_str()),
        ],
    )
    .await
}

/// New payments: key `<prefix>-<conn>-<seq>`, the same body every time.
pub(crate) fn payment_request(addr: SocketAddr, prefix: String) -> Arc<MakeRequest> {
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

/// Runs one timed phase against `server` and takes the CPU time each of `cpu_users` (and the
/// load generator) used during it, and the machine's steal and iowait.
#[allow(clippy::too_many_arguments)]
async fn measure(
    name: &'static str,
    server: &Service,
    args: &Args,
    make: Arc<MakeRequest>,
    expect: Expect,
    stop: Stop,
    keep_ok: usize,
    cpu_users: &[&dyn CpuUser],
) -> Measured {
    eprintln!("bench: phase {name}");
    let cpu_before: Vec<_> = cpu_users.iter().map(|s| s.cpu()).collect();
    let self_before = services::cpu_time("/proc/self/stat");
    let ticks_before = CpuTicks::now();
    let result = load::run(
        server.addr,
        args.connections,
        make,
        expect,
        stop,
        keep_ok,
        None,
    )
    .await;
    let machine = ticks_before
        .zip(CpuTicks::now())
        .and_then(|(before, after)| after.since(before));
    let mut cpu = Vec::new();
    for (user, before) in cpu_users.iter().zip(cpu_before) {
        if let (Some(before), Some(after)) = (before, user.cpu()) {
            cpu.push((user.name(), after.saturating_sub(before)));
        }
    }
    if let (Some(before), Some(after)) = (self_before, services::cpu_time("/proc/self/stat")) {
        cpu.push(("bench", after.saturating_sub(before)));
    }
    Measured {
        phase: name,
        server: server.name,
        result,
        cpu,
        machine,
        server_rss_bytes: server.rss_bytes(),
    }
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
    let ticks_before = CpuTicks::now();
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
    // The last sample: the RSS after the last payment (the sampler's last one may be older).
    samples.push(MemorySample {
        seconds: started.elapsed().as_secs_f64(),
        payments: result.requests,
        rss_bytes: api.rss_bytes().unwrap_or(0),
    });
    let cpu = [bank, api]
        .iter()
        .zip(cpu_before)
        .filter_map(|(s, before)| Some((s.name, s.cpu()?.saturating_sub(before?))))
        .collect();
    let machine = ticks_before
        .zip(CpuTicks::now())
        .and_then(|(before, after)| after.since(before));
    report.push(Measured {
        phase: "memory",
        server: api.name,
        result,
        cpu,
        machine,
        server_rss_bytes: api.rss_bytes(),
    });
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
