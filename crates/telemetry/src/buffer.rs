//! The in-memory log buffer behind `GET /v1/logs`: the most recent records, each with a
//! sequence number, read with a cursor so a poller never misses or repeats a record.
//!
//! Sequence numbers start at 1 and are assigned under the same lock that appends the record, so
//! the buffer is always a contiguous run of sequence numbers in order: `oldest_seq ..=
//! latest_seq`. That makes the cursor exact: a poll with `after = N` returns records `N+1 ..`
//! and tells how many of those were already evicted (`missed`), so a poller that fell behind
//! knows it, and one that keeps up never sees a gap or a repeat, however many threads log at once.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Level;

/// Records kept by the process-wide buffer (about 5 MB at ~500 bytes a record).
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Records a poll returns when it names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most records one poll returns.
pub const MAX_LIMIT: usize = 1_000;

/// One log record, as kept in the buffer and written as a JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// Position in this process's log, from 1, without gaps.
    pub seq: u64,
    /// When the event happened (UTC, millisecond precision on the wire).
    #[serde(serialize_with = "ser_timestamp")]
    pub timestamp: DateTime<Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    #[serde(serialize_with = "ser_level")]
    pub level: Level,
    /// The service that wrote it (`payment-api`, `mock-bank`, ...).
    pub service: &'static str,
    /// The module that wrote it (`payment_api::payments`).
    pub target: &'static str,
    /// The event's message.
    pub message: String,
    /// The event's fields and those of every span it happened in (outermost first; an inner
    /// span's or the event's own field wins over an outer one of the same name).
    pub fields: Fields,
}

/// A field's value as `tracing` recorded it: a string, a number or a boolean.
///
/// Every line of a request copies the fields of its span, so a string is shared (`Arc<str>`):
/// the copy is a reference count, not an allocation (docs/performance.md, issue 18).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Str(Arc<str>),
    I64(i64),
    U64(u64),
    /// Written as JSON `null` when not finite, as `serde_json` does.
    F64(f64),
    Bool(bool),
}

impl FieldValue {
    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        Self::Str(Arc::from(s))
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        Self::Str(Arc::from(s))
    }
}

impl From<i64> for FieldValue {
    fn from(n: i64) -> Self {
        Self::I64(n)
    }
}

impl From<u64> for FieldValue {
    fn from(n: u64) -> Self {
        Self::U64(n)
    }
}

impl From<f64> for FieldValue {
    fn from(n: f64) -> Self {
        Self::F64(n)
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl fmt::Display for FieldValue {
    /// The string as it is, anything else as in JSON (the pretty line's `key=value`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::I64(n) => write!(f, "{n}"),
            Self::U64(n) => write!(f, "{n}"),
            Self::F64(n) if n.is_finite() => write!(f, "{n}"),
            Self::F64(_) => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(v) => s.serialize_str(v),
            Self::I64(v) => s.serialize_i64(*v),
            Self::U64(v) => s.serialize_u64(*v),
            Self::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Self::F64(_) => s.serialize_unit(),
            Self::Bool(v) => s.serialize_bool(*v),
        }
    }
}

/// A record's fields by name, in the order they were first set, written as a JSON object.
///
/// Field names are `tracing`'s `&'static str`s and a record holds a dozen at most, so a vector
/// searched by name costs less than a map with an owned key per field (this is on every
/// request's path: docs/performance.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(&'static str, FieldValue)>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// No fields, with room for `capacity` (a span's declared fields, a line's span and event
    /// fields) so that setting them does not grow the vector again and again.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Sets field `name`, replacing its value if it is already set.
    pub fn set(&mut self, name: &'static str, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((name, value)),
        }
    }

    /// Appends field `name`, which the caller knows is not set yet.
    pub(crate) fn push_unique(&mut self, name: &'static str, value: FieldValue) {
        debug_assert!(self.get(name).is_none(), "{name} is set already");
        self.0.push((name, value));
    }

    /// The fields, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(&'static str, FieldValue)> for Fields {
    fn from_iter<I: IntoIterator<Item = (&'static str, FieldValue)>>(iter: I) -> Self {
        let mut fields = Self::new();
        for (name, value) in iter {
            fields.set(name, value);
        }
        fields
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

fn ser_timestamp<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; TIMESTAMP_LEN];
    match format_timestamp(at, &mut text) {
        Some(text) => s.serialize_str(text),
        None => s.collect_str(&at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
    }
}

