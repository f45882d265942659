//! Starting, watching, restarting and stopping the children.
//!
//! Each child gets one task that owns its process for its whole life: it spawns the process in a
//! process group of its own (so a terminal's Ctrl-C reaches `run` alone and `run` decides the
//! order of shutdown), prefixes every output line with the child's name, waits for its health
//! check, and restarts it with exponential backoff when it dies — up to a cap of restarts in a
//! window, after which it gives up loudly and brings the whole system down. Each child's stdin
//! is a pipe held by `run`: if `run` itself is killed, the pipe closes and the child exits.

use std::{
    collections::VecDeque,
    ffi::OsString,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Context};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

/// How a child is started and checked.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub(crate) name: &'static str,
    pub(crate) args: Vec<OsString>,
    pub(crate) health_url: reqwest::Url,
    pub(crate) ready_timeout: Duration,
    /// Extra environment (for values that must not appear in the process list).
    pub(crate) env: Vec<(String, String)>,
}

/// Restart policy: backoff doubles from `initial` to `max`; more than `max_restarts` within
/// `window` means the child is broken, not unlucky.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RestartPolicy {
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_restarts: usize,
    pub(crate) window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Time a child gets to exit after SIGTERM before it is killed: longer than the API's default
/// drain (deadline 10 s + margin 2 s), so a stop never cuts a drain short.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running, supervised child.
#[derive(Debug)]
pub(crate) struct Supervised {
    pub(crate) name: &'static str,
    /// The current pid; changes on restart.
    pid: Arc<AtomicU32>,
    /// Set by [`Supervised::kill`]: the next exit was ordered (chaos), so it is restarted at
    /// once and does not count toward giving up.
    killed_on_purpose: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    pub(crate) fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// A handle that can kill this child as a crash would (see [`Killer::kill`]).
    pub(crate) fn killer(&self) -> Killer {
        Killer {
            pid: self.pid.clone(),
            killed_on_purpose: self.killed_on_purpose.clone(),
        }
    }
}

/// Kills one supervised child with SIGKILL on purpose (the chaos verifier's API kills).
#[derive(Debug, Clone)]
pub(crate) struct Killer {
    pid: Arc<AtomicU32>,
    killed_on_purpose: Arc<AtomicBool>,
}

impl Killer {
    /// Sends SIGKILL to the child's current process. The supervisor restarts it without backoff
    /// and without counting it toward its cap. Returns the pid killed, or `None` when no process
    /// was running (e.g. it is being restarted).
    pub(crate) fn kill(&self) -> Option<u32> {
        let pid = self.pid.load(Ordering::Relaxed);
        if pid == 0 {
            return None;
        }
        self.killed_on_purpose.store(true, Ordering::SeqCst);
        #[cfg(unix)]
        {
            use nix::{sys::signal, unistd::Pid};
            if signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL).is_err() {
                self.killed_on_purpose.store(false, Ordering::SeqCst);
                return None;
            }
        }
        Some(pid)
    }
}

/// Owns the children and the stop signal they all watch.
#[derive(Debug)]
pub(crate) struct Supervisor {
    stop: watch::Sender<bool>,
    /// A child that gave up sends its reason here; `run` then stops everything.
    fatal_tx: mpsc::UnboundedSender<String>,
    fatal_rx: mpsc::UnboundedReceiver<String>,
    children: Vec<Supervised>,
    policy: RestartPolicy,
}

impl Supervisor {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        Self {
            stop: watch::channel(false).0,
            fatal_tx,
            fatal_rx,
            children: Vec::new(),
            policy,
        }
    }

    /// Starts `spec` and returns once it answers its health check (or fails to).
    pub(crate) async fn start(&mut self, spec: ChildSpec) -> anyhow::Result<&Supervised> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let pid = Arc::new(AtomicU32::new(0));
        let killed_on_purpose = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(supervise(
            spec.clone(),
            self.policy,
            self.stop.subscribe(),
            ready_tx,
            self.fatal_tx.clone(),
            pid.clone(),
            killed_on_purpose.clone(),
        ));
        self.children.push(Supervised {
            name: spec.name,
            pid,
            killed_on_purpose,
            task,
        });
        ready_rx
            .await
            .map_err(|_| anyhow!("the {} supervisor stopped unexpectedly", spec.name))??;
        Ok(self.children.last().expect("just pushed"))
    }

    pub(crate) fn children(&self) -> &[Supervised] {
        &self.children
    }

    /// The child called `name`, if it was started.
    pub(crate) fn child(&self, name: &str) -> Option<&Supervised> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Resolves with the reason when a child gives up.
    pub(crate) async fn fatal(&mut self) -> String {
        self.fatal_rx
            .recv()
            .await
            .unwrap_or_else(|| "supervisor channel closed".to_owned())
    }

    /// Stops every child (newest first, so the dashboard and API go before the bank) and waits.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for child in self.children.into_iter().rev() {
            let _ = child.task.await;
        }
    }
}

