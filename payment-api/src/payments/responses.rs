//! The answers a payment produces, as stored bytes: the same bytes are sent the first time and
//! replayed for every later request with the same key, so a replay is byte-identical.

use chrono::{DateTime, SubsecRound, Utc};
use payment_store::{PaymentRecord, StoredResponse};

/// The current time at the store's precision (milliseconds). Every timestamp that ends up in a
/// response is taken with this, so a response rebuilt from the store is byte-identical to the one
/// built in memory when the payment was created or settled.
pub(crate) fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
use payment_types::{headers, payment::PaymentStatus, Problem};

/// The answer for a payment in its current state: 201 succeeded, 402 declined, 502 failed,
/// 202 pending (with `Location`, to poll).
pub(crate) fn for_payment(record: &PaymentRecord) -> StoredResponse {
    let payment = record.to_api();
    let location = format!("/v1/payments/{}", record.id);
    let json = "application/json".to_owned();
    let (status, content_type, body) = match record.status {
        PaymentStatus::Succeeded => (201, json, serde_json::to_vec(&payment)),
        PaymentStatus::Pending => (202, json, serde_json::to_vec(&payment)),
        PaymentStatus::Declined => {
            let decline_code = record
                .decline_code
                .clone()
                .unwrap_or_else(|| "card_declined".to_owned());
            let problem = Problem::new(
                402,
                "card_declined",
                "Card declined",
                "The bank declined the card.",
            )
            .with("decline_code", decline_code)
            .with(
                "payment",
                serde_json::to_value(&payment).unwrap_or_default(),
            );
            (
                402,
                headers::PROBLEM_JSON.to_owned(),
                serde_json::to_vec(&problem),
            )
        }
        PaymentStatus::Failed => {
            let problem = Problem::new(
                502,
                "bank_rejected_request",
                "Bank rejected the request",
                "The bank refused to process this payment; it was not charged.",
            )
            // A 5xx, so it says what the client may conclude (docs/contract.md §2): the bank's
            // refusal is final and nothing was charged under this key.
            .with("charged", "no")
            .with(
                "payment",
                serde_json::to_value(&payment).unwrap_or_default(),
            );
            (
                502,
                headers::PROBLEM_JSON.to_owned(),
                serde_json::to_vec(&problem),
            )
        }
    };
    StoredResponse {
        status,
        headers: vec![
            ("content-type".to_owned(), content_type),
            ("location".to_owned(), location),
        ],
        // Serialising plain data structures cannot fail.
        body: body.unwrap_or_default(),
    }
}
