//! The delivery worker: leases due deliveries, sends each one, records what happened.
//!
//! Every poll it leases a batch (owner: this instance plus a fresh token per batch, so a
//! batch's writes only ever apply under that batch's own lease) and starts each of its
//! deliveries as a task of its own: the next poll does not wait for them, so an endpoint that
//! hangs holds only its own deliveries (at most its bulkhead's worth), never the others'. For
//! each:
//! 1. the endpoint's breaker: open → the delivery is postponed until the breaker admits a
//!    probe, without a call and without counting a failure;
//! 2. the endpoint's bulkhead: full → postponed by one poll;
//! 3. the call: `POST` of the stored payload with `content-type: application/json`,
//!    `webhook-id` (the event id, the same on every attempt), `webhook-timestamp` (this
//!    attempt's time) and `webhook-signature` (one `v1,` signature per live secret, the newest
//!    first), bounded by the attempt timeout, no redirect followed, every address checked
//!    against the URL policy;
//! 4. a 2xx is delivered; anything else (a status, a timeout, a refused connection or address)
//!    is a failed attempt, retried per the schedule, or the delivery is failed after its last;
//! 5. the attempt and the delivery's next state are recorded in one store write, under the
//!    batch's lease.
//!
//! A store fault at step 5 loses nothing: the delivery keeps its lease until it expires and is
//! then due again (so a delivered event may be sent twice: receivers dedupe by `webhook-id`).
//! Nothing is ever recorded as delivered without a 2xx.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use ::webhooks::Secret;
use chrono::{DateTime, Utc};
use payment_store::{DeliveryNext, LeasedDelivery, NewAttempt};
use resilience::breaker::Outcome;

use super::Webhooks;

/// Deliveries in flight at once, in batches: beyond this the worker leases no more until some
/// finish (each endpoint's bulkhead bounds its own share well below it).
const MAX_IN_FLIGHT_BATCHES: usize = 4;

