//! The chaos run's webhook receiver (issue 20, item 6): an in-process HTTP server on
//! `127.0.0.1:0` that `run chaos` registers as the tenant's endpoint, which records every
//! delivery (its three headers, the exact body, when it arrived and what it was answered) for
//! the audit of `webhook_audit`, and answers on a seeded [`Schedule`]: healthy, then failing a
//! share of deliveries (500), then hanging a share (held longer than the API's attempt timeout,
//! for a bounded time), then healthy again. It does not verify signatures itself: the audit does,
//! for every delivery, the refused and hung ones too.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use rand::{rngs::SmallRng, Rng as _, SeedableRng as _};

use crate::webhook_audit::{Answer, Delivery};

/// The path the receiver listens on.
pub(crate) const PATH: &str = "/webhooks";

/// What the receiver does to the deliveries of one part of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Healthy,
    /// Answers 500 to this share of the deliveries.
    Failing {
        share: f64,
    },
    /// Holds this share of the deliveries for the schedule's `hang`, then answers 503.
    Hanging {
        share: f64,
    },
}

/// One part of the schedule: `mode` from `at` (from the start of the traffic) on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Phase {
    pub(crate) at: Duration,
    pub(crate) mode: Mode,
}

/// The receiver's seeded schedule over the run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    pub(crate) phases: Vec<Phase>,
    /// How long a hung delivery is held: longer than the API's attempt timeout, and bounded.
    pub(crate) hang: Duration,
    /// Seeds each delivery's draw (with its event id and how many times that id came before).
    seed: u64,
}

/// The longest hold, whatever the API's timeout: a hung request must end.
const MAX_HANG: Duration = Duration::from_secs(30);

/// The longest failing part, and the longest hanging part, whatever the run's length: the
/// chaos run's retry schedule spans about 4 min 19 s (`--webhook-retry-scale 0.001`), and the
/// endpoint's breaker doubles its opening on every failed probe, so a receiver bad for longer
/// would make the API give up deliveries for a reason of the test's own making.
const MAX_FAILING: Duration = Duration::from_secs(40);
const MAX_HANGING: Duration = Duration::from_secs(30);

/// The schedule of a run of `duration` from `seed`, for an API whose attempt timeout is
/// `api_timeout`: healthy until 15–25% of the run; failing 40–70% of the deliveries for
/// 15–25% of it (at most 40 s); hanging 30–60% for 10–20% (at most 30 s); healthy from then on
/// (by 70% of the run at the latest, so the retries and the endpoint's breaker recover while
/// traffic still flows).
pub(crate) fn schedule(duration: Duration, seed: u64, api_timeout: Duration) -> Schedule {
    // A stream of its own: the bank schedules and the kills of a seed do not move.
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7765_6268_6f6f_6b73);
    let at = |share: f64| Duration::from_millis((duration.as_millis() as f64 * share) as u64);
    let fail_from = at(rng.gen_range(0.15..0.25));
    let hang_from = fail_from + at(rng.gen_range(0.15..0.25)).min(MAX_FAILING);
    let healthy_from = hang_from + at(rng.gen_range(0.10..0.20)).min(MAX_HANGING);
    let round = |share: f64| (share * 100.0).round() / 100.0;
    let fail_share = round(rng.gen_range(0.4..0.7));
    let hang_share = round(rng.gen_range(0.3..0.6));
    Schedule {
        phases: vec![
            Phase {
                at: Duration::ZERO,
                mode: Mode::Healthy,
            },
            Phase {
                at: fail_from,
                mode: Mode::Failing { share: fail_share },
            },
            Phase {
                at: hang_from,
                mode: Mode::Hanging { share: hang_share },
            },
            Phase {
                at: healthy_from,
                mode: Mode::Healthy,
            },
        ],
        hang: (api_timeout + Duration::from_secs(1)).min(MAX_HANG),
        seed: rng.gen(),
    }
}

impl Schedule {
    /// A schedule that always answers 200 (for tests of the recording).
    #[cfg(test)]
    pub(crate) fn healthy() -> Self {
        Self {
            phases: vec![Phase {
                at: Duration::ZERO,
                mode: Mode::Healthy,
            }],
            hang: Duration::ZERO,
            seed: 0,
        }
    }

    /// The mode at `t` from the start of the traffic.
    pub(crate) fn mode_at(&self, t: Duration) -> Mode {
        self.phases
            .iter()
            .rev()
            .find(|p| p.at <= t)
            .map_or(Mode::Healthy, |p| p.mode)
    }

