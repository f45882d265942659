//! The store suite: every case in [`cases`] is written once and runs against both backends, as
//! `sqlite::<case>` and `postgres::<case>`. Each test gets its own SQLite file or PostgreSQL
//! database; one throwaway PostgreSQL server is shared by the whole binary (see
//! `payment_store::test_support`). Without PostgreSQL binaries the `postgres::` tests print
//! `SKIPPED` and pass, except under `CI=true`, where they fail.
//!
//! Times: the cases pass artificial times (`at(secs)`), which SQLite stores and compares as
//! given. PostgreSQL runs leases on its own clock (see the crate docs, "Whose clock a lease runs
//! on"): a lease there lasts `until - now` from the database's time of the call. So a case that
//! needs an expired lease grants one of zero length (`until == now`), which has run out on both
//! backends, rather than passing a later `now`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use payment_store::test_support::TempDir;
use payment_store::{NewPayment, SqliteStore, Store};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The backend's first migrations (`backend`: `sqlite` or `postgres`), the files named, as a
/// migrator: copies of the files, so the checksums are the ones an older store recorded. The
/// upgrade tests build a database at an old version with it.
async fn migrations_up_to(
    backend: &str,
    files: &[&str],
    scratch: &std::path::Path,
) -> sqlx::migrate::Migrator {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let old = scratch.join(format!("migrations-{backend}-{}", files.len()));
    std::fs::create_dir_all(&old).unwrap();
    for file in files {
        std::fs::copy(source.join(file), old.join(file)).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
    assert_eq!(migrator.iter().count(), files.len());
    migrator
}

/// A store under test and what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    /// The SQLite file's directory, removed when the test ends.
    _dir: Option<TempDir>,
}

async fn sqlite_backend() -> Backend {
    let dir = TempDir::new("store-suite").unwrap();
    let store = SqliteStore::open(&dir.path().join("payments.db"))
        .await
        .unwrap();
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn postgres_backend() -> Option<Backend> {
    let server = payment_store::test_support::pg_or_skip()?;
    let url = server.new_database().unwrap();
    let store = payment_store::PostgresStore::connect(&url).await.unwrap();
    Some(Backend {
        store: Arc::new(store),
        _dir: None,
    })
}

/// Expands each case into a `sqlite::` and a `postgres::` test.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let backend = super::sqlite_backend().await;
                    super::cases::$case(backend.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(backend) = super::postgres_backend().await else { return };
                    super::cases::$case(backend.store.clone()).await;
                }
            )*
        }
    };
}

suite!(
    claim_stores_the_payment_as_given,
    fifty_concurrent_claims_of_one_key_make_one_payment,
    two_hundred_keys_claimed_three_times_concurrently_make_two_hundred_payments,
    a_failing_claim_among_concurrent_ones_fails_alone_and_writes_nothing,
    concurrent_settlements_each_get_their_own_answer,
    an_existing_key_returns_its_fingerprint_state_and_lease,
    the_same_key_under_two_tenants_is_two_independent_claims,
    a_lease_is_taken_only_when_free_expired_or_already_ours,
    owners_racing_for_an_expired_lease_have_exactly_one_winner,
    settle_records_the_outcome_and_the_exact_response_once,
    settle_records_declines_and_failures,
    mark_pending_hands_the_payment_to_the_reconciler_at_its_time,
    reschedule_moves_the_next_look_and_releases_the_lease,
    due_for_reconcile_skips_leased_and_final_payments_and_orders_oldest_first,
    release_frees_the_key_only_for_the_lease_owner,
    reap_keys_deletes_only_completed_keys_older_than_the_cutoff,
    list_payments_is_newest_first_filtered_and_pages_exactly_once,
    get_payment_is_scoped_to_its_tenant,
    pending_count_and_ping,
    a_claim_records_the_route_at_its_first_bank,
    switch_bank_records_the_route_and_moves_the_payment_only_under_a_live_lease,
    release_deletes_the_routes_with_the_payment,
    each_state_change_writes_its_event_and_fans_out_to_matching_endpoints,
    a_payment_without_endpoints_writes_its_event_and_no_delivery,
    the_fan_out_follows_endpoints_created_and_deleted_between_payments,
    deliveries_are_leased_once_and_every_attempt_is_recorded,
    workers_racing_for_due_deliveries_never_share_one,
    endpoints_are_scoped_rotated_and_deleted,
    events_list_newest_first_filtered_and_paged,
    the_event_reaper_deletes_only_old_events_nothing_waits_on,
);

#[path = "suite/webhooks.rs"]
mod webhook_cases;

/// A millisecond-precise instant `secs` seconds after a fixed origin (stores keep milliseconds).
fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + secs * 1000).unwrap()
}

