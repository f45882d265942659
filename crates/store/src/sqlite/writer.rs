//! The SQLite writer: owns the one connection every write of the store goes through, and the
//! thread that drives it. Writes waiting for it are group-committed: the writer applies all of
//! them in **one** transaction, so concurrent writers share one fsync (`synchronous=FULL` stays
//! on) instead of queuing for one each, and no write of the store ever competes with another
//! connection for SQLite's file lock (a write on a second connection would starve behind this
//! one under load and fail with `SQLITE_BUSY` after the busy timeout).
//!
//! The writer is a plain thread driving SQLite synchronously (rusqlite, prepared statements):
//! a batch's statements run back to back, with no hand-off to another thread per statement
//! (that hand-off, through sqlx's worker, was ~15% of the API's CPU on the payment path).
//! What each write does is [`super::writes`]'s.
//!
//! Correctness is the serial code's, batched:
//! - each write runs the same statements as alone, in arrival order, inside the batch's
//!   `BEGIN IMMEDIATE` transaction, so a claim is still decided by the unique constraint and a
//!   later write in a batch sees the earlier ones (two claims of one key: the second finds the
//!   first, in flight; two leases of one payment: the second finds the first's owner);
//! - nobody hears back before `COMMIT` returned: a reply means the write is on disk;
//! - when a batch fails, how it is answered depends on what failed:
//!   - an error of the whole database (busy or locked, disk full, I/O error, read-only,
//!     corrupt, cannot open: see [`hits_whole_database`]) would fail every write again, each
//!     after its own lock timeout, so every write of the batch gets that error at once;
//!   - any other error belongs to one write (a constraint, a bad row), so every write of the
//!     batch is re-run alone: each caller gets its own result, and a failure in one write never
//!     reports success (or failure) to another.
//!
//! The writer never wedges and never dies silently: after any failure it checks that no
//! transaction is left open (a `ROLLBACK` can fail too) and otherwise closes and reopens its
//! connection, configured as at start, before the next batch; if the file cannot be opened,
//! every write fails with that error and the next batch tries again. A panic in a batch is
//! caught, logged, and answered (the callers' replies are dropped: they get
//! [`StoreError::Writer`]), and the connection is reopened.
//!
//! Batching is natural, never timed: while one batch commits, the next one queues up. A lone
//! writer commits at once.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::writes::{EndpointCache, Outcome, Write};
use crate::StoreError;

/// Most writes committed in one transaction (bounds the writer's batch buffer).
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer; a full queue makes callers wait (bounded memory).
const QUEUE: usize = 1024;
/// The log is copied into the database file (a checkpoint, by this connection, in the commit
/// that crossed the limit) when it reaches this many pages (16 MiB at 4 KiB), not at SQLite's
/// default of 1,000. A checkpoint copies each page once however many commits changed it, and a
/// payment's commits keep changing the same few pages (the appended ends of the B-trees, the
/// partial index of pending payments), so fewer, larger checkpoints copy far fewer pages: in
/// back-to-back `bench` runs the API's CPU per payment fell from 148 to 135 µs
/// (docs/performance.md). Larger still (10,000) saved little more and lengthened the pause of
/// the commit that checkpoints (p99 +40%); a checkpoint on a thread of its own never let the
/// log restart under load (a passive checkpoint is always behind the writer), so the log grew
/// to its backstop.
const CHECKPOINT_PAGES: i64 = 4_096;
/// Prepared statements kept on the writer's connection (one per statement of `sql`, and room).
const STATEMENT_CACHE: usize = 48;

/// How the writer's connection is opened, at start and whenever it is reopened.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    /// The (created and migrated) database file.
    pub(crate) path: PathBuf,
    /// How long a transaction waits for SQLite's file lock before failing with `SQLITE_BUSY`.
    pub(crate) busy_timeout: Duration,
}

/// What the writer has done since the store was opened (for operators and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches taken from the queue (each is one transaction unless it failed).
    pub batches: u64,
    /// Writes taken from the queue.
    pub writes: u64,
    /// Transactions begun: one per batch, plus one per write re-run alone.
    pub transactions: u64,
    /// Failed batches whose error hit the whole database: all their writes failed at once.
    pub whole_database_failures: u64,
    /// Writes re-run alone after their batch failed with an error of one write.
    pub writes_rerun_alone: u64,
    /// Times the writer's connection was reopened (after a transaction was left open, a panic,
    /// or a failed open).
    pub reopens: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    transactions: AtomicU64,
    whole_database_failures: AtomicU64,
    writes_rerun_alone: AtomicU64,
    reopens: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Faults the unit tests inject into the writer: states SQLite reaches only on broken disks.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// This many coming `ROLLBACK`s are skipped (as if they failed), leaving the transaction
    /// open.
    pub(crate) skip_rollbacks: std::sync::atomic::AtomicUsize,
    /// This many coming opens of the connection fail with `SQLITE_CANTOPEN`.
    pub(crate) fail_opens: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Faults {
    fn take(counter: &std::sync::atomic::AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// What the handle and the thread share.
#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    #[cfg(test)]
    faults: Faults,
}

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

enum Job {
    Write {
        write: Write,
        reply: Reply,
    },
    /// Stop after the writes queued before it; answered once the connection is closed.
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Write { write, .. } => f.debug_tuple("Write").field(write).finish(),
            Job::Close(_) => f.write_str("Close"),
        }
    }
}

