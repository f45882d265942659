//! What the store keeps: payments, idempotency keys, and the responses replayed for keys.

use chrono::{DateTime, Utc};
use payment_types::payment::{Payment, PaymentStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A payment to create together with the claim of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    pub id: Uuid,
    pub tenant: String,
    pub idempotency_key: String,
    /// See [`crate::fingerprint`].
    pub fingerprint: String,
    pub amount: i64,
    pub currency: String,
    pub source: String,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Derived from the payment and stored before any bank call, so every attempt (and the
    /// reconciler) uses the same one and the bank dedups them.
    pub bank_reference: String,
    /// The bank the payment is routed to first (the name it is configured under); the claim
    /// records the route (this bank, `bank_reference`) before that bank is called.
    pub bank: String,
    /// Owner token of the request handler that claims the key.
    pub lease_owner: String,
    /// If the handler dies, the payment is the reconciler's after this instant.
    pub lease_expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// A handler holds it and has not answered yet.
    InFlight,
    /// Answered 202: the outcome is unknown until the reconciler settles the payment.
    Pending,
    /// Final: the stored response is replayed byte for byte.
    Completed,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Pending => "pending",
            Self::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "in_flight" => Some(Self::InFlight),
            "pending" => Some(Self::Pending),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// A response as it is replayed: status, the headers we replay, and the exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// Lower-case header names and values (e.g. `content-type`, `location`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An idempotency key's record, joined with its payment's lease and status.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub tenant: String,
    pub key: String,
    pub fingerprint: String,
    pub payment_id: Uuid,
    pub state: KeyState,
    /// Present when `state` is completed.
    pub response: Option<StoredResponse>,
    pub payment_status: PaymentStatus,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The outcome of [`crate::Store::claim`].
// Returned once per request and matched at once, never stored in bulk: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The key was free: it and the payment now exist, leased to the claimant.
    Claimed,
    /// The key already exists; nothing was written.
    Existing(KeyRecord),
}

/// A final outcome for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Succeeded {
        charge_id: String,
    },
    Declined {
        decline_code: String,
    },
    /// Given up without a charge (e.g. the bank refused the request itself).
    Failed {
        reason: String,
    },
}

impl Settlement {
    pub fn status(&self) -> PaymentStatus {
        match self {
            Self::Succeeded { .. } => PaymentStatus::Succeeded,
            Self::Declined { .. } => PaymentStatus::Declined,
            Self::Failed { .. } => PaymentStatus::Failed,
        }
    }
}

/// A payment as stored, with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub tenant: String,
    pub idempotency_key: String,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    pub source: String,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// The reference of the payment at its current bank (`bank`).
    pub bank_reference: String,
    /// The bank the payment is with now: the only one that may have charged it (a payment
    /// moves to another bank only when every attempt here was definitely not processed).
    pub bank: String,
    pub bank_charge_id: Option<String>,
    pub decline_code: Option<String>,
    pub failure_reason: Option<String>,
    pub attempts: u32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_reconcile_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRecord {
    /// The payment as the API shows it.
    pub fn to_api(&self) -> Payment {
        Payment {
            id: self.id,
            status: self.status,
            amount: self.amount,
            currency: self.currency.clone(),
            source: self.source.clone(),
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            bank_reference: self.bank_reference.clone(),
            bank: self.bank.clone(),
            bank_charge_id: self.bank_charge_id.clone(),
            decline_code: self.decline_code.clone(),
            attempts: self.attempts,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// A fresh pending record for `new`, as [`crate::Store::claim`] stores it.
    pub fn from_new(new: &NewPayment) -> Self {
        Self {
            id: new.id,
            tenant: new.tenant.clone(),
            idempotency_key: new.idempotency_key.clone(),
            status: PaymentStatus::Pending,
            amount: new.amount,
            currency: new.currency.clone(),
            source: new.source.clone(),
            description: new.description.clone(),
            metadata: new.metadata.clone(),
            bank_reference: new.bank_reference.clone(),
            bank: new.bank.clone(),
            bank_charge_id: None,
            decline_code: None,
            failure_reason: None,
            attempts: 0,
            lease_owner: Some(new.lease_owner.clone()),
            lease_expires_at: Some(new.lease_expires_at),
            next_reconcile_at: Some(new.lease_expires_at),
            last_attempt_at: None,
            created_at: new.now,
            updated_at: new.now,
        }
    }
}

/// One (payment, bank) pair: the reference the payment has at that bank, recorded durably
/// before that bank is first called. A payment has one route per bank it was ever sent to, so
/// after a crash every bank that may hold a charge for it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRoute {
    pub payment_id: Uuid,
    pub bank: String,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

/// Filter and page for [`crate::Store::list_payments`]: newest first; `before` is the cursor
/// (the `(created_at, id)` of the last item of the previous page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentQuery {
    /// Only this tenant's payments (`None`: all, for operators).
    pub tenant: Option<String>,
    pub status: Option<PaymentStatus>,
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}
