//! Group commit for the SQLite backend: one writer task owns a dedicated connection and commits
//! every claim and settlement waiting for it in **one** transaction, so concurrent writers share
//! one fsync (`synchronous=FULL` stays on) instead of queuing for one each.
//!
//! Correctness is the serial code's, batched:
//! - each write runs the same statements as alone, in arrival order, inside the batch's
//!   `BEGIN IMMEDIATE` transaction, so a claim is still decided by the unique constraint and a
//!   later write in a batch sees the earlier ones (two claims of one key: the second finds the
//!   first, in flight);
//! - nobody hears back before `COMMIT` returned: a reply means the write is on disk;
//! - if any write or the commit fails, the whole transaction is rolled back and every write of
//!   the batch is re-run alone, so each caller gets its own result and a failure in one write
//!   never reports success (or failure) to another.
//!
//! Batching is natural, never timed: while one batch commits, the next one queues up. A lone
//! writer commits at once.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::convert;
use crate::{ClaimOutcome, NewPayment, Settlement, StoreError, StoredResponse};

/// Most writes committed in one transaction (bounds the writer's batch buffer).
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer; a full queue makes callers wait (bounded memory).
const QUEUE: usize = 1024;

/// A write the writer task applies.
#[derive(Debug)]
pub(crate) enum Write {
    Claim(Box<NewPayment>),
    Settle(Box<SettleWrite>),
}

/// [`crate::Store::settle`]'s arguments, owned.
#[derive(Debug)]
pub(crate) struct SettleWrite {
    pub(crate) payment_id: Uuid,
    pub(crate) settlement: Settlement,
    pub(crate) attempts: u32,
    pub(crate) response_status: u16,
    pub(crate) response_headers: String,
    pub(crate) response_body: Vec<u8>,
    pub(crate) now: DateTime<Utc>,
}

impl SettleWrite {
    pub(crate) fn new(
        payment_id: Uuid,
        settlement: &Settlement,
        attempts: u32,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            payment_id,
            settlement: settlement.clone(),
            attempts,
            response_status: response.status,
            response_headers: convert::headers_to_json(&response.headers).to_string(),
            response_body: response.body.clone(),
            now,
        }
    }
}

/// What a write produced.
// Moved once per write; boxing the claim outcome would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    Claim(ClaimOutcome),
    Settle(bool),
}

enum Job {
    Write {
        write: Write,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    /// Stop after the writes queued before it; answered once the connection is closed.
    Close(oneshot::Sender<()>),
}

/// The handle to the writer task; cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    /// Bounded: the writer's backlog is at most this many writes.
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Write { write, .. } => f.debug_tuple("Write").field(write).finish(),
            Job::Close(_) => f.write_str("Close"),
        }
    }
}

impl GroupCommit {
    /// Spawns the writer task on `conn` (which must be configured like the pool's connections:
    /// WAL, `synchronous=FULL`, busy timeout, foreign keys).
    pub(crate) fn start(conn: SqliteConnection) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(writer(conn, queue));
        Self { jobs }
    }

    /// Queues `write` and waits until the batch holding it committed (or failed).
    pub(crate) async fn submit(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write { write, reply })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }

    /// Lets the queued writes finish, then closes the writer's connection.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

async fn writer(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() && queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            match job {
                Job::Write { write, reply } => batch.push((write, reply)),
                Job::Close(done) => {
                    // Writes queued after a close are refused (their reply is dropped).
                    closing = Some(done);
                    break;
                }
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, batch).await;
        }
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

type Pending = (Write, oneshot::Sender<Result<Outcome, StoreError>>);

