//! The writer's recovery from states only a broken disk or driver reaches, reached here through
//! the writer's injected faults ([`writer::Faults`]): a `ROLLBACK` that leaves the transaction
//! open, and a connection that cannot be reopened. And the shape of the SQL itself: what every
//! statement's plan reads, and what a payment writes.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use rusqlite::ErrorCode;
use uuid::Uuid;

use super::writer::hits_whole_database;
use super::{get_query, list_query, sql, SqliteStore};
use crate::test_support::TempDir;
use crate::{ClaimOutcome, NewPayment, PaymentQuery, Store, StoreError};
use payment_types::payment::PaymentStatus;

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
        bank: "bank-a".to_owned(),
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

/// `EXPLAIN QUERY PLAN` of `statement`: one line per step.
fn plan(conn: &rusqlite::Connection, statement: &str) -> Vec<String> {
    let mut explain = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
        .unwrap();
    let mut rows = explain.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        steps.push(row.get::<_, String>(3).unwrap());
    }
    steps
}

/// The opcodes of `statement`'s program, with their `p2` (a root page for `OpenWrite`).
fn program(conn: &rusqlite::Connection, statement: &str) -> Vec<(String, i64)> {
    let mut explain = conn.prepare(&format!("EXPLAIN {statement}")).unwrap();
    let mut rows = explain.raw_query();
    let mut ops = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        ops.push((row.get(1).unwrap(), row.get(3).unwrap()));
    }
    ops
}

/// Every statement of the store, by name.
fn statements() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        ("KEY_SELECT", sql::KEY_SELECT),
        ("INSERT_PAYMENT", sql::INSERT_PAYMENT),
        ("SETTLE_PAYMENT", sql::SETTLE_PAYMENT),
        ("ACQUIRE_LEASE", sql::ACQUIRE_LEASE),
        ("UNLEASE_PAYMENT", sql::UNLEASE_PAYMENT),
        ("KEY_PENDING", sql::KEY_PENDING),
        ("DELETE_PAYMENT", sql::DELETE_PAYMENT),
        ("REAP_KEYS", sql::REAP_KEYS),
        ("HEARTBEAT", sql::HEARTBEAT),
        ("PENDING_COUNT", sql::PENDING_COUNT),
        ("INSERT_EVENT", sql::INSERT_EVENT),
        ("FAN_OUT", sql::FAN_OUT),
        ("TENANT_ENDPOINT_TYPES", sql::TENANT_ENDPOINT_TYPES),
        ("PAYMENT_TENANT", sql::PAYMENT_TENANT),
        ("INSERT_DELIVERY", sql::INSERT_DELIVERY),
        ("DELETE_ENDPOINT", sql::DELETE_ENDPOINT),
        (
            "DELETE_ENDPOINT_DELIVERIES",
            sql::DELETE_ENDPOINT_DELIVERIES,
        ),
        ("ROTATE_SECRET", sql::ROTATE_SECRET),
        ("DELIVERIES_OF", sql::DELIVERIES_OF),
        ("ATTEMPTS_OF", sql::ATTEMPTS_OF),
        ("REQUEUE", sql::REQUEUE),
        ("LEASE_DELIVERY", sql::LEASE_DELIVERY),
        ("RECORD_DELIVERY", sql::RECORD_DELIVERY),
        ("DELIVERY_ATTEMPTS", sql::DELIVERY_ATTEMPTS),
        ("DELIVERY_BACKLOG", sql::DELIVERY_BACKLOG),
        ("REAP_EVENT_ATTEMPTS", sql::REAP_EVENT_ATTEMPTS),
        ("REAP_EVENT_DELIVERIES", sql::REAP_EVENT_DELIVERIES),
        ("REAP_EVENTS", sql::REAP_EVENTS),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.to_owned()))
    .collect();
    all.push(("due_for_reconcile".into(), sql::due_for_reconcile()));
    all.push(("payment_by_id".into(), sql::payment_by_id()));
    all.push(("endpoint_by_id".into(), sql::endpoint_by_id()));
    all.push(("endpoints_of".into(), sql::endpoints_of()));
    all.push(("event_by_id".into(), sql::event_by_id()));
    all.push(("due_deliveries".into(), sql::due_deliveries()));
    for tenant in [None, Some("acme")] {
        all.push((
            format!("get_payment tenant={tenant:?}"),
            get_query(tenant, Uuid::nil()).sql().to_owned(),
        ));
        for status in [None, Some(PaymentStatus::Pending)] {
            for before in [None, Some((at(0), Uuid::nil()))] {
                let query = PaymentQuery {
                    tenant: tenant.map(str::to_owned),
                    status,
                    before,
                    limit: 10,
                };
                all.push((
                    format!("list_payments {query:?}"),
                    list_query(&query).sql().to_owned(),
                ));
            }
        }
    }
    all
}

