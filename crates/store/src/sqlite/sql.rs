//! The SQLite backend's SQL text and row mapping, in one place: every statement the store, the
//! writer and the lookups run, and the decoding of a row into a [`PaymentRecord`] or a
//! [`KeyRecord`]. It imports nothing from its sibling modules; they all import it.
//!
//! Statements take positional parameters (`?1`, …) bound by rusqlite (the writer, the lookups)
//! or sqlx (the store's reads); times are INTEGER milliseconds since the epoch.

use rusqlite::Row;
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;

use crate::{
    convert, EndpointRecord, EventRecord, KeyRecord, PaymentRecord, StoreError, StoredResponse,
};

/// The columns [`payment_from_sqlx`] decodes, in the order of the table.
pub(crate) const PAYMENT_COLUMNS: &str = "id, tenant, idempotency_key, status, amount, currency, \
     source, description, metadata, bank_reference, bank_charge_id, decline_code, \
     failure_reason, attempts, lease_owner, lease_expires_at, next_reconcile_at, \
     last_attempt_at, created_at, updated_at, bank";

/// A live key with its payment's status and lease, by (tenant, key); decoded by
/// [`key_from_row`]. The key is the payment row's own (`0006_keys_in_payments.sql`): live while
/// its `fingerprint` is set, which is also the condition of the unique index `payments_key`
/// this reads (SQLite uses a partial index only for a query carrying its very condition).
pub(crate) const KEY_SELECT: &str = "SELECT tenant, idempotency_key, fingerprint, \
     id AS payment_id, key_state, response_status, response_headers, response_body, \
     created_at, key_completed_at, status, lease_owner, lease_expires_at \
     FROM payments \
     WHERE tenant = ?1 AND idempotency_key = ?2 AND fingerprint IS NOT NULL";

/// The claim: the payment with its key, in flight, pending and leased, unless the key is live
/// already (the unique index of live keys, `payments_key`, decides; its condition is part of
/// the conflict target, as SQLite requires for a partial index).
pub(crate) const INSERT_PAYMENT: &str = "INSERT INTO payments (id, tenant, idempotency_key, \
     status, amount, currency, source, description, metadata, bank_reference, attempts, \
     lease_owner, lease_expires_at, next_reconcile_at, created_at, updated_at, bank, \
     fingerprint, key_state) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?11, ?12, ?12, ?13, \
     ?14, 'in_flight') \
     ON CONFLICT (tenant, idempotency_key) WHERE fingerprint IS NOT NULL DO NOTHING";

/// Records a (payment, bank) route with its reference: a move to another bank.
///
/// A payment's first route is not a row of its own until the payment first moves: until then
/// the payment row is its only route (its `bank` and `bank_reference` are the claim's, written
/// in the claim's transaction, before the bank is called), and [`SELECT_ROUTES`] reads it from
/// there. That spares every payment that never moves (nearly all) a B-tree insert in its claim.
/// The first move writes the first route's row ([`INSERT_FIRST_ROUTE`]) and then its own, in
/// the move's transaction. (Payments claimed before this have their first row already.)
pub(crate) const INSERT_ROUTE: &str =
    "INSERT INTO payment_routes (payment_id, bank, reference, created_at) \
     VALUES (?1, ?2, ?3, ?4)";

/// The route payment `?1` is on, from its row, if it has no route row yet: run before the
/// payment moves away from its first bank.
pub(crate) const INSERT_FIRST_ROUTE: &str =
    "INSERT INTO payment_routes (payment_id, bank, reference, created_at) \
     SELECT id, bank, bank_reference, created_at FROM payments \
     WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM payment_routes WHERE payment_id = ?1)";

/// Moves a pending payment to another bank, only by the holder of an unexpired lease.
pub(crate) const SWITCH_BANK: &str = "UPDATE payments SET bank = ?1, bank_reference = ?2, \
     attempts = ?3, updated_at = ?4 \
     WHERE id = ?5 AND status = 'pending' AND lease_owner = ?6 AND lease_expires_at > ?4";

/// A released payment's routes.
pub(crate) const DELETE_ROUTES: &str = "DELETE FROM payment_routes WHERE payment_id = ?1";

