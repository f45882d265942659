//! The demo webhook receiver (issue 20 item 5): `POST /webhooks/receiver` verifies each delivery
//! with the `webhooks` crate against the endpoint secret(s) this dashboard knows, keeps the last
//! [`MAX_DELIVERIES`] for the page's "Webhooks" card, and can be told to fail or hang a share of
//! deliveries (like the bank's chaos) so the API's retries and breaker show.
//!
//! The secret comes either from a file (`--webhook-secret-file`, one `whsec_…` per line) or from
//! registering this receiver with the API at start (`--webhook-register`, see [`register`]).
//! Secrets stay in this module: the page and the logs only ever see how many there are.
//!
//! The route is unauthenticated by nature (the API posts to it); what authenticates a delivery is
//! its signature. Until a secret is known every delivery answers 503, so the API keeps it and
//! tries again later rather than losing it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use webhooks::Secret;

use crate::upstream::{Key, Upstream, UpstreamError};

/// Deliveries kept for the page (oldest dropped first).
pub(crate) const MAX_DELIVERIES: usize = 200;
/// Webhook ids whose arrival count is kept; past this the ids no kept delivery shows are dropped.
const MAX_TRACKED_IDS: usize = 10_000;
/// The longest a hang may last (the API's delivery timeout is far shorter).
pub(crate) const MAX_HANG_MS: u64 = 120_000;
/// The event types the receiver registers for: every payment outcome.
pub(crate) const EVENT_TYPES: [&str; 4] = [
    "payment.succeeded",
    "payment.declined",
    "payment.failed",
    "payment.pending",
];
/// How long the old secret stays valid when an existing endpoint's secret is rotated: deliveries
/// already signed for the old one still verify somewhere for a while.
pub(crate) const ROTATION_OVERLAP_SECS: u64 = 300;
/// Longest text kept from a delivery's body field (a hostile body cannot grow the page).
const MAX_FIELD_CHARS: usize = 120;

/// The receiver's chaos: shares of deliveries to fail (500) and to hold before answering.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiverChaos {
    /// Share of deliveries answered 500, 0 to 1.
    #[serde(default)]
    pub(crate) fail_share: f64,
    /// Share of deliveries held `hang_ms` before the answer, 0 to 1.
    #[serde(default)]
    pub(crate) hang_share: f64,
    /// How long a held delivery is held, at most [`MAX_HANG_MS`].
    #[serde(default)]
    pub(crate) hang_ms: u64,
}

impl ReceiverChaos {
    /// Refuses shares outside 0..=1 and hangs over [`MAX_HANG_MS`].
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, share) in [
            ("fail_share", self.fail_share),
            ("hang_share", self.hang_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.hang_ms > MAX_HANG_MS {
            return Err(format!("hang_ms must be at most {MAX_HANG_MS}"));
        }
        Ok(())
    }
}

/// Where the receiver's secret comes from, and how far that got; the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Registration {
    /// Neither `--webhook-register` nor `--webhook-secret-file`: deliveries cannot verify.
    Off,
    /// Secrets given by `--webhook-secret-file`.
    FromFile,
    /// `--webhook-register` without a tenant key: nothing to register with.
    NoApiKey,
    /// Registering; `attempts` failed so far, the last for `last_error`.
    Pending {
        attempts: u32,
        last_error: Option<String>,
    },
    /// Registered: the endpoint was `created` or its secret `rotated`.
    Registered {
        endpoint_id: String,
        action: &'static str,
    },
}

/// One delivery as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivery {
    pub(crate) webhook_id: String,
    pub(crate) event_id: Option<String>,
    pub(crate) event_type: Option<String>,
    pub(crate) payment_id: Option<String>,
    pub(crate) payment_status: Option<String>,
    pub(crate) verified: bool,
    /// Why it did not verify.
    pub(crate) refusal: Option<String>,
    /// Which arrival of this webhook id this was (1: the first; more: a retry or a duplicate).
    pub(crate) arrival: u32,
    /// The status it was answered with.
    pub(crate) answered: u16,
    /// How long the chaos held it before answering.
    pub(crate) held_ms: u64,
    pub(crate) received_at_ms: u64,
}

