//! Entry points for the fuzz targets in `fuzz/` (and their corpus replay test): the parsers
//! that see raw client bytes, exposed without the HTTP stack around them. Not a stable API.

use payment_types::payment::CreatePayment;

use crate::domain::{IdempotencyKey, PaymentRequest};

/// What the body parser made of some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Not JSON, or not the shape of `CreatePayment` (400/422 at the edge).
    Malformed,
    /// A `CreatePayment` whose values are invalid (422 with a stable code).
    Invalid(&'static str),
    /// A valid payment request, with its fingerprint.
    Valid { fingerprint: String },
}

/// Runs a `POST /v1/payments` body through the same steps as the handler: JSON into
/// `CreatePayment`, the fingerprint over its canonical JSON, then value validation.
pub fn parse_payment_body(bytes: &[u8]) -> BodyVerdict {
    let Ok(body) = serde_json::from_slice::<CreatePayment>(bytes) else {
        return BodyVerdict::Malformed;
    };
    let fingerprint =
        payment_store::fingerprint::fingerprint("POST", "/v1/payments", &body.canonical());
    match PaymentRequest::parse(body) {
        Ok(_) => BodyVerdict::Valid { fingerprint },
        Err(error) => BodyVerdict::Invalid(error.code),
    }
}

/// Parses an `Idempotency-Key` header value; `Some(key)` when it is usable.
pub fn parse_idempotency_key(bytes: &[u8]) -> Option<String> {
    IdempotencyKey::parse(bytes)
        .ok()
        .map(|key| key.as_str().to_owned())
}
