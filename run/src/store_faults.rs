//! Store faults for `run chaos` (docs/contract.md §6): what is done to the payment store while the
//! traffic runs, and the means to do it.
//!
//! - **SQLite** (the default store, `payments.db` in the data directory):
//!   - *disk full*: as root, the data directory is a size-limited tmpfs mounted for the run
//!     ([`TmpfsMount`], unmounted on drop, whatever ends the run); the fault writes a filler file
//!     until `ENOSPC`, holds the disk full, then deletes it;
//!   - *lock timeout*: the runner opens the store file itself and holds `BEGIN IMMEDIATE` longer
//!     than the API's 5 s busy timeout, so the API's writes time out with `SQLITE_BUSY`.
//! - **PostgreSQL** (a throwaway server, [`PgServer`] from [`start_pg`], or `--database-url`):
//!   - *crash-restart*: `pg_ctl restart -m immediate` (no shutdown checkpoint: crash recovery);
//!   - *stop*: `pg_ctl stop -m immediate`, down for a few seconds, then started again;
//!   - *drop connections*: `pg_terminate_backend` on every other connection to the database.
//!
//!   With a user-given `--database-url` the runner cannot restart the server: only connections
//!   are dropped.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};

/// The kinds of store fault, as `--store-faults` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FaultKind {
    /// SQLite: the data directory's disk fills up, then frees again.
    DiskFull,
    /// SQLite: the runner holds the write lock longer than the API's busy timeout.
    Lock,
    /// PostgreSQL: `pg_ctl restart -m immediate`.
    PgRestart,
    /// PostgreSQL: stopped (immediate) for a few seconds, then started.
    PgStop,
    /// PostgreSQL: every other connection to the database terminated.
    PgDrop,
}

impl FaultKind {
    pub(crate) const ALL: [FaultKind; 5] = [
        FaultKind::DiskFull,
        FaultKind::Lock,
        FaultKind::PgRestart,
        FaultKind::PgStop,
        FaultKind::PgDrop,
    ];

    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::DiskFull => "disk-full",
            FaultKind::Lock => "lock",
            FaultKind::PgRestart => "pg-restart",
            FaultKind::PgStop => "pg-stop",
            FaultKind::PgDrop => "pg-drop",
        }
    }

    fn postgres(self) -> bool {
        matches!(
            self,
            FaultKind::PgRestart | FaultKind::PgStop | FaultKind::PgDrop
        )
    }

    /// How long the fault lasts once injected (the window the kills keep out of).
    pub(crate) fn hold(self) -> Duration {
        match self {
            FaultKind::DiskFull => Duration::from_secs(4),
            // Longer than the API's 5 s busy timeout, so its writes time out.
            FaultKind::Lock => Duration::from_secs(7),
            FaultKind::PgRestart => Duration::from_secs(2),
            FaultKind::PgStop => Duration::from_secs(5),
            FaultKind::PgDrop => Duration::from_millis(500),
        }
    }
}

/// `--store-faults`: `none`, `auto` (every fault the environment allows) or a comma-separated
/// list of [`FaultKind`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFaultChoice {
    None,
    Auto,
    Only(Vec<FaultKindName>),
}

/// A [`FaultKind`] as parsed from the command line (public for clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultKindName(pub(crate) FaultKind);

/// Parses `--store-faults`.
pub fn parse_store_faults(text: &str) -> Result<StoreFaultChoice, String> {
    match text.trim() {
        "none" => return Ok(StoreFaultChoice::None),
        "auto" => return Ok(StoreFaultChoice::Auto),
        _ => {}
    }
    let mut kinds = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind = FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == word)
            .ok_or_else(|| {
                format!(
                    "unknown store fault `{word}`; use none, auto, or a list of: {}",
                    FaultKind::ALL.map(FaultKind::name).join(", ")
                )
            })?;
        if !kinds.contains(&FaultKindName(kind)) {
            kinds.push(FaultKindName(kind));
        }
    }
    if kinds.is_empty() {
        return Err("--store-faults needs none, auto, or a list of faults".to_owned());
    }
    Ok(StoreFaultChoice::Only(kinds))
}

/// What the environment allows, and why not the rest.
#[derive(Debug, Clone, Default)]
pub(crate) struct Availability {
    pub(crate) kinds: Vec<FaultKind>,
    /// `(kind, reason)` for each fault that was asked for (or that `auto` would pick) and
    /// cannot be injected here.
    pub(crate) skipped: Vec<(FaultKind, String)>,
}

