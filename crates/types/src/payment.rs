//! The payment API's bodies: what a client sends and what it gets back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// `POST /v1/payments` body. Unknown fields are rejected so typos never pass silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatePayment {
    /// Amount in minor units (cents, kuruş).
    pub amount: i64,
    /// ISO 4217 alphabetic code, e.g. `TRY`.
    pub currency: String,
    /// A card token, e.g. `tok_visa`.
    pub source: String,
    /// Free text shown on statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Up to a bounded number of string key/value pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PaymentStatus {
    /// Created, the bank has not answered yet (or the answer was lost): the reconciler settles it.
    Pending,
    /// The bank charged the card.
    Succeeded,
    /// The bank declined; `decline_code` says why.
    Declined,
    /// The bank never processed it and never will (e.g. abandoned after definite refusals).
    Failed,
}

impl PaymentStatus {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
            Self::Failed => "failed",
        }
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// A payment as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Payment {
    pub id: Uuid,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The reference the bank knows this payment by (its `Idempotency-Key`).
    pub bank_reference: String,
    /// The bank the payment is with (the name the API's operator configured it under): the
    /// bank that charged it once it succeeded, and the only one that may have.
    #[serde(default)]
    pub bank: String,
    /// The bank's charge id once it charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_charge_id: Option<String>,
    /// Why the bank declined, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    /// Bank attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