/// A source of draws in 0..1 for the chaos (injected in tests).
pub(crate) type Draw = Box<dyn Fn() -> f64 + Send + Sync>;

/// The receiver's state.
pub(crate) struct Receiver {
    secrets: RwLock<Vec<Secret>>,
    chaos: Mutex<ReceiverChaos>,
    draw: Draw,
    log: Mutex<Log>,
    registration: tokio::sync::watch::Sender<Registration>,
    /// Where this receiver is reached, as registered with the API.
    url: RwLock<Option<String>>,
}

#[derive(Debug, Default)]
struct Log {
    deliveries: VecDeque<Delivery>,
    arrivals: HashMap<String, u32>,
    received: u64,
    verified: u64,
    refused: u64,
    duplicates: u64,
    chaos_failed: u64,
    held: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("secrets", &self.secret_count())
            .field("chaos", &*self.chaos.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self::with_draw(Box::new(rand::random::<f64>))
    }
}

impl Receiver {
    /// A receiver whose chaos draws come from `draw`.
    pub(crate) fn with_draw(draw: Draw) -> Self {
        Self {
            secrets: RwLock::default(),
            chaos: Mutex::default(),
            draw,
            log: Mutex::default(),
            registration: tokio::sync::watch::Sender::new(Registration::Off),
            url: RwLock::default(),
        }
    }

    /// Replaces the secrets deliveries are verified with.
    pub(crate) fn set_secrets(&self, secrets: Vec<Secret>) {
        *self.secrets.write().unwrap() = secrets;
    }

    fn secret_count(&self) -> usize {
        self.secrets.read().unwrap().len()
    }

    pub(crate) fn set_registration(&self, state: Registration) {
        self.registration.send_replace(state);
    }

    /// Watches the registration (tests wait on it instead of sleeping).
    #[cfg(test)]
    pub(crate) fn registration(&self) -> tokio::sync::watch::Receiver<Registration> {
        self.registration.subscribe()
    }

    pub(crate) fn set_url(&self, url: String) {
        *self.url.write().unwrap() = Some(url);
    }

    pub(crate) fn set_chaos(&self, chaos: ReceiverChaos) {
        *self.chaos.lock().unwrap() = chaos;
    }

    pub(crate) fn chaos(&self) -> ReceiverChaos {
        *self.chaos.lock().unwrap()
    }

    /// What the page's card shows: never a secret.
    pub(crate) fn view(&self) -> Value {
        let log = self.log.lock().unwrap();
        json!({
            "receiver_url": *self.url.read().unwrap(),
            "registration": *self.registration.borrow(),
            "secrets": self.secret_count(),
            "chaos": self.chaos(),
            "totals": {
                "received": log.received, "verified": log.verified, "refused": log.refused,
                "duplicates": log.duplicates, "chaos_failed": log.chaos_failed, "held": log.held,
            },
            // Newest first, each with how often its webhook id has arrived by now.
            "deliveries": log.deliveries.iter().rev().map(|d| {
                let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
                v["arrivals"] = json!(log.arrivals.get(&d.webhook_id).copied().unwrap_or(d.arrival));
                v
            }).collect::<Vec<_>>(),
        })
    }

