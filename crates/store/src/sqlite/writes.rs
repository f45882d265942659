//! Every write the SQLite store makes, as a value the writer thread can queue ([`Write`]), and
//! what applying one inside an open transaction does ([`Write::apply`]). Each write runs the same
//! statements, with the same `WHERE` clauses (lease owner, `status = 'pending'`, …), as it did
//! when it ran alone on a connection of its own; the writer ([`super::writer`]) decides how
//! writes share transactions.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::sql;
use crate::webhooks::{
    self, DeliveryNext, EndpointRecord, LeasedDelivery, NewAttempt, NewEndpoint,
};
use crate::{convert, ClaimOutcome, NewPayment, Settlement, StoreError, StoredResponse};

/// A write the writer thread applies.
#[derive(Debug)]
pub(crate) enum Write {
    /// [`crate::Store::claim`].
    Claim(Box<NewPayment>),
    /// [`crate::Store::settle`].
    Settle(Box<SettleWrite>),
    /// [`crate::Store::mark_pending`]: also moves the key from in flight to pending.
    MarkPending(Box<UnleaseWrite>),
    /// [`crate::Store::reschedule`]: the payment's bookkeeping only.
    Reschedule(Box<UnleaseWrite>),
    /// [`crate::Store::release`].
    Release {
        payment_id: Uuid,
        owner: String,
        now: DateTime<Utc>,
        /// When the caller asked: the lease is checked at the time the write *runs*, `now`
        /// plus the time it waited for the writer (see `release`).
        asked: std::time::Instant,
    },
    /// [`crate::Store::switch_bank`].
    SwitchBank(Box<SwitchWrite>),
    /// [`crate::Store::acquire_lease`].
    AcquireLease {
        payment_id: Uuid,
        owner: String,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// [`crate::Store::reap_keys`].
    ReapKeys { before: DateTime<Utc> },
    /// [`crate::Store::reap_events`].
    ReapEvents { before: DateTime<Utc> },
    /// [`crate::Store::ping`]: proves that a write can commit.
    Heartbeat,
    /// [`crate::Store::create_endpoint`].
    CreateEndpoint(Box<NewEndpoint>),
    /// [`crate::Store::delete_endpoint`].
    DeleteEndpoint { tenant: Option<String>, id: String },
    /// [`crate::Store::rotate_endpoint_secret`].
    RotateSecret(Box<RotateWrite>),
    /// [`crate::Store::redeliver`].
    Redeliver {
        tenant: Option<String>,
        event_id: String,
        now: DateTime<Utc>,
    },
    /// [`crate::Store::lease_deliveries`].
    LeaseDeliveries {
        owner: String,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    },
    /// [`crate::Store::record_delivery`].
    RecordDelivery(Box<RecordWrite>),
}

/// [`crate::Store::rotate_endpoint_secret`]'s arguments, owned.
#[derive(Debug)]
pub(crate) struct RotateWrite {
    pub(crate) tenant: Option<String>,
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) previous_until: DateTime<Utc>,
    pub(crate) now: DateTime<Utc>,
}

/// [`crate::Store::record_delivery`]'s arguments, owned.
#[derive(Debug)]
pub(crate) struct RecordWrite {
    pub(crate) event_id: String,
    pub(crate) endpoint_id: String,
    pub(crate) owner: String,
    pub(crate) attempt: Option<NewAttempt>,
    pub(crate) next: DeliveryNext,
    pub(crate) now: DateTime<Utc>,
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

/// [`crate::Store::switch_bank`]'s arguments, owned.
#[derive(Debug)]
pub(crate) struct SwitchWrite {
    pub(crate) payment_id: Uuid,
    pub(crate) owner: String,
    pub(crate) bank: String,
    pub(crate) reference: String,
    pub(crate) attempts: u32,
    pub(crate) now: DateTime<Utc>,
    /// When the caller asked: the lease is checked at the time the write runs, as a release's.
    pub(crate) asked: std::time::Instant,
}

/// The arguments shared by [`crate::Store::mark_pending`] and [`crate::Store::reschedule`],
/// owned: both hand a leased pending payment back to the reconciler.
#[derive(Debug)]
pub(crate) struct UnleaseWrite {
    pub(crate) payment_id: Uuid,
    pub(crate) owner: String,
    pub(crate) attempts: u32,
    pub(crate) last_attempt_at: Option<DateTime<Utc>>,
    pub(crate) next_reconcile_at: DateTime<Utc>,
    pub(crate) now: DateTime<Utc>,
}

/// What a write produced.
// Moved once per write; boxing the claim outcome would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A claim's outcome.
    Claim(ClaimOutcome),
    /// Whether a conditional write (settle, mark pending, reschedule, release, lease) matched
    /// its row.
    Applied(bool),
    /// How many keys the reaper deleted.
    Reaped(u64),
    /// An endpoint after a rotation, if it exists.
    Endpoint(Option<EndpointRecord>),
    /// How many deliveries a redelivery queued (`None`: no such event).
    Requeued(Option<u64>),
    /// The deliveries leased.
    Leased(Vec<LeasedDelivery>),
}

