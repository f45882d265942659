//! The SQLite backend: the embedded default, one file under the data directory. This module
//! owns [`SqliteStore`] (opening the file, the [`Store`] methods) and routes each call:
//! - **every write** (claims, settlements, mark pending, reschedule, release, leases, the
//!   reaper, the readiness heartbeat) goes to the one writer connection, which group-commits
//!   them ([`writer`]; what each write does: [`writes`]). SQLite serialises writers on a file
//!   lock; with one writer connection no write ever waits for that lock behind another of ours,
//!   so none starves or times out with `SQLITE_BUSY` under load;
//! - key lookups run inline on read-only connections ([`lookup`]);
//! - the other reads (payments, listings, the reconciler's scan, counts) and the migrations go
//!   through an sqlx pool; under WAL a reader never waits for the writer.
//!
//! The SQL text and the row mapping all of them use are [`sql`]'s, the one module the others
//! share (none of them imports another in a loop).
//!
//! The file is opened in WAL mode with `synchronous=FULL`, so a commit that returned is on disk
//! and survives a crash or power loss. Every write transaction starts with `BEGIN IMMEDIATE`
//! (the write lock first, never a read first), so a writer that must wait for another process's
//! lock waits (`busy_timeout`) instead of failing with a stale snapshot. Times are INTEGER
//! milliseconds since the epoch, uuids lower-case TEXT, metadata and response headers JSON TEXT,
//! response bodies BLOB.
//!
//! Each payment method runs in a DEBUG span naming its payment: at the default level it costs
//! nothing (the request's own span names the payment on every line already).
//!
//! **Clock.** One process owns the file, so the caller's clock is the database's: leases are
//! stored and compared as the absolute times the caller passes (`until`, `now`). (PostgreSQL,
//! shared by several instances, uses its own clock instead: see [`crate::PostgresStore`].)

mod lookup;
mod sql;
mod writer;
mod writes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite};
use uuid::Uuid;

use crate::convert;
use crate::webhooks::{
    DeliveryNext, DeliveryRecord, EndpointRecord, EventQuery, EventRecord, LeasedDelivery,
    NewAttempt, NewEndpoint,
};
use crate::{
    ClaimOutcome, KeyRecord, NewPayment, PaymentQuery, PaymentRecord, PaymentRoute, Settlement,
    Store, StoreError, StoreKind, StoredResponse,
};
use lookup::Lookups;
use writer::{Writer, WriterConfig};
use writes::{Outcome, RecordWrite, RotateWrite, SettleWrite, SwitchWrite, UnleaseWrite, Write};

pub use writer::WriterStats;