/// A payment claimed by `owner` at `now`, its lease running until `lease_until`.
fn new_payment(
    tenant: &str,
    key: &str,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> NewPayment {
    let id = Uuid::new_v4();
    let mut metadata = Map::new();
    metadata.insert("order".to_owned(), Value::String("o-1".to_owned()));
    NewPayment {
        id,
        tenant: tenant.to_owned(),
        idempotency_key: key.to_owned(),
        fingerprint: format!("fp-{key}"),
        amount: 1999,
        currency: "TRY".to_owned(),
        source: "tok_visa".to_owned(),
        description: Some("tea".to_owned()),
        metadata: Some(metadata),
        bank_reference: format!("ref_{}", id.simple()),
        bank: "bank-a".to_owned(),
        lease_owner: owner.to_owned(),
        lease_expires_at: lease_until,
        now,
    }
}

mod cases {
    use std::collections::HashSet;
    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use payment_store::{
        ClaimOutcome, KeyState, NewPayment, PaymentQuery, PaymentRecord, Settlement, Store,
        StoreKind, StoredResponse,
    };
    use payment_types::payment::PaymentStatus;
    use uuid::Uuid;

    use super::{at, json, new_payment};

    pub(super) use super::webhook_cases::*;

    /// Claims a fresh key and asserts it was free.
    async fn claimed(
        store: &Arc<dyn Store>,
        tenant: &str,
        key: &str,
        owner: &str,
        now: i64,
        lease: i64,
    ) -> Uuid {
        let new = new_payment(tenant, key, owner, at(now), at(lease));
        assert_eq!(
            store.claim(&new).await.unwrap(),
            ClaimOutcome::Claimed,
            "key {key} was free"
        );
        new.id
    }

    fn response(status: u16, body: &[u8]) -> StoredResponse {
        StoredResponse {
            status,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("location".to_owned(), "/v1/payments/x".to_owned()),
                ("x-dup".to_owned(), "1".to_owned()),
                ("x-dup".to_owned(), "ü 2".to_owned()),
            ],
            body: body.to_vec(),
        }
    }

    fn succeeded(charge: &str) -> Settlement {
        Settlement::Succeeded {
            charge_id: charge.to_owned(),
        }
    }

    /// This machine's clock before and after a call that granted a lease.
    type Window = (DateTime<Utc>, DateTime<Utc>);

    /// Checks a lease granted during `window` by a call that passed `until` and `now`: on SQLite
    /// it ends at `until`; on PostgreSQL, whose leases run on the database's clock, it ends
    /// `until - now` after the database's time of the call (the throwaway server runs on this
    /// machine, so that time lies within `window`, give or take the millisecond rounding).
    fn assert_lease(
        store: &Arc<dyn Store>,
        actual: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        (before, after): Window,
    ) {
        let actual = actual.expect("a lease is set");
        match store.kind() {
            StoreKind::Sqlite => assert_eq!(actual, until, "the lease ends at the caller's until"),
            StoreKind::Postgres => {
                let length = until - now;
                let slack = chrono::Duration::milliseconds(2);
                assert!(
                    before + length - slack <= actual && actual <= after + length + slack,
                    "the lease ends {length} after the database's now: {actual} is not within \
                     [{before}, {after}] + {length}"
                );
            }
        }
    }

    /// `new` as [`Store::claim`] stored it: as given, but for the lease (see [`assert_lease`]).
    async fn assert_stored_as_claimed(store: &Arc<dyn Store>, new: &NewPayment, window: Window) {
        let stored = payment(store, new.id).await;
        assert_lease(
            store,
            stored.lease_expires_at,
            new.lease_expires_at,
            new.now,
            window,
        );
        let expected = PaymentRecord {
            lease_expires_at: stored.lease_expires_at,
            ..PaymentRecord::from_new(new)
        };
        assert_eq!(stored, expected);
    }

    async fn payment(store: &Arc<dyn Store>, id: Uuid) -> PaymentRecord {
        store
            .get_payment(None, id)
            .await
            .unwrap()
            .expect("payment exists")
    }

    pub(super) async fn claim_stores_the_payment_as_given(store: Arc<dyn Store>) {
        let mut new = new_payment("acme", "k1", "h1", at(0), at(30));
        new.metadata
            .as_mut()
            .unwrap()
            .insert("nested".to_owned(), json!({"b": [1, 2.5, null], "a": true}));
        let before = Utc::now();
        assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
        assert_stored_as_claimed(&store, &new, (before, Utc::now())).await;

        let mut bare = new_payment("acme", "k2", "h1", at(1), at(31));
        bare.description = None;
        bare.metadata = None;
        let before = Utc::now();
        assert_eq!(store.claim(&bare).await.unwrap(), ClaimOutcome::Claimed);
        assert_stored_as_claimed(&store, &bare, (before, Utc::now())).await;

        let key = store.find_key("acme", "k1").await.unwrap().unwrap();
        assert_eq!(key.state, KeyState::InFlight);
        assert_eq!(key.payment_id, new.id);
        assert_eq!(key.created_at, at(0));
        assert_eq!(key.response, None);
        assert_eq!(store.find_key("acme", "nope").await.unwrap(), None);
    }

    /// Group commit (SQLite) puts concurrent writes in one transaction: a write that fails must
    /// fail alone, write nothing, and leave every other write of its batch committed.
    pub(super) async fn a_failing_claim_among_concurrent_ones_fails_alone_and_writes_nothing(
        store: Arc<dyn Store>,
    ) {
        let taken = claimed(&store, "acme", "first", "o", 0, 30).await;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut new =
                        new_payment("acme", &format!("k{i}"), &format!("o{i}"), at(0), at(30));
                    if i % 10 == 3 {
                        // A fresh key whose payment id collides with an existing payment: the
                        // key's insert succeeds, the payment's fails, the claim must not stick.
                        new.id = taken;
                    }
                    (i, store.claim(&new).await)
                })
            })
            .collect();
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            if i % 10 == 3 {
                assert!(
                    outcome.is_err(),
                    "claim {i} reuses a payment id and must fail"
                );
                assert!(
                    store
                        .find_key("acme", &format!("k{i}"))
                        .await
                        .unwrap()
                        .is_none(),
                    "a failed claim leaves its key free"
                );
            } else {
                assert_eq!(outcome.unwrap(), ClaimOutcome::Claimed, "claim {i}");
                let key = store.find_key("acme", &format!("k{i}")).await.unwrap();
                assert_eq!(
                    key.unwrap().state,
                    KeyState::InFlight,
                    "claim {i} is stored"
                );
            }
        }
        assert_eq!(store.pending_count().await.unwrap(), 1 + 36);
    }

    pub(super) async fn concurrent_settlements_each_get_their_own_answer(store: Arc<dyn Store>) {
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(claimed(&store, "acme", &format!("s{i}"), "o", 0, 30).await);
        }
        // Every payment is settled twice at once: exactly one settlement of each wins.
        let tasks: Vec<_> = ids
            .iter()
            .chain(ids.iter())
            .enumerate()
            .map(|(n, id)| {
                let (store, id) = (store.clone(), *id);
                tokio::spawn(async move {
                    let settled = store
                        .settle(
                            id,
                            &succeeded(&format!("ch_{n}")),
                            1,
                            &response(201, b"{}"),
                            at(1),
                        )
                        .await
                        .unwrap();
                    (id, settled)
                })
            })
            .collect();
        let mut wins = std::collections::HashMap::new();
        for task in tasks {
            let (id, settled) = task.await.unwrap();
            *wins.entry(id).or_insert(0) += u32::from(settled);
        }
        assert!(
            wins.values().all(|n| *n == 1),
            "one settlement per payment wins"
        );
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(payment(&store, *id).await.status, PaymentStatus::Succeeded);
            let key = store
                .find_key("acme", &format!("s{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(key.state, KeyState::Completed);
            assert_eq!(key.response.unwrap().status, 201);
        }
        assert_eq!(store.pending_count().await.unwrap(), 0);
    }

    pub(super) async fn fifty_concurrent_claims_of_one_key_make_one_payment(store: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let new = new_payment("acme", "hot-key", &format!("h{i}"), at(0), at(30));
                    (new.id, store.claim(&new).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut existing = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (id, ClaimOutcome::Claimed) => winners.push(id),
                (_, ClaimOutcome::Existing(record)) => existing.push(record.payment_id),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins");
        assert_eq!(existing.len(), 49);
        assert!(
            existing.iter().all(|id| *id == winners[0]),
            "every loser sees the winner's payment"
        );
        assert_eq!(store.pending_count().await.unwrap(), 1);
        let all = store
            .list_payments(&PaymentQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), winners);
    }

    pub(super) async fn two_hundred_keys_claimed_three_times_concurrently_make_two_hundred_payments(
        store: Arc<dyn Store>,
    ) {
        let tasks: Vec<_> = (0..600)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let new = new_payment(
                        "acme",
                        &format!("key-{}", i % 200),
                        &format!("h{i}"),
                        at(0),
                        at(30),
                    );
                    matches!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed)
                })
            })
            .collect();
        let mut claimed = 0;
        for task in tasks {
            claimed += usize::from(task.await.unwrap());
        }
        assert_eq!(claimed, 200);
        assert_eq!(store.pending_count().await.unwrap(), 200);
        let all = store
            .list_payments(&PaymentQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 200);
        let keys: HashSet<_> = all.iter().map(|p| p.idempotency_key.clone()).collect();
        assert_eq!(keys.len(), 200, "one payment per key");
    }

    pub(super) async fn an_existing_key_returns_its_fingerprint_state_and_lease(
        store: Arc<dyn Store>,
    ) {
        let before = Utc::now();
        let id = claimed(&store, "acme", "k", "h1", 0, 30).await;
        let window = (before, Utc::now());
        let mut other_body = new_payment("acme", "k", "h2", at(1), at(31));
        other_body.fingerprint = "another-body".to_owned();
        let ClaimOutcome::Existing(record) = store.claim(&other_body).await.unwrap() else {
            panic!("the key is taken")
        };
        assert_eq!(
            record.fingerprint, "fp-k",
            "the stored fingerprint, to answer 422 on mismatch"
        );
        assert_eq!(record.payment_id, id);
        assert_eq!(record.state, KeyState::InFlight);
        assert_eq!(record.payment_status, PaymentStatus::Pending);
        assert_eq!(record.lease_owner.as_deref(), Some("h1"));
        assert_lease(&store, record.lease_expires_at, at(30), at(0), window);
        assert_eq!(record.response, None);
        assert!(
            store
                .get_payment(None, other_body.id)
                .await
                .unwrap()
                .is_none(),
            "nothing written"
        );

        store
            .mark_pending(id, "h1", 1, Some(at(2)), at(60), at(3))
            .await
            .unwrap();
        let ClaimOutcome::Existing(record) = store.claim(&other_body).await.unwrap() else {
            panic!("the key is taken")
        };
        assert_eq!(record.state, KeyState::Pending);
        assert_eq!(record.lease_owner, None);

        store
            .settle(id, &succeeded("ch_x"), 1, &response(201, b"{}"), at(4))
            .await
            .unwrap();
        let ClaimOutcome::Existing(record) = store.claim(&other_body).await.unwrap() else {
            panic!("the key is taken")
        };
        assert_eq!(record.state, KeyState::Completed);
        assert_eq!(record.payment_status, PaymentStatus::Succeeded);
        assert_eq!(record.response, Some(response(201, b"{}")));
        assert_eq!(record.completed_at, Some(at(4)));
    }

    pub(super) async fn the_same_key_under_two_tenants_is_two_independent_claims(
        store: Arc<dyn Store>,
    ) {
        let a = claimed(&store, "acme", "shared", "h1", 0, 30).await;
        let b = claimed(&store, "globex", "shared", "h2", 0, 30).await;
        assert_ne!(a, b);
        assert_eq!(
            store
                .find_key("acme", "shared")
                .await
                .unwrap()
                .unwrap()
                .payment_id,
            a
        );
        assert_eq!(
            store
                .find_key("globex", "shared")
                .await
                .unwrap()
                .unwrap()
                .payment_id,
            b
        );
        // Settling one tenant's payment leaves the other's key alone.
        assert!(store
            .settle(a, &succeeded("ch_a"), 1, &response(201, b"a"), at(1))
            .await
            .unwrap());
        let other = store.find_key("globex", "shared").await.unwrap().unwrap();
        assert_eq!(other.state, KeyState::InFlight);
        assert_eq!(other.response, None);
    }

    pub(super) async fn a_lease_is_taken_only_when_free_expired_or_already_ours(
        store: Arc<dyn Store>,
    ) {
        let id = claimed(&store, "acme", "k", "a", 0, 30).await;
        assert!(
            !store.acquire_lease(id, "b", at(70), at(10)).await.unwrap(),
            "a's lease is unexpired"
        );
        assert_eq!(payment(&store, id).await.lease_owner.as_deref(), Some("a"));
        let before = Utc::now();
        assert!(
            store.acquire_lease(id, "a", at(60), at(10)).await.unwrap(),
            "the owner may extend"
        );
        let window = (before, Utc::now());
        assert_lease(
            &store,
            payment(&store, id).await.lease_expires_at,
            at(60),
            at(10),
            window,
        );
        assert!(
            !store.acquire_lease(id, "b", at(90), at(59)).await.unwrap(),
            "still unexpired"
        );
        // Time runs out for a: a renewal of zero length ends its lease at 60 on SQLite's
        // (caller's) clock and at once on PostgreSQL's (the database's).
        assert!(store.acquire_lease(id, "a", at(60), at(60)).await.unwrap());
        let before = Utc::now();
        assert!(
            store.acquire_lease(id, "b", at(90), at(60)).await.unwrap(),
            "expired at 60: a lease ending at now has run out"
        );
        let window = (before, Utc::now());
        let leased = payment(&store, id).await;
        assert_eq!(leased.lease_owner.as_deref(), Some("b"));
        assert_lease(&store, leased.lease_expires_at, at(90), at(60), window);
        assert!(
            !store.acquire_lease(id, "a", at(120), at(61)).await.unwrap(),
            "b holds it now"
        );

        // A released lease (mark_pending) is free to anyone.
        store
            .mark_pending(id, "b", 1, None, at(100), at(62))
            .await
            .unwrap();
        assert!(store.acquire_lease(id, "c", at(130), at(63)).await.unwrap());

        // Final and unknown payments are never leased.
        assert!(store
            .settle(id, &succeeded("ch"), 1, &response(201, b""), at(64))
            .await
            .unwrap());
        assert!(!store.acquire_lease(id, "c", at(200), at(65)).await.unwrap());
        assert!(!store
            .acquire_lease(Uuid::new_v4(), "c", at(200), at(65))
            .await
            .unwrap());
    }

    pub(super) async fn owners_racing_for_an_expired_lease_have_exactly_one_winner(
        store: Arc<dyn Store>,
    ) {
        for round in 0..5 {
            // A lease that has run out: zero length, expired on every backend's clock.
            let id = claimed(&store, "acme", &format!("k{round}"), "crashed", 0, 0).await;
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let owner = format!("reconciler-{i}");
                        store
                            .acquire_lease(id, &owner, at(40), at(10))
                            .await
                            .unwrap()
                            .then_some(owner)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                winners.extend(task.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one owner wins");
            assert_eq!(
                payment(&store, id).await.lease_owner,
                Some(winners[0].clone())
            );
        }
    }

    pub(super) async fn settle_records_the_outcome_and_the_exact_response_once(
        store: Arc<dyn Store>,
    ) {
        let id = claimed(&store, "acme", "k", "h", 0, 30).await;
        let body = [0xff, 0x00, 0xfe, b'{', 0xc3, 0x28, b'}', 0x80];
        let stored = response(201, &body);
        assert!(store
            .settle(id, &succeeded("ch_1"), 2, &stored, at(5))
            .await
            .unwrap());

        let settled = payment(&store, id).await;
        assert_eq!(settled.status, PaymentStatus::Succeeded);
        assert_eq!(settled.bank_charge_id.as_deref(), Some("ch_1"));
        assert_eq!(settled.decline_code, None);
        assert_eq!(settled.attempts, 2);
        assert_eq!(settled.updated_at, at(5));
        assert_eq!(
            (settled.lease_owner.clone(), settled.next_reconcile_at),
            (None, None)
        );

        let key = store.find_key("acme", "k").await.unwrap().unwrap();
        assert_eq!(key.state, KeyState::Completed);
        assert_eq!(key.payment_status, PaymentStatus::Succeeded);
        assert_eq!(
            key.response.as_ref(),
            Some(&stored),
            "byte-identical replay"
        );
        assert_eq!(key.completed_at, Some(at(5)));

        // A second settle (say, a late reconciler) is refused and changes nothing.
        let late = Settlement::Declined {
            decline_code: "do_not_honor".to_owned(),
        };
        assert!(!store
            .settle(id, &late, 9, &response(402, b"late"), at(9))
            .await
            .unwrap());
        assert_eq!(payment(&store, id).await, settled);
        assert_eq!(store.find_key("acme", "k").await.unwrap().unwrap(), key);
        assert!(
            !store
                .settle(Uuid::new_v4(), &late, 1, &stored, at(9))
                .await
                .unwrap(),
            "unknown id"
        );
        assert_eq!(store.pending_count().await.unwrap(), 0);
    }

    pub(super) async fn settle_records_declines_and_failures(store: Arc<dyn Store>) {
        let declined = claimed(&store, "acme", "d", "h", 0, 30).await;
        let failed = claimed(&store, "acme", "f", "h", 0, 30).await;
        let decline = Settlement::Declined {
            decline_code: "insufficient_funds".to_owned(),
        };
        assert!(store
            .settle(declined, &decline, 1, &response(402, b"no"), at(1))
            .await
            .unwrap());
        let failure = Settlement::Failed {
            reason: "bank refused".to_owned(),
        };
        assert!(store
            .settle(failed, &failure, 4, &response(503, b""), at(2))
            .await
            .unwrap());

        let d = payment(&store, declined).await;
        assert_eq!(
            (
                d.status,
                d.decline_code.as_deref(),
                d.bank_charge_id.clone()
            ),
            (PaymentStatus::Declined, Some("insufficient_funds"), None)
        );
        let f = payment(&store, failed).await;
        assert_eq!(
            (f.status, f.failure_reason.as_deref(), f.attempts),
            (PaymentStatus::Failed, Some("bank refused"), 4)
        );
        let key = store.find_key("acme", "f").await.unwrap().unwrap();
        assert_eq!(
            key.response,
            Some(response(503, b"")),
            "an empty body is kept as empty"
        );
    }

    pub(super) async fn mark_pending_hands_the_payment_to_the_reconciler_at_its_time(
        store: Arc<dyn Store>,
    ) {
        let id = claimed(&store, "acme", "k", "h", 0, 30).await;
        store
            .mark_pending(id, "h", 3, Some(at(5)), at(60), at(6))
            .await
            .unwrap();

        let key = store.find_key("acme", "k").await.unwrap().unwrap();
        assert_eq!(
            (key.state, key.payment_status, key.lease_owner.clone()),
            (KeyState::Pending, PaymentStatus::Pending, None)
        );
        let p = payment(&store, id).await;
        assert_eq!(
            (p.attempts, p.last_attempt_at, p.next_reconcile_at),
            (3, Some(at(5)), Some(at(60)))
        );
        assert_eq!(
            (p.lease_owner.clone(), p.lease_expires_at, p.updated_at),
            (None, None, at(6))
        );

        assert!(
            store
                .due_for_reconcile(at(59), 10)
                .await
                .unwrap()
                .is_empty(),
            "not before its time"
        );
        let due = store.due_for_reconcile(at(60), 10).await.unwrap();
        assert_eq!(due.iter().map(|p| p.id).collect::<Vec<_>>(), vec![id]);

        // Someone without the lease cannot mark a payment pending.
        let other = claimed(&store, "acme", "k2", "h", 0, 30).await;
        store
            .mark_pending(other, "intruder", 1, Some(at(5)), at(7), at(6))
            .await
            .unwrap();
        let key = store.find_key("acme", "k2").await.unwrap().unwrap();
        assert_eq!(
            (key.state, key.lease_owner.as_deref()),
            (KeyState::InFlight, Some("h"))
        );
        assert_eq!(payment(&store, other).await.attempts, 0);
        // Nor can anyone once it is final.
        assert!(store
            .settle(other, &succeeded("ch"), 1, &response(201, b""), at(8))
            .await
            .unwrap());
        store
            .mark_pending(other, "h", 2, None, at(9), at(9))
            .await
            .unwrap();
        assert_eq!(
            store.find_key("acme", "k2").await.unwrap().unwrap().state,
            KeyState::Completed
        );
        assert_eq!(
            payment(&store, other).await.status,
            PaymentStatus::Succeeded
        );
    }

    pub(super) async fn reschedule_moves_the_next_look_and_releases_the_lease(
        store: Arc<dyn Store>,
    ) {
        let id = claimed(&store, "acme", "k", "h", 0, 30).await;
        store
            .mark_pending(id, "h", 1, Some(at(5)), at(60), at(6))
            .await
            .unwrap();
        assert!(store.acquire_lease(id, "r", at(90), at(60)).await.unwrap());
        assert!(
            store
                .due_for_reconcile(at(61), 10)
                .await
                .unwrap()
                .is_empty(),
            "leased to r"
        );

        store
            .reschedule(id, "other", Some(at(61)), 7, at(500), at(61))
            .await
            .unwrap();
        assert_eq!(
            payment(&store, id).await.next_reconcile_at,
            Some(at(60)),
            "not the lease owner"
        );

        store
            .reschedule(id, "r", None, 2, at(200), at(62))
            .await
            .unwrap();
        let p = payment(&store, id).await;
        assert_eq!(
            (p.next_reconcile_at, p.attempts, p.last_attempt_at),
            (Some(at(200)), 2, Some(at(5)))
        );
        assert_eq!((p.lease_owner.clone(), p.lease_expires_at), (None, None));
        assert!(store
            .due_for_reconcile(at(199), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.due_for_reconcile(at(200), 10).await.unwrap().len(), 1);

        assert!(store
            .acquire_lease(id, "r2", at(230), at(200))
            .await
            .unwrap());
        store
            .reschedule(id, "r2", Some(at(201)), 3, at(300), at(201))
            .await
            .unwrap();
        assert_eq!(payment(&store, id).await.last_attempt_at, Some(at(201)));
    }

    pub(super) async fn due_for_reconcile_skips_leased_and_final_payments_and_orders_oldest_first(
        store: Arc<dyn Store>,
    ) {
        // Pending, due at 50, 20 and 40 (claimed in another order than they fall due).
        let late = claimed(&store, "acme", "late", "h", 0, 10).await;
        let first = claimed(&store, "acme", "first", "h", 1, 10).await;
        let middle = claimed(&store, "globex", "middle", "h", 2, 10).await;
        store
            .mark_pending(late, "h", 1, None, at(50), at(3))
            .await
            .unwrap();
        store
            .mark_pending(first, "h", 1, None, at(20), at(3))
            .await
            .unwrap();
        store
            .mark_pending(middle, "h", 1, None, at(40), at(3))
            .await
            .unwrap();
        // An in-flight claim whose handler died: due from 30 (its first look), its lease run
        // out (zero length, so on the database's clock too).
        let crashed = claimed(&store, "acme", "crashed", "dead", 30, 30).await;
        // An in-flight claim with a live lease, and a pending one a reconciler holds: not due.
        claimed(&store, "acme", "live", "h", 4, 1000).await;
        let held = claimed(&store, "acme", "held", "h", 5, 10).await;
        store
            .mark_pending(held, "h", 1, None, at(10), at(6))
            .await
            .unwrap();
        assert!(store
            .acquire_lease(held, "r", at(1000), at(7))
            .await
            .unwrap());
        // A final payment: never due.
        let done = claimed(&store, "acme", "done", "h", 6, 10).await;
        assert!(store
            .settle(done, &succeeded("ch"), 1, &response(201, b""), at(8))
            .await
            .unwrap());

        let ids = |due: Vec<PaymentRecord>| due.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.due_for_reconcile(at(29), 10).await.unwrap()),
            vec![first]
        );
        assert_eq!(
            ids(store.due_for_reconcile(at(100), 10).await.unwrap()),
            vec![first, crashed, middle, late]
        );
        assert_eq!(
            ids(store.due_for_reconcile(at(100), 2).await.unwrap()),
            vec![first, crashed],
            "limit"
        );
        assert_eq!(store.pending_count().await.unwrap(), 6);
    }

    pub(super) async fn release_frees_the_key_only_for_the_lease_owner(store: Arc<dyn Store>) {
        let id = claimed(&store, "acme", "k", "a", 0, 30).await;
        assert!(
            !store.release(id, "b", at(1)).await.unwrap(),
            "b does not hold the lease"
        );
        assert!(store.find_key("acme", "k").await.unwrap().is_some());
        assert!(store.release(id, "a", at(1)).await.unwrap());
        assert_eq!(store.find_key("acme", "k").await.unwrap(), None);
        assert_eq!(store.get_payment(None, id).await.unwrap(), None);
        assert!(
            !store.release(id, "a", at(1)).await.unwrap(),
            "already gone"
        );

        let again = claimed(&store, "acme", "k", "c", 1, 31).await;
        assert_ne!(again, id);
        // A final payment is never released.
        assert!(store
            .settle(again, &succeeded("ch"), 1, &response(201, b""), at(2))
            .await
            .unwrap());
        assert!(!store.release(again, "c", at(2)).await.unwrap());
        assert!(store.find_key("acme", "k").await.unwrap().is_some());
        // Nor a pending one whose lease went back to the reconciler.
        let pending = claimed(&store, "acme", "p", "c", 1, 31).await;
        store
            .mark_pending(pending, "c", 1, None, at(60), at(3))
            .await
            .unwrap();
        assert!(!store.release(pending, "c", at(3)).await.unwrap());
        assert!(store.get_payment(None, pending).await.unwrap().is_some());
        // Nor one whose lease expired, even if nobody took it over: a replay may already have
        // answered 202 for it, and the reconciler will resume it.
        let expired = claimed(&store, "acme", "e", "d", 4, 4).await;
        assert!(!store.release(expired, "d", at(5)).await.unwrap());
        assert!(store.get_payment(None, expired).await.unwrap().is_some());
        assert!(store.find_key("acme", "e").await.unwrap().is_some());
    }

    pub(super) async fn a_claim_records_the_route_at_its_first_bank(store: Arc<dyn Store>) {
        let new = new_payment("acme", "r1", "h", at(0), at(30));
        assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
        let stored = payment(&store, new.id).await;
        assert_eq!(stored.bank, "bank-a");
        assert_eq!(stored.to_api().bank, "bank-a");
        assert_eq!(
            store.routes(new.id).await.unwrap(),
            vec![payment_store::PaymentRoute {
                payment_id: new.id,
                bank: "bank-a".to_owned(),
                reference: new.bank_reference.clone(),
                created_at: at(0),
            }]
        );
        // A claim that finds the key writes no route.
        let again = new_payment("acme", "r1", "h2", at(1), at(31));
        assert!(matches!(
            store.claim(&again).await.unwrap(),
            ClaimOutcome::Existing(_)
        ));
        assert_eq!(store.routes(again.id).await.unwrap(), vec![]);
    }

    pub(super) async fn switch_bank_records_the_route_and_moves_the_payment_only_under_a_live_lease(
        store: Arc<dyn Store>,
    ) {
        let id = claimed(&store, "acme", "s", "a", 0, 30).await;
        let first = payment(&store, id).await;
        assert!(
            !store
                .switch_bank(id, "b", "bank-b", "ref-b", 2, at(1))
                .await
                .unwrap(),
            "b does not hold the lease"
        );
        assert_eq!(store.routes(id).await.unwrap().len(), 1);
        assert!(store
            .switch_bank(id, "a", "bank-b", "ref-b", 2, at(1))
            .await
            .unwrap());
        let moved = payment(&store, id).await;
        assert_eq!(
            (
                moved.bank.as_str(),
                moved.bank_reference.as_str(),
                moved.attempts
            ),
            ("bank-b", "ref-b", 2)
        );
        assert_eq!(moved.status, PaymentStatus::Pending);
        assert_eq!(
            moved.lease_owner.as_deref(),
            Some("a"),
            "the lease stays ours"
        );
        let routes = store.routes(id).await.unwrap();
        assert_eq!(
            routes
                .iter()
                .map(|r| (r.bank.as_str(), r.reference.as_str()))
                .collect::<Vec<_>>(),
            [
                ("bank-a", first.bank_reference.as_str()),
                ("bank-b", "ref-b")
            ]
        );
        // One route per (payment, bank): a payment never goes back to a bank.
        assert!(store
            .switch_bank(id, "a", "bank-a", "ref-a2", 3, at(2))
            .await
            .is_err());
        let unchanged = payment(&store, id).await;
        assert_eq!(unchanged.bank, "bank-b", "the failed move wrote nothing");
        assert_eq!(store.routes(id).await.unwrap().len(), 2);
        // The settlement is recorded at the bank the payment is with.
        assert!(store
            .settle(id, &succeeded("ch_b"), 3, &response(201, b""), at(3))
            .await
            .unwrap());
        let settled = payment(&store, id).await;
        assert_eq!(
            (settled.bank.as_str(), settled.bank_charge_id.as_deref()),
            ("bank-b", Some("ch_b"))
        );
        // A final payment never moves.
        assert!(!store
            .switch_bank(id, "a", "bank-c", "ref-c", 4, at(4))
            .await
            .unwrap());
        // Nor a pending one handed to the reconciler, nor one whose lease expired.
        let pending = claimed(&store, "acme", "p", "c", 1, 31).await;
        store
            .mark_pending(pending, "c", 1, None, at(60), at(3))
            .await
            .unwrap();
        assert!(!store
            .switch_bank(pending, "c", "bank-b", "ref-p", 1, at(3))
            .await
            .unwrap());
        let expired = claimed(&store, "acme", "e", "d", 4, 4).await;
        assert!(!store
            .switch_bank(expired, "d", "bank-b", "ref-e", 1, at(5))
            .await
            .unwrap());
        for id in [pending, expired] {
            assert_eq!(payment(&store, id).await.bank, "bank-a");
            assert_eq!(store.routes(id).await.unwrap().len(), 1);
        }
    }

    pub(super) async fn release_deletes_the_routes_with_the_payment(store: Arc<dyn Store>) {
        let id = claimed(&store, "acme", "rel", "a", 0, 30).await;
        assert!(store
            .switch_bank(id, "a", "bank-b", "ref-b", 1, at(1))
            .await
            .unwrap());
        assert!(store.release(id, "a", at(2)).await.unwrap());
        assert_eq!(store.routes(id).await.unwrap(), vec![]);
        // The key is free: a new claim starts a new route list.
        let again = claimed(&store, "acme", "rel", "a", 3, 33).await;
        assert_eq!(store.routes(again).await.unwrap().len(), 1);
    }

    pub(super) async fn reap_keys_deletes_only_completed_keys_older_than_the_cutoff(
        store: Arc<dyn Store>,
    ) {
        let old = claimed(&store, "acme", "old", "h", 0, 1000).await;
        let boundary = claimed(&store, "acme", "boundary", "h", 0, 1000).await;
        let fresh = claimed(&store, "acme", "fresh", "h", 0, 1000).await;
        let pending = claimed(&store, "acme", "pending", "h", 0, 1000).await;
        claimed(&store, "acme", "in-flight", "h", 0, 5).await;
        assert!(store
            .settle(old, &succeeded("c1"), 1, &response(201, b""), at(10))
            .await
            .unwrap());
        assert!(store
            .settle(boundary, &succeeded("c2"), 1, &response(201, b""), at(50))
            .await
            .unwrap());
        assert!(store
            .settle(fresh, &succeeded("c3"), 1, &response(201, b""), at(100))
            .await
            .unwrap());
        store
            .mark_pending(pending, "h", 1, None, at(20), at(1))
            .await
            .unwrap();

        assert_eq!(store.reap_keys(at(50)).await.unwrap(), 1);
        assert_eq!(store.find_key("acme", "old").await.unwrap(), None);
        for key in ["boundary", "fresh", "pending", "in-flight"] {
            assert!(
                store.find_key("acme", key).await.unwrap().is_some(),
                "{key} is kept"
            );
        }
        assert_eq!(
            payment(&store, old).await.status,
            PaymentStatus::Succeeded,
            "payments are never reaped"
        );
        assert_eq!(store.reap_keys(at(50)).await.unwrap(), 0);
        // Far in the future: the completed keys go, the pending and in-flight ones never do.
        assert_eq!(store.reap_keys(at(1_000_000)).await.unwrap(), 2);
        assert!(store.find_key("acme", "pending").await.unwrap().is_some());
        assert!(store.find_key("acme", "in-flight").await.unwrap().is_some());
        assert_eq!(
            store
                .list_payments(&PaymentQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .len(),
            5
        );
        // A reaped key can be claimed again (a new payment).
        claimed(&store, "acme", "old", "h", 2000, 2030).await;
    }

    pub(super) async fn list_payments_is_newest_first_filtered_and_pages_exactly_once(
        store: Arc<dyn Store>,
    ) {
        // 23 payments for acme, several sharing a created_at (the cursor must break ties by id),
        // and 5 for globex.
        let mut acme = Vec::new();
        for i in 0..23 {
            acme.push(claimed(&store, "acme", &format!("a{i}"), "h", i / 3, 1000).await);
        }
        for i in 0..5 {
            claimed(&store, "globex", &format!("g{i}"), "h", i, 1000).await;
        }
        for id in acme.iter().step_by(4) {
            assert!(store
                .settle(*id, &succeeded("ch"), 1, &response(201, b""), at(50))
                .await
                .unwrap());
        }

        let query = |status, before, limit| PaymentQuery {
            tenant: Some("acme".to_owned()),
            status,
            before,
            limit,
        };
        let all = store.list_payments(&query(None, None, 1000)).await.unwrap();
        assert_eq!(all.len(), 23);
        assert!(all.iter().all(|p| p.tenant == "acme"));
        assert!(
            all.windows(2)
                .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)),
            "newest first, ties by id"
        );

        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = store.list_payments(&query(None, before, 4)).await.unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            before = Some((last.created_at, last.id));
            paged.extend(page.iter().map(|p| p.id));
        }
        assert_eq!(
            paged,
            all.iter().map(|p| p.id).collect::<Vec<_>>(),
            "every payment exactly once, in order"
        );

        let succeeded = store
            .list_payments(&query(Some(PaymentStatus::Succeeded), None, 1000))
            .await
            .unwrap();
        assert_eq!(succeeded.len(), 6);
        assert!(succeeded
            .iter()
            .all(|p| p.status == PaymentStatus::Succeeded));
        let pending = store
            .list_payments(&query(Some(PaymentStatus::Pending), None, 1000))
            .await
            .unwrap();
        assert_eq!(pending.len(), 17);
        let cursor = Some((pending[4].created_at, pending[4].id));
        let rest = store
            .list_payments(&query(Some(PaymentStatus::Pending), cursor, 1000))
            .await
            .unwrap();
        assert_eq!(
            rest,
            pending[5..].to_vec(),
            "status filter and cursor together"
        );

        let everyone = store
            .list_payments(&PaymentQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(everyone.len(), 28, "no tenant filter: all tenants");
        let globex = PaymentQuery {
            tenant: Some("globex".to_owned()),
            limit: 1000,
            ..Default::default()
        };
        assert_eq!(store.list_payments(&globex).await.unwrap().len(), 5);
        let nobody = PaymentQuery {
            tenant: Some("initech".to_owned()),
            limit: 1000,
            ..Default::default()
        };
        assert!(store.list_payments(&nobody).await.unwrap().is_empty());
    }

    pub(super) async fn get_payment_is_scoped_to_its_tenant(store: Arc<dyn Store>) {
        let id = claimed(&store, "acme", "k", "h", 0, 30).await;
        assert_eq!(
            store
                .get_payment(Some("acme"), id)
                .await
                .unwrap()
                .unwrap()
                .id,
            id
        );
        assert_eq!(store.get_payment(Some("globex"), id).await.unwrap(), None);
        assert_eq!(
            store.get_payment(None, id).await.unwrap().unwrap().tenant,
            "acme"
        );
        assert_eq!(
            store
                .get_payment(Some("acme"), Uuid::new_v4())
                .await
                .unwrap(),
            None
        );
    }

    pub(super) async fn pending_count_and_ping(store: Arc<dyn Store>) {
        store.ping().await.unwrap();
        assert_eq!(store.pending_count().await.unwrap(), 0);
        let ids = [
            claimed(&store, "acme", "a", "h", 0, 30).await,
            claimed(&store, "acme", "b", "h", 0, 30).await,
            claimed(&store, "globex", "a", "h", 0, 30).await,
        ];
        assert_eq!(store.pending_count().await.unwrap(), 3);
        assert!(store
            .settle(ids[0], &succeeded("ch"), 1, &response(201, b""), at(1))
            .await
            .unwrap());
        assert_eq!(store.pending_count().await.unwrap(), 2);
    }
}

