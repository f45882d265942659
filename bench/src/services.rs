//! The services under test, started as real processes (release binaries), with their logs on
//! and written to files, and the `/proc` figures (RSS, CPU time) the report shows.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::serve::Kind;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

/// A started service; killed when dropped.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
    child: Child,
}

impl Service {
    /// Starts `binary` listening on a free loopback port, its stdout and stderr (the JSON log
    /// lines) appended to `dir/<name>.log`, and waits for `/health`. `DATABASE_URL` is not
    /// passed on from our environment: a store is chosen by `args` alone.
    pub(crate) async fn start(
        name: &'static str,
        binary: &Path,
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(name, binary, &[], dir, args, env).await
    }

    /// Starts reference server `kind` (`bench serve <kind>`, this same executable) as
    /// [`Service::start`] starts a binary; `name` is `kind`'s name.
    pub(crate) async fn start_reference(
        kind: Kind,
        dir: &Path,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        Self::launch(
            kind.as_str(),
            &exe,
            &["serve", kind.as_str()],
            dir,
            args,
            &[],
        )
        .await
    }

    async fn launch(
        name: &'static str,
        binary: &Path,
        leading: &[&str],
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(leading)
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut service = Self {
            name,
            addr,
            log,
            child,
        };
        service.wait_healthy(Duration::from_secs(30)).await?;
        Ok(service)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was healthy; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if crate::simple_request(self.addr, "GET", "/health", &[], "")
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not become healthy within {timeout:?}", self.name)
    }

    /// Resident set size in bytes.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }
}

/// A process (or group of processes) whose CPU time a phase reports.
pub(crate) trait CpuUser {
    fn name(&self) -> &'static str;
    /// User + system CPU time used so far.
    fn cpu(&self) -> Option<Duration>;
}

impl CpuUser for Service {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu(&self) -> Option<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime from a `/proc/.../stat` file.
pub(crate) fn cpu_time(stat_path: &str) -> Option<Duration> {
    let fields = stat_fields(stat_path)?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / USER_HZ))
}

/// The fields of a `/proc/.../stat` file after the command name (which may contain spaces):
/// index 0 is field 3 (state), 1 the parent pid, 11 utime, 12 stime, 13 cutime, 14 cstime.
pub(crate) fn stat_fields(stat_path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Ticks of `/proc/.../stat` as a duration.
pub(crate) fn ticks(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / USER_HZ)
}

/// The directory holding the service binaries: next to this executable, after building them
/// with the cargo that built us (same profile, same target directory) unless `no_build`.
pub(crate) fn binaries(no_build: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("the bench executable has no directory")?
        .to_path_buf();
    if !no_build {
        let profile = if cfg!(debug_assertions) {
            vec![]
        } else {
            vec!["--release"]
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "payment-api", "-p", "mock-bank"])
            .args(profile)
            .status()
            .context("cannot run cargo to build payment-api and mock-bank")?;
        if !status.success() {
            bail!("building payment-api and mock-bank failed");
        }
    }
    for name in ["payment-api", "mock-bank"] {
        if !dir.join(name).exists() {
            bail!("{} not found in {}", name, dir.display());
        }
    }
    Ok(dir)
}
