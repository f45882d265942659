//! The durable store of payments and idempotency records.
//!
//! # Layout
//! - [`Store`]: the trait the payment API and its reconciler use; every method is one atomic step.
//! - [`records`]: what is stored: [`PaymentRecord`], [`KeyRecord`], [`StoredResponse`].
//! - [`webhooks`]: webhook endpoints, the event outbox written with each state change, and
//!   deliveries with their attempts (docs/webhooks.md).
//! - [`fingerprint`]: the request fingerprint (method, path, canonical JSON) that ties a key to one
//!   request body.
//! - [`SqliteStore`]: the embedded default backend (a file, WAL, durable commits), in `sqlite/`:
//!   every write goes through its writer thread (`sqlite::writer`: one connection, one
//!   transaction and fsync per batch); key lookups run inline on read-only connections
//!   (`sqlite::lookup`); other reads go through sqlx; the SQL and row mapping they share is
//!   `sqlite::sql`.
//! - [`PostgresStore`]: the shared backend for several API instances.
//! - [`open`]: picks and opens a backend from a database URL.
//! - `test_support` (feature `test-support`): a throwaway PostgreSQL server and temporary
//!   directories for tests of this crate and of the crates above it, and for `run chaos`.
//!
//! Both backends store times as milliseconds since the epoch: a time read back has
//! sub-millisecond precision dropped.
//!
//! # Whose clock a lease runs on
//! Leases decide who may act on a payment, so they must be granted and compared on one clock.
//! - **SQLite** (one process owns the file): the caller's clock. A lease runs until the `until`
//!   (or [`NewPayment::lease_expires_at`]) passed in, and is expired when it is `<=` the `now`
//!   passed in.
//! - **PostgreSQL** (several instances, whose clocks may disagree): the database server's clock.
//!   A lease is the *duration* `until - now` of the caller's arguments; the database stores
//!   `lease_expires_at = <its now> + duration` and a lease is expired when
//!   `lease_expires_at <= <its now>`, whatever `now` the caller passed. So an instance whose
//!   clock runs ahead cannot take a live lease, and one whose clock runs behind cannot grant a
//!   lease that is already expired (or last longer than it asked). A duration of zero or less
//!   grants a lease that is already expired. The `lease_expires_at` read back is on the
//!   database's clock.
//! - `next_reconcile_at` (when the reconciler looks at a payment again) stays on the caller's
//!   clock on both backends: it is a schedule, not an exclusion. A skewed instance only looks
//!   earlier or later; [`Store::acquire_lease`] still decides who acts.
//!
//! # Guarantees every backend gives
//! - **A key is claimed once.** [`Store::claim`] inserts the key and its payment in one
//!   transaction; a unique constraint on (tenant, key) decides between concurrent claims, never a
//!   read-then-write.
//! - **Work on a payment is leased.** Only the holder of an unexpired lease (an owner token) may
//!   settle, reschedule or release a payment, so two request handlers or reconcilers never act on
//!   one payment at once; a crashed holder's lease simply expires.
//! - **Outcomes are recorded atomically** with the response that is replayed for the key.
//! - **Pending and in-flight records are never reaped**; only completed keys older than the
//!   retention are.

pub mod fingerprint;
pub mod records;
pub mod webhooks;

#[cfg(feature = "test-support")]
pub mod test_support;

mod convert;
mod error;
mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use records::{
    ClaimOutcome, KeyRecord, KeyState, NewPayment, PaymentQuery, PaymentRecord, PaymentRoute,
    Settlement, StoredResponse,
};
pub use sqlite::{SqliteOptions, SqliteStore, WriterStats};
pub use webhooks::{
    AttemptRecord, DeliveryNext, DeliveryRecord, DeliveryState, EndpointRecord, EventQuery,
    EventRecord, LeasedDelivery, NewAttempt, NewEndpoint,
};

/// The SQLite file [`open`] uses when no database URL is given.
pub const DEFAULT_SQLITE_FILE: &str = "payments.db";

/// Opens the store a deployment is configured for, applying migrations:
/// - `None`: SQLite at `data_dir/payments.db` (the embedded default);
/// - `sqlite://PATH` (or `sqlite:PATH`): SQLite at `PATH` (a query string is ignored);
/// - `postgres://...` or `postgresql://...`: PostgreSQL;
/// - anything else: [`StoreError::Config`].
///
/// An unreachable PostgreSQL server is a [`StoreError::Database`] within a few seconds.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn Store>, StoreError> {
    match database_url.map(str::trim) {
        None | Some("") => Ok(Arc::new(SqliteStore::open(&data_dir.join(DEFAULT_SQLITE_FILE)).await?)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresStore::connect(url).await?))
        }
        Some(url) => match sqlite_path(url) {
            Some(path) => Ok(Arc::new(SqliteStore::open(Path::new(path)).await?)),
            None => Err(StoreError::Config(format!(
                "unsupported database URL {:?}: expected sqlite://PATH, postgres://... or postgresql://...",
                redact(url)
            ))),
        },
    }
}

