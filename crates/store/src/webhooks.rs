//! What the store keeps for webhooks (issue 20, docs/webhooks.md): endpoints, the event outbox,
//! one delivery per (event, endpoint) and every delivery attempt.
//!
//! **The outbox.** An event is written by the same transaction as the payment state it
//! announces ([`crate::Store::settle`] for a final state, [`crate::Store::mark_pending`] for
//! `payment.pending`), together with one pending delivery per matching endpoint of the tenant.
//! Nothing is sent from inside that transaction: the delivery worker of the API leases due
//! deliveries ([`crate::Store::lease_deliveries`]), sends them, and records each attempt
//! ([`crate::Store::record_delivery`]). A crash anywhere in between leaves the delivery pending,
//! its lease expires, and it is due again: at least once.
//!
//! The event's payload is built here ([`event_payload`]) from the payment row as that
//! transaction left it, so it is exactly what `GET /v1/payments/{id}` shows for that state, and
//! every read and every attempt gets the same bytes under the same event id: `payment.pending`
//! stores its snapshot (the row moves on); a final state stores none (the column holds an empty
//! string, as the migration made it NOT NULL) and is built from the payment row whenever the
//! event is read or leased, since a final row never changes again. That keeps the read-back and
//! the serialisation out of the settlement's write (docs/webhooks.md, "Cost").

use chrono::{DateTime, SecondsFormat, Utc};
use payment_types::payment::PaymentStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{PaymentRecord, StoreError};

/// Every event type, in the order the API lists them.
pub const EVENT_TYPES: [&str; 4] = [
    "payment.succeeded",
    "payment.declined",
    "payment.failed",
    "payment.pending",
];

/// The event type announcing that a payment reached `status`.
pub fn event_type(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Succeeded => "payment.succeeded",
        PaymentStatus::Declined => "payment.declined",
        PaymentStatus::Failed => "payment.failed",
        PaymentStatus::Pending => "payment.pending",
    }
}

/// A new event id: `evt_` and a time-ordered uuid (v7), so ids sort by creation time and new
/// rows append to the events' B-tree.
pub fn new_event_id() -> String {
    format!("evt_{}", Uuid::now_v7().simple())
}

/// The smallest event id created at or after `at`: a uuid v7 starts with its 48-bit Unix
/// millisecond time in hex, so the ids created before `at` are exactly those below this bound
/// (the event reaper's range over the primary key).
pub fn event_id_bound(at: DateTime<Utc>) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff;
    format!("evt_{ms:012x}")
}

/// The body every delivery of an event sends (and `GET /v1/events/{id}` shows):
/// `{"id", "type", "timestamp", "data": {"payment": <the payment as GET /v1/payments/{id}>}}`.
///
/// Serialised straight from the structs (no `Value` tree: it is built inside the settlement's
/// write), so `data.payment` has the very bytes `GET /v1/payments/{id}` answers a tenant.
pub fn event_payload(
    id: &str,
    event_type: &str,
    at: DateTime<Utc>,
    payment: &PaymentRecord,
) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        data: Data,
    }
    #[derive(Serialize)]
    struct Data {
        payment: payment_types::payment::Payment,
    }
    let envelope = Envelope {
        id,
        event_type,
        timestamp: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        data: Data {
            payment: payment.to_api(),
        },
    };
    // Plain data: serialising cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// The SQL `LIKE` pattern matching an endpoint whose `event_types` (a JSON array of strings)
/// holds `event_type`. Event types are fixed names without `%`, `_` or quotes.
pub(crate) fn event_type_pattern(event_type: &str) -> String {
    format!("%\"{event_type}\"%")
}

/// An endpoint to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    /// `we_<uuid>`.
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// A subset of [`EVENT_TYPES`], not empty.
    pub event_types: Vec<String>,
    /// The signing secret (`whsec_…`). Stored as given (not encrypted at rest; see
    /// docs/webhooks.md) and never logged.
    pub secret: String,
    pub now: DateTime<Utc>,
}