mod sqlite_only {
    //! What only the embedded backend promises: a file that survives restarts.

    use std::time::{Duration, Instant};

    use payment_store::test_support::TempDir;
    use payment_store::{
        ClaimOutcome, KeyState, SqliteStore, Store, StoreError, StoreKind, StoredResponse,
    };
    use payment_types::payment::PaymentStatus;

    use super::{at, new_payment};

    #[tokio::test]
    async fn data_survives_closing_and_reopening_the_file_under_a_created_directory() {
        let dir = TempDir::new("store-durable").unwrap();
        let path = dir
            .path()
            .join("missing")
            .join("nested")
            .join("payments.db");
        let new = new_payment("acme", "k", "h", at(0), at(30));
        let stored = StoredResponse {
            status: 201,
            headers: vec![("a".into(), "b".into())],
            body: vec![0xff, 0],
        };
        {
            let store = SqliteStore::open(&path).await.unwrap();
            assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
            let settlement = payment_store::Settlement::Succeeded {
                charge_id: "ch".into(),
            };
            assert!(store
                .settle(new.id, &settlement, 1, &stored, at(1))
                .await
                .unwrap());
            store.close().await;
        }
        assert!(path.is_file());
        let store = SqliteStore::open(&path).await.unwrap();
        let key = store.find_key("acme", "k").await.unwrap().unwrap();
        assert_eq!(
            (key.state, key.response),
            (KeyState::Completed, Some(stored))
        );
        assert_eq!(
            store
                .get_payment(None, new.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            PaymentStatus::Succeeded
        );
        // Migrations are not re-applied destructively on reopen.
        assert_eq!(store.pending_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn open_without_a_url_uses_payments_db_in_the_data_dir() {
        let dir = TempDir::new("store-open").unwrap();
        let data_dir = dir.path().join("data");
        let store = payment_store::open(None, &data_dir).await.unwrap();
        assert_eq!(store.kind(), StoreKind::Sqlite);
        store.ping().await.unwrap();
        assert!(data_dir.join("payments.db").is_file());
    }

    #[tokio::test]
    async fn open_with_a_sqlite_url_uses_that_file() {
        let dir = TempDir::new("store-open").unwrap();
        let file = dir.path().join("elsewhere").join("x.db");
        let url = format!("sqlite://{}", file.display());
        let store = payment_store::open(Some(&url), &dir.path().join("unused"))
            .await
            .unwrap();
        assert_eq!(store.kind(), StoreKind::Sqlite);
        assert!(file.is_file());
        assert!(!dir.path().join("unused").exists());
    }

    #[tokio::test]
    async fn open_rejects_an_unknown_scheme() {
        let dir = TempDir::new("store-open").unwrap();
        for url in [
            "mysql://u:secret@localhost/db",
            "payments.db",
            "sqlite://",
            "sqlite::memory:",
            "http://x",
        ] {
            match payment_store::open(Some(url), dir.path()).await {
                Err(StoreError::Config(message)) => {
                    assert!(!message.contains("secret"), "{message}")
                }
                other => panic!("{url}: expected a configuration error, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn open_fails_fast_when_postgres_is_unreachable() {
        // Port 1 on loopback: nothing listens there.
        let dir = TempDir::new("store-open").unwrap();
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            payment_store::open(Some("postgres://postgres@127.0.0.1:1/payments"), dir.path()),
        )
        .await
        .expect("open does not hang");
        assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

mod sqlite_writes {
    //! SQLite under write pressure: every write goes through the one writer connection, a lock
    //! held by someone else fails each batch of writes once (not each write after its own
    //! timeout), and readiness reports a store that cannot write.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use payment_store::test_support::TempDir;
    use payment_store::{
        ClaimOutcome, Settlement, SqliteOptions, SqliteStore, Store, StoreError, StoredResponse,
    };
    use payment_types::payment::PaymentStatus;
    use uuid::Uuid;

    use super::{at, new_payment};

    async fn store_with(busy_timeout: Duration) -> (TempDir, Arc<SqliteStore>) {
        let dir = TempDir::new("store-writes").unwrap();
        let options = SqliteOptions::default().busy_timeout(busy_timeout);
        let store = SqliteStore::open_with(&dir.path().join("payments.db"), options)
            .await
            .unwrap();
        (dir, Arc::new(store))
    }

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: b"{}".to_vec(),
        }
    }

    fn succeeded() -> Settlement {
        Settlement::Succeeded {
            charge_id: "ch".to_owned(),
        }
    }

    async fn claim(store: &SqliteStore, key: &str, owner: &str) -> Uuid {
        let new = new_payment("acme", key, owner, at(0), at(1000));
        assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
        new.id
    }

    fn is_busy(error: &StoreError) -> bool {
        matches!(
            error,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy
        )
    }

    /// Each kind of write is exactly one write of the writer: none of them takes a second
    /// connection that would compete with the writer for SQLite's lock.
    #[tokio::test]
    async fn every_kind_of_write_goes_through_the_writer() {
        let (_dir, store) = store_with(Duration::from_secs(5)).await;
        let id = claim(&store, "k", "h").await;
        let other = claim(&store, "k2", "h").await;
        let writes = || store.writer_stats().writes;

        let before = writes();
        store
            .mark_pending(id, "h", 1, None, at(10), at(1))
            .await
            .unwrap();
        assert_eq!(writes(), before + 1, "mark_pending");

        let before = writes();
        assert!(store.acquire_lease(id, "r", at(100), at(10)).await.unwrap());
        assert_eq!(writes(), before + 1, "acquire_lease");

        let before = writes();
        store
            .reschedule(id, "r", None, 2, at(20), at(11))
            .await
            .unwrap();
        assert_eq!(writes(), before + 1, "reschedule");

        let before = writes();
        assert!(store.release(other, "h", at(4)).await.unwrap());
        assert_eq!(writes(), before + 1, "release");

        let before = writes();
        assert_eq!(store.reap_keys(at(5)).await.unwrap(), 0);
        assert_eq!(writes(), before + 1, "reap_keys");

        let before = writes();
        store.ping().await.unwrap();
        assert_eq!(writes(), before + 1, "ping writes a heartbeat");

        // And they did what they always did.
        let p = store.get_payment(None, id).await.unwrap().unwrap();
        assert_eq!(
            (p.attempts, p.next_reconcile_at, p.lease_owner),
            (2, Some(at(20)), None)
        );
        assert_eq!(store.get_payment(None, other).await.unwrap(), None);
    }

    /// Under a sustained load of claims and settlements, with a lock timeout short enough that
    /// a write on a second connection would lose the race for the lock and fail with BUSY, the
    /// reconciler's and the handlers' other writes all succeed: they queue behind the writer's
    /// batches instead of competing with them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_beside_a_claim_load_never_starve_with_a_short_lock_timeout() {
        let (_dir, store) = store_with(Duration::from_millis(20)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let load_payments = Arc::new(AtomicU64::new(0));
        let load: Vec<_> = (0..8)
            .map(|worker| {
                let (store, stop, done) = (store.clone(), stop.clone(), load_payments.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = claim(&store, &format!("load-{worker}-{n}"), "h").await;
                        assert!(store
                            .settle(id, &succeeded(), 1, &response(), at(1))
                            .await
                            .unwrap());
                        done.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();

        for round in 0..40 {
            let id = claim(&store, &format!("r{round}"), "h").await;
            store
                .mark_pending(id, "h", 1, Some(at(1)), at(2), at(1))
                .await
                .unwrap();
            assert!(store.acquire_lease(id, "r", at(100), at(2)).await.unwrap());
            store
                .reschedule(id, "r", None, 2, at(3), at(2))
                .await
                .unwrap();
            assert!(store.acquire_lease(id, "r", at(100), at(3)).await.unwrap());
            assert!(
                store.release(id, "r", at(3)).await.unwrap(),
                "round {round}"
            );
            store.reap_keys(at(0)).await.unwrap();
            store.ping().await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        assert!(
            load_payments.load(Ordering::Relaxed) > 0,
            "the load ran beside the other writes"
        );
    }

    /// Another connection holds the write lock (`BEGIN IMMEDIATE`) while claims, settlements,
    /// mark-pendings, leases and a ping are submitted: each batch fails once, all its writes
    /// together with BUSY, and no write is re-run alone (which would wait out the lock timeout
    /// once per write). Reads still work, nothing failed was written, and once the lock is
    /// released the same writes succeed and ping succeeds again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_held_lock_fails_each_batch_of_writes_once_and_the_store_recovers() {
        let busy = Duration::from_millis(500);
        let (_dir, store) = store_with(busy).await;
        let mut settle_ids = Vec::new();
        let mut pending_ids = Vec::new();
        let mut lease_ids = Vec::new();
        for i in 0..4 {
            settle_ids.push(claim(&store, &format!("s{i}"), "h").await);
            pending_ids.push(claim(&store, &format!("p{i}"), "h").await);
            let id = claim(&store, &format!("l{i}"), "h").await;
            store
                .mark_pending(id, "h", 1, None, at(1), at(1))
                .await
                .unwrap();
            lease_ids.push(id);
        }
        store.ping().await.unwrap();

        let holder = rusqlite::Connection::open(store.path()).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let stats_before = store.writer_stats();
        let started = Instant::now();

        // Every write at once, as concurrent requests and the reconciler would make them.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let new = new_payment("acme", &format!("new{i}"), "h", at(0), at(1000));
                store.claim(&new).await.map(|_| ())
            }));
        }
        for &id in &settle_ids {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .settle(id, &succeeded(), 1, &response(), at(2))
                    .await
                    .map(|_| ())
            }));
        }
        for &id in &pending_ids {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.mark_pending(id, "h", 1, None, at(9), at(2)).await
            }));
        }
        for &id in &lease_ids {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .acquire_lease(id, "r", at(100), at(2))
                    .await
                    .map(|_| ())
            }));
        }
        {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.ping().await }));
        }
        let submitted = tasks.len() as u64;
        for task in tasks {
            let error = task.await.unwrap().expect_err("the file is locked");
            assert!(is_busy(&error), "a store error naming the lock: {error}");
        }
        let elapsed = started.elapsed();
        let stats = store.writer_stats();
        let batches = stats.batches - stats_before.batches;
        assert_eq!(stats.writes - stats_before.writes, submitted);
        assert_eq!(
            stats.writes_rerun_alone, stats_before.writes_rerun_alone,
            "no write of a batch that failed on the lock was re-run alone"
        );
        assert_eq!(
            stats.transactions - stats_before.transactions,
            batches,
            "one attempt per batch"
        );
        assert_eq!(
            stats.whole_database_failures - stats_before.whole_database_failures,
            batches,
            "every failed batch failed as a whole"
        );
        assert!(
            batches < submitted / 2,
            "the writes queued behind the first wait and failed together ({batches} batches for {submitted} writes)"
        );
        // Generous: well under one lock timeout per write (the old behaviour).
        assert!(
            elapsed < busy * (submitted as u32) / 2,
            "{submitted} writes failed in {elapsed:?}"
        );

        // Reads work under WAL while the lock is held, and nothing that failed was written.
        assert!(store.find_key("acme", "new0").await.unwrap().is_none());
        let p = store
            .get_payment(None, settle_ids[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.status, PaymentStatus::Pending);

        holder.execute_batch("ROLLBACK").unwrap();
        store.ping().await.unwrap();
        for i in 0..8 {
            claim(&store, &format!("new{i}"), "h").await;
        }
        for &id in &settle_ids {
            assert!(store
                .settle(id, &succeeded(), 1, &response(), at(2))
                .await
                .unwrap());
        }
        for &id in &pending_ids {
            store
                .mark_pending(id, "h", 1, None, at(9), at(2))
                .await
                .unwrap();
            let p = store.get_payment(None, id).await.unwrap().unwrap();
            assert_eq!((p.next_reconcile_at, p.lease_owner), (Some(at(9)), None));
        }
        for &id in &lease_ids {
            assert!(store.acquire_lease(id, "r", at(100), at(2)).await.unwrap());
        }
    }

    /// Readiness fails while the store cannot write, though it can still read.
    /// A release asked for under a live lease but run only after the lease expired (it waited
    /// behind another connection's lock) deletes nothing: the lease is judged when the write
    /// runs, not when it was asked for. Meanwhile a replay of the key may have seen the lease
    /// expire and answered 202, which a late delete would turn into a lie.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_that_waited_past_its_lease_deletes_nothing() {
        let (_dir, store) = store_with(Duration::from_secs(10)).await;
        let lease = chrono::Duration::milliseconds(200);
        let new = new_payment("acme", "k", "h", at(0), at(0) + lease);
        assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);

        let holder = rusqlite::Connection::open(store.path()).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Asked at the claim's own time: the lease is live for another 200 ms.
        let release = {
            let store = store.clone();
            tokio::spawn(async move { store.release(new.id, "h", at(0)).await })
        };
        // The writer waits for the lock for longer than the lease has left.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!release.is_finished(), "the release waits behind the lock");
        holder.execute_batch("COMMIT").unwrap();
        assert!(
            !release.await.unwrap().unwrap(),
            "released under an expired lease"
        );
        assert!(store.get_payment(None, new.id).await.unwrap().is_some());
        assert!(store.find_key("acme", "k").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn ping_fails_while_another_connection_holds_the_write_lock() {
        let (_dir, store) = store_with(Duration::from_millis(200)).await;
        store.ping().await.unwrap();
        let holder = rusqlite::Connection::open(store.path()).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = store.ping().await.expect_err("the store cannot write");
        assert!(is_busy(&error), "{error}");
        assert_eq!(store.pending_count().await.unwrap(), 0, "reads still work");
        holder.execute_batch("COMMIT").unwrap();
        store.ping().await.unwrap();
    }
}

