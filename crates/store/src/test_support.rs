//! Test helpers (feature `test-support`): temporary directories and a throwaway PostgreSQL
//! server, for this crate's suite, the end-to-end tests and `run chaos` (whose store faults
//! crash-restart, stop and start the server through [`TempPostgres`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// How a [`TempPostgres`] is set up: [`PgSettings::default`] for tests (speed first), or with
/// commits that survive a crash of the server (`run chaos`).
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Prefix of the temporary directory's name.
    pub dir_prefix: &'static str,
    /// `synchronous_commit`: off, a commit may be answered before its WAL reaches the kernel,
    /// so a crash of the server can lose it; on, a commit the client saw survives a
    /// crash-restart (`fsync=off` either way: only a crash of the machine loses what the
    /// kernel has).
    pub synchronous_commit: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// How long `pg_ctl` waits for the server to accept connections, in seconds (`-t`).
    pub start_timeout_secs: u32,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            dir_prefix: "payment-store-pg",
            synchronous_commit: false,
            max_connections: 200,
            start_timeout_secs: 30,
        }
    }
}

/// A throwaway PostgreSQL server on a free loopback port, its data and unix socket in a
/// temporary directory, trusting every local connection (`initdb -A trust`), with fsync off.
/// It can be crash-restarted, stopped and started again ([`TempPostgres::crash_restart`],
/// [`TempPostgres::stop`], [`TempPostgres::start_again`]).
///
/// [`Drop`] stops it (`pg_ctl stop -m immediate`) and removes the directory. A watchdog shell
/// does the same once the test process has exited, so a server kept in a `static` (never
/// dropped, see [`pg_or_skip`]) or left behind by a panic does not outlive its tests.
///
/// `initdb` refuses to run as root; as root, the directory is given to the `postgres` user and
/// `initdb`/`pg_ctl` run as that user (`runuser -u postgres --`, else `su postgres -c`).
#[derive(Debug)]
pub struct TempPostgres {
    /// Holds the data directory, the socket and the server log.
    dir: PathBuf,
    /// Where `initdb`, `pg_ctl` and `createdb` are.
    bin: PathBuf,
    port: u16,
    /// Run server commands as the `postgres` user (we are root).
    as_postgres: bool,
    /// A null device node in `dir`, bind-mounted over `/dev/null` in a private mount namespace
    /// for the server commands, when the machine's `/dev/null` is broken (a plain file the
    /// `postgres` user cannot write, as in some sandboxes: `initdb` then fails).
    private_null: Option<PathBuf>,
    settings: PgSettings,
    /// The database created by [`TempPostgres::start`].
    url: String,
    /// Cleans up after the test process exits; killed by [`Drop`], which cleans up itself.
    watchdog: Option<std::process::Child>,
}

impl TempPostgres {
    /// Starts a server (trying a few ports if one is taken between picking and binding) and
    /// creates one database, whose URL [`TempPostgres::url`] gives.
    pub fn start() -> Result<Self, String> {
        Self::start_with(PgSettings::default())
    }