    /// How to answer the `nth` arrival (0 first) of event `id` at `t` from the start of the
    /// traffic (`None`: before the start, or after healing: always 200). Deterministic.
    pub(crate) fn decide(&self, t: Option<Duration>, id: &str, nth: u32) -> Answer {
        let Some(t) = t else {
            return Answer::Accepted;
        };
        let draw = unit(self.seed, id, nth);
        match self.mode_at(t) {
            Mode::Healthy => Answer::Accepted,
            Mode::Failing { share } if draw < share => Answer::Refused,
            Mode::Hanging { share } if draw < share => Answer::Hung,
            _ => Answer::Accepted,
        }
    }
}

/// A number in `[0, 1)` from the seed, the event id and the arrival's rank (FNV-1a, then a
/// SplitMix64 finaliser): the same on every machine and every Rust version.
fn unit(seed: u64, id: &str, nth: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.bytes().chain(nth.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                let at = p.at.as_secs_f64();
                match p.mode {
                    Mode::Healthy => format!("{at:.1}s healthy"),
                    Mode::Failing { share } => {
                        format!("{at:.1}s failing {:.0}% (500)", share * 100.0)
                    }
                    Mode::Hanging { share } => format!(
                        "{at:.1}s hanging {:.0}% (held {:.1}s)",
                        share * 100.0,
                        self.hang.as_secs_f64()
                    ),
                }
            })
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// What the handler shares.
#[derive(Debug)]
struct Shared {
    schedule: Schedule,
    /// When the traffic started (the schedule's zero); `None` before.
    started: Mutex<Option<Instant>>,
    healed: AtomicBool,
    /// Every delivery in arrival order, and how many times each event id arrived.
    log: Mutex<(Vec<Delivery>, HashMap<String, u32>)>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// `http://127.0.0.1:PORT/webhooks`, to register.
    pub(crate) url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `127.0.0.1:0`, healthy until [`Receiver::begin`].
    pub(crate) async fn start(schedule: Schedule) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen for webhooks on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            schedule,
            started: Mutex::new(None),
            healed: AtomicBool::new(false),
            log: Mutex::new((Vec::new(), HashMap::new())),
        });
        let app = axum::Router::new()
            .route(PATH, post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("[chaos] the webhook receiver stopped: {error}");
            }
        });
        Ok(Receiver {
            url: format!("http://{addr}{PATH}"),
            shared,
            server,
        })
    }

    /// Starts the schedule's clock (the traffic starts now).
    pub(crate) fn begin(&self, at: Instant) {
        *self.shared.started.lock().unwrap() = Some(at);
    }

    /// Answers 200 to everything from now on.
    pub(crate) fn heal(&self) {
        self.shared.healed.store(true, Ordering::SeqCst);
    }

    /// Every delivery so far, in arrival order.
    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.shared.log.lock().unwrap().0.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = SystemTime::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = header(webhooks::HEADER_ID);
    let t = if shared.healed.load(Ordering::SeqCst) {
        None
    } else {
        shared.started.lock().unwrap().map(|s| s.elapsed())
    };
    // Recorded before any hold: a hung request is in the log even if the API hangs up first.
    let answer = {
        let mut log = shared.log.lock().unwrap();
        let nth = match &id {
            Some(id) => {
                let count = log.1.entry(id.clone()).or_default();
                *count += 1;
                *count - 1
            }
            None => 0,
        };
        let answer = shared.schedule.decide(t, id.as_deref().unwrap_or(""), nth);
        log.0.push(Delivery {
            id,
            timestamp: header(webhooks::HEADER_TIMESTAMP),
            signature: header(webhooks::HEADER_SIGNATURE),
            body: body.to_vec(),
            arrived,
            answer,
        });
        answer
    };
    if answer == Answer::Hung {
        tokio::time::sleep(shared.schedule.hang).await;
    }
    StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(1000);

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_answers_and_another_seed_another() {
        let run = Duration::from_secs(60);
        let a = schedule(run, 7, TIMEOUT);
        assert_eq!(a, schedule(run, 7, TIMEOUT));
        assert_ne!(a, schedule(run, 8, TIMEOUT));
        let b = schedule(run, 7, TIMEOUT);
        for nth in 0..5 {
            for t in [1, 13, 20, 30, 50] {
                let t = Some(Duration::from_secs(t));
                assert_eq!(a.decide(t, "evt_0193", nth), b.decide(t, "evt_0193", nth));
            }
        }
    }

    #[test]
    fn the_schedule_is_healthy_failing_hanging_healthy_inside_the_run() {
        for seed in 0..200 {
            let run = Duration::from_secs(20);
            let s = schedule(run, seed, TIMEOUT);
            assert_eq!(s.phases.len(), 4);
            assert!(s.phases.windows(2).all(|w| w[0].at < w[1].at));
            assert_eq!(s.phases[0].mode, Mode::Healthy);
            assert!(
                matches!(s.phases[1].mode, Mode::Failing { share } if (0.4..=0.7).contains(&share))
            );
            assert!(
                matches!(s.phases[2].mode, Mode::Hanging { share } if (0.3..=0.6).contains(&share))
            );
            assert_eq!(s.phases[3].mode, Mode::Healthy);
            // Bad for at least a quarter of the run, healthy again by 70% of it.
            assert!(s.phases[1].at >= run.mul_f64(0.15));
            assert!(s.phases[3].at - s.phases[1].at >= run.mul_f64(0.25));
            assert!(s.phases[3].at <= run.mul_f64(0.70));
            assert_eq!(s.mode_at(run), Mode::Healthy);
        }
        // A long run: the bad parts are capped, wherever they fall.
        for seed in 0..50 {
            let run = Duration::from_secs(3600);
            let s = schedule(run, seed, TIMEOUT);
            assert!(s.phases[1].at >= run.mul_f64(0.15) && s.phases[1].at <= run.mul_f64(0.25));
            assert!(s.phases[2].at - s.phases[1].at <= MAX_FAILING);
            assert!(s.phases[3].at - s.phases[2].at <= MAX_HANGING);
        }
    }

    #[test]
    fn a_hang_outlasts_the_api_timeout_and_is_bounded() {
        let s = schedule(Duration::from_secs(20), 1, TIMEOUT);
        assert_eq!(s.hang, Duration::from_secs(2));
        let long = schedule(Duration::from_secs(20), 1, Duration::from_secs(60));
        assert_eq!(long.hang, MAX_HANG);
    }

    #[test]
    fn answers_follow_the_phase_and_its_share_and_healing_or_no_start_means_200() {
        let s = schedule(Duration::from_secs(100), 3, TIMEOUT);
        let mid = |i: usize| Some((s.phases[i].at + s.phases[i + 1].at) / 2);
        let count = |t: Option<Duration>, answer: Answer| {
            (0..2000)
                .filter(|i| s.decide(t, &format!("evt_{i:032x}"), 0) == answer)
                .count()
        };
        let Mode::Failing { share: fail } = s.phases[1].mode else {
            panic!()
        };
        let Mode::Hanging { share: hang } = s.phases[2].mode else {
            panic!()
        };
        let refused = count(mid(1), Answer::Refused) as f64 / 2000.0;
        let hung = count(mid(2), Answer::Hung) as f64 / 2000.0;
        assert!((refused - fail).abs() < 0.05, "{refused} vs {fail}");
        assert!((hung - hang).abs() < 0.05, "{hung} vs {hang}");
        assert_eq!(count(mid(1), Answer::Hung), 0);
        assert_eq!(count(mid(2), Answer::Refused), 0);
        assert_eq!(count(mid(0), Answer::Accepted), 2000);
        assert_eq!(count(Some(Duration::from_secs(99)), Answer::Accepted), 2000);
        assert_eq!(count(None, Answer::Accepted), 2000);
        // A retry of the same event gets a draw of its own.
        let again = (0..2000)
            .filter(|i| {
                let id = format!("evt_{i:032x}");
                s.decide(mid(1), &id, 0) == Answer::Refused
                    && s.decide(mid(1), &id, 1) == Answer::Refused
            })
            .count() as f64
            / 2000.0;
        assert!((again - fail * fail).abs() < 0.05, "{again}");
        assert!(s.to_string().starts_with("0.0s healthy, "));
        assert!(s.to_string().contains("% (held 2.0s), "));
    }

    #[tokio::test]
    async fn the_receiver_records_headers_body_and_answer_of_each_delivery() {
        let receiver = Receiver::start(Schedule::healthy()).await.unwrap();
        receiver.begin(Instant::now());
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let status = http
                .post(&receiver.url)
                .header(webhooks::HEADER_ID, "evt_1")
                .header(webhooks::HEADER_TIMESTAMP, "1700000000")
                .header(webhooks::HEADER_SIGNATURE, "v1,abc")
                .body(r#"{"id":"evt_1"}"#)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
        let bare = http.post(&receiver.url).body("x").send().await.unwrap();
        assert_eq!(bare.status(), 200);
        let log = receiver.deliveries();
        assert_eq!(log.len(), 3);
        assert_eq!(log[0].id.as_deref(), Some("evt_1"));
        assert_eq!(log[0].timestamp.as_deref(), Some("1700000000"));
        assert_eq!(log[0].signature.as_deref(), Some("v1,abc"));
        assert_eq!(log[0].body, br#"{"id":"evt_1"}"#);
        assert_eq!(log[0].answer, Answer::Accepted);
        assert_eq!(log[2].id, None);
        assert!(log[0].arrived <= log[1].arrived);
    }
}