    /// Verifies, records and decides the answer of one delivery; returns it with how long to
    /// hold it first.
    fn accept(&self, headers: &HeaderMap, body: &[u8], now_ms: u64) -> (StatusCode, Value, u64) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let webhook_id = header(webhooks::HEADER_ID).map(|s| truncate(s.to_owned()));
        let verdict = match (
            webhook_id.as_deref(),
            header(webhooks::HEADER_TIMESTAMP),
            header(webhooks::HEADER_SIGNATURE),
        ) {
            (Some(id), Some(ts), Some(sig)) => {
                let secrets = self.secrets.read().unwrap();
                if secrets.is_empty() {
                    Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no endpoint secret known yet".to_owned(),
                    ))
                } else {
                    let refs: Vec<&Secret> = secrets.iter().collect();
                    webhooks::verify(
                        &refs,
                        id,
                        ts,
                        sig,
                        body,
                        (now_ms / 1000) as i64,
                        webhooks::DEFAULT_TOLERANCE_SECS,
                    )
                    .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))
                }
            }
            _ => Err((
                StatusCode::BAD_REQUEST,
                "missing webhook-id, webhook-timestamp or webhook-signature".to_owned(),
            )),
        };
        // Both draws every time, in this order, so an injected sequence maps to outcomes.
        let chaos = self.chaos();
        let hang = (self.draw)() < chaos.hang_share;
        let fail = (self.draw)() < chaos.fail_share;
        let held_ms = if hang { chaos.hang_ms } else { 0 };
        let (status, answer) = match (&verdict, fail) {
            (_, true) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "receiver_chaos", "detail": "the receiver's chaos failed this delivery"}),
            ),
            (Ok(()), false) => (StatusCode::OK, json!({"received": true})),
            (Err((status, reason)), false) => {
                (*status, json!({"error": "not_accepted", "detail": reason}))
            }
        };
        let event: Option<Value> = serde_json::from_slice(body).ok();
        let field = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| truncate(s.to_owned()));
        let payment = event
            .as_ref()
            .and_then(|e| e.get("data").or_else(|| e.get("payment")))
            .map(|p| p.get("object").unwrap_or(p));
        let webhook_id = webhook_id.unwrap_or_default();
        let mut log = self.log.lock().unwrap();
        let arrival = {
            let n = log.arrivals.entry(webhook_id.clone()).or_default();
            *n += 1;
            *n
        };
        log.received += 1;
        if verdict.is_ok() {
            log.verified += 1;
        } else {
            log.refused += 1;
        }
        if arrival > 1 {
            log.duplicates += 1;
        }
        if fail {
            log.chaos_failed += 1;
        }
        if hang {
            log.held += 1;
        }
        log.deliveries.push_back(Delivery {
            event_id: field(event.as_ref().and_then(|e| e.get("id"))),
            event_type: field(event.as_ref().and_then(|e| e.get("type"))),
            payment_id: field(payment.and_then(|p| p.get("id"))),
            payment_status: field(payment.and_then(|p| p.get("status"))),
            verified: verdict.is_ok(),
            refusal: verdict.err().map(|(_, reason)| reason),
            arrival,
            answered: status.as_u16(),
            held_ms,
            received_at_ms: now_ms,
            webhook_id,
        });
        while log.deliveries.len() > MAX_DELIVERIES {
            log.deliveries.pop_front();
        }
        if log.arrivals.len() > MAX_TRACKED_IDS {
            let Log {
                deliveries,
                arrivals,
                ..
            } = &mut *log;
            arrivals.retain(|id, _| deliveries.iter().any(|d| &d.webhook_id == id));
        }
        (status, answer, held_ms)
    }
}

fn truncate(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_FIELD_CHARS) {
        text.truncate(at);
    }
    text
}

/// `POST /webhooks/receiver`.
pub(crate) async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, answer, held_ms) = receiver.accept(&headers, &body, crate::now_ms());
    if held_ms > 0 {
        // The chaos hang itself: the API's delivery timeout should fire first.
        tokio::time::sleep(Duration::from_millis(held_ms)).await;
    }
    (status, Json(answer)).into_response()
}

