//! Point lookups on SQLite, run on the calling thread: owns a handful of read-only connections
//! with prepared statements, each behind a mutex. The SQL and the row mapping are
//! [`super::sql`]'s.
//!
//! sqlx runs every SQLite statement on its connection's own thread and hands the result back
//! through a channel. For a read by primary key (a few microseconds of SQLite work) that hand-off
//! was most of the cost: on the breaker-open path, where every new key needs one such read before
//! its 503, the profile put 19% of the API's samples in the sqlx worker and 17% in the hand-off
//! (docs/performance.md). Here the read runs inline. Under WAL a reader never waits for the
//! writer, so it does not block the async worker for longer than the read itself.

use std::path::Path;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Mutex,
};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::sql;
use crate::webhooks::{
    self, AttemptRecord, DeliveryRecord, EndpointRecord, EventQuery, EventRecord,
};
use crate::{convert, KeyRecord, StoreError};

/// Read-only connections: enough that the API's worker threads rarely share one.
const CONNECTIONS: usize = 4;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 32;

/// The lookup connections of one database file.
pub(crate) struct Lookups {
    connections: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("connections", &self.connections.len())
            .finish()
    }
}

impl Lookups {
    /// Opens read-only connections to the (already created and migrated) database at `path`;
    /// a read that must wait for the file (rare under WAL) waits at most `busy_timeout`.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let connections = (0..CONNECTIONS)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )?;
                conn.busy_timeout(busy_timeout)?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `read` on a free connection (or waits for one).
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.connections.len();
        for i in 0..n {
            if let Ok(conn) = self.connections[(start + i) % n].try_lock() {
                return read(&conn);
            }
        }
        let conn = self.connections[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        read(&conn)
    }

    /// The key `(tenant, key)` with its payment's status and lease, if stored.
    pub(crate) fn find_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(sql::KEY_SELECT)?;
            let found = statement
                .query_row((tenant, key), |row| Ok(sql::key_from_row(row)))
                .optional()?;
            found.transpose()
        })
    }

    /// Webhook endpoints of `tenant` (all if `None`), oldest first.
    pub(crate) fn endpoints(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.with(|conn| {
            let (text, params) = match tenant {
                Some(tenant) => (sql::endpoints_of(), vec![tenant]),
                None => (sql::all_endpoints(), vec![]),
            };
            let mut statement = conn.prepare_cached(&text)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
                Ok(sql::endpoint_from_row(row))
            })?;
            rows.map(|row| row?).collect()
        })
    }

    /// A webhook endpoint by id (of `tenant`, when given).
    pub(crate) fn endpoint(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(&sql::endpoint_by_id())?
                .query_row((id, tenant), |row| Ok(sql::endpoint_from_row(row)))
                .optional()?
                .transpose()
        })
    }

    /// An event by id (of `tenant`, when given).
    pub(crate) fn event(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(&sql::event_by_id())?
                .query_row((id, tenant), |row| Ok(sql::event_from_row(row)))
                .optional()?
                .transpose()?
                .map(|event| sql::fill_payload(conn, event))
                .transpose()
        })
    }

    /// Events newest first, filtered and paged.
    pub(crate) fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        use rusqlite::types::Value;
        let mut text = format!(
            "SELECT {} FROM webhook_events e WHERE 1 = 1",
            sql::EVENT_COLUMNS
        );
        let mut params: Vec<Value> = Vec::new();
        let mut push = |clause: &str, value: Value, text: &mut String| {
            params.push(value);
            text.push_str(&clause.replace('?', &format!("?{}", params.len())));
        };
        if let Some(tenant) = &q.tenant {
            push(" AND tenant = ?", Value::Text(tenant.clone()), &mut text);
        }
        if let Some(event_type) = &q.event_type {
            push(
                " AND event_type = ?",
                Value::Text(event_type.clone()),
                &mut text,
            );
        }
        if let Some(state) = q.delivery_state {
            push(
                " AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = ?)",
                Value::Text(state.as_str().to_owned()),
                &mut text,
            );
        }
        if let Some(before) = &q.before {
            push(" AND id < ?", Value::Text(before.clone()), &mut text);
        }
        push(
            " ORDER BY id DESC LIMIT ?",
            Value::Integer(convert::page_limit(q.limit)),
            &mut text,
        );
        self.with(|conn| {
            let mut statement = conn.prepare(&text)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
                Ok(sql::event_from_row(row))
            })?;
            let events = rows
                .map(|row| row?)
                .collect::<Result<Vec<_>, StoreError>>()?;
            events
                .into_iter()
                .map(|event| sql::fill_payload(conn, event))
                .collect()
        })
    }

    /// Every delivery of an event, with its attempts, read from one snapshot: the writer
    /// records an attempt and its delivery's next state in one transaction, and two separate
    /// reads could straddle it (a delivery `delivered` without the attempt that delivered it).
    pub(crate) fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.with(|conn| {
            // A deferred read transaction: in WAL mode its first read fixes the snapshot that
            // both statements see.
            let snapshot = conn.unchecked_transaction()?;
            let all = Self::deliveries_in(conn, event_id)?;
            snapshot.finish()?;
            Ok(all)
        })
    }

    fn deliveries_in(
        conn: &rusqlite::Connection,
        event_id: &str,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        {
            let mut attempts = conn.prepare_cached(sql::ATTEMPTS_OF)?;
            let mut by_endpoint: std::collections::HashMap<String, Vec<AttemptRecord>> =
                std::collections::HashMap::new();
            let mut rows = attempts.query([event_id])?;
            while let Some(row) = rows.next()? {
                let status: Option<i64> = row.get("status")?;
                let latency: i64 = row.get("latency_ms")?;
                by_endpoint
                    .entry(row.get("endpoint_id")?)
                    .or_default()
                    .push(AttemptRecord {
                        attempt: convert::attempts(row.get("attempt")?)?,
                        at: convert::from_ms(row.get("at")?)?,
                        status: status.map(convert::http_status).transpose()?,
                        latency_ms: u64::try_from(latency).unwrap_or(0),
                        error: row.get("error")?,
                    });
            }
            let mut deliveries = conn.prepare_cached(sql::DELIVERIES_OF)?;
            let mut rows = deliveries.query([event_id])?;
            let mut all = Vec::new();
            while let Some(row) = rows.next()? {
                let endpoint_id: String = row.get("endpoint_id")?;
                let state: String = row.get("state")?;
                all.push(DeliveryRecord {
                    event_id: row.get("event_id")?,
                    attempts: by_endpoint.remove(&endpoint_id).unwrap_or_default(),
                    endpoint_id,
                    state: webhooks::parse_delivery_state(&state)?,
                    failures: convert::attempts(row.get("failures")?)?,
                    next_attempt_at: convert::from_ms_opt(row.get("next_attempt_at")?)?,
                });
            }
            Ok(all)
        }
    }

    /// How many deliveries are pending.
    pub(crate) fn delivery_backlog(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            let count: i64 = conn
                .prepare_cached(sql::DELIVERY_BACKLOG)?
                .query_row([], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }
}