/// A payment's routes, oldest first: its route rows, or, if it never moved, its own row's
/// (see [`INSERT_ROUTE`]).
pub(crate) const SELECT_ROUTES: &str = "SELECT payment_id, bank, reference, created_at \
     FROM payment_routes WHERE payment_id = ?1 \
     UNION ALL SELECT id, bank, bank_reference, created_at FROM payments \
     WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM payment_routes WHERE payment_id = ?1) \
     ORDER BY created_at ASC, bank ASC";

/// Records a final outcome, only on a pending payment, and completes its key with the response
/// replayed from now on. A pending payment's key is always live: keys are reaped only once
/// completed, and a key completes only here, with its payment.
pub(crate) const SETTLE_PAYMENT: &str = "UPDATE payments SET status = ?1, bank_charge_id = ?2, \
     decline_code = ?3, failure_reason = ?4, attempts = ?5, lease_owner = NULL, \
     lease_expires_at = NULL, next_reconcile_at = NULL, updated_at = ?6, \
     key_state = 'completed', response_status = ?8, response_headers = ?9, \
     response_body = ?10, key_completed_at = ?6 \
     WHERE id = ?7 AND status = 'pending'";

/// A payment's tenant (its event's tenant).
pub(crate) const PAYMENT_TENANT: &str = "SELECT tenant FROM payments WHERE id = ?1";

/// Takes the lease on a pending payment if it is free, expired (at `?4`), or already `?1`'s.
pub(crate) const ACQUIRE_LEASE: &str = "UPDATE payments SET lease_owner = ?1, \
     lease_expires_at = ?2 \
     WHERE id = ?3 AND status = 'pending' \
     AND (lease_owner IS NULL OR lease_expires_at <= ?4 OR lease_owner = ?1)";

/// Hands a pending payment back to the reconciler (mark pending, reschedule): attempts,
/// last attempt (NULL keeps it), next look; releases the lease. Only by the lease owner.
pub(crate) const UNLEASE_PAYMENT: &str = "UPDATE payments SET attempts = ?1, \
     last_attempt_at = COALESCE(?2, last_attempt_at), next_reconcile_at = ?3, \
     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
     WHERE id = ?5 AND status = 'pending' AND lease_owner = ?6";

/// A key whose handler answered 202: replays show the current state from now on. The key of
/// payment `?1`, only while in flight.
pub(crate) const KEY_PENDING: &str =
    "UPDATE payments SET key_state = 'pending' WHERE id = ?1 AND key_state = 'in_flight'";

/// Deletes a payment the bank never processed, and its key with it (the key is the row's),
/// only by the lease owner of a pending payment.
pub(crate) const DELETE_PAYMENT: &str =
    "DELETE FROM payments WHERE id = ?1 AND status = 'pending' AND lease_owner = ?2 \
     AND lease_expires_at > ?3";

/// The reaper: keys completed before `?1` are forgotten (the payments stay): each leaves the
/// index of live keys, so it may be claimed again, and its stored response is dropped.
pub(crate) const REAP_KEYS: &str = "UPDATE payments SET key_state = 'reaped', \
     fingerprint = NULL, response_status = NULL, response_headers = NULL, response_body = NULL \
     WHERE key_state = 'completed' AND key_completed_at < ?1";

/// The events the event reaper may delete: created before `?1` (an [`event_id_bound`]: ids
/// are time-ordered, so this is a range of the primary key) and with no delivery still pending.
///
/// [`event_id_bound`]: crate::webhooks::event_id_bound
macro_rules! reapable_events {
    () => {
        "SELECT e.id FROM webhook_events e WHERE e.id < ?1 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')"
    };
}

/// The event reaper, in this order in one transaction: the attempts, the deliveries, then the
/// events themselves (see [`reapable_events!`]).
pub(crate) const REAP_EVENT_ATTEMPTS: &str = concat!(
    "DELETE FROM webhook_attempts WHERE event_id IN (",
    reapable_events!(),
    ")"
);
pub(crate) const REAP_EVENT_DELIVERIES: &str = concat!(
    "DELETE FROM webhook_deliveries WHERE event_id IN (",
    reapable_events!(),
    ")"
);
pub(crate) const REAP_EVENTS: &str = concat!(
    "DELETE FROM webhook_events WHERE id IN (",
    reapable_events!(),
    ")"
);

/// The readiness probe's write: one row, so it costs a page in the WAL, and it fails exactly
/// when a write would (a held lock, a full disk, a read-only or broken file). The time is
/// SQLite's, for whoever looks at the row; nothing reads it.
pub(crate) const HEARTBEAT: &str = "UPDATE store_health SET beats = beats + 1, \
     beat_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) WHERE id = 1";

