//! The closed-loop load generator: `connections` tasks, each holding its own keep-alive
//! HTTP/1.1 connection (hyper, no pool), each sending its next request as soon as the previous
//! answer has been read in full. Every answer is checked; latencies go into an HDR histogram.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Latencies are recorded in microseconds, from 1 µs to 60 s, 3 significant digits.
const HIST_MAX_US: u64 = 60_000_000;
/// A request that takes longer is abandoned and counted as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds request `seq` of connection `conn`.
pub(crate) type MakeRequest = dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync;

/// What every answer of a phase must look like; anything else is counted as an error.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    pub(crate) status: u16,
    /// A header that must be present with exactly this value.
    pub(crate) header: Option<(&'static str, &'static str)>,
    /// A fragment the body must contain.
    pub(crate) body_contains: Option<&'static str>,
}

impl Expect {
    fn accepts(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
        status.as_u16() == self.status
            && self
                .header
                .is_none_or(|(name, value)| headers.get(name).is_some_and(|v| v == value))
            && self
                .body_contains
                .is_none_or(|needle| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

/// When a run stops measuring.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// Warm up for `warmup`, then measure for `measure`.
    Timed { warmup: Duration, measure: Duration },
    /// Measure from the start until `total` expected answers were seen (or `limit` elapsed).
    Count { total: u64, limit: Duration },
}

/// One run's figures.
#[derive(Debug)]
pub(crate) struct RunResult {
    /// Answers completed inside the measured window.
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
    pub(crate) histogram: Histogram<u64>,
    /// Every status seen in the window, expected or not.
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Answers that did not match the expectation (wrong status, header or body).
    pub(crate) unexpected: u64,
    /// Connection failures, resets and timeouts (no answer at all).
    pub(crate) transport_errors: u64,
    /// Per connection, the sequence numbers of its last accepted requests (see `keep_ok`).
    pub(crate) accepted: Vec<Vec<u64>>,
}

impl RunResult {
    pub(crate) fn errors(&self) -> u64 {
        self.unexpected + self.transport_errors
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

struct TaskResult {
    requests: u64,
    histogram: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    unexpected: u64,
    transport_errors: u64,
    accepted: Vec<u64>,
}

/// Drives `addr` closed-loop with `connections` connections.
///
/// `keep_ok` bounds how many accepted sequence numbers each connection remembers (for a later
/// phase that replays them). `progress`, when given, counts accepted answers as they come.
pub(crate) async fn run(
    addr: SocketAddr,
    connections: usize,
    make: Arc<MakeRequest>,
    expect: Expect,
    stop: Stop,
    keep_ok: usize,
    progress: Option<Arc<AtomicU64>>,
) -> RunResult {
    let started = Instant::now();
    let (measure_from, measure_until) = match stop {
        Stop::Timed { warmup, measure } => (started + warmup, started + warmup + measure),
        Stop::Count { limit, .. } => (started, started + limit),
    };
    let accepted_total = Arc::new(AtomicU64::new(0));
    let target = match stop {
        Stop::Count { total, .. } => total,
        Stop::Timed { .. } => u64::MAX,
    };
    let mut tasks = Vec::with_capacity(connections);
    for conn in 0..connections {
        let make = make.clone();
        let expect = expect.clone();
        let accepted_total = accepted_total.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = TaskResult {
                requests: 0,
                histogram: Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid bounds"),
                statuses: BTreeMap::new(),
                unexpected: 0,
                transport_errors: 0,
                accepted: Vec::new(),
            };
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                if now >= measure_until || accepted_total.load(Ordering::Relaxed) >= target {
                    break;
                }
                if sender.is_none() {
                    match connect(addr).await {
                        Ok(s) => sender = Some(s),
                        Err(_) => {
                            if now >= measure_from {
                                out.transport_errors += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let request = make(conn, seq);
                let this_seq = seq;
                seq += 1;
                let sent = Instant::now();
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    exchange(sender.as_mut().expect("connected above"), request),
                )
                .await;
                let done = Instant::now();
                let in_window = sent >= measure_from && done < measure_until;
                match answer {
                    Ok(Ok((status, headers, body))) => {
                        let ok = expect.accepts(status, &headers, &body);
                        if ok {
                            accepted_total.fetch_add(1, Ordering::Relaxed);
                            if let Some(progress) = &progress {
                                progress.fetch_add(1, Ordering::Relaxed);
                            }
                            if keep_ok > 0 {
                                if out.accepted.len() == keep_ok {
                                    out.accepted.remove(0);
                                }
                                out.accepted.push(this_seq);
                            }
                        }
                        if in_window {
                            out.requests += 1;
                            let us = (done - sent).as_micros() as u64;
                            out.histogram.saturating_record(us.clamp(1, HIST_MAX_US));
                            *out.statuses.entry(status.as_u16()).or_default() += 1;
                            if !ok {
                                out.unexpected += 1;
                            }
                        }
                        if headers
                            .get(http::header::CONNECTION)
                            .is_some_and(|v| v == "close")
                        {
                            sender = None;
                        }
                    }
                    Ok(Err(_)) | Err(_) => {
                        sender = None;
                        if in_window || done >= measure_from {
                            out.transport_errors += 1;
                        }
                    }
                }
            }
            out
        }));
    }
    let mut result = RunResult {
        requests: 0,
        elapsed: Duration::ZERO,
        histogram: Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid bounds"),
        statuses: BTreeMap::new(),
        unexpected: 0,
        transport_errors: 0,
        accepted: Vec::with_capacity(connections),
    };
    for task in tasks {
        let task = task.await.expect("load task panicked");
        result.requests += task.requests;
        result.histogram.add(&task.histogram).expect("same bounds");
        for (status, n) in task.statuses {
            *result.statuses.entry(status).or_default() += n;
        }
        result.unexpected += task.unexpected;
        result.transport_errors += task.transport_errors;
        result.accepted.push(task.accepted);
    }
    let ended = Instant::now().min(measure_until);
    result.elapsed = ended.saturating_duration_since(measure_from);
    result
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads its whole body.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}
