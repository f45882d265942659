//! The PostgreSQL backend: one database shared by several API instances.
//!
//! Correctness between instances comes from single statements, not from locks held across
//! round trips: the primary key on (tenant, key) decides concurrent claims, and a lease changes
//! hands only through the compare-and-set `UPDATE` in [`Store::acquire_lease`], which PostgreSQL
//! re-checks against the latest row version when two instances race (READ COMMITTED). Times
//! are BIGINT milliseconds since the epoch (as in SQLite), uuids UUID, metadata and response
//! headers JSONB, response bodies BYTEA.
//!
//! **Clock.** Several instances share the database and their clocks may disagree, so leases run
//! on the database server's clock (`clock_timestamp()`): a lease is the duration `until - now` of the
//! caller's arguments, stored as `lease_expires_at = <db now> + duration`, and it is expired when
//! `lease_expires_at <= <db now>`, in [`Store::claim`], [`Store::acquire_lease`] and
//! [`Store::due_for_reconcile`]. The caller's `now` is otherwise ignored for leases: an instance
//! whose clock runs ahead cannot take a live lease, one whose clock runs behind cannot grant an
//! already-expired lease. `next_reconcile_at` (a schedule, not an exclusion) stays on the
//! caller's clock. See the crate docs, "Whose clock a lease runs on".

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::convert::{self, SettlementColumns};
use crate::webhooks::{
    self, AttemptRecord, DeliveryNext, DeliveryRecord, EndpointRecord, EventQuery, EventRecord,
    LeasedDelivery, NewAttempt, NewEndpoint,
};
use crate::{
    ClaimOutcome, KeyRecord, NewPayment, PaymentQuery, PaymentRecord, PaymentRoute, Settlement,
    Store, StoreError, StoreKind, StoredResponse,
};

/// Connections per instance; several instances share the server's `max_connections`.
const POOL_SIZE: u32 = 16;
/// An unreachable or saturated database fails a request fast (the API answers 503) instead of
/// holding it.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// A claim retries when the key it collided with vanished before it could be read (released
/// or reaped in between); more than a couple of rounds means something is badly wrong.
const CLAIM_ROUNDS: usize = 3;

const PAYMENT_COLUMNS: &str = "id, tenant, idempotency_key, status, amount, currency, source, \
     description, metadata, bank_reference, bank_charge_id, decline_code, failure_reason, \
     attempts, lease_owner, lease_expires_at, next_reconcile_at, last_attempt_at, created_at, \
     updated_at, bank";

/// The database's clock, in the unit of every stored time (ms since the epoch), as SQL text for
/// `concat!` (statements stay `&'static str`). `clock_timestamp()`, not `now()`: the time of the
/// statement, not of its transaction's start.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// How long readiness waits for the heartbeat row (statement and lock), so `/ready` answers
/// quickly on a database that cannot write.
const PING_TIMEOUT_MS: &str = "2000";

/// A lease's duration in milliseconds: `until - now` on the caller's clock.
fn lease_ms(until: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    convert::to_ms(until).saturating_sub(convert::to_ms(now))
}