/// Which faults a run injects: `choice` against the store in use. `postgres` is `None` for
/// SQLite, else whether the runner owns the server; `root` whether it can mount a tmpfs.
pub(crate) fn available(
    choice: &StoreFaultChoice,
    postgres: Option<bool>,
    root: bool,
) -> anyhow::Result<Availability> {
    let wanted: Vec<FaultKind> = match choice {
        StoreFaultChoice::None => return Ok(Availability::default()),
        StoreFaultChoice::Auto => FaultKind::ALL
            .into_iter()
            .filter(|k| k.postgres() == postgres.is_some())
            .collect(),
        StoreFaultChoice::Only(kinds) => kinds.iter().map(|k| k.0).collect(),
    };
    let mut out = Availability::default();
    for kind in wanted {
        let reason = match (kind, postgres) {
            (k, None) if k.postgres() => Some(format!(
                "{} needs PostgreSQL (the store is SQLite)",
                k.name()
            )),
            (k, Some(_)) if !k.postgres() => {
                Some(format!("{} needs SQLite (the store is PostgreSQL)", k.name()))
            }
            (FaultKind::DiskFull, None) if !root => Some(
                "disk-full needs root to mount a size-limited tmpfs as the data directory; run `run chaos` as root (sudo) to include it"
                    .to_owned(),
            ),
            (FaultKind::PgRestart | FaultKind::PgStop, Some(false)) => Some(format!(
                "{} needs a server the runner owns; with --database-url it can only drop connections (omit --database-url and pass --postgres for a throwaway server)",
                kind.name()
            )),
            _ => None,
        };
        match reason {
            None => out.kinds.push(kind),
            Some(reason) if matches!(choice, StoreFaultChoice::Auto) => {
                out.skipped.push((kind, reason))
            }
            Some(reason) => bail!("--store-faults {}: {reason}", kind.name()),
        }
    }
    Ok(out)
}

/// Whether this process runs as root (owns a file it just created).
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = std::env::temp_dir().join(format!("run-root-probe-{}", std::process::id()));
    let root = std::fs::write(&probe, b"")
        .and_then(|()| std::fs::metadata(&probe))
        .is_ok_and(|m| m.uid() == 0);
    let _ = std::fs::remove_file(&probe);
    root
}