/// The handle to the writer thread; cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    /// Bounded: the writer's backlog is at most this many writes.
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Opens the writer's connection to the (migrated) database and starts its thread.
    pub(crate) fn start(config: WriterConfig) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared::default());
        let conn = open(&config, &shared)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let thread = Thread {
            config,
            conn: Some(conn),
            shared: shared.clone(),
            endpoints: EndpointCache::default(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || thread.run(queue))
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs, shared })
    }

    /// Queues `write` and waits until the batch holding it committed (or failed).
    pub(crate) async fn submit(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write { write, reply })
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| {
            StoreError::Writer(
                "the write's outcome was lost (the writer panicked while applying it): it may \
                 or may not have been committed"
                    .into(),
            )
        })?
    }

    /// Lets the queued writes finish, then closes the writer's connection. Writes submitted
    /// later fail with [`sqlx::Error::PoolClosed`].
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// What the writer has done so far.
    pub(crate) fn stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WriterStats {
            batches: get(&c.batches),
            writes: get(&c.writes),
            transactions: get(&c.transactions),
            whole_database_failures: get(&c.whole_database_failures),
            writes_rerun_alone: get(&c.writes_rerun_alone),
            reopens: get(&c.reopens),
        }
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.shared.faults
    }
}

/// Opens and configures the writer's connection: WAL, `synchronous=FULL` (a commit that
/// returned is on disk), the busy timeout, foreign keys (the schema declares none since
/// migration 0003, but any added later is enforced).
fn open(config: &WriterConfig, shared: &Shared) -> Result<Connection, StoreError> {
    #[cfg(test)]
    if Faults::take(&shared.faults.fail_opens) {
        return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some("injected: cannot open".into()),
        )));
    }
    #[cfg(not(test))]
    let _ = shared;
    let conn = Connection::open(&config.path)?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The writer thread's state.
struct Thread {
    config: WriterConfig,
    /// `None` after a failed open: the next batch opens it again.
    conn: Option<Connection>,
    shared: Arc<Shared>,
    /// The tenants' webhook endpoints as the last committed transaction left them (see
    /// [`EndpointCache`]); emptied whenever the connection is reopened.
    endpoints: EndpointCache,
}

type Pending = (Write, Reply);

impl Thread {
    /// Takes whatever is queued (up to [`MAX_BATCH`]), commits it, repeats; until a close or
    /// until every handle is gone.
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
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
                        closing = Some(done);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.batch(batch);
            }
        }
        // Writes queued after a close were never applied: say so.
        queue.close();
        while let Ok(job) = queue.try_recv() {
            match job {
                Job::Write { reply, .. } => {
                    let _ = reply.send(Err(StoreError::Database(sqlx::Error::PoolClosed)));
                }
                Job::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            close(conn);
        }
        tracing::debug!("sqlite writer stopped");
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Commits one batch on a healthy connection, and leaves the connection healthy (or gone,
    /// to be reopened) for the next.
    fn batch(&mut self, batch: Vec<Pending>) {
        let shared = self.shared.clone();
        bump(&shared.counters.batches, 1);
        bump(&shared.counters.writes, batch.len() as u64);
        // Taken out for the batch, put back after it: a panic leaves an empty copy behind,
        // which is always safe.
        let mut endpoints = std::mem::take(&mut self.endpoints);
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(error) => {
                fail_all(batch, &error);
                return;
            }
        };
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            commit(conn, batch, &shared, &mut endpoints)
        }));
        let left_open = !conn.is_autocommit();
        if committed.is_err() {
            // The panic dropped the batch's replies: their callers hear that the outcome is
            // unknown. The connection's state is unknown too.
            tracing::error!("the SQLite writer panicked in a batch; reopening its connection");
            self.reopen();
        } else if left_open {
            // Only a failed ROLLBACK leaves a transaction open after a batch. Kept, it would
            // make every later BEGIN fail, and it holds the file's write lock.
            tracing::error!(
                "the SQLite writer's transaction is still open after ROLLBACK; reopening its connection"
            );
            self.reopen();
        } else {
            self.endpoints = endpoints;
        }
    }

    /// The connection, opened again first if a previous open failed.
    fn connection(&mut self) -> Result<&Connection, StoreError> {
        if self.conn.is_none() {
            match open(&self.config, &self.shared) {
                Ok(conn) => {
                    bump(&self.shared.counters.reopens, 1);
                    tracing::warn!(path = %self.config.path.display(), "SQLite writer connection reopened");
                    self.conn = Some(conn);
                }
                Err(error) => {
                    tracing::error!(%error, path = %self.config.path.display(), "cannot reopen the SQLite writer's connection; failing this batch, retrying with the next");
                    return Err(error);
                }
            }
        }
        Ok(self.conn.as_ref().expect("opened above"))
    }

    /// Closes the connection (SQLite rolls back a transaction left open) and opens it again;
    /// if that fails, the next batch tries again.
    fn reopen(&mut self) {
        self.endpoints.clear();
        if let Some(conn) = self.conn.take() {
            close(conn);
        }
        let _ = self.connection();
    }
}

