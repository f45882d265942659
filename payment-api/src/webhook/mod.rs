//! Webhooks: telling a tenant's endpoints when its payments change state (docs/webhooks.md).
//!
//! The story, end to end:
//! 1. A tenant registers an endpoint (`routes::webhooks`); its URL passes the [`UrlPolicy`]
//!    (no private or loopback address unless `--webhook-allow-private-urls`) and it gets a
//!    signing secret, shown once.
//! 2. Each state a payment reaches writes its event **in the transaction of the state change**
//!    (the store's outbox: `payment_store::webhooks`), with one pending delivery per matching
//!    endpoint. Nothing is sent from inside that transaction.
//! 3. The delivery worker ([`worker`]) leases due deliveries in batches (so instances sharing a
//!    PostgreSQL store never send one delivery at once), signs each per Standard Webhooks and
//!    posts it through the endpoint's own circuit breaker and bulkhead (from `crates/resilience`,
//!    so one dead endpoint cannot slow the others), records the attempt, and schedules the next
//!    one per the [`RetrySchedule`] or marks the delivery delivered or failed. A crash loses
//!    nothing: the lease expires and the delivery is due again (at least once).
//!
//! This module owns the worker's shared state ([`Webhooks`]): settings, the HTTP client (whose
//! resolver applies the URL policy to every address it connects to: DNS rebinding), the
//! per-endpoint guards and the counters behind `/v1/status` and `/metrics`.

pub(crate) mod worker;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ::webhooks::{RetrySchedule, UrlPolicy};
use dashmap::DashMap;
use payment_store::Store;
use resilience::{
    breaker::{BreakerConfig, CircuitBreaker, WindowKind},
    bulkhead::{Bulkhead, BulkheadConfig},
};
use serde::Serialize;

use crate::config::WebhookArgs;

/// The rotation overlap when the request names none: a day, so receivers can roll out the new
/// secret without missing a delivery.
pub(crate) const DEFAULT_OVERLAP_SECS: u64 = 86_400;
/// The longest rotation overlap accepted: a week.
pub(crate) const MAX_OVERLAP_SECS: u64 = 7 * 86_400;

/// What a batch's lease adds to the attempt timeout: the store writes that record the batch's
/// turns (a store under faults may take seconds). After a crash, a leased delivery is due again
/// this long after the attempt timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// How the worker is tuned.
#[derive(Debug, Clone)]
pub(crate) struct WebhookSettings {
    pub(crate) policy: UrlPolicy,
    pub(crate) schedule: RetrySchedule,
    /// One attempt's bound (connect, send, answer).
    pub(crate) attempt_timeout: Duration,
    /// How often the worker looks for due deliveries.
    pub(crate) poll: Duration,
    /// Deliveries leased per batch.
    pub(crate) batch: u32,
    /// Deliveries in flight at once per endpoint.
    pub(crate) endpoint_concurrency: u32,
    /// A batch's lease: every delivery of it runs at once, each bounded by the attempt timeout,
    /// plus room for the store's writes. A worker that dies mid-batch frees it after this.
    pub(crate) lease: Duration,
    /// Each endpoint's breaker.
    pub(crate) breaker: BreakerConfig,
}

/// `delay × scale`, at least a millisecond.
fn scaled(delay: Duration, scale: f64) -> Duration {
    delay.mul_f64(scale).max(Duration::from_millis(1))
}

impl WebhookSettings {
    pub(crate) fn from_args(args: &WebhookArgs) -> Self {
        Self {
            policy: UrlPolicy {
                allow_private: args.webhook_allow_private_urls,
            },
            schedule: RetrySchedule::standard().scaled(args.webhook_retry_scale),
            attempt_timeout: Duration::from_millis(args.webhook_timeout_ms),
            poll: Duration::from_millis(args.webhook_poll_ms),
            batch: 64,
            endpoint_concurrency: args.webhook_endpoint_concurrency,
            lease: Duration::from_millis(args.webhook_timeout_ms) + LEASE_MARGIN,
            // An endpoint trips after 5 consecutive failures (or half of its last 20 attempts)
            // and stays open 5 s growing to 10 min: a receiver that is down is asked rarely
            // until it answers a probe, while its deliveries wait in the store. Those waits are
            // delays of the delivery path like the schedule's, so --webhook-retry-scale scales
            // them too (a compressed schedule behind an uncompressed breaker would still take
            // minutes to reach `failed`).
            breaker: BreakerConfig {
                window: WindowKind::CountBased { size: 20 },
                minimum_calls: 10,
                consecutive_failures: 5,
                slow_call_duration: Duration::from_millis(args.webhook_timeout_ms),
                open_duration: scaled(Duration::from_secs(5), args.webhook_retry_scale),
                max_open_duration: scaled(Duration::from_secs(600), args.webhook_retry_scale),
                half_open_probes: 1,
                ..BreakerConfig::default()
            },
        }
    }
}

