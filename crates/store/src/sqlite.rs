//! The SQLite backend: the embedded default, one file under the data directory.
//!
//! The file is opened in WAL mode with `synchronous=FULL`, so a commit that returned is on disk
//! and survives a crash or power loss. Claims and settlements (the writes of every payment) go
//! through one writer connection that group-commits them: concurrent ones share a transaction
//! and its fsync ([`crate::group_commit`]). SQLite serialises writers; every write transaction here
//! starts with its write statement (never a read first), so a busy writer waits (`busy_timeout`)
//! instead of failing with a stale snapshot. Times are INTEGER milliseconds since the epoch,
//! uuids lower-case TEXT, metadata and response headers JSON TEXT, response bodies BLOB.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::convert;
use crate::group_commit::{GroupCommit, Outcome, SettleWrite, Write};
use crate::lookup::Lookups;
use crate::{
    ClaimOutcome, KeyRecord, NewPayment, PaymentQuery, PaymentRecord, Settlement, Store,
    StoreError, StoreKind, StoredResponse,
};

/// Connections in the pool: readers run in parallel under WAL; writers queue on the file lock.
const POOL_SIZE: u32 = 8;
/// How long a writer waits for the file lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

const PAYMENT_COLUMNS: &str = "id, tenant, idempotency_key, status, amount, currency, source, \
     description, metadata, bank_reference, bank_charge_id, decline_code, failure_reason, \
     attempts, lease_owner, lease_expires_at, next_reconcile_at, last_attempt_at, created_at, \
     updated_at";

pub(crate) const KEY_SELECT: &str =
    "SELECT k.tenant, k.idempotency_key, k.fingerprint, k.payment_id, \
     k.state, k.response_status, k.response_headers, k.response_body, k.created_at, \
     k.completed_at, p.status, p.lease_owner, p.lease_expires_at \
     FROM idempotency_keys k JOIN payments p ON p.id = k.payment_id \
     WHERE k.tenant = ?1 AND k.idempotency_key = ?2";

/// Claims the key unless it exists (the unique constraint decides).
pub(crate) const INSERT_KEY: &str = "INSERT INTO idempotency_keys \
     (tenant, idempotency_key, fingerprint, payment_id, state, created_at) \
     VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5) \
     ON CONFLICT (tenant, idempotency_key) DO NOTHING";

/// Creates the claimed key's payment, pending and leased.
pub(crate) const INSERT_PAYMENT: &str = "INSERT INTO payments (id, tenant, idempotency_key, \
     status, amount, currency, source, description, metadata, bank_reference, attempts, \
     lease_owner, lease_expires_at, next_reconcile_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?11, ?12, ?12)";

/// Records a final outcome, only on a pending payment.
pub(crate) const SETTLE_PAYMENT: &str = "UPDATE payments SET status = ?1, bank_charge_id = ?2, \
     decline_code = ?3, failure_reason = ?4, attempts = ?5, lease_owner = NULL, \
     lease_expires_at = NULL, next_reconcile_at = NULL, updated_at = ?6 \
     WHERE id = ?7 AND status = 'pending'";

/// Stores the response replayed for a settled payment's key.
pub(crate) const SETTLE_KEY: &str = "UPDATE idempotency_keys SET state = 'completed', \
     response_status = ?1, response_headers = ?2, response_body = ?3, completed_at = ?4 \
     WHERE payment_id = ?5";

