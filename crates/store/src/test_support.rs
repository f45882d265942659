//! Test helpers (feature `test-support`): temporary directories and a throwaway PostgreSQL
//! server, for this crate's suite and the end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells temporary names of one process apart.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A name no other call in any process on this machine returns: prefix, pid, time, counter.
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/<prefix>-<unique>`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A throwaway PostgreSQL server (not written yet).
#[derive(Debug)]
pub struct TempPostgres {}

impl TempPostgres {
    /// A URL to a fresh database on this server.
    pub fn new_database(&self) -> Result<String, String> {
        Err("not written yet".to_owned())
    }
}

/// The shared server, or `None` (after printing why) when PostgreSQL is not available.
pub fn pg_or_skip() -> Option<&'static TempPostgres> {
    println!("SKIPPED: PostgreSQL not available: the launcher is not written yet");
    None
}
