//! Every write the SQLite store makes, as a value the writer thread can queue ([`Write`]), and
//! what applying one inside an open transaction does ([`Write::apply`]). Each write runs the same
//! statements, with the same `WHERE` clauses (lease owner, `status = 'pending'`, …), as it did
//! when it ran alone on a connection of its own; the writer ([`super::writer`]) decides how
//! writes share transactions.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::sql;
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
    /// [`crate::Store::ping`]: proves that a write can commit.
    Heartbeat,
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
}

impl Write {
    /// Runs this write's statements on `conn`, inside the caller's open transaction. A write
    /// whose condition does not match writes nothing and reports `Applied(false)`.
    pub(crate) fn apply(&self, conn: &Connection) -> Result<Outcome, StoreError> {
        match self {
            Self::Claim(new) => claim(conn, new).map(Outcome::Claim),
            Self::Settle(write) => settle(conn, write).map(Outcome::Applied),
            Self::MarkPending(write) => unlease(conn, write, true).map(Outcome::Applied),
            Self::Reschedule(write) => unlease(conn, write, false).map(Outcome::Applied),
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
            Self::Heartbeat => {
                let updated = conn.prepare_cached(sql::HEARTBEAT)?.execute([])?;
                if updated != 1 {
                    return Err(StoreError::Corrupt(
                        "the store_health row is missing (migration 0002)".into(),
                    ));
                }
                Ok(Outcome::Applied(true))
            }
        }
    }
}

/// The claim: the key's insert decides (unique constraint); then the payment, or the existing
/// record for the caller to judge.
fn claim(conn: &Connection, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
    let id = new.id.to_string();
    let now = convert::to_ms(new.now);
    let inserted = conn.prepare_cached(sql::INSERT_KEY)?.execute((
        &new.tenant,
        &new.idempotency_key,
        &new.fingerprint,
        &id,
        now,
    ))?;
    if inserted == 1 {
        conn.prepare_cached(sql::INSERT_PAYMENT)?
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
            ])?;
        conn.prepare_cached(sql::INSERT_ROUTE)?.execute((
            &id,
            &new.bank,
            &new.bank_reference,
            now,
        ))?;
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

/// The settlement: the payment (only if pending), then its key's replayed response.
fn settle(conn: &Connection, write: &SettleWrite) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let now = convert::to_ms(write.now);
    let columns = convert::SettlementColumns::of(&write.settlement);
    let updated = conn.prepare_cached(sql::SETTLE_PAYMENT)?.execute((
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
    conn.prepare_cached(sql::SETTLE_KEY)?.execute((
        i64::from(write.response_status),
        &write.response_headers,
        &write.response_body,
        now,
        &id,
    ))?;
    Ok(true)
}

/// Mark pending (`key_pending`) or reschedule: the payment's bookkeeping, only by the lease
/// owner of a pending payment; mark pending also moves an in-flight key to pending.
fn unlease(conn: &Connection, write: &UnleaseWrite, key_pending: bool) -> Result<bool, StoreError> {
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
    if key_pending {
        conn.prepare_cached(sql::KEY_PENDING)?.execute([&id])?;
    }
    Ok(true)
}

/// The release: the payment (only by its lease owner, only while pending), then its key.
fn release(
    conn: &Connection,
    payment_id: Uuid,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let id = payment_id.to_string();
    let deleted = conn
        .prepare_cached(sql::DELETE_PAYMENT)?
        .query_row((&id, owner, convert::to_ms(now)), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((tenant, key)) = deleted else {
        return Ok(false);
    };
    conn.prepare_cached(sql::DELETE_KEY)?
        .execute((&tenant, &key, &id))?;
    conn.prepare_cached(sql::DELETE_ROUTES)?.execute([&id])?;
    Ok(true)
}

/// The move to another bank: the payment (only by the holder of an unexpired lease, only while
/// pending) takes the new bank and reference, and the route is recorded.
fn switch_bank(conn: &Connection, write: &SwitchWrite) -> Result<bool, StoreError> {
    let id = write.payment_id.to_string();
    let waited = chrono::Duration::from_std(write.asked.elapsed()).unwrap_or_default();
    let now = convert::to_ms(write.now + waited);
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