/// The file path of a `sqlite:` URL, if `url` is one with a non-empty path.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    // An in-memory database would lose every record at restart (and differ per connection).
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// `url` without anything that could be a password (everything before an `@`).
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

/// Which backend a store is (shown in `/v1/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// The operations the payment API needs; each is atomic. Times are passed in so tests control
/// them; the one exception is the lease on PostgreSQL, which runs on the database's clock: see
/// "Whose clock a lease runs on" in the [crate docs](crate).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Which backend this is.
    fn kind(&self) -> StoreKind;

    /// How the store has batched its writes so far, where it batches them (SQLite's group
    /// commit: writes per transaction is `writes / batches`). `None` where each write is its
    /// own transaction (PostgreSQL, whose WAL flushes are shared by the server itself).
    fn writer_stats(&self) -> Option<WriterStats> {
        None
    }

    /// Lets queued writes commit and closes the store's connections (a graceful shutdown).
    /// Calls made afterwards fail. The default does nothing.
    async fn close(&self) {}

    /// Readiness: succeeds when the store can both read and write. Besides a trivial read it
    /// commits a tiny write (a heartbeat row in `store_health`), so a store that cannot write
    /// (a held lock, a full disk, a read-only file) fails it. Cheap enough to call every second.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Claims `new.idempotency_key` for `new.tenant` and creates its payment (status pending,
    /// leased to `new.lease_owner` until `new.lease_expires_at`; on PostgreSQL for
    /// `lease_expires_at - now` on the database's clock) in one transaction. If the key
    /// exists, nothing is written and the existing record is returned for the caller to judge
    /// (fingerprint mismatch, in flight, pending, or a completed response to replay).
    async fn claim(&self, new: &NewPayment) -> Result<ClaimOutcome, StoreError>;

    /// The record of a key, with its payment's lease and status, if the key exists.
    async fn find_key(&self, tenant: &str, key: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Takes the lease on a pending payment if it is free, expired, or already `owner`'s, until
    /// `until` (on PostgreSQL: for `until - now` from the database's now, and "expired" on the
    /// database's clock). Returns whether `owner` now holds it.
    async fn acquire_lease(
        &self,
        payment_id: Uuid,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records a final outcome: the payment's status (and charge id or decline code), its
    /// attempt count, and the response replayed for its key from now on (key state completed).
    /// Only a pending payment is settled; returns `false` (and writes nothing) if it was already
    /// final, so settling twice is harmless.
    async fn settle(
        &self,
        payment_id: Uuid,
        settlement: &Settlement,
        attempts: u32,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// The outcome is unknown: the payment stays pending, its key becomes `pending` (replays show
    /// the current state), the lease is released, and the reconciler looks at it at
    /// `next_reconcile_at`. `last_attempt_at` is when a charge was last sent to the bank (`None`
    /// keeps the stored value). Does nothing (and still returns `Ok`) unless the payment is
    /// pending and `owner` holds its lease.
    async fn mark_pending(
        &self,
        payment_id: Uuid,
        owner: &str,
        attempts: u32,
        last_attempt_at: Option<DateTime<Utc>>,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The bank never processed the payment: deletes the payment and its key (so the key is
    /// free to retry), provided the payment is still pending and `owner` still holds a lease
    /// that has **not expired** at `now` (PostgreSQL: on the database's clock). An expired
    /// lease is not enough even when nobody has taken it over yet: once it expired, a replay
    /// of the key may already have answered 202 (the payment exists and will settle) and the
    /// reconciler may be about to resume it, so deleting it would make that answer a lie.
    /// Returns whether it did.
    async fn release(
        &self,
        payment_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Moves a pending payment to another bank (the cascade of docs/failover.md): records the
    /// route (`bank`, `reference`) and makes it the payment's current bank and reference, with
    /// its attempt count, in one transaction, before that bank is called. Only by `owner`
    /// holding a lease that has **not expired** (as [`Store::release`]; PostgreSQL: on the
    /// database's clock). A payment never returns to a bank it was routed to before (one route
    /// per (payment, bank)): that is an error. Returns whether it did.
    async fn switch_bank(
        &self,
        _payment_id: Uuid,
        _owner: &str,
        _bank: &str,
        _reference: &str,
        _attempts: u32,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Config(
            "this store cannot route a payment to another bank".into(),
        ))
    }

    /// Every route of a payment (each bank it was sent to, with its reference there), oldest
    /// first.
    async fn routes(&self, _payment_id: Uuid) -> Result<Vec<PaymentRoute>, StoreError> {
        Err(StoreError::Config(
            "this store does not record payment routes".into(),
        ))
    }

    /// A payment by id; `tenant` (when given) must match.
    async fn get_payment(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError>;

    /// Payments newest first, filtered and paged (see [`PaymentQuery`]).
    async fn list_payments(&self, query: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError>;

    /// Pending payments whose `next_reconcile_at` has come (at `now`) and whose lease is free or
    /// expired (at `now`; on PostgreSQL at the database's now), oldest first (longest overdue: by `next_reconcile_at`, then `created_at`), at most
    /// `limit`. Listing takes no lease: the caller must win [`Store::acquire_lease`] before
    /// acting on one.
    async fn due_for_reconcile(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError>;

    /// Reconciler bookkeeping: records the attempt count and `last_attempt_at` (`None` keeps the
    /// stored value), releases `owner`'s lease and sets when to look again. Does nothing (and
    /// still returns `Ok`) unless the payment is pending and `owner` holds its lease.
    async fn reschedule(
        &self,
        payment_id: Uuid,
        owner: &str,
        last_attempt_at: Option<DateTime<Utc>>,
        attempts: u32,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Deletes completed keys completed before `before`; never touches pending or in-flight keys
    /// (nor payments). Returns how many were deleted.
    async fn reap_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// How many payments are pending.
    async fn pending_count(&self) -> Result<u64, StoreError>;

    // --- Webhooks (docs/webhooks.md). A store without them answers `StoreError::Config`.

    /// Creates a webhook endpoint.
    async fn create_endpoint(&self, _endpoint: &NewEndpoint) -> Result<(), StoreError> {
        Err(no_webhooks())
    }

    /// Endpoints, oldest first: `tenant`'s (`None`: every tenant's).
    async fn list_endpoints(
        &self,
        _tenant: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// An endpoint by id; `tenant` (when given) must match.
    async fn get_endpoint(
        &self,
        _tenant: Option<&str>,
        _id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// Deletes an endpoint (`tenant`, when given, must match) and its pending deliveries (its
    /// delivered and failed ones stay, as history). Returns whether it existed.
    async fn delete_endpoint(&self, _tenant: Option<&str>, _id: &str) -> Result<bool, StoreError> {
        Err(no_webhooks())
    }

    /// Gives an endpoint a new secret; the current one becomes the previous one and keeps
    /// signing until `previous_until`. Returns the endpoint as it is now, if it exists (and
    /// belongs to `tenant`, when given).
    async fn rotate_endpoint_secret(
        &self,
        _tenant: Option<&str>,
        _id: &str,
        _secret: &str,
        _previous_until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// Events newest first, filtered and paged (see [`EventQuery`]).
    async fn list_events(&self, _query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// An event by id; `tenant` (when given) must match.
    async fn get_event(
        &self,
        _tenant: Option<&str>,
        _id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// Every delivery of an event, by endpoint id, each with its attempts oldest first.
    async fn deliveries(&self, _event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        Err(no_webhooks())
    }

    /// The event reaper: deletes the events created before `before` that have no delivery
    /// still pending, with their deliveries and attempts; never an event a delivery still waits
    /// on, nor any payment. Returns how many events were deleted.
    async fn reap_events(&self, _before: DateTime<Utc>) -> Result<u64, StoreError> {
        Err(no_webhooks())
    }

    /// Queues event `event_id` (of `tenant`, when given) again for every endpoint of its tenant
    /// that matches its type: existing deliveries become pending, due at `now`, at the start of
    /// the retry schedule; a matching endpoint without a delivery gets one. A delivery being
    /// sent right now keeps its lease. Returns how many deliveries are queued, or `None` if the
    /// event does not exist.
    async fn redeliver(
        &self,
        _tenant: Option<&str>,
        _event_id: &str,
        _now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        Err(no_webhooks())
    }

    /// Leases up to `limit` pending deliveries due at `now` whose lease is free or expired, to
    /// `owner` until `until` (the clock rules of payment leases: on PostgreSQL for
    /// `until - now` on the database's clock), most overdue first. Two callers never lease the
    /// same delivery at once.
    async fn lease_deliveries(
        &self,
        _owner: &str,
        _until: DateTime<Utc>,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        Err(no_webhooks())
    }

    /// Records the worker's turn on a delivery it leased: the attempt (if one was made) and
    /// what becomes of the delivery (`next`), releasing the lease, in one transaction. Only
    /// while `owner` holds the lease and the delivery is pending; returns whether it did.
    async fn record_delivery(
        &self,
        _event_id: &str,
        _endpoint_id: &str,
        _owner: &str,
        _attempt: Option<&NewAttempt>,
        _next: DeliveryNext,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Err(no_webhooks())
    }

    /// How many deliveries are pending (the backlog).
    async fn delivery_backlog(&self) -> Result<u64, StoreError> {
        Err(no_webhooks())
    }
}

fn no_webhooks() -> StoreError {
    StoreError::Config("this store does not keep webhooks".into())
}
