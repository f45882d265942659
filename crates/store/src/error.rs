//! Store failures. The API answers every one of them with 503 `store_unavailable` (fail closed)
//! and logs the cause; none of them is ever shown to a client.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite failed under rusqlite (the group-commit writer or a point lookup).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations could not be applied at start.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded (a bug or a foreign write).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store was configured wrongly (bad URL, unwritable directory).
    #[error("configuration: {0}")]
    Config(String),
    /// The SQLite writer thread could not apply a write for a reason of its own (it lost the
    /// write's outcome, or it is not running); the write may or may not have been applied only
    /// where the message says so.
    #[error("SQLite writer: {0}")]
    Writer(String),
}