/// `2026-12-01T03:32:18.400Z`.
const TIMESTAMP_LEN: usize = 24;

/// Writes `at` as `%Y-%m-%dT%H:%M:%S%.3fZ` (UTC, milliseconds) into `out`, digit by digit: what
/// chrono's `format` does, without parsing the format string again for every line. `None` for a
/// year outside 0..=9999, which the caller formats the slow way.
fn format_timestamp<'a>(at: &DateTime<Utc>, out: &'a mut [u8; TIMESTAMP_LEN]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    // A leap second shows as :60, as chrono writes it.
    let (second, nanos) = match at.nanosecond() {
        n if n >= 1_000_000_000 => (at.second() + 1, n - 1_000_000_000),
        n => (at.second(), n),
    };
    let digits = |out: &mut [u8], value: u32| {
        let mut value = value;
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(&mut out[0..4], year);
    out[4] = b'-';
    digits(&mut out[5..7], at.month());
    out[7] = b'-';
    digits(&mut out[8..10], at.day());
    out[10] = b'T';
    digits(&mut out[11..13], at.hour());
    out[13] = b':';
    digits(&mut out[14..16], at.minute());
    out[16] = b':';
    digits(&mut out[17..19], second);
    out[19] = b'.';
    digits(&mut out[20..23], nanos / 1_000_000);
    out[23] = b'Z';
    std::str::from_utf8(out).ok()
}

fn ser_level<S: serde::Serializer>(level: &Level, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(level.as_str())
}

fn ser_records<S: serde::Serializer>(records: &[Arc<LogRecord>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(records.iter().map(|r| &**r))
}

impl LogRecord {
    /// The string value of field `name`, if it has one.
    pub fn field_str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(FieldValue::as_str)
    }
}

/// What a poll asks for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Return only records with a greater sequence number. `None`: start at the oldest record
    /// held, counting nothing as missed (a new poller has not fallen behind).
    pub after: Option<u64>,
    /// At most this many records ([`DEFAULT_LIMIT`] when `None`; more than [`MAX_LIMIT`] is
    /// taken as [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Minimum level: `WARN` returns `WARN` and `ERROR`.
    pub level: Option<Level>,
    /// Only records whose `payment_id` field is this.
    pub payment_id: Option<String>,
    /// Only records whose `request_id` field is this.
    pub request_id: Option<String>,
}

/// One page of records, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    #[serde(serialize_with = "ser_records")]
    pub records: Vec<Arc<LogRecord>>,
    /// Pass as `after` next time. Equal to `after` when nothing new was scanned; past every
    /// record scanned (matching or not) otherwise, so filtered polls do not rescan.
    pub next_after: u64,
    /// Sequence number of the oldest record still held (0 when none was ever written).
    pub oldest_seq: u64,
    /// Sequence number of the newest record (0 when none was ever written).
    pub latest_seq: u64,
    /// Records after `after` that were evicted before this poll: the poller fell behind by
    /// this many (whatever its filters; evicted records cannot be matched any more).
    pub missed: u64,
    /// Most records the buffer holds.
    pub capacity: usize,
}

/// The query string of `GET /v1/logs`, as received (every parameter optional).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    pub after: Option<u64>,
    pub limit: Option<usize>,
    pub level: Option<String>,
    pub payment_id: Option<String>,
    pub request_id: Option<String>,
}