/// A live key with its payment's status and lease, by (tenant, key). The key is the payment
/// row's own (`0005_keys_in_payments.sql`): live while its `fingerprint` is set, the condition
/// of the unique index `payments_key`.
const KEY_SELECT: &str = "SELECT tenant, idempotency_key, fingerprint, id AS payment_id, \
     key_state, response_status, response_headers, response_body, created_at, \
     key_completed_at, status, lease_owner, lease_expires_at \
     FROM payments \
     WHERE tenant = $1 AND idempotency_key = $2 AND fingerprint IS NOT NULL";

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`), checking that the server answers,
    /// and applies pending migrations (serialised between instances by an advisory lock).
    /// An unreachable server is a [`StoreError::Database`] after at most a few seconds; a
    /// malformed URL is a [`StoreError::Config`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        tracing::debug!("postgres store connected");
        Ok(Self { pool })
    }

    /// Waits for in-use connections to come back and closes them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn payment_from_row(row: &PgRow) -> Result<PaymentRecord, StoreError> {
    let metadata: Option<Json<Map<String, Value>>> = row.try_get("metadata")?;
    Ok(PaymentRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        idempotency_key: row.try_get("idempotency_key")?,
        status: convert::parse_status(row.try_get("status")?)?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        source: row.try_get("source")?,
        description: row.try_get("description")?,
        metadata: metadata.map(|Json(map)| map),
        bank_reference: row.try_get("bank_reference")?,
        bank: row.try_get("bank")?,
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

fn key_from_row(row: &PgRow) -> Result<KeyRecord, StoreError> {
    let state = convert::parse_state(row.try_get("key_state")?)?;
    let status: Option<i32> = row.try_get("response_status")?;
    let response = match status {
        Some(status) => {
            let headers: Option<Json<Value>> = row.try_get("response_headers")?;
            let body: Option<Vec<u8>> = row.try_get("response_body")?;
            Some(StoredResponse {
                status: convert::http_status(i64::from(status))?,
                headers: headers
                    .map(|Json(value)| convert::headers_from_json(value))
                    .transpose()?
                    .unwrap_or_default(),
                body: body.unwrap_or_default(),
            })
        }
        None => None,
    };
    Ok(KeyRecord {
        tenant: row.try_get("tenant")?,
        key: row.try_get("idempotency_key")?,
        fingerprint: row.try_get("fingerprint")?,
        payment_id: row.try_get("payment_id")?,
        state,
        response,
        payment_status: convert::parse_status(row.try_get("status")?)?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: convert::from_ms_opt(row.try_get("lease_expires_at")?)?,
        created_at: convert::from_ms(row.try_get("created_at")?)?,
        completed_at: convert::from_ms_opt(row.try_get("key_completed_at")?)?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, tenant, url, event_types, secret, previous_secret, \
     previous_secret_expires_at, created_at, updated_at";

const EVENT_COLUMNS: &str = "id, tenant, event_type, payment_id, payload, created_at";

/// The fan-out (see the SQLite twin, `sqlite::sql::FAN_OUT`).
const FAN_OUT: &str = "INSERT INTO webhook_deliveries \
     (event_id, endpoint_id, tenant, state, attempts, failures, next_attempt_at, created_at, \
     updated_at) \
     SELECT $1, id, tenant, 'pending', 0, 0, $2, $2, $2 FROM webhook_endpoints \
     WHERE tenant = $3 AND event_types LIKE $4 \
     ON CONFLICT (event_id, endpoint_id) DO NOTHING";

/// The outbox write: the event announcing the state payment `id` is in now (as this
/// transaction left it), and its fan-out to the tenant's matching endpoints. A final state's
/// payload is built when read (see the SQLite twin, `sqlite::writes::outbox`); `payment.pending`
/// stores its snapshot.
async fn outbox(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    id: Uuid,
    now: DateTime<Utc>,
    pending: bool,
) -> Result<(), StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let payment = payment_from_row(&row)?;
    let event_type = webhooks::event_type(payment.status);
    let event_id = webhooks::new_event_id();
    let payload = if pending {
        webhooks::event_payload(&event_id, event_type, now, &payment)
    } else {
        String::new()
    };
    let now = convert::to_ms(now);
    sqlx::query(
        "INSERT INTO webhook_events (id, tenant, event_type, payment_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event_id)
    .bind(&payment.tenant)
    .bind(event_type)
    .bind(id)
    .bind(&payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(FAN_OUT)
        .bind(&event_id)
        .bind(now)
        .bind(&payment.tenant)
        .bind(webhooks::event_type_pattern(event_type))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn endpoint_from_row(row: &PgRow) -> Result<EndpointRecord, StoreError> {
    Ok(EndpointRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        url: row.try_get("url")?,
        event_types: convert::event_types_from_text(row.try_get("event_types")?)?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_expires_at: convert::from_ms_opt(
            row.try_get("previous_secret_expires_at")?,
        )?,
        created_at: convert::from_ms(row.try_get("created_at")?)?,
        updated_at: convert::from_ms(row.try_get("updated_at")?)?,
    })
}

fn event_from_row(row: &PgRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        event_type: row.try_get("event_type")?,
        payment_id: row.try_get("payment_id")?,
        payload: row.try_get("payload")?,
        created_at: convert::from_ms(row.try_get("created_at")?)?,
    })
}

/// Builds the payload of every final-state event among `events` (stored empty) from its
/// payment row, which never changes once final: the same bytes on every read.
async fn fill_payloads<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    events: &mut [&mut EventRecord],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = events
        .iter()
        .filter(|e| e.payload.is_empty())
        .map(|e| e.payment_id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(executor)
    .await?;
    let payments = rows
        .iter()
        .map(|row| payment_from_row(row).map(|p| (p.id, p)))
        .collect::<Result<std::collections::HashMap<_, _>, _>>()?;
    for event in events.iter_mut().filter(|e| e.payload.is_empty()) {
        let payment = payments.get(&event.payment_id).ok_or_else(|| {
            StoreError::Corrupt(format!("event {} names a missing payment", event.id))
        })?;
        event.payload =
            webhooks::event_payload(&event.id, &event.event_type, event.created_at, payment);
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    async fn close(&self) {
        Self::close(self).await;
    }

    /// A heartbeat `UPDATE` under a short statement and lock timeout: fails when the database
    /// cannot write (disk full, read-only, the row locked for longer than the timeout), not
    /// only when it cannot be reached.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // `is_local`: the timeouts end with this transaction, the pooled connection keeps none.
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)",
        )
        .bind(PING_TIMEOUT_MS)
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(concat!(
            "UPDATE store_health SET beats = beats + 1, beat_at = ",
            db_now_ms!(),
            " WHERE id = 1"
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::Corrupt(
                "the store_health row is missing (migration 0002)".into(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %new.id, tenant = %new.tenant))]
    async fn claim(&self, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
        let now = convert::to_ms(new.now);
        // The lease runs on the database's clock; the first look (a schedule) stays on the
        // caller's.
        let lease = lease_ms(new.lease_expires_at, new.now);
        let next_reconcile_at = convert::to_ms(new.lease_expires_at);
        // One statement, so one round trip and one implicit transaction: the payment with
        // its key, unless the key is live already (the unique index of live keys decides).
        // A concurrent claim of the same key makes our insert wait for that transaction: if
        // it commits, ours inserts nothing at all; if it rolls back, ours inserts. The
        // payment row is its first route (its `bank` and `bank_reference`, written here,
        // before the bank is called): no route row until it moves (see `switch_bank`).
        let claim = concat!(
            "INSERT INTO payments (id, tenant, idempotency_key, status, amount, \
             currency, source, description, metadata, bank_reference, attempts, lease_owner, \
             lease_expires_at, next_reconcile_at, created_at, updated_at, bank, fingerprint, \
             key_state) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, 0, $10, ",
            db_now_ms!(),
            " + $11, $12, $13, $13, $14, $15, 'in_flight') \
             ON CONFLICT (tenant, idempotency_key) WHERE fingerprint IS NOT NULL DO NOTHING"
        );
        for _ in 0..CLAIM_ROUNDS {
            let inserted = sqlx::query(claim)
                .bind(new.id)
                .bind(&new.tenant)
                .bind(&new.idempotency_key)
                .bind(new.amount)
                .bind(&new.currency)
                .bind(&new.source)
                .bind(&new.description)
                .bind(new.metadata.as_ref().map(Json))
                .bind(&new.bank_reference)
                .bind(&new.lease_owner)
                .bind(lease)
                .bind(next_reconcile_at)
                .bind(now)
                .bind(&new.bank)
                .bind(&new.fingerprint)
                .execute(&self.pool)
                .await?
                .rows_affected();
            if inserted == 1 {
                return Ok(ClaimOutcome::Claimed);
            }
            // A statement of its own: it sees the winner's committed key.
            let existing = sqlx::query(KEY_SELECT)
                .bind(&new.tenant)
                .bind(&new.idempotency_key)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = existing {
                return Ok(ClaimOutcome::Existing(key_from_row(&row)?));
            }
        }
        Err(StoreError::Corrupt(format!(
            "claim of a key kept colliding with a key that vanished ({CLAIM_ROUNDS} rounds)"
        )))
    }

    async fn find_key(&self, tenant: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(KEY_SELECT)
            .bind(tenant)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn acquire_lease(
        &self,
        payment_id: Uuid,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // The compare-and-set: a racing instance's UPDATE waits for ours and then re-evaluates
        // the WHERE clause against our new lease, which no longer matches. Granted and compared
        // on the database's clock, read once for the statement.
        let updated = sqlx::query(concat!(
            "WITH clock AS (SELECT ",
            db_now_ms!(),
            " AS now_ms) \
             UPDATE payments SET lease_owner = $1, lease_expires_at = clock.now_ms + $2 \
             FROM clock WHERE id = $3 AND status = 'pending' \
             AND (lease_owner IS NULL OR lease_expires_at <= clock.now_ms OR lease_owner = $1)"
        ))
        .bind(owner)
        .bind(lease_ms(until, now))
        .bind(payment_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
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
        let now = convert::to_ms(now);
        let columns = SettlementColumns::of(settlement);
        let event_type = webhooks::event_type(settlement.status());
        // One statement, so one round trip and one implicit transaction (it was seven: BEGIN,
        // the payment, its key, a read of the payment for the event, the event, the fan-out,
        // COMMIT). The key is the payment row's, so it completes in the same update. Every
        // part is conditional on that update: a payment that was already final writes
        // nothing, and the answer is how many payments were settled.
        // A final event's payload is built from the payment row when read, so it is not
        // stored (as on SQLite).
        let settled: i64 = sqlx::query_scalar(
            "WITH p AS (UPDATE payments SET status = $1, bank_charge_id = $2, decline_code = $3, \
             failure_reason = $4, attempts = $5, lease_owner = NULL, lease_expires_at = NULL, \
             next_reconcile_at = NULL, updated_at = $6, key_state = 'completed', \
             response_status = $8, response_headers = $9, response_body = $10, \
             key_completed_at = $6 \
             WHERE id = $7 AND status = 'pending' RETURNING id, tenant), \
             e AS (INSERT INTO webhook_events \
             (id, tenant, event_type, payment_id, payload, created_at) \
             SELECT $11, tenant, $12, id, '', $6 FROM p RETURNING id, tenant), \
             d AS (INSERT INTO webhook_deliveries \
             (event_id, endpoint_id, tenant, state, attempts, failures, next_attempt_at, \
             created_at, updated_at) \
             SELECT e.id, w.id, w.tenant, 'pending', 0, 0, $6, $6, $6 \
             FROM e JOIN webhook_endpoints w ON w.tenant = e.tenant \
             AND w.event_types LIKE $13 \
             ON CONFLICT (event_id, endpoint_id) DO NOTHING) \
             SELECT COUNT(*) FROM p",
        )
        .bind(columns.status)
        .bind(columns.charge_id)
        .bind(columns.decline_code)
        .bind(columns.failure_reason)
        .bind(i64::from(attempts))
        .bind(now)
        .bind(payment_id)
        .bind(i32::from(response.status))
        .bind(Json(convert::headers_to_json(&response.headers)))
        .bind(&response.body)
        .bind(webhooks::new_event_id())
        .bind(event_type)
        .bind(webhooks::event_type_pattern(event_type))
        .fetch_one(&self.pool)
        .await?;
        Ok(settled == 1)
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
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE payments SET attempts = $1, last_attempt_at = COALESCE($2, last_attempt_at), \
             next_reconcile_at = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
             WHERE id = $5 AND status = 'pending' AND lease_owner = $6",
        )
        .bind(i64::from(attempts))
        .bind(last_attempt_at.map(convert::to_ms))
        .bind(convert::to_ms(next_reconcile_at))
        .bind(convert::to_ms(now))
        .bind(payment_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            tracing::debug!("mark_pending skipped: lease not held or payment final");
            return Ok(());
        }
        let first_pending = sqlx::query(
            "UPDATE payments SET key_state = 'pending' WHERE id = $1 AND key_state = 'in_flight'",
        )
        .bind(payment_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // The first 202 of a payment announces `payment.pending`, in this very transaction.
        if first_pending {
            outbox(&mut tx, payment_id, now, true).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(payment_id = %payment_id))]
    async fn release(
        &self,
        payment_id: Uuid,
        owner: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The key is the payment row's, so it goes with it. The delete locks the row, so no
        // lease can change hands meanwhile.
        // The lease must be unexpired on the database's clock, like every lease decision here.
        let deleted = sqlx::query(concat!(
            "DELETE FROM payments WHERE id = $1 AND status = 'pending' AND lease_owner = $2 \
             AND lease_expires_at > ",
            db_now_ms!()
        ))
        .bind(payment_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM payment_routes WHERE payment_id = $1")
            .bind(payment_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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
        let now = convert::to_ms(now);
        let mut tx = self.pool.begin().await?;
        // The route the payment leaves becomes a row first if it was the payment row's own
        // (its first route: a claim writes no route row). Should the move not apply, the
        // transaction rolls back with it. A racing move of the same payment (only one can
        // hold the lease) inserts the very same row: the conflict waits for it, then skips.
        sqlx::query(
            "INSERT INTO payment_routes (payment_id, bank, reference, created_at) \
             SELECT id, bank, bank_reference, created_at FROM payments WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM payment_routes WHERE payment_id = $1) \
             ON CONFLICT (payment_id, bank) DO NOTHING",
        )
        .bind(payment_id)
        .execute(&mut *tx)
        .await?;
        // The lease must be unexpired on the database's clock, as for a release: once it
        // expired, the reconciler may be resuming the payment at its current bank.
        let updated = sqlx::query(concat!(
            "UPDATE payments SET bank = $1, bank_reference = $2, attempts = $3, updated_at = $4 \
             WHERE id = $5 AND status = 'pending' AND lease_owner = $6 AND lease_expires_at > ",
            db_now_ms!()
        ))
        .bind(bank)
        .bind(reference)
        .bind(i64::from(attempts))
        .bind(now)
        .bind(payment_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO payment_routes (payment_id, bank, reference, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(payment_id)
        .bind(bank)
        .bind(reference)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn routes(&self, payment_id: Uuid) -> Result<Vec<PaymentRoute>, StoreError> {
        let rows = sqlx::query(
            // Its route rows, or, if it never moved, its own row's (see `claim`); one
            // statement, so one snapshot.
            "SELECT payment_id, bank, reference, created_at FROM payment_routes \
             WHERE payment_id = $1 \
             UNION ALL SELECT id, bank, bank_reference, created_at FROM payments \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM payment_routes WHERE payment_id = $1) \
             ORDER BY created_at ASC, bank ASC",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PaymentRoute {
                    payment_id: row.try_get("payment_id")?,
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
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(PAYMENT_COLUMNS)
            .push(" FROM payments WHERE id = ")
            .push_bind(id);
        if let Some(tenant) = tenant {
            query.push(" AND tenant = ").push_bind(tenant);
        }
        let row = query.build().fetch_optional(&self.pool).await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn list_payments(&self, q: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(PAYMENT_COLUMNS)
            .push(" FROM payments WHERE TRUE");
        if let Some(tenant) = &q.tenant {
            query.push(" AND tenant = ").push_bind(tenant);
        }
        if let Some(status) = q.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some((at, id)) = q.before {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(convert::to_ms(at))
                .push(", ")
                .push_bind(id)
                .push(")");
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
             WHERE status = 'pending' AND next_reconcile_at <= $1 \
             AND (lease_owner IS NULL OR lease_expires_at <= {db_now}) \
             ORDER BY next_reconcile_at ASC, created_at ASC, id ASC LIMIT $2",
            db_now = db_now_ms!()
        );
        let rows = sqlx::query(&sql)
            .bind(convert::to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_from_row).collect()
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
        let updated = sqlx::query(
            "UPDATE payments SET attempts = $1, last_attempt_at = COALESCE($2, last_attempt_at), \
             next_reconcile_at = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
             WHERE id = $5 AND status = 'pending' AND lease_owner = $6",
        )
        .bind(i64::from(attempts))
        .bind(last_attempt_at.map(convert::to_ms))
        .bind(convert::to_ms(next_reconcile_at))
        .bind(convert::to_ms(now))
        .bind(payment_id)
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
        // The payments stay; their keys are forgotten (see `0005_keys_in_payments.sql`).
        let deleted = sqlx::query(
            "UPDATE payments SET key_state = 'reaped', fingerprint = NULL, \
             response_status = NULL, response_headers = NULL, response_body = NULL \
             WHERE key_state = 'completed' AND key_completed_at < $1",
        )
        .bind(convert::to_ms(before))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    async fn reap_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // One statement: the events are locked as they are chosen, so a redelivery racing the
        // reaper either waits for it (and finds no event) or made a delivery pending first
        // (and the event is not chosen).
        let deleted = sqlx::query(
            "WITH doomed AS ( \
                 SELECT e.id FROM webhook_events e WHERE e.id < $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = 'pending') \
                 FOR UPDATE OF e SKIP LOCKED), \
             attempts AS (DELETE FROM webhook_attempts WHERE event_id IN (SELECT id FROM doomed)), \
             deliveries AS (DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM doomed)) \
             DELETE FROM webhook_events WHERE id IN (SELECT id FROM doomed)",
        )
        .bind(crate::webhooks::event_id_bound(before))
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
    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints \
             (id, tenant, url, event_types, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.tenant)
        .bind(&endpoint.url)
        .bind(convert::event_types_to_text(&endpoint.event_types))
        .bind(&endpoint.secret)
        .bind(convert::to_ms(endpoint.now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_endpoints(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at ASC, id ASC"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn get_endpoint(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn delete_endpoint(&self, tenant: Option<&str>, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        )
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 1 {
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn rotate_endpoint_secret(
        &self,
        tenant: Option<&str>,
        id: &str,
        secret: &str,
        previous_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET previous_secret = secret, \
             previous_secret_expires_at = $1, secret = $2, updated_at = $3 \
             WHERE id = $4 AND ($5::text IS NULL OR tenant = $5) RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(convert::to_ms(previous_until))
        .bind(secret)
        .bind(convert::to_ms(now))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(EVENT_COLUMNS)
            .push(" FROM webhook_events e WHERE TRUE");
        if let Some(tenant) = &q.tenant {
            query.push(" AND tenant = ").push_bind(tenant);
        }
        if let Some(event_type) = &q.event_type {
            query.push(" AND event_type = ").push_bind(event_type);
        }
        if let Some(state) = q.delivery_state {
            query
                .push(
                    " AND EXISTS (SELECT 1 FROM webhook_deliveries d \
                     WHERE d.event_id = e.id AND d.state = ",
                )
                .push_bind(state.as_str())
                .push(")");
        }
        if let Some(before) = &q.before {
            query.push(" AND id < ").push_bind(before);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(convert::page_limit(q.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        fill_payloads(&self.pool, &mut events.iter_mut().collect::<Vec<_>>()).await?;
        Ok(events)
    }

    async fn get_event(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM webhook_events \
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut event) = row.as_ref().map(event_from_row).transpose()? else {
            return Ok(None);
        };
        fill_payloads(&self.pool, &mut [&mut event]).await?;
        Ok(Some(event))
    }

    async fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        // One snapshot for both reads: an attempt and its delivery's next state are recorded
        // in one transaction, and two READ COMMITTED statements could straddle it (a delivery
        // `delivered` without the attempt that delivered it).
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let attempts = sqlx::query(
            "SELECT endpoint_id, attempt, at, status, latency_ms, error FROM webhook_attempts \
             WHERE event_id = $1 ORDER BY endpoint_id, attempt",
        )
        .bind(event_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_endpoint: std::collections::HashMap<String, Vec<AttemptRecord>> =
            std::collections::HashMap::new();
        for row in &attempts {
            let status: Option<i32> = row.try_get("status")?;
            let latency: i64 = row.try_get("latency_ms")?;
            by_endpoint
                .entry(row.try_get("endpoint_id")?)
                .or_default()
                .push(AttemptRecord {
                    attempt: convert::attempts(row.try_get("attempt")?)?,
                    at: convert::from_ms(row.try_get("at")?)?,
                    status: status
                        .map(|s| convert::http_status(i64::from(s)))
                        .transpose()?,
                    latency_ms: u64::try_from(latency).unwrap_or(0),
                    error: row.try_get("error")?,
                });
        }
        let rows = sqlx::query(
            "SELECT event_id, endpoint_id, state, failures, next_attempt_at \
             FROM webhook_deliveries WHERE event_id = $1 ORDER BY endpoint_id",
        )
        .bind(event_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let endpoint_id: String = row.try_get("endpoint_id")?;
                Ok(DeliveryRecord {
                    event_id: row.try_get("event_id")?,
                    attempts: by_endpoint.remove(&endpoint_id).unwrap_or_default(),
                    endpoint_id,
                    state: webhooks::parse_delivery_state(row.try_get("state")?)?,
                    failures: convert::attempts(row.try_get("failures")?)?,
                    next_attempt_at: convert::from_ms_opt(row.try_get("next_attempt_at")?)?,
                })
            })
            .collect()
    }

    async fn redeliver(
        &self,
        tenant: Option<&str>,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(event) = self.get_event(tenant, event_id).await? else {
            return Ok(None);
        };
        let now = convert::to_ms(now);
        let mut tx = self.pool.begin().await?;
        // Endpoints registered since the event get a delivery too.
        sqlx::query(FAN_OUT)
            .bind(event_id)
            .bind(now)
            .bind(&event.tenant)
            .bind(webhooks::event_type_pattern(&event.event_type))
            .execute(&mut *tx)
            .await?;
        let queued = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', failures = 0, \
             next_attempt_at = $2, updated_at = $2 \
             WHERE event_id = $1 AND endpoint_id IN (SELECT id FROM webhook_endpoints)",
        )
        .bind(event_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(queued))
    }

    async fn lease_deliveries(
        &self,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        // `FOR UPDATE SKIP LOCKED`: instances leasing at once each take different rows (a row
        // another is leasing is skipped, one it leased no longer matches); granted and
        // compared on the database's clock, as payment leases.
        let w = ENDPOINT_COLUMNS
            .split(", ")
            .map(|c| format!("w.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH picked AS (SELECT event_id, endpoint_id FROM webhook_deliveries \
             WHERE state = 'pending' AND next_attempt_at <= $3 \
             AND (lease_owner IS NULL OR lease_expires_at <= {db_now}) \
             ORDER BY next_attempt_at ASC LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries d SET lease_owner = $1, lease_expires_at = {db_now} + $2 \
             FROM picked, webhook_events e, webhook_endpoints w \
             WHERE d.event_id = picked.event_id AND d.endpoint_id = picked.endpoint_id \
             AND e.id = d.event_id AND w.id = d.endpoint_id \
             RETURNING d.event_id, d.endpoint_id, d.tenant AS delivery_tenant, d.failures, \
             d.next_attempt_at AS due_at, e.payload, e.event_type, e.payment_id, \
             e.created_at AS event_created_at, {w}",
            db_now = db_now_ms!()
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_ms(until, now))
            .bind(convert::to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut leased = rows
            .iter()
            .map(|row| {
                let due: Option<i64> = row.try_get("due_at")?;
                let event = EventRecord {
                    id: row.try_get("event_id")?,
                    tenant: row.try_get("delivery_tenant")?,
                    event_type: row.try_get("event_type")?,
                    payment_id: row.try_get("payment_id")?,
                    payload: row.try_get("payload")?,
                    created_at: convert::from_ms(row.try_get("event_created_at")?)?,
                };
                Ok((
                    due,
                    LeasedDelivery {
                        event_id: row.try_get("event_id")?,
                        endpoint_id: row.try_get("endpoint_id")?,
                        tenant: row.try_get("delivery_tenant")?,
                        failures: convert::attempts(row.try_get("failures")?)?,
                        payload: row.try_get("payload")?,
                        endpoint: endpoint_from_row(row)?,
                    },
                    event,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING keeps no order: most overdue first, as asked.
        leased.sort_by_key(|(due, _, _)| *due);
        let mut events: Vec<EventRecord> = leased.iter().map(|(_, _, e)| e.clone()).collect();
        fill_payloads(&self.pool, &mut events.iter_mut().collect::<Vec<_>>()).await?;
        Ok(leased
            .into_iter()
            .zip(events)
            .map(|((_, mut delivery, _), event)| {
                delivery.payload = event.payload;
                delivery
            })
            .collect())
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
        let (state, failed, next_at) = next.columns();
        let mut tx = self.pool.begin().await?;
        let number: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET attempts = attempts + $1, failures = failures + $2, \
             state = $3, next_attempt_at = $4, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $5 \
             WHERE event_id = $6 AND endpoint_id = $7 AND state = 'pending' AND lease_owner = $8 \
             RETURNING attempts",
        )
        .bind(i64::from(attempt.is_some()))
        .bind(failed)
        .bind(state.as_str())
        .bind(next_at.map(convert::to_ms))
        .bind(convert::to_ms(now))
        .bind(event_id)
        .bind(endpoint_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(number) = number else {
            tx.rollback().await?;
            return Ok(false);
        };
        if let Some(attempt) = attempt {
            sqlx::query(
                "INSERT INTO webhook_attempts \
                 (event_id, endpoint_id, attempt, at, status, latency_ms, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(event_id)
            .bind(endpoint_id)
            .bind(number)
            .bind(convert::to_ms(attempt.at))
            .bind(attempt.status.map(i32::from))
            .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
            .bind(&attempt.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn delivery_backlog(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