/// How registration retries when the API is not there yet (or is older and has no endpoints).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Why one registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the payment API has no webhook endpoints (404 on {0}): an older API?")]
    NotSupported(&'static str),
    #[error("the payment API answered {status} to {what}: {detail}")]
    Refused {
        what: &'static str,
        status: u16,
        detail: String,
    },
    #[error("the payment API's answer to {0} carries no usable secret")]
    NoSecret(&'static str),
}

/// Registers `url` for the tenant of the dashboard's API key until it works: rotates the secret
/// of an existing endpoint with that URL (the previous dashboard's secret is gone with it), or
/// creates one; then verifies deliveries with the new secret.
pub(crate) async fn register(
    upstream: Arc<Upstream>,
    receiver: Arc<Receiver>,
    url: String,
    backoff: Backoff,
) {
    receiver.set_url(url.clone());
    let mut attempts = 0u32;
    let mut delay = backoff.first;
    let mut last_logged: Option<String> = None;
    receiver.set_registration(Registration::Pending {
        attempts,
        last_error: None,
    });
    loop {
        match register_once(&upstream, &url).await {
            Ok((secret, endpoint_id, action)) => {
                receiver.set_secrets(vec![secret]);
                tracing::info!(%endpoint_id, action, receiver_url = %url, "webhook receiver registered with the payment API");
                receiver.set_registration(Registration::Registered {
                    endpoint_id,
                    action,
                });
                return;
            }
            Err(error) => {
                attempts += 1;
                let text = error.to_string();
                // Once per distinct reason, not once per retry.
                if last_logged.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, retry_in_ms = delay.as_millis() as u64, "webhook receiver not registered yet; retrying in the background");
                    last_logged = Some(text.clone());
                }
                receiver.set_registration(Registration::Pending {
                    attempts,
                    last_error: Some(text),
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
        }
    }
}

async fn register_once(
    upstream: &Upstream,
    url: &str,
) -> Result<(Secret, String, &'static str), RegisterError> {
    const LIST: &str = "GET /v1/webhook-endpoints";
    const CREATE: &str = "POST /v1/webhook-endpoints";
    const ROTATE: &str = "POST /v1/webhook-endpoints/{id}/rotate-secret";
    let list = upstream
        .api_get("/v1/webhook-endpoints", Key::Tenant)
        .await?;
    expect(LIST, &list, 200)?;
    let same_url = |u: &str| {
        // The API may normalise the URL (host case, a trailing slash on an empty path).
        u == url
            || match (reqwest::Url::parse(u), reqwest::Url::parse(url)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
    };
    let existing = list.body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str().is_some_and(same_url))
        .and_then(|e| e["id"].as_str())
        .map(str::to_owned);
    let (answer, what, action, endpoint_id) = match existing {
        Some(id) if valid_id(&id) => {
            let answer = upstream
                .api_post(
                    &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
                    Key::Tenant,
                    Some(&json!({ "overlap_seconds": ROTATION_OVERLAP_SECS })),
                    &[],
                )
                .await?;
            expect(ROTATE, &answer, 200)?;
            (answer, ROTATE, "rotated", id)
        }
        _ => {
            let answer = upstream
                .api_post(
                    "/v1/webhook-endpoints",
                    Key::Tenant,
                    Some(&json!({ "url": url, "event_types": EVENT_TYPES })),
                    &[],
                )
                .await?;
            expect(CREATE, &answer, 201)?;
            let id = answer.body["id"].as_str().unwrap_or_default().to_owned();
            (answer, CREATE, "created", id)
        }
    };
    let secret = answer.body["secret"]
        .as_str()
        .and_then(|s| Secret::parse(s).ok())
        .ok_or(RegisterError::NoSecret(what))?;
    Ok((secret, endpoint_id, action))
}

/// An endpoint id safe to put in a path.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn expect(
    what: &'static str,
    answer: &crate::upstream::Answer,
    want: u16,
) -> Result<(), RegisterError> {
    match answer.status {
        s if s == want || (want == 201 && s == 200) => Ok(()),
        404 => Err(RegisterError::NotSupported(what)),
        status => Err(RegisterError::Refused {
            what,
            status,
            detail: answer.body["detail"]
                .as_str()
                .or_else(|| answer.body["title"].as_str())
                .or_else(|| answer.body["code"].as_str())
                .map(|s| truncate(s.to_owned()))
                .unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests;
