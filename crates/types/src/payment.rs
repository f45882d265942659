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

impl CreatePayment {
    /// The body as its canonical JSON serialises it (object keys sorted, as the request
    /// fingerprint wants), without building a `serde_json::Value` of it: the fields in sorted
    /// order, `metadata` a sorted map already. Serialises to the same bytes as
    /// `serde_json::to_value(self)` (tested).
    pub fn canonical(&self) -> CanonicalPayment<'_> {
        CanonicalPayment {
            amount: self.amount,
            currency: &self.currency,
            description: self.description.as_deref(),
            metadata: self.metadata.as_ref(),
            source: &self.source,
        }
    }
}

/// [`CreatePayment`] with its fields in sorted order: see [`CreatePayment::canonical`].
#[derive(Debug, Serialize)]
pub struct CanonicalPayment<'a> {
    amount: i64,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    source: &'a str,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_body_serialises_as_its_json_value_does() {
        for text in [
            r#"{"amount":1999,"currency":"TRY","source":"tok_visa"}"#,
            r#"{"source":"tok_visa","currency":"EUR","amount":1,"description":""}"#,
            r#"{"amount":5,"currency":"JPY","source":"tok_x","metadata":{}}"#,
            r#"{"metadata":{"z":"1","a":"ü \" \\ \n","m":"3"},"description":"tea ☕",
                "source":"tok_visa","currency":"KWD","amount":9223372036854775807}"#,
        ] {
            let body: CreatePayment = serde_json::from_str(text).unwrap();
            // A field added to `CreatePayment` but not to `CanonicalPayment` shows up here.
            assert_eq!(
                serde_json::to_string(&body.canonical()).unwrap(),
                serde_json::to_value(&body).unwrap().to_string(),
                "{text}"
            );
        }
    }
}