impl Write {
    /// Runs this write's statements on `conn`, inside the caller's open transaction. A write
    /// whose condition does not match writes nothing and reports `Applied(false)`.
    ///
    /// `endpoints` is the writer's copy of the tenants' webhook endpoints, which the outbox reads
    /// instead of the table; a write that changes endpoints clears it first.
    pub(crate) fn apply(
        &self,
        conn: &Connection,
        endpoints: &mut EndpointCache,
    ) -> Result<Outcome, StoreError> {
        match self {
            Self::Claim(new) => claim(conn, new).map(Outcome::Claim),
            Self::Settle(write) => settle(conn, endpoints, write).map(Outcome::Applied),
            Self::MarkPending(write) => unlease(conn, endpoints, write, true).map(Outcome::Applied),
            Self::Reschedule(write) => unlease(conn, endpoints, write, false).map(Outcome::Applied),
            Self::Release {
                payment_id,
                owner,
                now,
                asked,
            } => {
                // A release that waited behind a slow batch must not delete under a lease that
                // expired meanwhile: a replay of the key may have answered 202 since.
                let waited = chrono::Duration::from_std(asked.elapsed()).unwrap_or_default();
                release(conn, *payment_id, owner, *now + waited).map(Outcome::Applied)
            }
            Self::SwitchBank(write) => switch_bank(conn, write).map(Outcome::Applied),
            Self::AcquireLease {
                payment_id,
                owner,
                until,
                now,
            } => {
                let updated = conn.prepare_cached(sql::ACQUIRE_LEASE)?.execute((
                    owner,
                    convert::to_ms(*until),
                    payment_id.to_string(),
                    convert::to_ms(*now),
                ))?;
                Ok(Outcome::Applied(updated == 1))
            }
            Self::ReapKeys { before } => {
                let deleted = conn
                    .prepare_cached(sql::REAP_KEYS)?
                    .execute([convert::to_ms(*before)])?;
                Ok(Outcome::Reaped(deleted as u64))
            }
            Self::ReapEvents { before } => {
                // One write of the single writer: no delivery turns pending between the three.
                let bound = crate::webhooks::event_id_bound(*before);
                conn.prepare_cached(sql::REAP_EVENT_ATTEMPTS)?
                    .execute([&bound])?;
                conn.prepare_cached(sql::REAP_EVENT_DELIVERIES)?
                    .execute([&bound])?;
                let deleted = conn.prepare_cached(sql::REAP_EVENTS)?.execute([&bound])?;
                Ok(Outcome::Reaped(deleted as u64))
            }
            Self::Heartbeat => {
                let updated = conn.prepare_cached(sql::HEARTBEAT)?.execute([])?;
                if updated != 1 {
                    return Err(StoreError::Corrupt(
                        "the store_health row is missing (migration 0002)".into(),
                    ));
                }
                Ok(Outcome::Applied(true))
            }
            Self::CreateEndpoint(new) => {
                endpoints.clear();
                conn.prepare_cached(sql::INSERT_ENDPOINT)?.execute((
                    &new.id,
                    &new.tenant,
                    &new.url,
                    convert::event_types_to_text(&new.event_types),
                    &new.secret,
                    convert::to_ms(new.now),
                ))?;
                Ok(Outcome::Applied(true))
            }
            Self::DeleteEndpoint { tenant, id } => {
                endpoints.clear();
                let deleted = conn
                    .prepare_cached(sql::DELETE_ENDPOINT)?
                    .execute((id, tenant))?;
                if deleted == 1 {
                    conn.prepare_cached(sql::DELETE_ENDPOINT_DELIVERIES)?
                        .execute([id])?;
                }
                Ok(Outcome::Applied(deleted == 1))
            }
            Self::RotateSecret(write) => rotate(conn, write).map(Outcome::Endpoint),
            Self::Redeliver {
                tenant,
                event_id,
                now,
            } => redeliver(conn, tenant.as_deref(), event_id, *now).map(Outcome::Requeued),
            Self::LeaseDeliveries {
                owner,
                until,
                now,
                limit,
            } => lease_deliveries(conn, owner, *until, *now, *limit).map(Outcome::Leased),
            Self::RecordDelivery(write) => record_delivery(conn, write).map(Outcome::Applied),
        }
    }
}

