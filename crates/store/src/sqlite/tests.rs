//! The writer's recovery from states only a broken disk or driver reaches, reached here through
//! the writer's injected faults ([`writer::Faults`]): a `ROLLBACK` that leaves the transaction
//! open, and a connection that cannot be reopened.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use rusqlite::ErrorCode;
use uuid::Uuid;

use super::writer::hits_whole_database;
use super::SqliteStore;
use crate::test_support::TempDir;
use crate::{ClaimOutcome, NewPayment, Store, StoreError};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + secs * 1000).unwrap()
}

fn new_payment(key: &str) -> NewPayment {
    let id = Uuid::new_v4();
    NewPayment {
        id,
        tenant: "acme".to_owned(),
        idempotency_key: key.to_owned(),
        fingerprint: format!("fp-{key}"),
        amount: 100,
        currency: "TRY".to_owned(),
        source: "tok_visa".to_owned(),
        description: None,
        metadata: None,
        bank_reference: format!("ref_{}", id.simple()),
        lease_owner: "h".to_owned(),
        lease_expires_at: at(30),
        now: at(0),
    }
}

async fn open() -> (TempDir, SqliteStore) {
    let dir = TempDir::new("store-writer").unwrap();
    let store = SqliteStore::open(&dir.path().join("payments.db"))
        .await
        .unwrap();
    (dir, store)
}

/// A claim that fails on its own (it reuses an existing payment id: a constraint violation).
async fn failing_claim(store: &SqliteStore, taken: Uuid, key: &str) {
    let mut bad = new_payment(key);
    bad.id = taken;
    let error = store
        .claim(&bad)
        .await
        .expect_err("the payment id is taken");
    assert!(
        matches!(&error, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation),
        "{error}"
    );
}

#[tokio::test]
async fn a_rollback_that_leaves_the_transaction_open_does_not_wedge_the_writer() {
    let (_dir, store) = open().await;
    let first = new_payment("first");
    assert_eq!(store.claim(&first).await.unwrap(), ClaimOutcome::Claimed);

    store
        .writer
        .faults()
        .skip_rollbacks
        .store(1, Ordering::SeqCst);
    failing_claim(&store, first.id, "bad").await;
    assert_eq!(
        store.writer.faults().skip_rollbacks.load(Ordering::SeqCst),
        0,
        "the fault was hit: the ROLLBACK was skipped"
    );

    // The next writes commit, and the file's write lock is free for others in between.
    let next = new_payment("next");
    assert_eq!(store.claim(&next).await.unwrap(), ClaimOutcome::Claimed);
    // The reopen came after the failed claim's answer and before this claim's batch.
    assert_eq!(
        store.writer_stats().reopens,
        1,
        "the connection was reopened"
    );
    let other = rusqlite::Connection::open(store.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").unwrap();
    store.ping().await.unwrap();
    assert!(store.find_key("acme", "next").await.unwrap().is_some());
    assert!(
        store.find_key("acme", "bad").await.unwrap().is_none(),
        "the failed claim's open transaction was rolled back, not committed"
    );
}

#[tokio::test]
async fn a_writer_that_cannot_reopen_fails_writes_clearly_and_retries_with_the_next_batch() {
    let (_dir, store) = open().await;
    let first = new_payment("first");
    assert_eq!(store.claim(&first).await.unwrap(), ClaimOutcome::Claimed);

    let faults = store.writer.faults();
    faults.skip_rollbacks.store(1, Ordering::SeqCst);
    // The reopen right after the wedged batch fails, and so does the next batch's.
    faults.fail_opens.store(2, Ordering::SeqCst);
    failing_claim(&store, first.id, "bad").await;

    let error = store
        .claim(&new_payment("during"))
        .await
        .expect_err("no connection");
    assert!(
        matches!(&error, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::CannotOpen),
        "the write fails with the open's error: {error}"
    );
    assert_eq!(faults.fail_opens.load(Ordering::SeqCst), 0);

    // The next batch opens the connection and commits: the thread lived through it all.
    assert_eq!(
        store.claim(&new_payment("after")).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(store.writer_stats().reopens, 1);
    store.ping().await.unwrap();
    assert!(store.find_key("acme", "during").await.unwrap().is_none());
}

#[test]
fn errors_of_the_whole_database_are_told_from_errors_of_one_write() {
    let sqlite = |code: i32| {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    };
    for code in [
        rusqlite::ffi::SQLITE_BUSY,
        rusqlite::ffi::SQLITE_LOCKED,
        rusqlite::ffi::SQLITE_FULL,
        rusqlite::ffi::SQLITE_IOERR,
        rusqlite::ffi::SQLITE_IOERR_FSYNC,
        rusqlite::ffi::SQLITE_READONLY,
        rusqlite::ffi::SQLITE_CORRUPT,
        rusqlite::ffi::SQLITE_CANTOPEN,
        rusqlite::ffi::SQLITE_NOTADB,
    ] {
        assert!(hits_whole_database(&sqlite(code)), "code {code}");
    }
    for code in [
        rusqlite::ffi::SQLITE_CONSTRAINT,
        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
        rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
        rusqlite::ffi::SQLITE_TOOBIG,
        rusqlite::ffi::SQLITE_MISMATCH,
    ] {
        assert!(!hits_whole_database(&sqlite(code)), "code {code}");
    }
    assert!(!hits_whole_database(&StoreError::Corrupt(
        "a bad row".into()
    )));
    assert!(hits_whole_database(&StoreError::Writer("stuck".into())));
}