/// Counters since this process started (the store holds the durable truth).
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    pub(crate) attempts: AtomicU64,
    pub(crate) delivered: AtomicU64,
    /// Attempts that failed (non-2xx, timeout, refused, refused address).
    pub(crate) attempt_failures: AtomicU64,
    /// Deliveries given up after the last attempt of the schedule.
    pub(crate) failed: AtomicU64,
    /// Deliveries rescheduled without a call (open breaker, full bulkhead).
    pub(crate) postponed: AtomicU64,
    /// Store calls of the worker that failed (each delivery stays due: nothing is lost).
    pub(crate) store_errors: AtomicU64,
    pub(crate) batches: AtomicU64,
}

/// One endpoint's guards: its own breaker and bulkhead, so its failures and its slowness stay
/// its own.
#[derive(Debug)]
pub(crate) struct EndpointGuard {
    pub(crate) breaker: CircuitBreaker,
    pub(crate) bulkhead: Bulkhead,
}

/// The worker's shared state.
#[derive(Debug)]
pub(crate) struct Webhooks {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) settings: WebhookSettings,
    /// Redirects are not followed (a 3xx is a failed attempt: a redirect could point anywhere);
    /// names resolve through [`PolicyResolver`].
    pub(crate) client: reqwest::Client,
    /// Guards of the endpoints this instance has delivered to, by endpoint id.
    pub(crate) guards: DashMap<String, Arc<EndpointGuard>>,
    pub(crate) stats: WebhookStats,
    pub(crate) instance_id: String,
}

impl Webhooks {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        instance_id: String,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.attempt_timeout)
            .dns_resolver(Arc::new(PolicyResolver(settings.policy)))
            .user_agent("resilient-payments-webhooks/1")
            .build()?;
        Ok(Self {
            store,
            settings,
            client,
            guards: DashMap::new(),
            stats: WebhookStats::default(),
            instance_id,
        })
    }

    /// The guards of endpoint `id`, made on first use.
    pub(crate) fn guard(&self, id: &str) -> Arc<EndpointGuard> {
        if let Some(guard) = self.guards.get(id) {
            return guard.clone();
        }
        self.guards
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(self.new_guard()))
            .clone()
    }

    fn new_guard(&self) -> EndpointGuard {
        EndpointGuard {
            breaker: CircuitBreaker::new(self.settings.breaker.clone())
                .expect("the endpoint breaker's settings are valid"),
            bulkhead: Bulkhead::new(BulkheadConfig {
                max_concurrent: self.settings.endpoint_concurrency,
                ..BulkheadConfig::default()
            })
            .expect("the endpoint bulkhead's settings are valid"),
        }
    }

    /// The figures of `/v1/status` (`webhooks`), with the backlog read from the store (`None`
    /// when it could not be read).
    pub(crate) fn snapshot(&self, backlog: Option<u64>) -> WebhookSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut endpoints: Vec<EndpointSnapshot> = self
            .guards
            .iter()
            .map(|entry| EndpointSnapshot {
                id: entry.key().clone(),
                breaker_state: entry.value().breaker.snapshot().state.as_str(),
                in_flight: entry.value().bulkhead.snapshot().in_use,
            })
            .collect();
        endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        WebhookSnapshot {
            backlog,
            attempts: load(&self.stats.attempts),
            delivered: load(&self.stats.delivered),
            attempt_failures: load(&self.stats.attempt_failures),
            failed: load(&self.stats.failed),
            postponed: load(&self.stats.postponed),
            store_errors: load(&self.stats.store_errors),
            retry_schedule_max_attempts: self.settings.schedule.max_attempts(),
            attempt_timeout_ms: self.settings.attempt_timeout.as_millis() as u64,
            allow_private_urls: self.settings.policy.allow_private,
            endpoints,
        }
    }
}

/// `/v1/status` → `webhooks`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhookSnapshot {
    /// Pending deliveries in the store (every instance's); `null` if the store could not say.
    pub(crate) backlog: Option<u64>,
    /// Attempts made by this instance since it started.
    pub(crate) attempts: u64,
    pub(crate) delivered: u64,
    pub(crate) attempt_failures: u64,
    /// Deliveries this instance gave up after the schedule's last attempt.
    pub(crate) failed: u64,
    pub(crate) postponed: u64,
    pub(crate) store_errors: u64,
    pub(crate) retry_schedule_max_attempts: u32,
    pub(crate) attempt_timeout_ms: u64,
    pub(crate) allow_private_urls: bool,
    /// Each endpoint this instance has delivered to: its breaker and deliveries in flight.
    pub(crate) endpoints: Vec<EndpointSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EndpointSnapshot {
    pub(crate) id: String,
    pub(crate) breaker_state: &'static str,
    pub(crate) in_flight: u32,
}

/// Resolves names like the system does, then keeps only the addresses the URL policy allows,
/// so a name that passed registration cannot later point the API at a private address (DNS
/// rebinding). The check happens on the addresses actually connected to; literal addresses
/// in URLs were checked at registration and never change.
#[derive(Debug, Clone, Copy)]
struct PolicyResolver(UrlPolicy);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| policy.check_addr(addr.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no address deliveries may go to (private or loopback addresses are refused unless --webhook-allow-private-urls)"
                )
                .into();
                return Err(refused);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