/// Connections in the read pool: readers run in parallel under WAL.
const POOL_SIZE: u32 = 8;
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`SqliteStore::open_with`] opens the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteOptions {
    /// How long a write transaction waits for the file's write lock (held by another process,
    /// or a stuck one) before it fails with `SQLITE_BUSY`: 5 s by default. All the writes of a
    /// batch fail together after one such wait.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// The SQLite store. Cloning shares the pool and the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and the migrations, at open).
    pool: SqlitePool,
    /// Point lookups run inline, without sqlx's thread hand-off ([`lookup`]).
    lookups: std::sync::Arc<Lookups>,
    /// Every write, group-committed on its own connection ([`writer`]).
    writer: Writer,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if missing) the database file at `path`
    /// with the default [`SqliteOptions`], and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with `options`.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // After the migrations: the writer's statements need the tables.
        let writer = Writer::start(WriterConfig {
            path: path.to_owned(),
            busy_timeout: options.busy_timeout,
        })?;
        let lookups = std::sync::Arc::new(Lookups::open(path, options.busy_timeout)?);
        tracing::debug!(path = %path.display(), "sqlite store open");
        Ok(Self {
            pool,
            writer,
            lookups,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done since the store was opened: batches, transactions, failures,
    /// reopened connections.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Lets queued writes commit, waits for in-use connections to come back and closes them
    /// all (checkpointing the WAL).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Applies `write` through the writer and expects a conditional write's answer.
    async fn applied(&self, write: Write) -> Result<bool, StoreError> {
        match self.writer.submit(write).await? {
            Outcome::Applied(applied) => Ok(applied),
            other => unreachable!("a conditional write answers Applied, got {other:?}"),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    fn writer_stats(&self) -> Option<WriterStats> {
        Some(self.writer.stats())
    }

    async fn close(&self) {
        Self::close(self).await;
    }

    /// A read on the pool, then a heartbeat write through the writer: fails when the store
    /// cannot write (a held lock, a full disk, a read-only or broken file), not only when it
    /// cannot read. Under load the heartbeat shares a batch (and its fsync) with the payments.
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        self.applied(Write::Heartbeat).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %new.id, tenant = %new.tenant))]
    async fn claim(&self, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
        match self
            .writer
            .submit(Write::Claim(Box::new(new.clone())))
            .await?
        {
            Outcome::Claim(outcome) => Ok(outcome),
            other => unreachable!("a claim answers Claim, got {other:?}"),
        }
    }

    async fn find_key(&self, tenant: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.find_key(tenant, key)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn acquire_lease(
        &self,
        payment_id: Uuid,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.applied(Write::AcquireLease {
            payment_id,
            owner: owner.to_owned(),
            until,
            now,
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn settle(
        &self,
        payment_id: Uuid,
        settlement: &Settlement,
        attempts: u32,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let write = SettleWrite::new(payment_id, settlement, attempts, response, now);
        self.applied(Write::Settle(Box::new(write))).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn mark_pending(
        &self,
        payment_id: Uuid,
        owner: &str,
        attempts: u32,
        last_attempt_at: Option<DateTime<Utc>>,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let write = UnleaseWrite {
            payment_id,
            owner: owner.to_owned(),
            attempts,
            last_attempt_at,
            next_reconcile_at,
            now,
        };
        if !self.applied(Write::MarkPending(Box::new(write))).await? {
            tracing::debug!("mark_pending skipped: lease not held or payment final");
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn release(
        &self,
        payment_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.applied(Write::Release {
            payment_id,
            owner: owner.to_owned(),
            now,
            asked: std::time::Instant::now(),
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id, bank))]
    async fn switch_bank(
        &self,
        payment_id: Uuid,
        owner: &str,
        bank: &str,
        reference: &str,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.applied(Write::SwitchBank(Box::new(SwitchWrite {
            payment_id,
            owner: owner.to_owned(),
            bank: bank.to_owned(),
            reference: reference.to_owned(),
            attempts,
            now,
            asked: std::time::Instant::now(),
        })))
        .await
    }

    async fn routes(&self, payment_id: Uuid) -> Result<Vec<PaymentRoute>, StoreError> {
        let rows = sqlx::query(sql::SELECT_ROUTES)
            .bind(payment_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PaymentRoute {
                    payment_id: convert::parse_uuid(row.try_get("payment_id")?)?,
                    bank: row.try_get("bank")?,
                    reference: row.try_get("reference")?,
                    created_at: convert::from_ms(row.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    async fn get_payment(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut query = get_query(tenant, id);
        let row = query.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(sql::payment_from_sqlx).transpose()
    }

    async fn list_payments(&self, q: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        let mut query = list_query(q);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(sql::payment_from_sqlx).collect()
    }

    async fn due_for_reconcile(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let rows = sqlx::query(&sql::due_for_reconcile())
            .bind(convert::to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sql::payment_from_sqlx).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn reschedule(
        &self,
        payment_id: Uuid,
        owner: &str,
        last_attempt_at: Option<DateTime<Utc>>,
        attempts: u32,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let write = UnleaseWrite {
            payment_id,
            owner: owner.to_owned(),
            attempts,
            last_attempt_at,
            next_reconcile_at,
            now,
        };
        if !self.applied(Write::Reschedule(Box::new(write))).await? {
            tracing::debug!("reschedule skipped: lease not held or payment final");
        }
        Ok(())
    }

    async fn reap_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        match self.writer.submit(Write::ReapKeys { before }).await? {
            Outcome::Reaped(deleted) => Ok(deleted),
            other => unreachable!("the reaper answers Reaped, got {other:?}"),
        }
    }

    async fn reap_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        match self.writer.submit(Write::ReapEvents { before }).await? {
            Outcome::Reaped(deleted) => Ok(deleted),
            other => unreachable!("the reaper answers Reaped, got {other:?}"),
        }
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(sql::PENDING_COUNT)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<(), StoreError> {
        self.applied(Write::CreateEndpoint(Box::new(endpoint.clone())))
            .await
            .map(|_| ())
    }

    async fn list_endpoints(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.lookups.endpoints(tenant)
    }

    async fn get_endpoint(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.lookups.endpoint(tenant, id)
    }

    async fn delete_endpoint(&self, tenant: Option<&str>, id: &str) -> Result<bool, StoreError> {
        self.applied(Write::DeleteEndpoint {
            tenant: tenant.map(str::to_owned),
            id: id.to_owned(),
        })
        .await
    }

    async fn rotate_endpoint_secret(
        &self,
        tenant: Option<&str>,
        id: &str,
        secret: &str,
        previous_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let write = RotateWrite {
            tenant: tenant.map(str::to_owned),
            id: id.to_owned(),
            secret: secret.to_owned(),
            previous_until,
            now,
        };
        match self
            .writer
            .submit(Write::RotateSecret(Box::new(write)))
            .await?
        {
            Outcome::Endpoint(endpoint) => Ok(endpoint),
            other => unreachable!("a rotation answers Endpoint, got {other:?}"),
        }
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.lookups.events(query)
    }

    async fn get_event(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.lookups.event(tenant, id)
    }

    async fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.lookups.deliveries(event_id)
    }

    async fn redeliver(
        &self,
        tenant: Option<&str>,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let write = Write::Redeliver {
            tenant: tenant.map(str::to_owned),
            event_id: event_id.to_owned(),
            now,
        };
        match self.writer.submit(write).await? {
            Outcome::Requeued(queued) => Ok(queued),
            other => unreachable!("a redelivery answers Requeued, got {other:?}"),
        }
    }

    async fn lease_deliveries(
        &self,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        let write = Write::LeaseDeliveries {
            owner: owner.to_owned(),
            until,
            now,
            limit,
        };
        match self.writer.submit(write).await? {
            Outcome::Leased(leased) => Ok(leased),
            other => unreachable!("a delivery lease answers Leased, got {other:?}"),
        }
    }

    async fn record_delivery(
        &self,
        event_id: &str,
        endpoint_id: &str,
        owner: &str,
        attempt: Option<&NewAttempt>,
        next: DeliveryNext,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.applied(Write::RecordDelivery(Box::new(RecordWrite {
            event_id: event_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            owner: owner.to_owned(),
            attempt: attempt.cloned(),
            next,
            now,
        })))
        .await
    }

    async fn delivery_backlog(&self) -> Result<u64, StoreError> {
        self.lookups.delivery_backlog()
    }
}

/// [`Store::get_payment`]'s query: by primary key, and the tenant if given.
fn get_query(tenant: Option<&str>, id: Uuid) -> QueryBuilder<'_, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(sql::PAYMENT_COLUMNS)
        .push(" FROM payments WHERE id = ")
        .push_bind(id.to_string());
    if let Some(tenant) = tenant {
        query.push(" AND tenant = ").push_bind(tenant);
    }
    query
}

/// [`Store::list_payments`]'s query: served by `payments_tenant_created` with a tenant,
/// `payments_created` without (newest first either way, no sort).
fn list_query(q: &PaymentQuery) -> QueryBuilder<'_, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(sql::PAYMENT_COLUMNS)
        .push(" FROM payments WHERE 1 = 1");
    if let Some(tenant) = &q.tenant {
        query.push(" AND tenant = ").push_bind(tenant);
    }
    if let Some(status) = q.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some((at, id)) = q.before {
        let at = convert::to_ms(at);
        query
            .push(" AND (created_at < ")
            .push_bind(at)
            .push(" OR (created_at = ")
            .push_bind(at)
            .push(" AND id < ")
            .push_bind(id.to_string())
            .push("))");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(convert::page_limit(q.limit));
    query
}

#[cfg(test)]
mod tests;
