//! The `postgres` phase's database: a throwaway PostgreSQL server from the store's test support
//! ([`TempPostgres`]: `initdb`/`pg_ctl`, as the `postgres` user when we are root), with
//! `synchronous_commit=on` (a commit is answered once its WAL is written) but, as every
//! `TempPostgres`, `fsync=off`: it never waits for the disk, so the `postgres` phase is an
//! upper bound beside SQLite's `synchronous=FULL`. Dropping it stops the server and removes its
//! directory (and a watchdog does the same if the bench dies).
//!
//! Its CPU time is the postmaster's (with its exited children's) plus its live backends'.

use std::time::Duration;

use payment_store::test_support::{PgSettings, TempPostgres};

use crate::services::{stat_fields, ticks, CpuUser};

#[derive(Debug)]
pub(crate) struct PgServer {
    server: TempPostgres,
    /// The postmaster's pid, when it could be found (else no CPU figure).
    postmaster: Option<u32>,
}

impl PgServer {
    /// Starts the server (blocking work, off the runtime's threads).
    pub(crate) async fn start() -> Result<Self, String> {
        let server = tokio::task::spawn_blocking(|| {
            TempPostgres::start_with(PgSettings {
                dir_prefix: "rp-bench-pg",
                synchronous_commit: true,
                max_connections: 200,
                start_timeout_secs: 30,
            })
        })
        .await
        .map_err(|e| format!("the start task failed: {e}"))??;
        let postmaster = find_postmaster(server.port());
        Ok(Self { server, postmaster })
    }

    /// The URL of the database created at start.
    pub(crate) fn url(&self) -> &str {
        self.server.url()
    }
}

impl CpuUser for PgServer {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn cpu(&self) -> Option<Duration> {
        let postmaster = self.postmaster?;
        let fields = stat_fields(&format!("/proc/{postmaster}/stat"))?;
        // utime, stime, cutime, cstime: its own and its waited-for children's.
        let mut total: u64 = (11..15)
            .map(|i| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        for pid in pids() {
            let Some(fields) = stat_fields(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(postmaster) {
                total += (11..13)
                    .map(|i| {
                        fields
                            .get(i)
                            .and_then(|f| f.parse::<u64>().ok())
                            .unwrap_or(0)
                    })
                    .sum::<u64>();
            }
        }
        Some(ticks(total))
    }
}

/// Every pid in `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The `postgres` process started with `-p <port>` (`pg_ctl` passes the options on its
/// command line).
fn find_postmaster(port: u16) -> Option<u32> {
    let port = port.to_string();
    pids().find(|pid| {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        argv.first().is_some_and(|a| a.ends_with(b"postgres"))
            && argv
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == port.as_bytes())
    })
}