/// Leases and starts deliveries every poll until `stop` fires; deliveries in progress are
/// finished first (each is bounded by the attempt timeout).
pub(crate) async fn run(webhooks: Arc<Webhooks>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(webhooks.settings.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = webhooks.settings.batch as usize;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        while in_flight.try_join_next().is_some() {}
        // A full batch means more may be due: go again at once, up to the in-flight bound.
        while in_flight.len() < batch * MAX_IN_FLIGHT_BATCHES && !*stop.borrow() {
            let Some((owner, leased)) = lease(&webhooks).await else {
                break;
            };
            let full = leased.len() == batch;
            let owner: Arc<str> = owner.into();
            for delivery in leased {
                let (webhooks, owner) = (webhooks.clone(), owner.clone());
                in_flight.spawn(async move { deliver(&webhooks, &owner, delivery).await });
            }
            if !full {
                break;
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// One batch, start to finish (its deliveries concurrently): returns how many deliveries it
/// leased. The worker does not wait for a batch ([`run`]); tests step with this.
#[cfg(test)]
pub(crate) async fn pass(webhooks: &Webhooks) -> usize {
    let Some((owner, leased)) = lease(webhooks).await else {
        return 0;
    };
    let count = leased.len();
    futures_util::future::join_all(
        leased
            .into_iter()
            .map(|delivery| deliver(webhooks, &owner, delivery)),
    )
    .await;
    count
}

/// Leases a batch of due deliveries under a fresh owner token; `None` when none is due or the
/// store could not be asked.
async fn lease(webhooks: &Webhooks) -> Option<(String, Vec<LeasedDelivery>)> {
    let owner = format!(
        "{}/webhooks/{}",
        webhooks.instance_id,
        uuid::Uuid::new_v4().simple()
    );
    let now = Utc::now();
    let until =
        now + chrono::Duration::from_std(webhooks.settings.lease).unwrap_or(chrono::Duration::MAX);
    let leased = match webhooks
        .store
        .lease_deliveries(&owner, until, now, webhooks.settings.batch)
        .await
    {
        Ok(leased) => leased,
        Err(error) => {
            webhooks.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "cannot lease webhook deliveries; the next poll tries again");
            return None;
        }
    };
    if leased.is_empty() {
        return None;
    }
    webhooks.stats.batches.fetch_add(1, Ordering::Relaxed);
    Some((owner, leased))
}

/// What one delivery's turn came to.
#[derive(Debug)]
struct Turn {
    attempt: Option<NewAttempt>,
    next: DeliveryNext,
}

async fn deliver(webhooks: &Webhooks, owner: &str, delivery: LeasedDelivery) {
    let turn = attempt(webhooks, &delivery).await;
    let stats = &webhooks.stats;
    match turn.next {
        DeliveryNext::Delivered => stats.delivered.fetch_add(1, Ordering::Relaxed),
        DeliveryNext::Failed => stats.failed.fetch_add(1, Ordering::Relaxed),
        DeliveryNext::Postpone(_) => stats.postponed.fetch_add(1, Ordering::Relaxed),
        DeliveryNext::Retry(_) => 0,
    };
    if let Some(attempt) = &turn.attempt {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        if attempt.error.is_some() {
            stats.attempt_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    let recorded = webhooks
        .store
        .record_delivery(
            &delivery.event_id,
            &delivery.endpoint_id,
            owner,
            turn.attempt.as_ref(),
            turn.next,
            Utc::now(),
        )
        .await;
    if let Err(error) = &recorded {
        stats.store_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(event_id = %delivery.event_id, endpoint_id = %delivery.endpoint_id, %error, "cannot record a webhook delivery; it is due again once its lease expires");
    }
    let status = turn.attempt.as_ref().and_then(|a| a.status);
    let error = turn.attempt.as_ref().and_then(|a| a.error.as_deref());
    let (event_id, endpoint_id) = (&delivery.event_id, &delivery.endpoint_id);
    match (&recorded, turn.next) {
        (Ok(true), DeliveryNext::Delivered | DeliveryNext::Postpone(_)) => {
            tracing::debug!(%event_id, %endpoint_id, next = ?turn.next, status, "webhook delivery turn");
        }
        (Ok(true), DeliveryNext::Retry(at)) => {
            tracing::info!(%event_id, %endpoint_id, status, error, retry_at = %at, "webhook delivery attempt failed; it is retried");
        }
        (Ok(true), DeliveryNext::Failed) => {
            tracing::warn!(%event_id, %endpoint_id, status, error, "webhook delivery failed after the last attempt of its schedule");
        }
        (Ok(false), _) => {
            tracing::info!(%event_id, %endpoint_id, next = ?turn.next, status, "webhook delivery turn not recorded: the lease was lost (another worker has it)");
        }
        (Err(_), _) => {}
    }
}

/// The breaker, the bulkhead and the call; decides what becomes of the delivery.
async fn attempt(webhooks: &Webhooks, delivery: &LeasedDelivery) -> Turn {
    let guard = webhooks.guard(&delivery.endpoint_id);
    let permit = match guard.breaker.try_acquire() {
        Ok(permit) => permit,
        Err(rejected) => {
            let wait = rejected
                .retry_after
                .max(webhooks.settings.poll)
                .min(std::time::Duration::from_secs(600));
            return Turn {
                attempt: None,
                next: DeliveryNext::Postpone(later(Utc::now(), wait)),
            };
        }
    };
    let Ok(_slot) = guard.bulkhead.try_enter() else {
        // Not the endpoint's fault: the permit records nothing.
        permit.record(Outcome::Ignored);
        return Turn {
            attempt: None,
            next: DeliveryNext::Postpone(later(Utc::now(), webhooks.settings.poll)),
        };
    };
    let at = Utc::now();
    let started = Instant::now();
    let sent = send(webhooks, delivery, at).await;
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_millis() as u64;
    let (status, error) = match sent {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (
            Some(status),
            Some(format!("the endpoint answered {status}")),
        ),
        Err(error) => (None, Some(error)),
    };
    permit.record_elapsed(
        if error.is_none() {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        elapsed,
    );
    let next = if error.is_none() {
        DeliveryNext::Delivered
    } else {
        match webhooks
            .settings
            .schedule
            .delay_after(delivery.failures + 1)
        {
            Some(delay) => DeliveryNext::Retry(later(Utc::now(), delay)),
            None => DeliveryNext::Failed,
        }
    };
    Turn {
        attempt: Some(NewAttempt {
            at,
            status,
            latency_ms,
            error,
        }),
        next,
    }
}

fn later(now: DateTime<Utc>, wait: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(365))
}

/// The signed POST; the status, or why no status came (a text for the attempt's record: it
/// names no secret).
async fn send(
    webhooks: &Webhooks,
    delivery: &LeasedDelivery,
    at: DateTime<Utc>,
) -> Result<u16, String> {
    let secrets = delivery
        .endpoint
        .signing_secrets(at)
        .into_iter()
        .map(Secret::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the endpoint's stored secret does not parse".to_owned())?;
    let secrets: Vec<&Secret> = secrets.iter().collect();
    let timestamp = at.timestamp();
    let body = delivery.payload.as_bytes();
    let signature = ::webhooks::signature_header(&secrets, &delivery.event_id, timestamp, body);
    let response = webhooks
        .client
        .post(&delivery.endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(::webhooks::HEADER_ID, &delivery.event_id)
        .header(::webhooks::HEADER_TIMESTAMP, timestamp.to_string())
        .header(::webhooks::HEADER_SIGNATURE, signature)
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(describe)?;
    Ok(response.status().as_u16())
}

/// A send error as recorded: what kind of failure, and the chain of causes (no secret and no
/// URL in any of them).
fn describe(error: reqwest::Error) -> String {
    // The URL is the endpoint's (it may carry a token in its query): its id says which.
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}