fn close(conn: Connection) {
    if let Err((_, error)) = conn.close() {
        tracing::error!(%error, "closing the SQLite writer's connection failed");
    }
}

/// Answers every write of `batch` with (a copy of) `error`.
fn fail_all(batch: Vec<Pending>, error: &StoreError) {
    for (_, reply) in batch {
        let _ = reply.send(Err(duplicate(error)));
    }
}

/// Commits `batch` in one transaction; on failure, answers as the module docs say.
fn commit(conn: &Connection, batch: Vec<Pending>, shared: &Shared, endpoints: &mut EndpointCache) {
    let counters = &shared.counters;
    let writes: Vec<&Write> = batch.iter().map(|(write, _)| write).collect();
    let error = match transaction(conn, &writes, shared, endpoints) {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
            return;
        }
        Err(error) => error,
    };
    if hits_whole_database(&error) {
        bump(&counters.whole_database_failures, 1);
        tracing::warn!(%error, writes = batch.len(), "group commit failed on the whole database; failing every write of the batch");
        fail_all(batch, &error);
        return;
    }
    if batch.len() == 1 {
        let (_, reply) = batch.into_iter().next().expect("one write");
        let _ = reply.send(Err(error));
        return;
    }
    tracing::warn!(%error, writes = batch.len(), "group commit failed; retrying each write alone");
    let mut rest = batch.into_iter();
    while let Some((write, reply)) = rest.next() {
        bump(&counters.writes_rerun_alone, 1);
        let result = transaction(conn, &[&write], shared, endpoints)
            .map(|mut outcomes| outcomes.pop().expect("one outcome per write"));
        match result {
            Err(error) if hits_whole_database(&error) => {
                // The rest would fail the same way, each after its own wait.
                bump(&counters.whole_database_failures, 1);
                tracing::warn!(%error, "a write re-run alone failed on the whole database; failing the rest of its batch");
                let _ = reply.send(Err(duplicate(&error)));
                fail_all(rest.collect(), &error);
                return;
            }
            result => {
                let _ = reply.send(result);
            }
        }
    }
}

/// Applies `writes` in one `BEGIN IMMEDIATE … COMMIT`; rolls back on the first error, and then
/// forgets the endpoints read inside the transaction (`endpoints`), which may have been undone.
fn transaction(
    conn: &Connection,
    writes: &[&Write],
    shared: &Shared,
    endpoints: &mut EndpointCache,
) -> Result<Vec<Outcome>, StoreError> {
    if !conn.is_autocommit() {
        // A BEGIN would fail with a generic error that reads like one write's fault.
        return Err(StoreError::Writer(
            "the writer's connection is stuck in an open transaction".into(),
        ));
    }
    bump(&shared.counters.transactions, 1);
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        match write.apply(conn, endpoints) {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                endpoints.clear();
                rollback(conn, shared);
                return Err(error);
            }
        }
    }
    if let Err(error) = conn.execute_batch("COMMIT") {
        // A failed COMMIT may leave the transaction open: it must not survive into the next.
        endpoints.clear();
        rollback(conn, shared);
        return Err(error.into());
    }
    Ok(outcomes)
}

/// Rolls back the open transaction. Whether one is still open afterwards is checked by the
/// caller of the batch ([`Thread::batch`]), which reopens the connection if so.
fn rollback(conn: &Connection, shared: &Shared) {
    #[cfg(test)]
    if Faults::take(&shared.faults.skip_rollbacks) {
        return;
    }
    #[cfg(not(test))]
    let _ = shared;
    if let Err(error) = conn.execute_batch("ROLLBACK") {
        // Harmless when SQLite already rolled back by itself (after BUSY, FULL, IOERR, …).
        if !conn.is_autocommit() {
            tracing::error!(%error, "ROLLBACK failed; the transaction is still open");
        }
    }
}

