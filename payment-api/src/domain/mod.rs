//! Parsed request values: once a value is one of these types it is valid ("parse, don't validate").

mod idempotency_key;
mod payment_request;

pub(crate) use idempotency_key::{IdempotencyKey, IdempotencyKeyError};
pub(crate) use payment_request::{
    PaymentRequest, ValidationError, MAX_DESCRIPTION, MAX_METADATA_KEY, MAX_METADATA_KEYS,
    MAX_METADATA_VALUE, MAX_SOURCE, SOURCE_PATTERN,
};