mod postgres_only {
    //! What only the shared backend promises: several API instances on one database.

    use std::sync::Arc;

    use chrono::Utc;
    use payment_store::{ClaimOutcome, PostgresStore, Store, StoreError, StoreKind};

    use super::{at, new_payment};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_on_one_database_claim_and_lease_each_payment_once() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let url = server.new_database().unwrap();
        // Two pools, as two API processes would have; both run the migrations concurrently.
        let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let instances: [Arc<dyn Store>; 2] = [Arc::new(a.unwrap()), Arc::new(b.unwrap())];

        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = instances[i % 2].clone();
                tokio::spawn(async move {
                    // Leases of zero length: their handlers "crashed" and the leases have run
                    // out on the database's clock, so the reconcilers below may take them.
                    let new = new_payment(
                        "acme",
                        &format!("k{}", i % 10),
                        &format!("h{i}"),
                        at(0),
                        at(0),
                    );
                    matches!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed)
                })
            })
            .collect();
        let mut claimed = 0;
        for task in tasks {
            claimed += usize::from(task.await.unwrap());
        }
        assert_eq!(claimed, 10);

        // Both instances' reconcilers see the same expired leases; each payment goes to one.
        let due = instances[0].due_for_reconcile(at(10), 100).await.unwrap();
        assert_eq!(due.len(), 10);
        let tasks: Vec<_> = due
            .iter()
            .flat_map(|p| (0..2).map(move |i| (p.id, i)))
            .map(|(id, i)| {
                let store = instances[i].clone();
                tokio::spawn(async move {
                    store
                        .acquire_lease(id, &format!("reconciler-{i}"), at(40), at(10))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 10, "every payment leased exactly once");
    }

    /// Leases run on the database's clock: an instance whose clock is a day ahead cannot take
    /// a live lease or see it as due, nor make its own lease last a day longer; one whose clock
    /// is a day behind cannot grant a lease that has already run out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_with_a_skewed_clock_cannot_steal_or_stretch_a_live_lease() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let store = PostgresStore::connect(&server.new_database().unwrap())
            .await
            .unwrap();
        let day = chrono::Duration::days(1);
        let minute = chrono::Duration::seconds(60);
        let now = Utc::now();

        // A correct clock claims with a one-minute lease.
        let held = new_payment("acme", "held", "a", now, now + minute);
        assert_eq!(store.claim(&held).await.unwrap(), ClaimOutcome::Claimed);

        // A day ahead, the lease looks long expired to the caller; not to the database.
        let ahead = now + day;
        assert!(
            !store
                .acquire_lease(held.id, "thief", ahead + minute, ahead)
                .await
                .unwrap(),
            "a clock running ahead cannot take a live lease"
        );
        assert!(
            store.due_for_reconcile(ahead, 10).await.unwrap().is_empty(),
            "a live lease is not due, whatever the caller's now"
        );

        // The owner, its clock a day ahead, renews for 30 s: it gets 30 s, not a day more.
        let before = Utc::now();
        assert!(store
            .acquire_lease(held.id, "a", ahead + chrono::Duration::seconds(30), ahead)
            .await
            .unwrap());
        let after = Utc::now();
        let lease = store
            .get_payment(None, held.id)
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at
            .unwrap();
        let slack = chrono::Duration::milliseconds(2);
        assert!(
            before + chrono::Duration::seconds(30) - slack <= lease
                && lease <= after + chrono::Duration::seconds(30) + slack,
            "the renewal lasts 30 s on the database's clock, not until {ahead}: {lease}"
        );

        // A day behind, a claim's one-minute lease is a minute from the database's now, not
        // already over: a correct clock's reconciler cannot take it.
        let behind = now - day;
        let slow = new_payment("acme", "slow", "s", behind, behind + minute);
        assert_eq!(store.claim(&slow).await.unwrap(), ClaimOutcome::Claimed);
        let now = Utc::now();
        assert!(
            !store
                .acquire_lease(slow.id, "reconciler", now + minute, now)
                .await
                .unwrap(),
            "a clock running behind cannot grant a lease that has already run out"
        );
        assert!(store.due_for_reconcile(now, 10).await.unwrap().is_empty());

        // A lease of zero length has run out for everyone at once.
        assert!(store
            .acquire_lease(slow.id, "s", behind, behind)
            .await
            .unwrap());
        assert!(store
            .acquire_lease(slow.id, "reconciler", now + minute, now)
            .await
            .unwrap());
    }

    /// Readiness fails while the database cannot write the heartbeat (here: another session
    /// holds its row lock for longer than the ping's lock timeout), though it still answers
    /// reads; it passes again once the lock is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_fails_while_the_heartbeat_cannot_be_written() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let url = server.new_database().unwrap();
        let store = PostgresStore::connect(&url).await.unwrap();
        store.ping().await.unwrap();

        let holder = sqlx::PgPool::connect(&url).await.unwrap();
        let mut lock = holder.begin().await.unwrap();
        sqlx::query("SELECT beats FROM store_health WHERE id = 1 FOR UPDATE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let error = store
            .ping()
            .await
            .expect_err("the heartbeat cannot be written");
        assert!(
            matches!(error, StoreError::Database(_)),
            "a database error (lock timeout): {error}"
        );
        assert_eq!(store.pending_count().await.unwrap(), 0, "reads still work");
        lock.rollback().await.unwrap();
        store.ping().await.unwrap();
    }

    /// As on SQLite, a claim writes no route row (its payment row is its first route), yet its
    /// routes read as its first bank; the first move writes the first route's row and its own.
    #[tokio::test]
    async fn the_first_route_is_a_row_only_once_the_payment_moves() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let url = server.new_database().unwrap();
        let store = PostgresStore::connect(&url).await.unwrap();
        let new = new_payment("acme", "moves", "h", at(0), at(30));
        assert_eq!(store.claim(&new).await.unwrap(), ClaimOutcome::Claimed);
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM payment_routes WHERE payment_id = $1",
            )
            .bind(new.id)
            .fetch_one(&pool)
            .await
            .unwrap()
        };
        assert_eq!(rows().await, 0, "the claim wrote no route row");
        let banks = |routes: Vec<payment_store::PaymentRoute>| {
            routes
                .into_iter()
                .map(|r| (r.bank, r.reference))
                .collect::<Vec<_>>()
        };
        let first = ("bank-a".to_owned(), new.bank_reference.clone());
        assert_eq!(
            banks(store.routes(new.id).await.unwrap()),
            std::slice::from_ref(&first)
        );
        assert!(store
            .switch_bank(new.id, "h", "bank-b", "ref-b", 1, at(1))
            .await
            .unwrap());
        assert_eq!(rows().await, 2, "the first move wrote both routes");
        assert_eq!(
            banks(store.routes(new.id).await.unwrap()),
            [first, ("bank-b".to_owned(), "ref-b".to_owned())]
        );
        pool.close().await;
    }

    #[tokio::test]
    async fn open_with_a_postgres_url_connects_and_migrates() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let dir = payment_store::test_support::TempDir::new("store-open").unwrap();
        let url = server.new_database().unwrap();
        let postgresql = url.replacen("postgres://", "postgresql://", 1);
        for url in [url.as_str(), postgresql.as_str()] {
            let store = payment_store::open(Some(url), dir.path()).await.unwrap();
            assert_eq!(store.kind(), StoreKind::Postgres);
            assert_eq!(store.pending_count().await.unwrap(), 0);
        }
        assert!(
            !dir.path().join("payments.db").exists(),
            "no SQLite file was made"
        );
    }
}