/// Whether `error` is about the database as a whole, not about one write: every other write
/// would fail the same way (and, for a lock, only after waiting out the busy timeout again).
pub(crate) fn hits_whole_database(error: &StoreError) -> bool {
    match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory
                | ErrorCode::NoLargeFileSupport
        ),
        StoreError::Writer(_) => true,
        _ => false,
    }
}

/// A copy of `error` for another caller of the same failed batch (errors are not `Clone`).
fn duplicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, message)) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*failure, message.clone()))
        }
        StoreError::Writer(message) => StoreError::Writer(message.clone()),
        StoreError::Corrupt(message) => StoreError::Corrupt(message.clone()),
        StoreError::Config(message) => StoreError::Config(message.clone()),
        other => StoreError::Writer(format!("the batch of this write failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::sqlite::writes::SettleWrite;
    use crate::test_support::TempDir;
    use crate::{NewEndpoint, NewPayment, Settlement, SqliteStore, StoredResponse};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + secs * 1000).unwrap()
    }

    fn claim(key: &str, id: Uuid) -> Write {
        Write::Claim(Box::new(NewPayment {
            id,
            tenant: "acme".to_owned(),
            idempotency_key: key.to_owned(),
            fingerprint: "fp".to_owned(),
            amount: 100,
            currency: "TRY".to_owned(),
            source: "tok_visa".to_owned(),
            description: None,
            metadata: None,
            bank_reference: format!("pay_{}", id.simple()),
            bank: "bank".to_owned(),
            lease_owner: "h".to_owned(),
            lease_expires_at: at(30),
            now: at(0),
        }))
    }

    fn settle(id: Uuid) -> Write {
        let response = StoredResponse {
            status: 201,
            headers: vec![],
            body: b"{}".to_vec(),
        };
        let settlement = Settlement::Succeeded {
            charge_id: "ch".to_owned(),
        };
        Write::Settle(Box::new(SettleWrite::new(
            id,
            &settlement,
            1,
            &response,
            at(1),
        )))
    }

    fn deliveries(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM webhook_deliveries", [], |row| {
            row.get(0)
        })
        .unwrap()
    }

    /// The writer's copy of the endpoints never outlives a transaction that did not commit: a
    /// batch deletes the tenant's only endpoint and then settles a payment (which, inside the
    /// transaction, finds no endpoint), and fails; the rollback brings the endpoint back, and
    /// the next settlement must fan out to it rather than trust what the failed batch read.
    #[tokio::test]
    async fn endpoints_read_in_a_transaction_that_rolls_back_are_forgotten() {
        let dir = TempDir::new("writer-cache").unwrap();
        let path = dir.path().join("payments.db");
        drop(SqliteStore::open(&path).await.unwrap()); // migrated
        let shared = Shared::default();
        let conn = open(
            &WriterConfig {
                path: path.clone(),
                busy_timeout: Duration::from_secs(1),
            },
            &shared,
        )
        .unwrap();
        let mut endpoints = EndpointCache::default();
        let run = |writes: &[&Write], endpoints: &mut EndpointCache| {
            transaction(&conn, writes, &shared, endpoints)
        };

        let endpoint = Write::CreateEndpoint(Box::new(NewEndpoint {
            id: "we_1".to_owned(),
            tenant: "acme".to_owned(),
            url: "https://example.com/hooks".to_owned(),
            event_types: vec!["payment.succeeded".to_owned()],
            secret: "whsec_c2VjcmV0".to_owned(),
            now: at(0),
        }));
        let (first, second, third) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        run(
            &[
                &endpoint,
                &claim("k1", first),
                &claim("k2", second),
                &claim("k3", third),
            ],
            &mut endpoints,
        )
        .unwrap();

        // Delete, settle (no endpoint in this transaction), then a claim that fails on its own
        // (its payment id is taken): the whole batch rolls back.
        let delete = Write::DeleteEndpoint {
            tenant: Some("acme".to_owned()),
            id: "we_1".to_owned(),
        };
        let failing = claim("k4", first);
        assert!(run(&[&delete, &settle(first), &failing], &mut endpoints).is_err());
        assert_eq!(deliveries(&conn), 0);

        // The endpoint is back, and the next settlement fans out to it.
        run(&[&settle(second)], &mut endpoints).unwrap();
        assert_eq!(
            deliveries(&conn),
            1,
            "the rolled-back deletion was forgotten"
        );
        // And, now that a committed transaction filled the copy, the one after uses it.
        run(&[&settle(third)], &mut endpoints).unwrap();
        assert_eq!(deliveries(&conn), 2);
    }
}