/// The writer's copy of each tenant's webhook endpoints (id and subscribed types), read from
/// `webhook_endpoints` the first time an event of that tenant fans out. Most tenants have no
/// endpoint, and the fan-out's read of the table (an index seek and a `LIKE` per endpoint) was
/// a seventh of the settlement's write; from the copy it is a hash lookup.
///
/// It is correct because the writer is the only writer of the file (one process owns it, and
/// every write goes through this thread), so the copy can only go stale through this thread:
/// - a write that creates or deletes an endpoint clears it before it runs (a rotation changes
///   neither the ids nor the types);
/// - a transaction that does not commit clears it ([`super::writer`]), since what it read
///   inside may have been undone (an endpoint created earlier in the same batch);
/// - a reopened connection starts with an empty one.
///
/// Bounded: past [`EndpointCache::MAX_TENANTS`] tenants it starts again from empty.
#[derive(Debug, Default)]
pub(crate) struct EndpointCache {
    tenants: HashMap<String, Vec<(String, String)>>,
}

impl EndpointCache {
    /// Tenants remembered at most; about a hundred bytes each without endpoints.
    const MAX_TENANTS: usize = 10_000;

    pub(crate) fn clear(&mut self) {
        self.tenants.clear();
    }

    /// The ids of `tenant`'s endpoints subscribed to `event_type`, in the order the table
    /// gave them.
    fn matching(
        &mut self,
        conn: &Connection,
        tenant: &str,
        event_type: &str,
    ) -> Result<Vec<String>, StoreError> {
        if !self.tenants.contains_key(tenant) {
            let endpoints = conn
                .prepare_cached(sql::TENANT_ENDPOINT_TYPES)?
                .query_map([tenant], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()?;
            if self.tenants.len() >= Self::MAX_TENANTS {
                self.tenants.clear();
            }
            self.tenants.insert(tenant.to_owned(), endpoints);
        }
        let endpoints = &self.tenants[tenant];
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        // The types are stored as a JSON array of names; a name is matched with its quotes,
        // as `sql::FAN_OUT`'s `LIKE` does.
        let quoted = format!("\"{event_type}\"");
        Ok(endpoints
            .iter()
            .filter(|(_, types)| types.contains(&quoted))
            .map(|(id, _)| id.clone())
            .collect())
    }
}

/// The outbox write: the event announcing the state payment `id` (of `tenant`) is in now (as
/// this transaction left it), and its fan-out to the tenant's matching endpoints (from the
/// writer's [`EndpointCache`]: most tenants have none, and then nothing more is written).
///
/// A final state's payload is not stored: a final payment row never changes again, so the
/// payload is built from it whenever the event is read (`sql::fill_payload`), the same bytes
/// every time; that keeps the read-back and the serialisation out of the settlement's write.
/// `payment.pending` stores its snapshot (`snapshot`), since the row moves on.
fn outbox(
    conn: &Connection,
    endpoints: &mut EndpointCache,
    id: &str,
    now: DateTime<Utc>,
    event_type: &'static str,
    event: Announced<'_>,
) -> Result<(), StoreError> {
    let event_id = webhooks::new_event_id();
    let (tenant, payload) = match event {
        Announced::Snapshot => {
            let payment = conn
                .prepare_cached(&sql::payment_by_id())?
                .query_row([id], |row| Ok(sql::payment_from_row(row)))??;
            let payload = webhooks::event_payload(&event_id, event_type, now, &payment);
            (payment.tenant, payload)
        }
        Announced::Final { tenant } => (tenant.to_owned(), String::new()),
    };
    let now = convert::to_ms(now);
    conn.prepare_cached(sql::INSERT_EVENT)?
        .execute((&event_id, &tenant, event_type, id, &payload, now))?;
    for endpoint_id in endpoints.matching(conn, &tenant, event_type)? {
        conn.prepare_cached(sql::INSERT_DELIVERY)?.execute((
            &event_id,
            &endpoint_id,
            &tenant,
            now,
        ))?;
    }
    Ok(())
}

/// What an outbox event carries.
enum Announced<'a> {
    /// A snapshot of the payment as it is now (its row moves on).
    Snapshot,
    /// A final state of a payment of `tenant`: the payload is built from the row when read.
    Final { tenant: &'a str },
}

fn rotate(conn: &Connection, write: &RotateWrite) -> Result<Option<EndpointRecord>, StoreError> {
    let updated = conn.prepare_cached(sql::ROTATE_SECRET)?.execute((
        convert::to_ms(write.previous_until),
        &write.secret,
        convert::to_ms(write.now),
        &write.id,
        &write.tenant,
    ))?;
    if updated == 0 {
        return Ok(None);
    }
    conn.prepare_cached(&sql::endpoint_by_id())?
        .query_row((&write.id, &write.tenant), |row| {
            Ok(sql::endpoint_from_row(row))
        })
        .optional()?
        .transpose()
}

fn redeliver(
    conn: &Connection,
    tenant: Option<&str>,
    event_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<u64>, StoreError> {
    let Some(event) = conn
        .prepare_cached(&sql::event_by_id())?
        .query_row((event_id, tenant), |row| Ok(sql::event_from_row(row)))
        .optional()?
        .transpose()?
    else {
        return Ok(None);
    };
    let now = convert::to_ms(now);
    // Endpoints registered since the event get a delivery too.
    conn.prepare_cached(sql::FAN_OUT)?.execute((
        event_id,
        now,
        &event.tenant,
        webhooks::event_type_pattern(&event.event_type),
    ))?;
    let queued = conn
        .prepare_cached(sql::REQUEUE)?
        .execute((event_id, now))?;
    Ok(Some(queued as u64))
}

/// Leases due deliveries. The writer is the only writer of the file, so the rows selected in
/// this transaction are still free when they are updated.
fn lease_deliveries(
    conn: &Connection,
    owner: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<LeasedDelivery>, StoreError> {
    let mut select = conn.prepare_cached(&sql::due_deliveries())?;
    let due = select
        .query_map((convert::to_ms(now), i64::from(limit)), |row| {
            Ok((|| {
                Ok::<_, StoreError>(LeasedDelivery {
                    event_id: row.get("event_id")?,
                    endpoint_id: row.get("endpoint_id")?,
                    tenant: row.get("delivery_tenant")?,
                    failures: convert::attempts(row.get("failures")?)?,
                    payload: row.get("payload")?,
                    endpoint: sql::endpoint_from_row(row)?,
                })
            })())
        })?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut due = due;
    for delivery in &mut due {
        if delivery.payload.is_empty() {
            let event = conn
                .prepare_cached(&sql::event_by_id())?
                .query_row((&delivery.event_id, None::<&str>), |row| {
                    Ok(sql::event_from_row(row))
                })??;
            delivery.payload = sql::fill_payload(conn, event)?.payload;
        }
    }
    let mut lease = conn.prepare_cached(sql::LEASE_DELIVERY)?;
    for delivery in &due {
        lease.execute((
            owner,
            convert::to_ms(until),
            &delivery.event_id,
            &delivery.endpoint_id,
        ))?;
    }
    Ok(due)
}

fn record_delivery(conn: &Connection, write: &RecordWrite) -> Result<bool, StoreError> {
    let (state, failed, next_at) = write.next.columns();
    let updated = conn.prepare_cached(sql::RECORD_DELIVERY)?.execute((
        i64::from(write.attempt.is_some()),
        failed,
        state.as_str(),
        next_at.map(convert::to_ms),
        convert::to_ms(write.now),
        &write.event_id,
        &write.endpoint_id,
        &write.owner,
    ))?;
    if updated == 0 {
        return Ok(false);
    }
    if let Some(attempt) = &write.attempt {
        let number: i64 = conn
            .prepare_cached(sql::DELIVERY_ATTEMPTS)?
            .query_row((&write.event_id, &write.endpoint_id), |row| row.get(0))?;
        conn.prepare_cached(sql::INSERT_ATTEMPT)?.execute((
            &write.event_id,
            &write.endpoint_id,
            number,
            convert::to_ms(attempt.at),
            attempt.status.map(i64::from),
            i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
            &attempt.error,
        ))?;
    }
    Ok(true)
}

/// The claim: one insert of the payment with its key, which the unique index of live keys
/// decides; if it is taken, the existing record for the caller to judge.
fn claim(conn: &Connection, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
    let id = new.id.to_string();
    let now = convert::to_ms(new.now);
    let inserted = conn
        .prepare_cached(sql::INSERT_PAYMENT)?
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
            &new.bank,
            &new.fingerprint,
        ])?;
    if inserted == 1 {
        // The payment row is its first route (`sql::INSERT_ROUTE`): no route row until it moves.
        return Ok(ClaimOutcome::Claimed);
    }
    // The write lock is the transaction's: the key we collided with is still there.
    let existing = conn
        .prepare_cached(sql::KEY_SELECT)?
        .query_row((&new.tenant, &new.idempotency_key), |row| {
            Ok(sql::key_from_row(row))
        })
        .optional()?;
    match existing {
        Some(record) => Ok(ClaimOutcome::Existing(record?)),
        None => Err(StoreError::Corrupt(
            "a claim collided with a key that cannot be read".into(),
        )),
    }
}

/// The settlement: the payment (only if pending) and its key's replayed response, one row.
fn settle(
    conn: &Connection,
    endpoints: &mut EndpointCache,
    write: &SettleWrite,
) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let now = convert::to_ms(write.now);
    let columns = convert::SettlementColumns::of(&write.settlement);
    let updated = conn
        .prepare_cached(sql::SETTLE_PAYMENT)?
        .execute(rusqlite::params![
            columns.status,
            columns.charge_id,
            columns.decline_code,
            columns.failure_reason,
            i64::from(write.attempts),
            now,
            &id,
            i64::from(write.response_status),
            &write.response_headers,
            &write.response_body,
        ])?;
    if updated == 0 {
        // Already final: nothing written, nothing to undo.
        return Ok(false);
    }
    // The tenant, for the event. (Read back rather than `RETURNING`, which costs SQLite a
    // temporary B-tree per execution; the row's page is the one just written.)
    let tenant: String = conn
        .prepare_cached(sql::PAYMENT_TENANT)?
        .query_row([&id], |row| row.get(0))?;
    // The final state's event, in this very transaction (the outbox).
    let event_type = webhooks::event_type(write.settlement.status());
    let event = Announced::Final { tenant: &tenant };
    outbox(conn, endpoints, &id, write.now, event_type, event)?;
    Ok(true)
}