/// How many payments are pending: counted in the partial index of pending payments
/// (`payments_pending_due`), which only a query with this very condition, `status = 'pending'`
/// written as a literal, can use.
pub(crate) const PENDING_COUNT: &str = "SELECT COUNT(*) FROM payments WHERE status = 'pending'";

/// Pending payments due at `?1` whose lease is free or expired at `?1`, oldest first, at most
/// `?2`. Read in the order of the partial index of pending payments (`payments_pending_due`:
/// `next_reconcile_at, created_at`, then the primary key `id`), so nothing is sorted; it
/// needs the literal `status = 'pending'` as in [`PENDING_COUNT`].
pub(crate) fn due_for_reconcile() -> String {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments \
         WHERE status = 'pending' AND next_reconcile_at <= ?1 \
         AND (lease_owner IS NULL OR lease_expires_at <= ?1) \
         ORDER BY next_reconcile_at ASC, created_at ASC, id ASC LIMIT ?2"
    )
}

/// A payment row (all of [`PAYMENT_COLUMNS`]) read through sqlx.
pub(crate) fn payment_from_sqlx(row: &SqliteRow) -> Result<PaymentRecord, StoreError> {
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

/// A [`KEY_SELECT`] row read through rusqlite.
pub(crate) fn key_from_row(row: &Row<'_>) -> Result<KeyRecord, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { Ok(row.get::<_, String>(name)?) };
    let status: Option<i64> = row.get("response_status")?;
    let response = match status {
        Some(status) => {
            let headers: Option<String> = row.get("response_headers")?;
            let body: Option<Vec<u8>> = row.get("response_body")?;
            Some(StoredResponse {
                status: convert::http_status(status)?,
                headers: headers
                    .as_deref()
                    .map(convert::headers_from_text)
                    .transpose()?
                    .unwrap_or_default(),
                body: body.unwrap_or_default(),
            })
        }
        None => None,
    };
    Ok(KeyRecord {
        tenant: text("tenant")?,
        key: text("idempotency_key")?,
        fingerprint: text("fingerprint")?,
        payment_id: convert::parse_uuid(&text("payment_id")?)?,
        state: convert::parse_state(&text("key_state")?)?,
        response,
        payment_status: convert::parse_status(&text("status")?)?,
        lease_owner: row.get("lease_owner")?,
        lease_expires_at: convert::from_ms_opt(row.get("lease_expires_at")?)?,
        created_at: convert::from_ms(row.get("created_at")?)?,
        completed_at: convert::from_ms_opt(row.get("key_completed_at")?)?,
    })
}

// --- Webhooks (docs/webhooks.md; the rules: `crate::webhooks`).

/// A payment by id, as a settlement or mark pending left it, for its event's payload.
pub(crate) fn payment_by_id() -> String {
    format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1")
}

/// The outbox: an event, in the transaction of the state change it announces. A final state's
/// `payload` is empty: it is built from the (final, never changing) payment row when read.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO webhook_events \
     (id, tenant, event_type, payment_id, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The fan-out: a pending delivery of event `?1`, due at `?2`, to each endpoint of tenant `?3`
/// whose types match the pattern `?4`. Writes nothing (a read of the tenant's endpoints) for a
/// tenant without one. `OR IGNORE`: a redelivery keeps the deliveries that exist.
pub(crate) const FAN_OUT: &str = "INSERT OR IGNORE INTO webhook_deliveries \
     (event_id, endpoint_id, tenant, state, attempts, failures, next_attempt_at, created_at, \
     updated_at) \
     SELECT ?1, id, tenant, 'pending', 0, 0, ?2, ?2, ?2 FROM webhook_endpoints \
     WHERE tenant = ?3 AND event_types LIKE ?4";

/// Tenant `?1`'s endpoints with their types (a JSON array of names): what the writer's
/// `EndpointCache` holds for the outbox's fan-out, read once per tenant. The fan-out then
/// inserts a delivery per matching endpoint, so a tenant without one writes nothing (an
/// `INSERT … SELECT` selecting nothing still cost ~15 µs of CPU per payment in
/// `benches/store.rs`, and the read of this table ~6 µs).
pub(crate) const TENANT_ENDPOINT_TYPES: &str =
    "SELECT id, event_types FROM webhook_endpoints WHERE tenant = ?1";

/// One pending delivery of event `?1` to endpoint `?2` of tenant `?3`, due at `?4`.
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries \
     (event_id, endpoint_id, tenant, state, attempts, failures, next_attempt_at, created_at, \
     updated_at) VALUES (?1, ?2, ?3, 'pending', 0, 0, ?4, ?4, ?4)";

/// The columns [`endpoint_from_row`] decodes.
pub(crate) const ENDPOINT_COLUMNS: &str = "id, tenant, url, event_types, secret, \
     previous_secret, previous_secret_expires_at, created_at, updated_at";

pub(crate) const INSERT_ENDPOINT: &str = "INSERT INTO webhook_endpoints \
     (id, tenant, url, event_types, secret, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)";

/// An endpoint by id, of tenant `?2` unless `?2` is NULL.
pub(crate) fn endpoint_by_id() -> String {
    format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1 \
         AND (?2 IS NULL OR tenant = ?2)"
    )
}

/// Endpoints of tenant `?1`, oldest first (in the order of `webhook_endpoints_tenant`).
pub(crate) fn endpoints_of() -> String {
    format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant = ?1 \
         ORDER BY created_at ASC, id ASC"
    )
}