/// The SQLite store. Cloning shares the pool and the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads and the rarer writes (leases, pending, release, reaping).
    pool: SqlitePool,
    /// Point lookups run inline, without sqlx's thread hand-off ([`crate::lookup`]).
    lookups: std::sync::Arc<Lookups>,
    /// Claims and settlements, the writes of every payment, group-committed on their own
    /// connection (see [`crate::group_commit`]).
    writer: GroupCommit,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if missing) the database file at `path`,
    /// and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // After the migrations: the writer's statements need the tables.
        let writer = GroupCommit::start(path)?;
        let lookups = std::sync::Arc::new(Lookups::open(path)?);
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

    /// Lets queued writes commit, waits for in-use connections to come back and closes them
    /// all (checkpointing the WAL).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn payment_from_row(row: &SqliteRow) -> Result<PaymentRecord, StoreError> {
    Ok(PaymentRecord {
        id: convert::parse_uuid(row.try_get("id")?)?,
        tenant: row.try_get("tenant")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: convert::parse_status(row.try_get("status")?)?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        source: row.try_get("source")?,
        description: row.try_get("description")?,
        metadata: convert::metadata_from_text(row.try_get("metadata")?)?,
        bank_reference: row.try_get("bank_reference")?,
        bank_charge_id: row.try_get("bank_charge_id")?,
        decline_code: row.try_get("decline_code")?,
        failure_reason: row.try_get("failure_reason")?,
        attempts: convert::attempts(row.try_get("attempts")?)?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: convert::from_ms_opt(row.try_get("lease_expires_at")?)?,
        next_reconcile_at: convert::from_ms_opt(row.try_get("next_reconcile_at")?)?,
        last_attempt_at: convert::from_ms_opt(row.try_get("last_attempt_at")?)?,
        created_at: convert::from_ms(row.try_get("created_at")?)?,
        updated_at: convert::from_ms(row.try_get("updated_at")?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Group-committed: see [`crate::group_commit`].
    #[tracing::instrument(skip_all, fields(payment_id = %new.id, tenant = %new.tenant))]
    async fn claim(&self, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
        match self
            .writer
            .submit(Write::Claim(Box::new(new.clone())))
            .await?
        {
            Outcome::Claim(outcome) => Ok(outcome),
            Outcome::Settle(_) => unreachable!("a claim's outcome is a claim outcome"),
        }
    }

    async fn find_key(&self, tenant: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.lookups.find_key(tenant, key)
    }

    #[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
    async fn acquire_lease(
        &self,
        payment_id: Uuid,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE payments SET lease_owner = ?1, lease_expires_at = ?2 \
             WHERE id = ?3 AND status = 'pending' \
             AND (lease_owner IS NULL OR lease_expires_at <= ?4 OR lease_owner = ?1)",
        )
        .bind(owner)
        .bind(convert::to_ms(until))
        .bind(payment_id.to_string())
        .bind(convert::to_ms(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Group-committed: see [`crate::group_commit`].
    #[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
    async fn settle(
        &self,
        payment_id: Uuid,
        settlement: &Settlement,
        attempts: u32,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let write = SettleWrite::new(payment_id, settlement, attempts, response, now);
        match self.writer.submit(Write::Settle(Box::new(write))).await? {
            Outcome::Settle(settled) => Ok(settled),
            Outcome::Claim(_) => unreachable!("a settlement's outcome is a settlement outcome"),
        }
    }

    #[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
    async fn mark_pending(
        &self,
        payment_id: Uuid,
        owner: &str,
        attempts: u32,
        last_attempt_at: Option<DateTime<Utc>>,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = payment_id.to_string();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE payments SET attempts = ?1, last_attempt_at = COALESCE(?2, last_attempt_at), \
             next_reconcile_at = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
             WHERE id = ?5 AND status = 'pending' AND lease_owner = ?6",
        )
        .bind(i64::from(attempts))
        .bind(last_attempt_at.map(convert::to_ms))
        .bind(convert::to_ms(next_reconcile_at))
        .bind(convert::to_ms(now))
        .bind(&id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            tracing::debug!("mark_pending skipped: lease not held or payment final");
            return Ok(());
        }
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'pending' WHERE payment_id = ?1 AND state = 'in_flight'",
        )
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
    async fn release(&self, payment_id: Uuid, owner: &str) -> Result<bool, StoreError> {
        let id = payment_id.to_string();
        let mut tx = self.pool.begin().await?;
        // The key's foreign key is deferred, so deleting the payment first is fine: both are
        // gone by the commit.
        let deleted = sqlx::query(
            "DELETE FROM payments WHERE id = ?1 AND status = 'pending' AND lease_owner = ?2",
        )
        .bind(&id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE payment_id = ?1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_payment(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(PAYMENT_COLUMNS)
            .push(" FROM payments WHERE id = ")
            .push_bind(id.to_string());
        if let Some(tenant) = tenant {
            query.push(" AND tenant = ").push_bind(tenant);
        }
        let row = query.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn list_payments(&self, q: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(PAYMENT_COLUMNS)
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
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn due_for_reconcile(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments \
             WHERE status = 'pending' AND next_reconcile_at <= ?1 \
             AND (lease_owner IS NULL OR lease_expires_at <= ?1) \
             ORDER BY next_reconcile_at ASC, created_at ASC, id ASC LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(convert::to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_from_row).collect()
    }

    #[tracing::instrument(skip_all, fields(payment_id = %payment_id))]
    async fn reschedule(
        &self,
        payment_id: Uuid,
        owner: &str,
        last_attempt_at: Option<DateTime<Utc>>,
        attempts: u32,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE payments SET attempts = ?1, last_attempt_at = COALESCE(?2, last_attempt_at), \
             next_reconcile_at = ?3, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
             WHERE id = ?5 AND status = 'pending' AND lease_owner = ?6",
        )
        .bind(i64::from(attempts))
        .bind(last_attempt_at.map(convert::to_ms))
        .bind(convert::to_ms(next_reconcile_at))
        .bind(convert::to_ms(now))
        .bind(payment_id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            tracing::debug!("reschedule skipped: lease not held or payment final");
        }
        Ok(())
    }

    async fn reap_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE state = 'completed' AND completed_at < ?1",
        )
        .bind(convert::to_ms(before))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