/// Every read and write is served by an index (a scan only ever walks an index, in the order
/// asked for: the listings, and the count of the partial index of pending payments), and none
/// sorts its rows in a temporary B-tree.
#[tokio::test]
async fn every_statement_is_served_by_an_index_without_sorting() {
    let (_dir, store) = open().await;
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    for (name, statement) in statements() {
        let steps = plan(&conn, &statement);
        for step in &steps {
            assert!(
                !step.starts_with("SCAN") || step.contains(" INDEX "),
                "{name}: a full scan: {steps:?}"
            );
            assert!(!step.contains("TEMP B-TREE"), "{name}: a sort: {steps:?}");
        }
        let expect = |index: &str| {
            assert!(
                steps.iter().any(|step| step.contains(index)),
                "{name} reads {index}: {steps:?}"
            );
        };
        match name.as_str() {
            "due_for_reconcile" | "PENDING_COUNT" => expect("payments_pending_due"),
            "REAP_KEYS" => expect("payments_key_completed"),
            // Not a prefix of another index's name: `payments_key_completed` would match that.
            "KEY_SELECT" => expect("INDEX payments_key ("),
            "due_deliveries" => expect("webhook_deliveries_due"),
            // Either partial index of pending deliveries counts them.
            "DELIVERY_BACKLOG" => expect("INDEX webhook_deliveries_"),
            "FAN_OUT" | "TENANT_ENDPOINT_TYPES" | "endpoints_of" => {
                expect("webhook_endpoints_tenant")
            }
            "DELETE_ENDPOINT_DELIVERIES" => expect("webhook_deliveries_endpoint"),
            listing if listing.starts_with("list_payments") => {
                if listing.contains("tenant: Some") {
                    expect("payments_tenant_created")
                } else {
                    expect("payments_created")
                }
            }
            _ => {}
        }
    }
}

/// What a payment costs SQLite: its claim (one insert: the payment with its key) and its
/// settlement (one update of that row, and the outbox's event row) write 8 B-trees in all: the
/// payment's row, its three indexes and the index of live keys (the claim); the reaper's index
/// of completed keys (the settlement), and since webhooks the event's row and its tenant index
/// (the final state's event is written by the settlement's transaction, for every payment,
/// whether or not its tenant has an endpoint). The settlement leaves the index of live keys
/// alone: that index's condition is on `fingerprint`, which a settlement does not change
/// (`0006_keys_in_payments.sql`). The fan-out to `webhook_deliveries` is left out on purpose:
/// for a tenant without a matching endpoint it selects no row and writes no page. (A claim
/// writes no route row: the payment row is its first route until it moves; see
/// `sql::INSERT_ROUTE`.) None of the statements builds a temporary B-tree (as an `IN (…)` list
/// in a CHECK constraint or a `RETURNING` clause would, on every execution). Adding an index to
/// any of these tables fails this test on purpose: it costs every payment a B-tree more, so
/// count it and update the figure.
#[tokio::test]
async fn a_payment_writes_eight_b_trees_and_builds_no_temporary_one() {
    let (_dir, store) = open().await;
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let names: std::collections::HashMap<i64, String> = conn
        .prepare("SELECT rootpage, name FROM sqlite_master WHERE rootpage > 0")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let written = |statement: &str| -> Vec<String> {
        let ops = program(&conn, statement);
        assert!(
            !ops.iter().any(|(op, _)| op == "OpenEphemeral"),
            "a temporary B-tree per execution: {statement}"
        );
        let opened: std::collections::BTreeSet<String> = ops
            .into_iter()
            .filter(|(op, _)| op == "OpenWrite")
            .map(|(_, root)| names[&root].clone())
            .collect();
        opened.into_iter().collect()
    };
    assert_eq!(
        written(sql::INSERT_PAYMENT),
        [
            "payments",
            "payments_created",
            "payments_key",
            "payments_key_completed",
            "payments_pending_due",
            "payments_tenant_created",
        ]
    );
    assert_eq!(
        written(sql::SETTLE_PAYMENT),
        ["payments", "payments_key_completed", "payments_pending_due"]
    );
    assert_eq!(
        written(sql::INSERT_EVENT),
        ["webhook_events", "webhook_events_tenant"]
    );
}

/// A claim writes no route row (its payment row is its first route), yet its routes read as its
/// first bank; the first move writes the first route's row and its own, so the routes stay
/// complete, oldest first, after the payment row names the second bank.
#[tokio::test]
async fn the_first_route_is_a_row_only_once_the_payment_moves() {
    let (_dir, store) = open().await;
    let new = new_payment("moves");
    assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let rows = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM payment_routes WHERE payment_id = ?1",
            [new.id.to_string()],
            |row| row.get(0),
        )
        .unwrap()
    };
    assert_eq!(rows(&conn), 0, "the claim wrote no route row");
    let routes = store.routes(new.id).await.unwrap();
    assert_eq!(
        routes
            .iter()
            .map(|r| (r.bank.as_str(), r.reference.as_str(), r.created_at))
            .collect::<Vec<_>>(),
        [("bank-a", new.bank_reference.as_str(), at(0))]
    );

    assert!(store
        .switch_bank(new.id, "h", "bank-b", "ref-b", 1, at(1))
        .await
        .unwrap());
    assert_eq!(rows(&conn), 2, "the first move wrote both routes");
    let routes = store.routes(new.id).await.unwrap();
    assert_eq!(
        routes
            .iter()
            .map(|r| (r.bank.as_str(), r.reference.as_str()))
            .collect::<Vec<_>>(),
        [("bank-a", new.bank_reference.as_str()), ("bank-b", "ref-b")]
    );
    // Back to the first bank is refused, as when its row was written by the claim.
    assert!(store
        .switch_bank(new.id, "h", "bank-a", "ref-a2", 1, at(2))
        .await
        .is_err());
}