/// Every tenant's endpoints, oldest first: an operator's read of a small table, sorted.
pub(crate) fn all_endpoints() -> String {
    format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at ASC, id ASC")
}

pub(crate) const DELETE_ENDPOINT: &str =
    "DELETE FROM webhook_endpoints WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)";

/// A deleted endpoint's pending deliveries (its delivered and failed ones stay as history).
pub(crate) const DELETE_ENDPOINT_DELIVERIES: &str =
    "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND state = 'pending'";

/// The current secret becomes the previous one, signing until `?1`; `?2` is the new one.
pub(crate) const ROTATE_SECRET: &str = "UPDATE webhook_endpoints SET \
     previous_secret = secret, previous_secret_expires_at = ?1, secret = ?2, updated_at = ?3 \
     WHERE id = ?4 AND (?5 IS NULL OR tenant = ?5)";

/// The columns [`event_from_row`] decodes.
pub(crate) const EVENT_COLUMNS: &str = "id, tenant, event_type, payment_id, payload, created_at";

/// An event by id, of tenant `?2` unless `?2` is NULL.
pub(crate) fn event_by_id() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = ?1 \
         AND (?2 IS NULL OR tenant = ?2)"
    )
}

/// Every delivery of event `?1`.
pub(crate) const DELIVERIES_OF: &str = "SELECT event_id, endpoint_id, state, failures, \
     next_attempt_at FROM webhook_deliveries WHERE event_id = ?1 ORDER BY endpoint_id";

/// Every attempt of event `?1`'s deliveries.
pub(crate) const ATTEMPTS_OF: &str = "SELECT endpoint_id, attempt, at, status, latency_ms, \
     error FROM webhook_attempts WHERE event_id = ?1 ORDER BY endpoint_id, attempt";

/// A redelivery: the event's deliveries to endpoints that still exist go back to the start of
/// the schedule, due at `?2`.
pub(crate) const REQUEUE: &str = "UPDATE webhook_deliveries SET state = 'pending', \
     failures = 0, next_attempt_at = ?2, updated_at = ?2 \
     WHERE event_id = ?1 AND endpoint_id IN (SELECT id FROM webhook_endpoints)";