async fn supervise(
    spec: ChildSpec,
    policy: RestartPolicy,
    mut stop: watch::Receiver<bool>,
    ready_tx: oneshot::Sender<anyhow::Result<()>>,
    fatal_tx: mpsc::UnboundedSender<String>,
    pid_slot: Arc<AtomicU32>,
    killed_on_purpose: Arc<AtomicBool>,
) {
    let mut ready_tx = Some(ready_tx);
    let mut backoff = policy.initial_backoff;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(error) => {
                report_failure(
                    &mut ready_tx,
                    &fatal_tx,
                    error.context(format!("cannot start the {}", spec.name)),
                );
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        killed_on_purpose.store(false, Ordering::SeqCst);
        pid_slot.store(pid, Ordering::Relaxed);
        // Held while the child lives (`Child::wait` would close it), closed by `terminate`.
        let mut stdin = child.stdin.take();
        let started = Instant::now();

        let readiness = tokio::select! {
            ready = wait_ready(&spec) => Some(ready),
            status = child.wait() => {
                let error = anyhow!("the {} exited before it was ready ({})", spec.name, describe(status));
                if ready_tx.is_some() {
                    report_failure(&mut ready_tx, &fatal_tx, error);
                    return;
                }
                eprintln!("[run] {error}");
                None
            }
            _ = stop.changed() => { terminate(spec.name, &mut child, &mut stdin).await; return; }
        };
        match readiness {
            Some(Ok(())) => match ready_tx.take() {
                Some(tx) => {
                    let _ = tx.send(Ok(()));
                }
                None => println!("[run] {} is back (pid {pid})", spec.name),
            },
            Some(Err(error)) => {
                terminate(spec.name, &mut child, &mut stdin).await;
                report_failure(&mut ready_tx, &fatal_tx, error);
                return;
            }
            None => {}
        }
        if readiness.is_some() {
            tokio::select! {
                status = child.wait() => {
                    eprintln!("[run] {} (pid {pid}) exited: {}", spec.name, describe(status));
                }
                _ = stop.changed() => { terminate(spec.name, &mut child, &mut stdin).await; return; }
            }
        }

        pid_slot.store(0, Ordering::Relaxed);
        // An ordered kill is not a sign of a broken child: restart at once, uncounted.
        if killed_on_purpose.swap(false, Ordering::SeqCst) {
            eprintln!(
                "[run] the {} was killed on purpose; restarting it now (not counted toward the cap)",
                spec.name
            );
            continue;
        }
        // A child that stayed up a while earns a fresh backoff.
        if started.elapsed() > policy.window {
            backoff = policy.initial_backoff;
        }
        let now = Instant::now();
        restarts.retain(|t| now.duration_since(*t) < policy.window);
        if restarts.len() >= policy.max_restarts {
            let reason = format!(
                "the {} died {} times within {:?}; giving up",
                spec.name,
                restarts.len() + 1,
                policy.window
            );
            eprintln!("[run] {reason}");
            let _ = fatal_tx.send(reason);
            return;
        }
        restarts.push_back(now);
        eprintln!(
            "[run] restarting the {} in {:?} (restart {} of at most {} per {:?})",
            spec.name,
            backoff,
            restarts.len(),
            policy.max_restarts,
            policy.window
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

fn report_failure(
    ready_tx: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
    fatal_tx: &mpsc::UnboundedSender<String>,
    error: anyhow::Error,
) {
    match ready_tx.take() {
        Some(tx) => {
            let _ = tx.send(Err(error));
        }
        None => {
            let _ = fatal_tx.send(format!("{error:#}"));
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    }
}

fn spawn(spec: &ChildSpec) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find this executable to re-run it")?;
    let mut command = Command::new(exe);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn()?;
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let name = spec.name;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{name:>11} | {line}");
            }
        });
    }
    Ok(child)
}

/// Polls the child's health check until it answers 200 or the timeout passes.
async fn wait_ready(spec: &ChildSpec) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("cannot build an HTTP client")?;
    let deadline = Instant::now() + spec.ready_timeout;
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        interval.tick().await;
        if let Ok(response) = client.get(spec.health_url.clone()).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "the {} did not answer {} within {:?}",
                spec.name,
                spec.health_url,
                spec.ready_timeout
            ));
        }
    }
}

/// SIGTERM, then SIGKILL if the child is still there after [`STOP_GRACE`].
async fn terminate(name: &str, child: &mut Child, stdin: &mut Option<tokio::process::ChildStdin>) {
    if let Some(pid) = child.id() {
        #[cfg(unix)]
        {
            use nix::{sys::signal, unistd::Pid};
            let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM);
        }
        // Close its stdin too: the child's watcher of that pipe is a blocking read that would
        // otherwise keep its runtime from shutting down after the server stopped.
        drop(stdin.take());
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(_) => println!("[run] stopped the {name} (pid {pid})"),
            Err(_) => {
                eprintln!(
                    "[run] the {name} (pid {pid}) ignored SIGTERM for {STOP_GRACE:?}; killing it"
                );
                let _ = child.kill().await;
            }
        }
    }
}