/// A size-limited tmpfs mounted on a directory for the run; unmounted on drop.
#[derive(Debug)]
pub(crate) struct TmpfsMount {
    path: PathBuf,
    size_mb: u64,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size_mb` MiB on `path` (created, must be empty).
    pub(crate) fn mount(path: &Path, size_mb: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if std::fs::read_dir(path)?.next().is_some() {
            bail!(
                "{} is not empty: cannot mount a tmpfs on it",
                path.display()
            );
        }
        run_tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mb}m,mode=0700"))
                .arg("tmpfs")
                .arg(path),
        )
        .context("mount -t tmpfs failed")?;
        Ok(Self {
            path: path.to_path_buf(),
            size_mb,
        })
    }

    pub(crate) fn size_mb(&self) -> u64 {
        self.size_mb
    }

    /// Copies the store files (not the filler) to `to`, so a failed run keeps its evidence.
    pub(crate) fn copy_out(&self, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(&self.path)?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy() == FILLER || !entry.path().is_file() {
                continue;
            }
            std::fs::copy(entry.path(), to.join(&name))?;
        }
        Ok(())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path.join(FILLER));
        let plain = Command::new("umount")
            .arg(&self.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !plain {
            // Something still holds a file open (a child not yet reaped): detach it now; the
            // kernel frees it when the last file closes.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The filler file's name in the data directory.
const FILLER: &str = "chaos-disk-filler";

/// Fills the file system of `dir` with a filler file until `ENOSPC` (bounded by `max_mb`).
/// Returns the MiB written.
pub(crate) fn fill_disk(dir: &Path, max_mb: u64) -> anyhow::Result<u64> {
    let path = dir.join(FILLER);
    let mut file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let chunk = vec![0xA5u8; 1 << 20];
    let mut written = 0u64;
    // Whole MiB first, then single KiB to take the last free blocks too.
    for size in [1usize << 20, 1 << 10] {
        for _ in 0..=(max_mb << 10) {
            match file.write_all(&chunk[..size]) {
                Ok(()) => written += size as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e).context("writing the filler file"),
            }
        }
    }
    let _ = file.flush();
    Ok(written >> 20)
}

/// Checkpoints the SQLite store at `db` and truncates its WAL to nothing, so the API's next
/// writes must grow the WAL again: on a full disk they then fail (a WAL whose space is already
/// allocated is recycled in place and would keep taking writes). Returns the WAL frames
/// checkpointed.
pub(crate) fn truncate_wal(db: &Path) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let (_busy, _log, checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .context("PRAGMA wal_checkpoint(TRUNCATE) failed")?;
    Ok(checkpointed)
}

/// Deletes the filler file: the disk has room again.
pub(crate) fn free_disk(dir: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(dir.join(FILLER)).context("cannot delete the filler file")
}

/// Holds SQLite's write lock on `db` for `hold` (`BEGIN IMMEDIATE`, then `ROLLBACK`). Returns
/// how long it waited to get the lock.
pub(crate) fn hold_sqlite_lock(db: &Path, hold: Duration) -> anyhow::Result<Duration> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let asked = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")
        .context("cannot take the write lock")?;
    let waited = asked.elapsed();
    std::thread::sleep(hold);
    conn.execute_batch("ROLLBACK")
        .context("cannot release the write lock")?;
    Ok(waited)
}

/// Terminates every other connection to the database of `url`; returns how many.
pub(crate) async fn drop_pg_connections(url: &str) -> anyhow::Result<u64> {
    use sqlx::{Connection, Row};
    let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| anyhow!("connecting to PostgreSQL timed out"))?
        .context("cannot connect to PostgreSQL")?;
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .context("pg_terminate_backend failed")?;
    let dropped: i64 = row.try_get(0)?;
    let _ = conn.close().await;
    Ok(dropped.max(0) as u64)
}

/// The throwaway PostgreSQL server the runner owns, so it can crash, stop and start it (the
/// store's test server: initdb/pg_ctl on a free loopback port, as the `postgres` user when
/// root). Stopped and removed on drop; a watchdog shell does the same if `run` itself dies
/// first.
pub(crate) use payment_store::test_support::TempPostgres as PgServer;

/// Starts a [`PgServer`] with `synchronous_commit` on, so a commit the API saw survives a
/// crash-restart (`fsync=off` is safe here: a crash of the server, not of the machine, loses
/// nothing the kernel has), and room for the connections of several API instances.
pub(crate) fn start_pg() -> anyhow::Result<PgServer> {
    PgServer::start_with(payment_store::test_support::PgSettings {
        dir_prefix: "run-chaos-pg",
        synchronous_commit: true,
        max_connections: 300,
        start_timeout_secs: 60,
    })
    .map_err(anyhow::Error::msg)
}

/// Runs `command` to completion; a failure says what it printed.
fn run_tool(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{:?} failed ({}): {} {}",
        command.get_program(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_none_auto_or_a_list() {
        assert_eq!(parse_store_faults("none"), Ok(StoreFaultChoice::None));
        assert_eq!(parse_store_faults("auto"), Ok(StoreFaultChoice::Auto));
        assert_eq!(
            parse_store_faults("lock,pg-drop,lock"),
            Ok(StoreFaultChoice::Only(vec![
                FaultKindName(FaultKind::Lock),
                FaultKindName(FaultKind::PgDrop)
            ]))
        );
        assert!(parse_store_faults("fire")
            .unwrap_err()
            .contains("disk-full"));
        assert!(parse_store_faults(",").is_err());
    }

    #[test]
    fn auto_picks_what_the_store_and_the_environment_allow() {
        let sqlite_root = available(&StoreFaultChoice::Auto, None, true).unwrap();
        assert_eq!(sqlite_root.kinds, [FaultKind::DiskFull, FaultKind::Lock]);
        let sqlite_user = available(&StoreFaultChoice::Auto, None, false).unwrap();
        assert_eq!(sqlite_user.kinds, [FaultKind::Lock]);
        assert!(sqlite_user.skipped[0].1.contains("needs root"));
        let owned = available(&StoreFaultChoice::Auto, Some(true), false).unwrap();
        assert_eq!(
            owned.kinds,
            [FaultKind::PgRestart, FaultKind::PgStop, FaultKind::PgDrop]
        );
        let given = available(&StoreFaultChoice::Auto, Some(false), true).unwrap();
        assert_eq!(given.kinds, [FaultKind::PgDrop]);
        assert_eq!(given.skipped.len(), 2);
        assert!(available(&StoreFaultChoice::None, None, true)
            .unwrap()
            .kinds
            .is_empty());
    }

    #[test]
    fn an_explicit_fault_the_environment_cannot_inject_is_an_error() {
        let only = |k| StoreFaultChoice::Only(vec![FaultKindName(k)]);
        assert!(available(&only(FaultKind::PgStop), Some(false), true).is_err());
        assert!(available(&only(FaultKind::DiskFull), None, false).is_err());
        assert!(available(&only(FaultKind::Lock), Some(true), true).is_err());
        assert!(available(&only(FaultKind::Lock), None, false).is_ok());
    }

    #[test]
    fn the_lock_is_held_and_released() {
        let dir = tempfile::Builder::new()
            .prefix("run-lock-test-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
            .unwrap();
        let holder = {
            let db = db.clone();
            std::thread::spawn(move || hold_sqlite_lock(&db, Duration::from_millis(600)))
        };
        // Readiness, not a sleep: poll until the holder has the lock (our write is refused).
        conn.busy_timeout(Duration::ZERO).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut refused = false;
        while Instant::now() < deadline && !refused {
            // Polled, not spun: a writer retrying back to back would starve the holder.
            std::thread::sleep(Duration::from_millis(20));
            refused = conn.execute("INSERT INTO t VALUES (1)", []).is_err();
        }
        assert!(refused, "the holder never took the lock");
        holder.join().unwrap().unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    }
}