impl LogParams {
    /// The query these parameters ask for; an error names the bad parameter.
    pub fn into_query(self) -> Result<LogQuery, String> {
        let level = match self.level.as_deref() {
            None | Some("") => None,
            Some(name) => Some(parse_level(name).ok_or_else(|| {
                format!("level must be one of error, warn, info, debug, trace (got {name:?})")
            })?),
        };
        if self.limit == Some(0) {
            return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
        }
        Ok(LogQuery {
            after: self.after,
            limit: self.limit,
            level,
            payment_id: self.payment_id.filter(|s| !s.is_empty()),
            request_id: self.request_id.filter(|s| !s.is_empty()),
        })
    }
}

/// A bounded ring of the most recent records.
#[derive(Debug)]
pub struct LogBuffer {
    /// Records in sequence order; the lock is held only to append or to copy out `Arc`s.
    inner: Mutex<Inner>,
    /// Most records held; the oldest is evicted to make room.
    capacity: usize,
}

#[derive(Debug)]
struct Inner {
    records: VecDeque<Arc<LogRecord>>,
    /// The sequence number the next record gets.
    next_seq: u64,
}

impl LogBuffer {
    /// A buffer holding at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(Inner {
                records: VecDeque::with_capacity(capacity.min(1024)),
                next_seq: 1,
            }),
            capacity,
        }
    }

    /// Most records held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `record`, giving it the next sequence number (its `seq` is overwritten), and
    /// returns it as stored.
    pub fn push(&self, mut record: LogRecord) -> Arc<LogRecord> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = inner.next_seq;
        inner.next_seq += 1;
        let record = Arc::new(record);
        if inner.records.len() == self.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(record.clone());
        record
    }

    /// `(oldest_seq, latest_seq)` as a poll would report them.
    pub fn bounds(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let latest = inner.next_seq - 1;
        (inner.records.front().map_or(latest, |r| r.seq), latest)
    }

    /// The records after the query's cursor that match its filters, oldest first.
    pub fn query(&self, query: &LogQuery) -> LogPage {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let latest_seq = inner.next_seq - 1;
        let oldest_seq = inner.records.front().map_or(latest_seq, |r| r.seq);
        // A cursor beyond the newest record comes from an earlier run of the process (sequence
        // numbers restart at 1): start again from the oldest record instead of waiting forever.
        let after = query.after.filter(|after| *after <= latest_seq);
        let missed = match after {
            Some(after) if after + 1 < oldest_seq => oldest_seq - 1 - after,
            _ => 0,
        };
        let after_seq = after.unwrap_or(0);
        let start = (after_seq + 1).saturating_sub(oldest_seq) as usize;
        let mut records = Vec::new();
        let mut next_after = after_seq;
        for record in inner.records.iter().skip(start) {
            next_after = record.seq;
            if self::matches(record, query) {
                records.push(record.clone());
                if records.len() == limit {
                    break;
                }
            }
        }
        LogPage {
            records,
            next_after,
            oldest_seq,
            latest_seq,
            missed,
            capacity: self.capacity,
        }
    }
}

fn matches(record: &LogRecord, query: &LogQuery) -> bool {
    // tracing orders levels by verbosity: ERROR < WARN < INFO < DEBUG < TRACE.
    query.level.is_none_or(|min| record.level <= min)
        && query
            .payment_id
            .as_deref()
            .is_none_or(|id| record.field_str("payment_id") == Some(id))
        && query
            .request_id
            .as_deref()
            .is_none_or(|id| record.field_str("request_id") == Some(id))
}