/// Mark pending (`key_pending`) or reschedule: the payment's bookkeeping, only by the lease
/// owner of a pending payment; mark pending also moves an in-flight key to pending.
fn unlease(
    conn: &Connection,
    endpoints: &mut EndpointCache,
    write: &UnleaseWrite,
    key_pending: bool,
) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let updated = conn.prepare_cached(sql::UNLEASE_PAYMENT)?.execute((
        i64::from(write.attempts),
        write.last_attempt_at.map(convert::to_ms),
        convert::to_ms(write.next_reconcile_at),
        convert::to_ms(write.now),
        &id,
        &write.owner,
    ))?;
    if updated == 0 {
        // Lease not held or payment final: nothing written.
        return Ok(false);
    }
    // The first 202 of a payment (its key leaves in flight) announces `payment.pending`, in
    // this very transaction; a later mark pending of the same payment announces nothing new.
    if key_pending && conn.prepare_cached(sql::KEY_PENDING)?.execute([&id])? == 1 {
        outbox(
            conn,
            endpoints,
            &id,
            write.now,
            "payment.pending",
            Announced::Snapshot,
        )?;
    }
    Ok(true)
}

/// The release: the payment with its key (only by its lease owner, only while pending), then
/// its routes.
fn release(
    conn: &Connection,
    payment_id: Uuid,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let id = payment_id.to_string();
    let deleted =
        conn.prepare_cached(sql::DELETE_PAYMENT)?
            .execute((&id, owner, convert::to_ms(now)))?;
    if deleted == 0 {
        return Ok(false);
    }
    conn.prepare_cached(sql::DELETE_ROUTES)?.execute([&id])?;
    Ok(true)
}

/// The move to another bank: the payment (only by the holder of an unexpired lease, only while
/// pending) takes the new bank and reference, and the route is recorded.
fn switch_bank(conn: &Connection, write: &SwitchWrite) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let waited = chrono::Duration::from_std(write.asked.elapsed()).unwrap_or_default();
    let now = convert::to_ms(write.now + waited);
    // The route it leaves becomes a row first if it was the payment row's own (the first).
    // Should the move itself not apply, that row only says what the payment row says.
    conn.prepare_cached(sql::INSERT_FIRST_ROUTE)?
        .execute([&id])?;
    let updated = conn.prepare_cached(sql::SWITCH_BANK)?.execute((
        &write.bank,
        &write.reference,
        i64::from(write.attempts),
        now,
        &id,
        &write.owner,
    ))?;
    if updated == 0 {
        return Ok(false);
    }
    conn.prepare_cached(sql::INSERT_ROUTE)?
        .execute((&id, &write.bank, &write.reference, now))?;
    Ok(true)
}