mod postgres_upgrade {
    //! A PostgreSQL database made before migration 0005 (the keys in their own table) upgrades
    //! in place when an instance connects: every key becomes its payment's, replays stay
    //! byte-identical, a reaped key stays free, and every key write works on upgraded rows.

    use payment_store::test_support::TempDir;
    use payment_store::{ClaimOutcome, KeyState, PostgresStore, Settlement, Store};
    use payment_types::payment::PaymentStatus;
    use sqlx::postgres::PgPoolOptions;
    use uuid::Uuid;

    use super::{at, new_payment};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_at_0004_upgrades_keeping_its_keys_and_replays_byte_for_byte() {
        let Some(server) = payment_store::test_support::pg_or_skip() else {
            return;
        };
        let url = server.new_database().unwrap();
        let scratch = TempDir::new("pg-upgrade").unwrap();
        let migrator = super::migrations_up_to(
            "postgres",
            &[
                "0001_init.sql",
                "0002_store_health.sql",
                "0003_routes.sql",
                "0004_webhooks.sql",
            ],
            scratch.path(),
        )
        .await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        migrator.run(&pool).await.unwrap();

        // Rows as the old store wrote them: (key, state, response, completed at), or no key row
        // at all for a payment whose key was reaped. The same key under another tenant is
        // another payment.
        let body = |id: Uuid| {
            let mut body = format!("{{\"id\":\"{id}\"}}").into_bytes();
            body.extend_from_slice(&[0xff, 0x00, 0xfe]);
            body
        };
        let rows = [
            ("acme", "done", "succeeded", Some("completed")),
            ("acme", "flying", "pending", Some("in_flight")),
            ("acme", "waiting", "pending", Some("pending")),
            ("acme", "reaped", "succeeded", None),
            ("globex", "done", "succeeded", Some("completed")),
        ];
        let mut ids = Vec::new();
        for (i, (tenant, key, status, state)) in rows.iter().enumerate() {
            let id = Uuid::now_v7();
            ids.push(id);
            let secs = i64::try_from(i).unwrap();
            sqlx::query(
                "INSERT INTO payments (id, tenant, idempotency_key, status, amount, currency, \
                 source, bank_reference, attempts, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 100, 'EUR', 'tok', $5, 1, $6, $6)",
            )
            .bind(id)
            .bind(tenant)
            .bind(key)
            .bind(status)
            .bind(format!("pay_{}", id.simple()))
            .bind(at(secs).timestamp_millis())
            .execute(&pool)
            .await
            .unwrap();
            if let Some(state) = state {
                let completed = *state == "completed";
                sqlx::query(
                    "INSERT INTO idempotency_keys (tenant, idempotency_key, fingerprint, \
                     payment_id, state, response_status, response_headers, response_body, \
                     created_at, completed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)",
                )
                .bind(tenant)
                .bind(key)
                .bind(format!("fp-{key}"))
                .bind(id)
                .bind(state)
                .bind(completed.then_some(201_i32))
                .bind(completed.then_some(r#"[["content-type","application/json"]]"#))
                .bind(completed.then(|| body(id)))
                .bind(at(secs).timestamp_millis())
                .bind(completed.then(|| at(secs + 1).timestamp_millis()))
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        pool.close().await;

        let store = PostgresStore::connect(&url).await.unwrap();
        // No key table any more, and the indexes of `payments` include the live keys' and the
        // reaper's.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'payments' \
             ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "payments_bank_reference_key",
                "payments_created",
                "payments_key",
                "payments_key_completed",
                "payments_pkey",
                "payments_status_next_reconcile",
                "payments_tenant_created",
            ]
        );
        let keys_table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('idempotency_keys')::text")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(keys_table, None);
        pool.close().await;
        let done = store.find_key("acme", "done").await.unwrap().unwrap();
        assert_eq!(
            (done.payment_id, done.state, done.fingerprint.as_str()),
            (ids[0], KeyState::Completed, "fp-done")
        );
        let replay = done.response.unwrap();
        assert_eq!(
            (replay.status, replay.headers, replay.body),
            (
                201,
                vec![("content-type".to_owned(), "application/json".to_owned())],
                body(ids[0])
            )
        );
        assert_eq!((done.created_at, done.completed_at), (at(0), Some(at(1))));
        let flying = store.find_key("acme", "flying").await.unwrap().unwrap();
        assert_eq!(
            (flying.payment_id, flying.state, flying.response),
            (ids[1], KeyState::InFlight, None)
        );
        let waiting = store.find_key("acme", "waiting").await.unwrap().unwrap();
        assert_eq!(
            (waiting.payment_id, waiting.state),
            (ids[2], KeyState::Pending)
        );
        assert_eq!(store.find_key("acme", "reaped").await.unwrap(), None);
        let other = store.find_key("globex", "done").await.unwrap().unwrap();
        assert_eq!(other.payment_id, ids[4]);

        // A claim of a live key writes nothing; a reaped key is claimed anew beside its old
        // payment, which stays.
        let again = new_payment("acme", "done", "h", at(50), at(80));
        assert!(matches!(
            store.claim(&again).await.unwrap(),
            ClaimOutcome::Existing(record) if record.payment_id == ids[0]
        ));
        let fresh = new_payment("acme", "reaped", "h", at(50), at(80));
        assert_eq!(store.claim(&fresh).await.unwrap(), ClaimOutcome::Claimed);
        assert!(store.get_payment(None, ids[3]).await.unwrap().is_some());

        // The upgraded in-flight key completes with its payment; the reaper then frees it.
        let charge = Settlement::Succeeded {
            charge_id: "ch_1".to_owned(),
        };
        let response = payment_store::StoredResponse {
            status: 201,
            headers: vec![],
            body: body(ids[1]),
        };
        assert!(store
            .settle(ids[1], &charge, 1, &response, at(60))
            .await
            .unwrap());
        let flown = store.find_key("acme", "flying").await.unwrap().unwrap();
        assert_eq!(
            (flown.state, flown.payment_status, flown.response),
            (
                KeyState::Completed,
                PaymentStatus::Succeeded,
                Some(response)
            )
        );
        // Completed before 61: both "done" keys (at 1 and 5) and "flying" (at 60).
        assert_eq!(store.reap_keys(at(61)).await.unwrap(), 3);
        assert_eq!(store.find_key("acme", "flying").await.unwrap(), None);
        assert!(store.get_payment(None, ids[1]).await.unwrap().is_some());
        store.close().await;
    }
}

mod sqlite_upgrade {
    //! A database made before migration 0003 (the lean schema: `WITHOUT ROWID` payments, no
    //! foreign key, partial indexes) upgrades in place when the store opens it: every payment
    //! and key is kept as it was, replays stay byte-identical, and every kind of write works on
    //! the upgraded rows.

    use std::collections::BTreeSet;
    use std::path::Path;

    use payment_store::test_support::TempDir;
    use payment_store::{
        ClaimOutcome, KeyRecord, KeyState, PaymentQuery, PaymentRecord, Settlement, SqliteStore,
        Store, StoredResponse,
    };
    use payment_types::payment::PaymentStatus;
    use serde_json::Value;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use uuid::Uuid;

    use super::{at, new_payment};

    /// Migrates a new database at `path` to 0002 exactly as the store did before 0003 existed
    /// (sqlx, from copies of the first two migrations: same checksums).
    async fn database_at_0002(path: &Path, scratch: &Path) {
        let migrator = super::migrations_up_to(
            "sqlite",
            &["0001_init.sql", "0002_store_health.sql"],
            scratch,
        )
        .await;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    }

    /// A key as the old schema stored it.
    struct OldKey {
        state: KeyState,
        response: Option<StoredResponse>,
        created_at: i64,
        completed_at: Option<i64>,
    }

    fn ms(secs: i64) -> i64 {
        at(secs).timestamp_millis()
    }

    /// Writes `payment` (and its key) with the old schema's columns, foreign key on.
    fn insert_old(conn: &rusqlite::Connection, payment: &PaymentRecord, key: Option<&OldKey>) {
        let tx = conn.unchecked_transaction().unwrap();
        tx.execute(
            "INSERT INTO payments (id, tenant, idempotency_key, status, amount, currency, source, \
             description, metadata, bank_reference, bank_charge_id, decline_code, failure_reason, \
             attempts, lease_owner, lease_expires_at, next_reconcile_at, last_attempt_at, \
             created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20)",
            rusqlite::params![
                payment.id.to_string(),
                payment.tenant,
                payment.idempotency_key,
                payment.status.as_str(),
                payment.amount,
                payment.currency,
                payment.source,
                payment.description,
                payment
                    .metadata
                    .as_ref()
                    .map(|m| Value::Object(m.clone()).to_string()),
                payment.bank_reference,
                payment.bank_charge_id,
                payment.decline_code,
                payment.failure_reason,
                payment.attempts,
                payment.lease_owner,
                payment.lease_expires_at.map(|t| t.timestamp_millis()),
                payment.next_reconcile_at.map(|t| t.timestamp_millis()),
                payment.last_attempt_at.map(|t| t.timestamp_millis()),
                payment.created_at.timestamp_millis(),
                payment.updated_at.timestamp_millis(),
            ],
        )
        .unwrap();
        if let Some(key) = key {
            let response = key.response.as_ref();
            let headers = response.map(|r| {
                Value::Array(
                    r.headers
                        .iter()
                        .map(|(n, v)| Value::Array(vec![n.clone().into(), v.clone().into()]))
                        .collect(),
                )
                .to_string()
            });
            tx.execute(
                "INSERT INTO idempotency_keys (tenant, idempotency_key, fingerprint, payment_id, \
                 state, response_status, response_headers, response_body, created_at, \
                 completed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    payment.tenant,
                    payment.idempotency_key,
                    format!("fp-{}", payment.idempotency_key),
                    payment.id.to_string(),
                    key.state.as_str(),
                    response.map(|r| r.status),
                    headers,
                    response.map(|r| r.body.clone()),
                    key.created_at,
                    key.completed_at,
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    /// A payment of `tenant` under `key` claimed at `secs`, in the state the cases set next.
    fn payment(tenant: &str, key: &str, secs: i64) -> PaymentRecord {
        let mut record =
            PaymentRecord::from_new(&new_payment(tenant, key, "h", at(secs), at(secs + 30)));
        record.description = Some(format!("order {key}"));
        // Before several banks (0004), every payment was with the one bank, named `bank`.
        record.bank = "bank".to_owned();
        record
    }

    fn settled(mut record: PaymentRecord, settlement: &Settlement, secs: i64) -> PaymentRecord {
        record.status = settlement.status();
        match settlement {
            Settlement::Succeeded { charge_id } => record.bank_charge_id = Some(charge_id.clone()),
            Settlement::Declined { decline_code } => {
                record.decline_code = Some(decline_code.clone())
            }
            Settlement::Failed { reason } => record.failure_reason = Some(reason.clone()),
        }
        record.attempts = 1;
        record.lease_owner = None;
        record.lease_expires_at = None;
        record.next_reconcile_at = None;
        record.last_attempt_at = Some(at(secs));
        record.updated_at = at(secs);
        record
    }

    /// A response as the API stores it, with bytes that are not UTF-8 to prove they are kept
    /// as they are.
    fn response(status: u16, id: Uuid) -> StoredResponse {
        let mut body = format!("{{\"id\":\"{id}\",\"status\":{status}}}").into_bytes();
        body.extend_from_slice(&[0xff, 0x00, 0xfe]);
        StoredResponse {
            status,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("location".to_owned(), format!("/v1/payments/{id}")),
            ],
            body,
        }
    }

    fn names(conn: &rusqlite::Connection, kind: &str) -> BTreeSet<String> {
        let mut statement = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'")
            .unwrap();
        let names = statement
            .query_map([kind], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_at_0002_upgrades_keeping_its_rows_and_replays_byte_for_byte() {
        let dir = TempDir::new("store-upgrade").unwrap();
        let path = dir.path().join("payments.db");
        database_at_0002(&path, dir.path()).await;

        // Every state a payment and its key can be in, written as the old store wrote them.
        let charge = Settlement::Succeeded {
            charge_id: "ch_1".to_owned(),
        };
        let decline = Settlement::Declined {
            decline_code: "insufficient_funds".to_owned(),
        };
        let done = settled(payment("acme", "done", 0), &charge, 1);
        let done_response = response(201, done.id);
        let declined = settled(payment("acme", "declined", 2), &decline, 3);
        let declined_response = response(402, declined.id);
        // In flight: its handler holds the lease (until 34).
        let flying = payment("acme", "flying", 4);
        // Answered 202: lease released, the reconciler looks again at 8.
        let mut waiting = payment("acme", "waiting", 5);
        waiting.attempts = 2;
        waiting.lease_owner = None;
        waiting.lease_expires_at = None;
        waiting.next_reconcile_at = Some(at(8));
        waiting.last_attempt_at = Some(at(6));
        waiting.updated_at = at(6);
        // Final, its key already reaped.
        let reaped = settled(payment("acme", "reaped", 6), &charge, 7);
        // The same key under another tenant is another payment.
        let other = settled(payment("globex", "done", 9), &charge, 10);
        let other_response = response(201, other.id);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "foreign_keys", "ON").unwrap();
            let completed = |response: &StoredResponse, secs: i64| OldKey {
                state: KeyState::Completed,
                response: Some(response.clone()),
                created_at: ms(secs - 1),
                completed_at: Some(ms(secs)),
            };
            let open = |state: KeyState, secs: i64| OldKey {
                state,
                response: None,
                created_at: ms(secs),
                completed_at: None,
            };
            insert_old(&conn, &done, Some(&completed(&done_response, 1)));
            insert_old(&conn, &declined, Some(&completed(&declined_response, 3)));
            insert_old(&conn, &flying, Some(&open(KeyState::InFlight, 4)));
            insert_old(&conn, &waiting, Some(&open(KeyState::Pending, 5)));
            insert_old(&conn, &reaped, None);
            insert_old(&conn, &other, Some(&completed(&other_response, 10)));
            // Bulk, so the copy is more than a handful of rows.
            for i in 0..500 {
                let bulk = settled(payment("bulk", &format!("b{i}"), 20), &charge, 21);
                insert_old(&conn, &bulk, Some(&completed(&response(201, bulk.id), 21)));
            }
        }

        let store = SqliteStore::open(&path).await.unwrap();

        // The schema is the new one, and the file is sound.
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let payments_sql: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'payments'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert!(payments_sql.contains("WITHOUT ROWID"), "{payments_sql}");
            assert_eq!(
                names(&conn, "table"),
                [
                    "payment_routes",
                    "payments",
                    "store_health",
                    "webhook_attempts",
                    "webhook_deliveries",
                    "webhook_endpoints",
                    "webhook_events",
                ]
                .map(String::from)
                .into(),
            );
            assert_eq!(
                names(&conn, "index"),
                [
                    "payments_created",
                    "payments_key",
                    "payments_key_completed",
                    "payments_pending_due",
                    "payments_tenant_created",
                    "webhook_deliveries_due",
                    "webhook_deliveries_endpoint",
                    "webhook_endpoints_tenant",
                    "webhook_events_tenant",
                ]
                .map(String::from)
                .into(),
            );
            let check: String = conn
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            let count = |table: &str| -> i64 {
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap()
            };
            // 0006: the keys are the payments' own columns; the reaped one is not live.
            assert_eq!(
                (
                    count("payments"),
                    count("payments WHERE fingerprint IS NOT NULL"),
                    count("payments WHERE key_state = 'reaped'"),
                ),
                (506, 505, 1)
            );
            // 0004: each payment has its one route, at the bank it was with.
            assert_eq!(count("payment_routes"), 506);
        }
        for record in [&done, &waiting] {
            assert_eq!(
                store.routes(record.id).await.unwrap(),
                vec![payment_store::PaymentRoute {
                    payment_id: record.id,
                    bank: "bank".to_owned(),
                    reference: record.bank_reference.clone(),
                    created_at: record.created_at,
                }]
            );
        }

        // Every payment reads back exactly as it was written.
        for record in [&done, &declined, &flying, &waiting, &reaped, &other] {
            assert_eq!(
                store.get_payment(None, record.id).await.unwrap().as_ref(),
                Some(record),
                "{}",
                record.idempotency_key
            );
        }
        // Replays: the stored responses, byte for byte.
        let key = |record: &PaymentRecord,
                   state,
                   response: Option<&StoredResponse>,
                   created,
                   completed: Option<i64>| KeyRecord {
            tenant: record.tenant.clone(),
            key: record.idempotency_key.clone(),
            fingerprint: format!("fp-{}", record.idempotency_key),
            payment_id: record.id,
            state,
            response: response.cloned(),
            payment_status: record.status,
            lease_owner: record.lease_owner.clone(),
            lease_expires_at: record.lease_expires_at,
            created_at: at(created),
            completed_at: completed.map(at),
        };
        assert_eq!(
            store.find_key("acme", "done").await.unwrap(),
            Some(key(
                &done,
                KeyState::Completed,
                Some(&done_response),
                0,
                Some(1)
            ))
        );
        assert_eq!(
            store.find_key("acme", "declined").await.unwrap(),
            Some(key(
                &declined,
                KeyState::Completed,
                Some(&declined_response),
                2,
                Some(3)
            ))
        );
        assert_eq!(
            store.find_key("globex", "done").await.unwrap(),
            Some(key(
                &other,
                KeyState::Completed,
                Some(&other_response),
                9,
                Some(10)
            ))
        );
        assert_eq!(
            store.find_key("acme", "flying").await.unwrap(),
            Some(key(&flying, KeyState::InFlight, None, 4, None))
        );
        assert_eq!(
            store.find_key("acme", "waiting").await.unwrap(),
            Some(key(&waiting, KeyState::Pending, None, 5, None))
        );
        assert_eq!(store.find_key("acme", "reaped").await.unwrap(), None);
        // A claim of a stored key writes nothing and answers the stored record.
        let again = new_payment("acme", "done", "h2", at(50), at(80));
        assert_eq!(
            store.claim(&again).await.unwrap(),
            ClaimOutcome::Existing(key(
                &done,
                KeyState::Completed,
                Some(&done_response),
                0,
                Some(1)
            ))
        );

        // The reads the indexes serve.
        assert_eq!(store.pending_count().await.unwrap(), 2);
        let due: Vec<Uuid> = store
            .due_for_reconcile(at(100), 10)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(due, [waiting.id, flying.id], "oldest due first");
        let listed: Vec<Uuid> = store
            .list_payments(&PaymentQuery {
                tenant: Some("acme".to_owned()),
                limit: 10,
                ..PaymentQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            listed,
            [reaped.id, waiting.id, flying.id, declined.id, done.id],
            "newest first"
        );
        let all = store
            .list_payments(&PaymentQuery {
                limit: 3,
                ..PaymentQuery::default()
            })
            .await
            .unwrap();
        assert!(
            all.iter().all(|p| p.tenant == "bulk"),
            "the newest are the bulk ones"
        );

        // Every kind of write on the upgraded rows.
        let flying_response = response(201, flying.id);
        assert!(store
            .settle(flying.id, &charge, 1, &flying_response, at(40))
            .await
            .unwrap());
        let key_after = store.find_key("acme", "flying").await.unwrap().unwrap();
        assert_eq!(
            (
                key_after.state,
                key_after.response,
                key_after.payment_status
            ),
            (
                KeyState::Completed,
                Some(flying_response),
                PaymentStatus::Succeeded
            )
        );
        assert!(store
            .acquire_lease(waiting.id, "r", at(200), at(100))
            .await
            .unwrap());
        store
            .mark_pending(waiting.id, "r", 3, Some(at(100)), at(150), at(100))
            .await
            .unwrap();
        assert!(store
            .acquire_lease(waiting.id, "r", at(200), at(100))
            .await
            .unwrap());
        assert!(store.release(waiting.id, "r", at(101)).await.unwrap());
        assert_eq!(store.find_key("acme", "waiting").await.unwrap(), None);
        assert_eq!(store.get_payment(None, waiting.id).await.unwrap(), None);
        assert_eq!(store.pending_count().await.unwrap(), 0);
        // Completed before 5: only the first key (completed at 1) and the decline (at 3).
        assert_eq!(store.reap_keys(at(5)).await.unwrap(), 2);
        assert_eq!(store.find_key("acme", "done").await.unwrap(), None);
        assert!(store.find_key("globex", "done").await.unwrap().is_some());
        // Freed keys are claimed anew, beside the payments they used to name.
        for freed in ["done", "waiting", "reaped"] {
            let new = new_payment("acme", freed, "h3", at(300), at(330));
            assert_eq!(
                store.claim(&new).await.unwrap(),
                ClaimOutcome::Claimed,
                "{freed}"
            );
        }
        assert_eq!(
            store.get_payment(None, done.id).await.unwrap().as_ref(),
            Some(&done)
        );
        store.close().await;

        // Reopening does not migrate again.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.pending_count().await.unwrap(), 3);
    }
}