/// Commits `batch` in one transaction; on any failure, re-runs each write alone.
async fn commit(conn: &mut SqliteConnection, batch: Vec<Pending>) {
    let writes: Vec<&Write> = batch.iter().map(|(write, _)| write).collect();
    match transaction(conn, &writes).await {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) if batch.len() == 1 => {
            let (_, reply) = batch.into_iter().next().expect("one write");
            let _ = reply.send(Err(error));
        }
        Err(error) => {
            tracing::warn!(%error, writes = batch.len(), "group commit failed; retrying each write alone");
            for (write, reply) in batch {
                let result = transaction(conn, &[&write])
                    .await
                    .map(|mut outcomes| outcomes.pop().expect("one outcome per write"));
                let _ = reply.send(result);
            }
        }
    }
}

/// Applies `writes` in one `BEGIN IMMEDIATE … COMMIT`; rolls back on the first error.
async fn transaction(
    conn: &mut SqliteConnection,
    writes: &[&Write],
) -> Result<Vec<Outcome>, StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let applied = match write {
            Write::Claim(new) => claim(conn, new).await.map(Outcome::Claim),
            Write::Settle(settle) => self::settle(conn, settle).await.map(Outcome::Settle),
        };
        match applied {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                rollback(conn).await;
                return Err(error);
            }
        }
    }
    if let Err(error) = sqlx::query("COMMIT").execute(&mut *conn).await {
        // A failed COMMIT may leave the transaction open: it must not survive into the next.
        rollback(conn).await;
        return Err(error.into());
    }
    Ok(outcomes)
}

async fn rollback(conn: &mut SqliteConnection) {
    // Fails harmlessly when SQLite already rolled back by itself.
    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
}

/// The claim's statements (see `SqliteStore::claim`), inside the batch's transaction.
async fn claim(conn: &mut SqliteConnection, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
    let id = new.id.to_string();
    let now = convert::to_ms(new.now);
    let inserted = sqlx::query(super::sqlite::INSERT_KEY)
        .bind(&new.tenant)
        .bind(&new.idempotency_key)
        .bind(&new.fingerprint)
        .bind(&id)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if inserted == 1 {
        sqlx::query(super::sqlite::INSERT_PAYMENT)
            .bind(&id)
            .bind(&new.tenant)
            .bind(&new.idempotency_key)
            .bind(new.amount)
            .bind(&new.currency)
            .bind(&new.source)
            .bind(&new.description)
            .bind(convert::metadata_to_text(new.metadata.as_ref()))
            .bind(&new.bank_reference)
            .bind(&new.lease_owner)
            .bind(convert::to_ms(new.lease_expires_at))
            .bind(now)
            .execute(&mut *conn)
            .await?;
        return Ok(ClaimOutcome::Claimed);
    }
    // The write lock is ours for the whole batch: the key we collided with is still there.
    let existing = sqlx::query(super::sqlite::KEY_SELECT)
        .bind(&new.tenant)
        .bind(&new.idempotency_key)
        .fetch_optional(&mut *conn)
        .await?;
    match existing {
        Some(row) => Ok(ClaimOutcome::Existing(super::sqlite::key_from_row(&row)?)),
        None => Err(StoreError::Corrupt(
            "a claim collided with a key that cannot be read".into(),
        )),
    }
}

/// The settlement's statements (see `SqliteStore::settle`), inside the batch's transaction.
async fn settle(conn: &mut SqliteConnection, write: &SettleWrite) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let now = convert::to_ms(write.now);
    let columns = convert::SettlementColumns::of(&write.settlement);
    let updated = sqlx::query(super::sqlite::SETTLE_PAYMENT)
        .bind(columns.status)
        .bind(columns.charge_id)
        .bind(columns.decline_code)
        .bind(columns.failure_reason)
        .bind(i64::from(write.attempts))
        .bind(now)
        .bind(&id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated == 0 {
        // Already final: nothing written, nothing to undo.
        return Ok(false);
    }
    sqlx::query(super::sqlite::SETTLE_KEY)
        .bind(i64::from(write.response_status))
        .bind(&write.response_headers)
        .bind(&write.response_body)
        .bind(now)
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}
