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
use crate::{KeyRecord, StoreError};

/// Read-only connections: enough that the API's worker threads rarely share one.
const CONNECTIONS: usize = 4;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 16;

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
}