/// An endpoint as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for EndpointRecord {
    // Secrets never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl EndpointRecord {
    /// The secrets that sign a delivery sent at `now`: the current one first, then the previous
    /// one while its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
        {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: String,
    pub tenant: String,
    pub event_type: String,
    pub payment_id: Uuid,
    /// The exact body every delivery sends (JSON text).
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// Where one (event, endpoint) delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: due at its `next_attempt_at`.
    Pending,
    /// An attempt got a 2xx.
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

pub(crate) fn parse_delivery_state(text: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery state {text:?}")))
}

/// One delivery attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1 for the first attempt of this delivery, counting across redeliveries.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (timeout, refused, a non-2xx status, a refused address), if it did.
    pub error: Option<String>,
}

/// An attempt to record (its number is the store's to give).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// One (event, endpoint) delivery with its attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub endpoint_id: String,
    pub state: DeliveryState,
    /// Failed attempts since the delivery was (re)queued: where it is in the retry schedule.
    pub failures: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptRecord>,
}

/// A delivery the worker leased, with everything it needs to send it.
#[derive(Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub tenant: String,
    /// Failed attempts since the delivery was (re)queued.
    pub failures: u32,
    pub payload: String,
    /// The endpoint as it is now (its URL and signing secrets).
    pub endpoint: EndpointRecord,
}

impl std::fmt::Debug for LeasedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedDelivery")
            .field("event_id", &self.event_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// What becomes of a leased delivery after the worker's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    /// A 2xx came back.
    Delivered,
    /// The attempt failed; try again at this time.
    Retry(DateTime<Utc>),
    /// The attempt failed and it was the schedule's last.
    Failed,
    /// No attempt was made (the endpoint's breaker was open, its bulkhead full): look again at
    /// this time, without counting a failure.
    Postpone(DateTime<Utc>),
}

impl DeliveryNext {
    /// The state, failures increment and next attempt time a delivery takes.
    pub(crate) fn columns(self) -> (DeliveryState, i64, Option<DateTime<Utc>>) {
        match self {
            Self::Delivered => (DeliveryState::Delivered, 0, None),
            Self::Retry(at) => (DeliveryState::Pending, 1, Some(at)),
            Self::Failed => (DeliveryState::Failed, 1, None),
            Self::Postpone(at) => (DeliveryState::Pending, 0, Some(at)),
        }
    }
}

/// Filter and page for [`crate::Store::list_events`]: newest first; `before` is the cursor (the
/// id of the last event of the previous page: ids sort by creation time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this tenant's events (`None`: all, for operators).
    pub tenant: Option<String>,
    pub event_type: Option<String>,
    /// Only events with at least one delivery in this state.
    pub delivery_state: Option<DeliveryState>,
    pub before: Option<String>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_sort_by_creation_time() {
        let first = new_event_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_event_id();
        assert!(first.starts_with("evt_") && first.len() == 36);
        let before = event_id_bound(Utc::now() - chrono::Duration::milliseconds(5));
        let after = event_id_bound(Utc::now() + chrono::Duration::milliseconds(5));
        assert!(before.as_str() < first.as_str() && first.as_str() < after.as_str());
        assert!(first < second);
    }

    #[test]
    fn the_previous_secret_signs_only_during_its_overlap() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        let endpoint = EndpointRecord {
            id: "we_1".into(),
            tenant: "t".into(),
            url: "https://example.com".into(),
            event_types: vec![],
            secret: "new".into(),
            previous_secret: Some("old".into()),
            previous_secret_expires_at: Some(at(100)),
            created_at: at(0),
            updated_at: at(0),
        };
        assert_eq!(endpoint.signing_secrets(at(99)), ["new", "old"]);
        assert_eq!(endpoint.signing_secrets(at(100)), ["new"]);
        assert!(!format!("{endpoint:?}").contains("new\""));
    }
}
