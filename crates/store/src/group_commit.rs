//! Group commit for the SQLite backend: one writer thread owns a dedicated connection and commits
//! every claim and settlement waiting for it in **one** transaction, so concurrent writers share
//! one fsync (`synchronous=FULL` stays on) instead of queuing for one each.
//!
//! The writer is a plain thread driving SQLite synchronously (rusqlite, prepared statements):
//! a batch's statements run back to back, with no hand-off to another thread per statement
//! (that hand-off, through sqlx's worker, was ~15% of the API's CPU on the payment path).
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

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::convert;
use crate::{ClaimOutcome, NewPayment, Settlement, StoreError, StoredResponse};

/// Most writes committed in one transaction (bounds the writer's batch buffer).
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer; a full queue makes callers wait (bounded memory).
const QUEUE: usize = 1024;

/// A write the writer thread applies.
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

/// The handle to the writer thread; cloning shares it.
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
    /// Opens the writer's connection to the (migrated) database at `path`, configured like the
    /// pool's (WAL, `synchronous=FULL`, busy timeout, foreign keys), and starts its thread.
    pub(crate) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(16);
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer(conn, queue))
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs })
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

/// The writer thread: takes whatever is queued (up to [`MAX_BATCH`]), commits it, repeats.
fn writer(conn: Connection, mut queue: mpsc::Receiver<Job>) {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = queue.blocking_recv() else {
            break;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write { write, reply } => batch.push((write, reply)),
                Job::Close(done) => {
                    // Writes queued after a close are refused (their reply is dropped).
                    closing = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&conn, batch);
        }
    }
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

type Pending = (Write, oneshot::Sender<Result<Outcome, StoreError>>);

/// Commits `batch` in one transaction; on any failure, re-runs each write alone.
fn commit(conn: &Connection, batch: Vec<Pending>) {
    let writes: Vec<&Write> = batch.iter().map(|(write, _)| write).collect();
    match transaction(conn, &writes) {
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
                    .map(|mut outcomes| outcomes.pop().expect("one outcome per write"));
                let _ = reply.send(result);
            }
        }
    }
}

/// Applies `writes` in one `BEGIN IMMEDIATE … COMMIT`; rolls back on the first error.
fn transaction(conn: &Connection, writes: &[&Write]) -> Result<Vec<Outcome>, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let applied = match write {
            Write::Claim(new) => claim(conn, new).map(Outcome::Claim),
            Write::Settle(settle) => self::settle(conn, settle).map(Outcome::Settle),
        };
        match applied {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                rollback(conn);
                return Err(error);
            }
        }
    }
    if let Err(error) = conn.execute_batch("COMMIT") {
        // A failed COMMIT may leave the transaction open: it must not survive into the next.
        rollback(conn);
        return Err(error.into());
    }
    Ok(outcomes)
}

fn rollback(conn: &Connection) {
    // Fails harmlessly when SQLite already rolled back by itself.
    let _ = conn.execute_batch("ROLLBACK");
}

/// The claim's statements (see `SqliteStore::claim`), inside the batch's transaction.
fn claim(conn: &Connection, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
    let id = new.id.to_string();
    let now = convert::to_ms(new.now);
    let inserted = conn.prepare_cached(super::sqlite::INSERT_KEY)?.execute((
        &new.tenant,
        &new.idempotency_key,
        &new.fingerprint,
        &id,
        now,
    ))?;
    if inserted == 1 {
        conn.prepare_cached(super::sqlite::INSERT_PAYMENT)?
            .execute(rusqlite::params![
                &id,
                &new.tenant,
                &new.idempotency_key,
                new.amount,
                &new.currency,
                &new.source,
                &new.description,
                convert::metadata_to_text(new.metadata.as_ref()),
                &new.bank_reference,
                &new.lease_owner,
                convert::to_ms(new.lease_expires_at),
                now,
            ])?;
        return Ok(ClaimOutcome::Claimed);
    }
    // The write lock is ours for the whole batch: the key we collided with is still there.
    let existing = conn
        .prepare_cached(super::sqlite::KEY_SELECT)?
        .query_row((&new.tenant, &new.idempotency_key), |row| {
            Ok(crate::lookup::key_from_row(row))
        })
        .optional()?;
    match existing {
        Some(record) => Ok(ClaimOutcome::Existing(record?)),
        None => Err(StoreError::Corrupt(
            "a claim collided with a key that cannot be read".into(),
        )),
    }
}

/// The settlement's statements (see `SqliteStore::settle`), inside the batch's transaction.
fn settle(conn: &Connection, write: &SettleWrite) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let now = convert::to_ms(write.now);
    let columns = convert::SettlementColumns::of(&write.settlement);
    let updated = conn
        .prepare_cached(super::sqlite::SETTLE_PAYMENT)?
        .execute((
            columns.status,
            columns.charge_id,
            columns.decline_code,
            columns.failure_reason,
            i64::from(write.attempts),
            now,
            &id,
        ))?;
    if updated == 0 {
        // Already final: nothing written, nothing to undo.
        return Ok(false);
    }
    conn.prepare_cached(super::sqlite::SETTLE_KEY)?.execute((
        i64::from(write.response_status),
        &write.response_headers,
        &write.response_body,
        now,
        &id,
    ))?;
    Ok(true)
}