    /// [`TempPostgres::start`] with `settings`.
    pub fn start_with(settings: PgSettings) -> Result<Self, String> {
        let bin = find_bin_dir()?;
        let dir = std::env::temp_dir().join(unique_name(settings.dir_prefix));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server = Self {
            as_postgres: is_root(&dir)?,
            private_null: None,
            dir,
            bin,
            port: 0,
            settings,
            url: String::new(),
            watchdog: None,
        };
        // From here on, `Drop` cleans up whatever was made if a step fails.
        if server.as_postgres && !dev_null_is_a_device() {
            let null = server.dir.join("null");
            run(Command::new("mknod")
                .args(["-m", "666"])
                .arg(&null)
                .args(["c", "1", "3"]))?;
            server.private_null = Some(null);
        }
        if server.as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&server.dir))?;
        }
        // Before anything runs: whatever happens to this process, the server goes with it.
        server.watchdog = Some(server.spawn_watchdog()?);
        let data = server.data_dir().display().to_string();
        let initdb_args = [
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        run(&mut server.server_command("initdb", &initdb_args.map(str::to_owned)))
            .map_err(|e| format!("initdb failed: {e}"))?;
        let mut last_error = String::new();
        for _ in 0..3 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.url = server.new_database()?;
                    return Ok(server);
                }
                Err(error) => {
                    let log = server.server_log();
                    last_error = format!("{error}; server log: {}", log.trim());
                }
            }
        }
        Err(format!("pg_ctl start failed: {last_error}"))
    }

    /// Crash-restart: `pg_ctl restart -m immediate` (no shutdown checkpoint, so the server
    /// goes through crash recovery), waiting until it accepts connections again.
    pub fn crash_restart(&self) -> Result<(), String> {
        let data = self.data_dir().display().to_string();
        // `-l` as at the start: without it the new server would inherit (and hold open) the
        // pipes this command's output is read from, and reading them would never end.
        let log = self.log_file().display().to_string();
        let timeout = self.settings.start_timeout_secs.to_string();
        let args = [
            "-D",
            &data,
            "-l",
            &log,
            "-w",
            "-t",
            &timeout,
            "restart",
            "-m",
            "immediate",
        ];
        run(&mut self.server_command("pg_ctl", &args.map(str::to_owned)))
            .map_err(|e| format!("pg_ctl restart failed: {e}"))
    }

    /// `pg_ctl stop -m immediate`, waiting until the server is gone.
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data_dir().display().to_string();
        let args = ["-D", &data, "-w", "stop", "-m", "immediate"];
        run(&mut self.server_command("pg_ctl", &args.map(str::to_owned)))
            .map_err(|e| format!("pg_ctl stop failed: {e}"))
    }

    /// Starts the server again after [`TempPostgres::stop`], on the same port.
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl_start().map_err(|error| {
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "pg_ctl start failed: {error}; server log ends: {}",
                tail.join(" / ")
            )
        })
    }

    /// `pg_ctl start` on [`TempPostgres::port`] with the settings, waiting until it accepts
    /// connections.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let data = self.data_dir().display().to_string();
        let synchronous_commit = if self.settings.synchronous_commit {
            ""
        } else {
            " -c synchronous_commit=off"
        };
        let options = format!(
            "-k '{}' -c listen_addresses=127.0.0.1 -p {} -c fsync=off{synchronous_commit} \
             -c full_page_writes=off -c max_connections={}",
            self.dir.display(),
            self.port,
            self.settings.max_connections,
        );
        let log = self.log_file().display().to_string();
        let timeout = self.settings.start_timeout_secs.to_string();
        let args = [
            "-D", &data, "-l", &log, "-w", "-t", &timeout, "-o", &options, "start",
        ];
        run(&mut self.server_command("pg_ctl", &args.map(str::to_owned)))
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// What the server has logged so far (empty if nothing could be read).
    fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The database created at start: `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh, empty database and returns its URL, so tests sharing this server never
    /// see each other's data.
    pub fn new_database(&self) -> Result<String, String> {
        let name = unique_name("t").replace('-', "_");
        run(Command::new(self.tool("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name))?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The command line of server tool `tool` with `args`: run as the `postgres` user when we
    /// are root, and inside the `/dev/null` repair when that is needed.
    fn server_argv(&self, tool: &str, args: &[String]) -> Vec<String> {
        let mut argv = vec![self.tool(tool).display().to_string()];
        argv.extend(args.iter().cloned());
        if self.as_postgres {
            argv = if Path::new(RUNUSER).exists() {
                [RUNUSER, "-u", "postgres", "--"]
                    .iter()
                    .map(|w| (*w).to_owned())
                    .chain(argv)
                    .collect()
            } else {
                let line = argv
                    .iter()
                    .map(|word| shell_quote(word))
                    .collect::<Vec<_>>()
                    .join(" ");
                ["su", "postgres", "-s", "/bin/sh", "-c"]
                    .iter()
                    .map(|w| (*w).to_owned())
                    .chain([line])
                    .collect()
            };
        }
        if let Some(null) = &self.private_null {
            // A private mount namespace whose /dev/null is a real null device; the server
            // started in it keeps it. Nothing outside this namespace changes.
            let script = r#"mount --bind "$0" /dev/null && exec "$@""#;
            argv = ["unshare", "-m", "sh", "-c", script]
                .iter()
                .map(|w| (*w).to_owned())
                .chain([null.display().to_string()])
                .chain(argv)
                .collect();
        }
        argv
    }

    /// [`TempPostgres::server_argv`] as a [`Command`].
    fn server_command(&self, tool: &str, args: &[String]) -> Command {
        let argv = self.server_argv(tool, args);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }

    /// A shell that waits for this process to exit, then stops the server and removes the
    /// directory.
    fn spawn_watchdog(&self) -> Result<std::process::Child, String> {
        let stop = self.stop_command_line();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = shell_quote(&self.dir.display().to_string()),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the watchdog: {e}"))
    }

    /// `pg_ctl stop -m immediate` as a shell command line (as the right user).
    fn stop_command_line(&self) -> String {
        let data = self.data_dir().display().to_string();
        let args = ["-D", &data, "stop", "-m", "immediate"].map(str::to_owned);
        let argv = self.server_argv("pg_ctl", &args);
        argv.iter()
            .map(|word| shell_quote(word))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = Command::new("sh")
                .args(["-c", &self.stop_command_line()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RUNUSER: &str = "/usr/sbin/runuser";

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs `command` to completion (stdin closed, output captured); a failure says what ran and
/// what it printed.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{:?} failed ({}): {} {}",
        command.get_program(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    ))
}

/// Whether `/dev/null` is the character device it should be.
fn dev_null_is_a_device() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device())
}

/// Whether we run as root: the owner of a directory we just created.
fn is_root(fresh_dir: &Path) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(fresh_dir)
        .map_err(|e| format!("cannot stat {}: {e}", fresh_dir.display()))?;
    Ok(metadata.uid() == 0)
}

/// A loopback port nobody listened on a moment ago.
fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian, Ubuntu), else a directory on `PATH`,
/// holding `initdb`, `pg_ctl` and `createdb`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "createdb"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| complete(dir))
        .ok_or_else(|| {
            "PostgreSQL is not installed: no initdb/pg_ctl/createdb in /usr/lib/postgresql/*/bin \
             or on PATH"
                .to_owned()
        })
}

/// The one server of this test binary, started on first use; its start error is kept, so a
/// missing PostgreSQL is diagnosed once.
static SHARED: std::sync::OnceLock<Result<TempPostgres, String>> = std::sync::OnceLock::new();

/// Whether this is a CI run (`CI=true`; `.ci/run` exports it), where a missing optional
/// dependency fails the tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// The one rule for a test whose optional dependency (PostgreSQL, Chromium and ChromeDriver,
/// curl, promtool) is missing: under `CI=true` the test fails, so nothing skips silently in CI;
/// elsewhere it prints `SKIPPED: <what> not available: <reason>` and the caller returns.
/// `install` says how to get it.
pub fn skip_unless_ci(what: &str, reason: &str, install: &str) {
    if in_ci() {
        panic!("{what} not available (CI=true, so this is a failure): {reason}; {install}");
    }
    println!("SKIPPED: {what} not available: {reason} ({install})");
}

/// `Some(value)` when the dependency is there, else [`skip_unless_ci`] and `None`.
pub fn require<T>(what: &str, found: Result<T, String>, install: &str) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(reason) => {
            skip_unless_ci(what, &reason, install);
            None
        }
    }
}

/// The shared server of this test binary (started once), or `None` after printing
/// `SKIPPED: PostgreSQL not available: <reason>`. Under `CI=true` a missing server panics
/// instead: in CI a PostgreSQL test must run, never skip. Give each test its own database with
/// [`TempPostgres::new_database`].
pub fn pg_or_skip() -> Option<&'static TempPostgres> {
    require(
        "PostgreSQL",
        SHARED
            .get_or_init(TempPostgres::start)
            .as_ref()
            .map_err(Clone::clone),
        "`sudo bash .ci/setup` installs it",
    )
}
