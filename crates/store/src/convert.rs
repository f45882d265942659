//! Conversions both backends share: times as epoch milliseconds, status and state names,
//! settlement columns, stored response headers as JSON, page limits.

use chrono::{DateTime, Utc};
use payment_types::payment::PaymentStatus;
use serde_json::{Map, Value};

use crate::{KeyState, Settlement, StoreError};

/// A page holds at most this many payments, whatever the caller asks for.
pub(crate) const MAX_PAGE: u32 = 1000;
/// The page size used when a [`crate::PaymentQuery`] asks for 0.
pub(crate) const DEFAULT_PAGE: u32 = 100;

/// Milliseconds since the Unix epoch; sub-millisecond precision is dropped.
pub(crate) fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The inverse of [`to_ms`].
pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} ms is out of range")))
}

/// [`from_ms`] for a nullable column.
pub(crate) fn from_ms_opt(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(from_ms).transpose()
}

/// A status column back into a [`PaymentStatus`].
pub(crate) fn parse_status(text: &str) -> Result<PaymentStatus, StoreError> {
    match text {
        "pending" => Ok(PaymentStatus::Pending),
        "succeeded" => Ok(PaymentStatus::Succeeded),
        "declined" => Ok(PaymentStatus::Declined),
        "failed" => Ok(PaymentStatus::Failed),
        other => Err(StoreError::Corrupt(format!(
            "unknown payment status {other:?}"
        ))),
    }
}

/// A state column back into a [`KeyState`].
pub(crate) fn parse_state(text: &str) -> Result<KeyState, StoreError> {
    KeyState::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown key state {text:?}")))
}

/// A stored attempt count back into a `u32`.
pub(crate) fn attempts(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("attempt count {value} out of range")))
}

/// A stored HTTP status back into a `u16`.
pub(crate) fn http_status(value: i64) -> Result<u16, StoreError> {
    u16::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("response status {value} out of range")))
}

/// The columns a [`Settlement`] sets: status, charge id, decline code, failure reason.
#[derive(Debug)]
pub(crate) struct SettlementColumns<'a> {
    pub(crate) status: &'static str,
    pub(crate) charge_id: Option<&'a str>,
    pub(crate) decline_code: Option<&'a str>,
    pub(crate) failure_reason: Option<&'a str>,
}

impl<'a> SettlementColumns<'a> {
    pub(crate) fn of(settlement: &'a Settlement) -> Self {
        let (charge_id, decline_code, failure_reason) = match settlement {
            Settlement::Succeeded { charge_id } => (Some(charge_id.as_str()), None, None),
            Settlement::Declined { decline_code } => (None, Some(decline_code.as_str()), None),
            Settlement::Failed { reason } => (None, None, Some(reason.as_str())),
        };
        Self {
            status: settlement.status().as_str(),
            charge_id,
            decline_code,
            failure_reason,
        }
    }
}

/// Response headers as a JSON array of `[name, value]` pairs (order and duplicates kept).
pub(crate) fn headers_to_json(headers: &[(String, String)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                Value::Array(vec![
                    Value::String(name.clone()),
                    Value::String(value.clone()),
                ])
            })
            .collect(),
    )
}

/// The inverse of [`headers_to_json`].
pub(crate) fn headers_from_json(value: Value) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::Corrupt(format!("stored response headers: {e}")))
}

/// [`headers_from_json`] for headers stored as JSON text.
pub(crate) fn headers_from_text(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    let value = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored response headers: {e}")))?;
    headers_from_json(value)
}

/// Metadata stored as JSON text back into an object.
pub(crate) fn metadata_from_text(
    text: Option<&str>,
) -> Result<Option<Map<String, Value>>, StoreError> {
    text.map(|text| {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored metadata: {e}")))
    })
    .transpose()
}

/// Metadata as JSON text.
pub(crate) fn metadata_to_text(metadata: Option<&Map<String, Value>>) -> Option<String> {
    metadata.map(|map| Value::Object(map.clone()).to_string())
}

/// The page size actually used for a requested `limit`.
pub(crate) fn page_limit(limit: u32) -> i64 {
    let limit = if limit == 0 {
        DEFAULT_PAGE
    } else {
        limit.min(MAX_PAGE)
    };
    i64::from(limit)
}

/// An endpoint's event types as stored: a JSON array of names.
pub(crate) fn event_types_to_text(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned())
}

/// The inverse of [`event_types_to_text`].
pub(crate) fn event_types_from_text(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored event types: {e}")))
}

/// A uuid column stored as text back into a [`uuid::Uuid`].
pub(crate) fn parse_uuid(text: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored uuid {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_drop_sub_millisecond_precision() {
        let at = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(to_ms(at), 1_700_000_000_123);
        assert_eq!(
            from_ms(to_ms(at)).unwrap(),
            DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()
        );
    }

    #[test]
    fn every_status_and_state_name_parses_back() {
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            PaymentStatus::Declined,
            PaymentStatus::Failed,
        ] {
            assert_eq!(parse_status(status.as_str()).unwrap(), status);
        }
        for state in [KeyState::InFlight, KeyState::Pending, KeyState::Completed] {
            assert_eq!(parse_state(state.as_str()).unwrap(), state);
        }
        assert!(parse_status("refunded").is_err());
        assert!(parse_state("done").is_err());
    }

    #[test]
    fn headers_keep_order_and_duplicates() {
        let headers = vec![
            ("set-cookie".to_owned(), "a".to_owned()),
            ("set-cookie".to_owned(), "b".to_owned()),
        ];
        assert_eq!(
            headers_from_json(headers_to_json(&headers)).unwrap(),
            headers
        );
        assert_eq!(
            headers_from_text(&headers_to_json(&headers).to_string()).unwrap(),
            headers
        );
    }

    #[test]
    fn page_limit_defaults_and_caps() {
        assert_eq!(page_limit(0), i64::from(DEFAULT_PAGE));
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(u32::MAX), i64::from(MAX_PAGE));
    }
}