/// Parses a level name (`warn`, `INFO`, ...).
pub fn parse_level(name: &str) -> Option<Level> {
    name.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        thread,
        time::Duration,
    };

    use super::*;

    fn record(level: Level, message: &str, fields: &[(&'static str, &str)]) -> LogRecord {
        LogRecord {
            seq: 0,
            timestamp: Utc::now(),
            level,
            service: "test",
            target: "telemetry::tests",
            message: message.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (*k, FieldValue::from(*v)))
                .collect(),
        }
    }

    fn seqs(page: &LogPage) -> Vec<u64> {
        page.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn timestamps_are_written_as_chrono_formats_them() {
        use chrono::TimeZone;
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 1_500)
            .unwrap()
            .and_utc();
        for at in [
            Utc.timestamp_millis_opt(0).unwrap(),
            Utc.timestamp_millis_opt(1_764_559_938_400).unwrap(),
            Utc.timestamp_millis_opt(1_764_559_938_009).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_nanos(1_764_559_938_999_999_999),
            leap,
        ] {
            let mut text = [0u8; TIMESTAMP_LEN];
            assert_eq!(
                format_timestamp(&at, &mut text),
                Some(at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string().as_str()),
                "{at:?}"
            );
        }
        // Out of four digits: the slow way, still chrono's text.
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format_timestamp(&far, &mut [0u8; TIMESTAMP_LEN]), None);
        let json = serde_json::to_string(&record_at(far)).unwrap();
        assert!(
            json.contains(r#""timestamp":"+10000-01-01T00:00:00.000Z""#),
            "{json}"
        );
    }

    fn record_at(timestamp: DateTime<Utc>) -> LogRecord {
        LogRecord {
            timestamp,
            ..record(Level::INFO, "m", &[])
        }
    }

    #[test]
    fn field_values_are_written_as_json_values() {
        let mut record = record(Level::INFO, "m", &[("s", "a \"quoted\" \n line")]);
        record.fields.set("i", FieldValue::from(-3i64));
        record.fields.set("u", FieldValue::from(7u64));
        record.fields.set("f", FieldValue::from(1.5f64));
        record.fields.set("nan", FieldValue::from(f64::NAN));
        record.fields.set("b", FieldValue::from(true));
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["fields"],
            serde_json::json!({
                "s": "a \"quoted\" \n line", "i": -3, "u": 7, "f": 1.5, "nan": null, "b": true
            })
        );
        // Set again: replaced in place, the order of first setting kept.
        record.fields.set("s", FieldValue::from("b"));
        let names: Vec<_> = record.fields.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["s", "i", "u", "f", "nan", "b"]);
        assert_eq!(record.field_str("s"), Some("b"));
        assert_eq!(record.field_str("i"), None);
    }

    #[test]
    fn an_empty_buffer_answers_an_empty_page_at_zero() {
        let page = LogBuffer::new(4).query(&LogQuery::default());
        assert!(page.records.is_empty());
        assert_eq!(
            (
                page.next_after,
                page.oldest_seq,
                page.latest_seq,
                page.missed
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn the_cursor_returns_only_newer_records_and_stays_put_when_nothing_is_new() {
        let buffer = LogBuffer::new(10);
        for i in 0..5 {
            buffer.push(record(Level::INFO, &format!("m{i}"), &[]));
        }
        let page = buffer.query(&LogQuery {
            after: Some(2),
            ..Default::default()
        });
        assert_eq!(seqs(&page), [3, 4, 5]);
        assert_eq!(page.next_after, 5);
        let again = buffer.query(&LogQuery {
            after: Some(5),
            ..Default::default()
        });
        assert!(again.records.is_empty());
        assert_eq!(again.next_after, 5);
    }

    #[test]
    fn limit_pages_through_the_records_without_gaps() {
        let buffer = LogBuffer::new(100);
        for i in 0..25 {
            buffer.push(record(Level::INFO, &format!("m{i}"), &[]));
        }
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = buffer.query(&LogQuery {
                after: Some(after),
                limit: Some(10),
                ..Default::default()
            });
            if page.records.is_empty() {
                break;
            }
            assert!(page.records.len() <= 10);
            seen.extend(seqs(&page));
            after = page.next_after;
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    }

    #[test]
    fn level_is_a_minimum_and_filters_match_fields() {
        let buffer = LogBuffer::new(10);
        buffer.push(record(Level::DEBUG, "d", &[("payment_id", "p1")]));
        buffer.push(record(Level::INFO, "i", &[("payment_id", "p1")]));
        buffer.push(record(Level::WARN, "w", &[("payment_id", "p2")]));
        buffer.push(record(Level::ERROR, "e", &[("request_id", "r1")]));
        let warn = buffer.query(&LogQuery {
            level: Some(Level::WARN),
            ..Default::default()
        });
        assert_eq!(seqs(&warn), [3, 4]);
        let p1 = buffer.query(&LogQuery {
            payment_id: Some("p1".into()),
            ..Default::default()
        });
        assert_eq!(seqs(&p1), [1, 2]);
        let r1 = buffer.query(&LogQuery {
            request_id: Some("r1".into()),
            ..Default::default()
        });
        assert_eq!(seqs(&r1), [4]);
        // A filtered poll still moves the cursor past what it scanned.
        assert_eq!(r1.next_after, 4);
    }

    #[test]
    fn a_poller_that_fell_behind_is_told_how_many_records_it_missed() {
        let buffer = LogBuffer::new(3);
        for i in 0..10 {
            buffer.push(record(Level::INFO, &format!("m{i}"), &[]));
        }
        let page = buffer.query(&LogQuery {
            after: Some(2),
            ..Default::default()
        });
        assert_eq!(seqs(&page), [8, 9, 10]);
        assert_eq!((page.oldest_seq, page.latest_seq, page.missed), (8, 10, 5));
        // A new poller (no cursor) has missed nothing.
        let fresh = buffer.query(&LogQuery::default());
        assert_eq!(fresh.missed, 0);
    }

    #[test]
    fn a_cursor_from_an_earlier_run_starts_again_from_the_oldest_record() {
        let buffer = LogBuffer::new(10);
        buffer.push(record(Level::INFO, "a", &[]));
        let page = buffer.query(&LogQuery {
            after: Some(500),
            ..Default::default()
        });
        assert_eq!(seqs(&page), [1]);
        assert_eq!(page.next_after, 1);
    }

    /// Many writers, a slow poller, a small buffer: every record the poller sees comes exactly
    /// once and in order, and every record it does not see is counted in `missed`.
    #[test]
    fn the_cursor_contract_holds_with_many_writers_and_a_slow_poller() {
        const WRITERS: usize = 8;
        const PER_WRITER: usize = 5_000;
        let buffer = Arc::new(LogBuffer::new(500));
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let buffer = buffer.clone();
                thread::spawn(move || {
                    for i in 0..PER_WRITER {
                        buffer.push(record(
                            Level::INFO,
                            "m",
                            &[("writer", &w.to_string()), ("i", &i.to_string())],
                        ));
                    }
                })
            })
            .collect();
        let poller = {
            let buffer = buffer.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut after = 0u64;
                let mut seen = 0u64;
                let mut missed = 0u64;
                let mut last_per_writer = [None::<usize>; WRITERS];
                let mut polls = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let page = buffer.query(&LogQuery {
                        after: Some(after),
                        limit: Some(97),
                        ..Default::default()
                    });
                    let first = after + page.missed + 1;
                    for (expected, r) in (first..).zip(&page.records) {
                        assert_eq!(r.seq, expected, "a gap or a repeat");
                        // Each writer's records appear in the order it wrote them.
                        let w: usize = r.field_str("writer").unwrap().parse().unwrap();
                        let i: usize = r.field_str("i").unwrap().parse().unwrap();
                        assert!(last_per_writer[w].is_none_or(|last| i > last));
                        last_per_writer[w] = Some(i);
                    }
                    seen += page.records.len() as u64;
                    missed += page.missed;
                    after = page.next_after;
                    polls += 1;
                    if finished && page.records.is_empty() {
                        return (seen, missed, after, polls);
                    }
                    // Slow: writers outrun it, so some records are evicted before it reads them.
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let (seen, missed, after, _) = poller.join().unwrap();
        let total = (WRITERS * PER_WRITER) as u64;
        assert_eq!(after, total);
        assert_eq!(seen + missed, total, "seen {seen} + missed {missed}");
        assert!(missed > 0, "the poller was meant to fall behind");
        // Memory stays bounded.
        assert_eq!(buffer.query(&LogQuery::default()).oldest_seq, total - 499);
    }
}