/// Deliveries due at `?1` whose lease is free or expired at `?1`, most overdue first, at most
/// `?2`, with their event's payload and their endpoint.
pub(crate) fn due_deliveries() -> String {
    format!(
        "SELECT d.event_id, d.endpoint_id, d.tenant AS delivery_tenant, d.failures, e.payload, \
         {w} FROM webhook_deliveries d \
         JOIN webhook_events e ON e.id = d.event_id \
         JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 \
         AND (d.lease_owner IS NULL OR d.lease_expires_at <= ?1) \
         ORDER BY d.next_attempt_at ASC LIMIT ?2",
        w = ENDPOINT_COLUMNS
            .split(", ")
            .map(|c| format!("w.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(crate) const LEASE_DELIVERY: &str = "UPDATE webhook_deliveries SET lease_owner = ?1, \
     lease_expires_at = ?2 WHERE event_id = ?3 AND endpoint_id = ?4";

/// The worker's turn on a delivery it leased: attempts `+ ?1`, failures `+ ?2`, the new state
/// and due time; the lease is released. Only by the lease owner of a pending delivery.
pub(crate) const RECORD_DELIVERY: &str = "UPDATE webhook_deliveries SET \
     attempts = attempts + ?1, failures = failures + ?2, state = ?3, next_attempt_at = ?4, \
     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5 \
     WHERE event_id = ?6 AND endpoint_id = ?7 AND state = 'pending' AND lease_owner = ?8";

pub(crate) const DELIVERY_ATTEMPTS: &str =
    "SELECT attempts FROM webhook_deliveries WHERE event_id = ?1 AND endpoint_id = ?2";

pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO webhook_attempts \
     (event_id, endpoint_id, attempt, at, status, latency_ms, error) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Pending deliveries, counted in the partial index of due deliveries.
pub(crate) const DELIVERY_BACKLOG: &str =
    "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'";

/// A payment row (all of [`PAYMENT_COLUMNS`]) read through rusqlite.
pub(crate) fn payment_from_row(row: &Row<'_>) -> Result<PaymentRecord, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { Ok(row.get::<_, String>(name)?) };
    let metadata: Option<String> = row.get("metadata")?;
    Ok(PaymentRecord {
        id: convert::parse_uuid(&text("id")?)?,
        tenant: text("tenant")?,
        idempotency_key: text("idempotency_key")?,
        status: convert::parse_status(&text("status")?)?,
        amount: row.get("amount")?,
        currency: text("currency")?,
        source: text("source")?,
        description: row.get("description")?,
        metadata: convert::metadata_from_text(metadata.as_deref())?,
        bank_reference: text("bank_reference")?,
        bank: text("bank")?,
        bank_charge_id: row.get("bank_charge_id")?,
        decline_code: row.get("decline_code")?,
        failure_reason: row.get("failure_reason")?,
        attempts: convert::attempts(row.get("attempts")?)?,
        lease_owner: row.get("lease_owner")?,
        lease_expires_at: convert::from_ms_opt(row.get("lease_expires_at")?)?,
        next_reconcile_at: convert::from_ms_opt(row.get("next_reconcile_at")?)?,
        last_attempt_at: convert::from_ms_opt(row.get("last_attempt_at")?)?,
        created_at: convert::from_ms(row.get("created_at")?)?,
        updated_at: convert::from_ms(row.get("updated_at")?)?,
    })
}

/// An endpoint row (all of [`ENDPOINT_COLUMNS`]) read through rusqlite.
pub(crate) fn endpoint_from_row(row: &Row<'_>) -> Result<EndpointRecord, StoreError> {
    let types: String = row.get("event_types")?;
    Ok(EndpointRecord {
        id: row.get("id")?,
        tenant: row.get("tenant")?,
        url: row.get("url")?,
        event_types: convert::event_types_from_text(&types)?,
        secret: row.get("secret")?,
        previous_secret: row.get("previous_secret")?,
        previous_secret_expires_at: convert::from_ms_opt(row.get("previous_secret_expires_at")?)?,
        created_at: convert::from_ms(row.get("created_at")?)?,
        updated_at: convert::from_ms(row.get("updated_at")?)?,
    })
}

/// `event` with its payload: a final state's (stored empty) is built from its payment row,
/// which never changes once final, so every read gives the same bytes.
pub(crate) fn fill_payload(
    conn: &rusqlite::Connection,
    mut event: EventRecord,
) -> Result<EventRecord, StoreError> {
    if event.payload.is_empty() {
        let payment = conn
            .prepare_cached(&payment_by_id())?
            .query_row([event.payment_id.to_string()], |row| {
                Ok(payment_from_row(row))
            })??;
        event.payload = crate::webhooks::event_payload(
            &event.id,
            &event.event_type,
            event.created_at,
            &payment,
        );
    }
    Ok(event)
}

/// An event row (all of [`EVENT_COLUMNS`]) read through rusqlite.
pub(crate) fn event_from_row(row: &Row<'_>) -> Result<EventRecord, StoreError> {
    let payment_id: String = row.get("payment_id")?;
    Ok(EventRecord {
        id: row.get("id")?,
        tenant: row.get("tenant")?,
        event_type: row.get("event_type")?,
        payment_id: convert::parse_uuid(&payment_id)?,
        payload: row.get("payload")?,
        created_at: convert::from_ms(row.get("created_at")?)?,
    })
}
