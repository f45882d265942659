//! Serde helpers: durations are published as whole milliseconds (`*_ms` fields), the form the
//! API's `/v1/status` and the dashboard read.

use std::time::Duration;

use serde::Serializer;

/// Serialises a duration as whole milliseconds.
pub(crate) fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(as_ms(*d))
}

/// Serialises an optional duration as whole milliseconds or `null`.
pub(crate) fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&as_ms(*d)),
        None => s.serialize_none(),
    }
}

/// Whole milliseconds of a duration, saturating.
pub(crate) fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
