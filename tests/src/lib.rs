//! End-to-end harness: starts the real service binaries as OS processes on free loopback ports
//! and waits for their health checks, so tests drive the system exactly as a user would.
//!
//! Binaries are found next to the test executable (`cargo test --workspace` builds them: each
//! service package has an integration test of its own CLI); if one is missing it is built with
//! the same cargo that built the tests.
//!
//! [`raw_http`]: raw HTTP/1.1 requests and the problem+json check, also used by the services'
//! own suites.

pub mod raw_http;

/// The one skip-or-fail rule for optional dependencies (PostgreSQL, Chromium, curl, promtool):
/// missing under `CI=true` fails the test, elsewhere it is skipped with a printed reason.
pub use payment_store::test_support::{in_ci, require, skip_unless_ci};

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    ops::Deref,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Once},
    time::{Duration, Instant},
};

/// A dev API key used by the tests (a test fixture, not a secret of any deployment).
pub const TEST_API_KEY: &str = "sk_test_e2e_0123456789abcdef";
/// The tenant of [`TEST_API_KEY`].
pub const TEST_TENANT: &str = "e2e";
/// The operator key every API started here also accepts (`--operator-keys`): status, logs,
/// breaker controls, reads across tenants. A test fixture too.
pub const TEST_OPERATOR_KEY: &str = "sk_test_e2e_operator_0123456789abcdef";
/// The name [`TEST_OPERATOR_KEY`] acts under (the breaker history and the logs show it).
pub const TEST_OPERATOR: &str = "e2e-ops";

/// Path of a workspace binary, building it if needed.
pub fn binary(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = target_dir();
    let path = dir.join(name);
    if !path.exists() {
        BUILD.call_once(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--bins", "--workspace"])
                .status()
                .expect("cannot run cargo to build the service binaries");
            assert!(status.success(), "building the service binaries failed");
        });
    }
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

fn target_dir() -> PathBuf {
    // target/<profile>/deps/<test-exe> → target/<profile>
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a directory");
    let profile = if deps.ends_with("deps") {
        deps.parent().unwrap()
    } else {
        deps
    };
    profile.to_path_buf()
}

/// A free loopback port (bound, read, released; the caller binds it moments later).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh private directory under the system temp dir (`rp-<label>-…`), removed with everything
/// in it when the last [`TempDir`] handle to it is dropped, whether the test passed or failed.
pub fn temp_dir(label: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("rp-{label}-"))
        .tempdir()
        .unwrap();
    TempDir(Arc::new(dir))
}

/// A directory made by [`temp_dir`]; it derefs to its [`Path`]. Clones share it: it is removed
/// when the last one is dropped. A [`Process`] started on it (by [`start_api`] and the like, or
/// given it with [`Process::hold`]) holds a clone, so the directory is removed only after the
/// process is stopped, even when the test's own handle was a temporary.
#[derive(Debug, Clone)]
pub struct TempDir(Arc<tempfile::TempDir>);

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// A service process that is killed when dropped, with its output captured line by line.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    pub child: Child,
    pub addr: Option<SocketAddr>,
    lines: mpsc::Receiver<String>,
    /// Directories the process uses: dropped (and removed) after the process is killed, since
    /// fields drop after [`Drop::drop`] has run.
    dirs: Vec<TempDir>,
}

impl Process {
    /// Starts `binary` with `args`; output (stdout and stderr) is collected for [`Self::next_line`].
    pub fn start(name: &str, binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            addr: None,
            lines,
            dirs: Vec::new(),
        }
    }

    /// Keeps `dir` (a handle to it) for as long as this process lives: it is removed no
    /// earlier than when the process is killed and dropped.
    pub fn hold(&mut self, dir: &TempDir) {
        self.dirs.push(dir.clone());
    }

    /// The next output line, or `None` after `timeout` (or when the process closed its output).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one satisfies `pred`, within `timeout`; returns every line read.
    pub fn read_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no matching line within {timeout:?}; output so far:\n{}",
            self.name,
            seen.join("\n")
        );
    }

    /// Polls `/health` until it answers 200; fails at once, with the process's output, if the
    /// process exits first (a bad flag, a taken port).
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let url = format!("{}/health", self.url());
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let output: Vec<String> = self.lines.try_iter().collect();
                panic!(
                    "{} exited ({status}) before it was healthy:\n{}",
                    self.name,
                    output.join("\n")
                );
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{url} did not become healthy within {timeout:?}");
    }

    /// The base URL (`http://addr`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("the process has an address"))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut self.child, timeout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to `pid` (ignoring a process that is already gone).
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// True while a process with `pid` exists (and is not a zombie of ours).
pub fn alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 is the state; Z is a zombie: exited, only waiting to be reaped.
    !status.is_empty() && status.split_whitespace().nth(2) != Some("Z")
}

/// Polls until the child exits or `timeout` passes.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Starts the mock bank binary on a free port and waits for it.
pub async fn start_bank(extra: &[&str]) -> Process {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str(), "--log-format", "json"];
    args.extend_from_slice(extra);
    let mut bank = Process::start("mock-bank", &binary("mock-bank"), &args, &[]);
    bank.addr = Some(listen.parse().unwrap());
    bank.wait_healthy(Duration::from_secs(30)).await;
    bank
}

/// Starts one mock bank per entry of `extra` (each its own flags, e.g. its own admin token), on
/// free ports, and waits for all of them; in the order given.
pub async fn start_banks(extra: &[&[&str]]) -> Vec<Process> {
    let mut banks = Vec::with_capacity(extra.len());
    for flags in extra {
        banks.push(start_bank(flags).await);
    }
    banks
}

/// Starts the payment API binary against `bank_url` on a free port and waits for it.
pub async fn start_api(bank_url: &str, data_dir: &TempDir, extra: &[&str]) -> Process {
    start_api_with_keys(
        bank_url,
        data_dir,
        extra,
        &format!("{TEST_TENANT}:{TEST_API_KEY}"),
    )
    .await
}

/// Like [`start_api`], with the given `tenant:key,...` list (the operator key
/// [`TEST_OPERATOR_KEY`] is always configured too).
pub async fn start_api_with_keys(
    bank_url: &str,
    data_dir: &TempDir,
    extra: &[&str],
    keys: &str,
) -> Process {
    start_api_with_env(bank_url, data_dir, extra, keys, &[]).await
}

/// Like [`start_api_with_keys`], with more environment variables (`RUST_LOG`, ...).
pub async fn start_api_with_env(
    bank_url: &str,
    data_dir: &TempDir,
    extra: &[&str],
    keys: &str,
    env: &[(&str, &str)],
) -> Process {
    start_api_process(&["--bank-url", bank_url], data_dir, extra, keys, env).await
}

/// Starts the payment API over several banks (`--bank NAME=URL` each, in priority order) on a
/// free port and waits for it; the test keys as in [`start_api`].
pub async fn start_api_with_banks(
    banks: &[(&str, &str)],
    data_dir: &TempDir,
    extra: &[&str],
) -> Process {
    let entries: Vec<String> = banks
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect();
    let mut bank_args = Vec::new();
    for entry in &entries {
        bank_args.extend(["--bank", entry.as_str()]);
    }
    start_api_process(
        &bank_args,
        data_dir,
        extra,
        &format!("{TEST_TENANT}:{TEST_API_KEY}"),
        &[],
    )
    .await
}

async fn start_api_process(
    bank_args: &[&str],
    data_dir: &TempDir,
    extra: &[&str],
    keys: &str,
    env: &[(&str, &str)],
) -> Process {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = data_dir.to_str().unwrap();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(bank_args);
    args.extend(["--data-dir", data, "--log-format", "json"]);
    args.extend_from_slice(extra);
    let operator_keys = format!("{TEST_OPERATOR}:{TEST_OPERATOR_KEY}");
    let mut api = Process::start(
        "payment-api",
        &binary("payment-api"),
        &args,
        &[
            &[
                ("PAYMENT_API_KEYS", keys),
                ("PAYMENT_API_OPERATOR_KEYS", operator_keys.as_str()),
            ][..],
            env,
        ]
        .concat(),
    );
    api.addr = Some(listen.parse().unwrap());
    api.hold(data_dir);
    api.wait_healthy(Duration::from_secs(30)).await;
    api
}

/// Typed helpers over the bank's and the API's HTTP surfaces.
pub mod client {
    use serde_json::{json, Value};

    use super::{TEST_API_KEY, TEST_OPERATOR_KEY};

    /// A reqwest client with a bounded timeout (no test can hang on a request).
    pub fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// A valid payment body.
    pub fn body(amount: i64) -> Value {
        json!({"amount": amount, "currency": "TRY", "source": "tok_visa"})
    }

    /// `POST /v1/payments` with the test key and `key`.
    pub async fn pay(api: &str, key: &str, body: &Value) -> reqwest::Response {
        http()
            .post(format!("{api}/v1/payments"))
            .bearer_auth(TEST_API_KEY)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Status, `Idempotent-Replayed`, `Retry-After` and the raw body of a response.
    pub async fn parts(
        response: reqwest::Response,
    ) -> (u16, Option<String>, Option<String>, Vec<u8>) {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let replayed = header("idempotent-replayed");
        let retry_after = header("retry-after");
        (
            status,
            replayed,
            retry_after,
            response.bytes().await.unwrap().to_vec(),
        )
    }

    /// Switches the bank to a named chaos preset.
    pub async fn set_chaos(bank: &str, preset: &str) {
        put_chaos(bank, json!({"preset": preset})).await;
    }

    /// `PUT /v1/chaos` with `body` (a preset, a profile or a scenario); asserts it was taken.
    pub async fn put_chaos(bank: &str, body: Value) {
        let response = http()
            .put(format!("{bank}/v1/chaos"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "set chaos {body}: {}",
            response.status()
        );
    }

    /// Every charge in the bank's ledger (all pages).
    pub async fn ledger(bank: &str) -> Vec<Value> {
        let mut charges = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut url = format!("{bank}/v1/ledger?limit=500");
            if let Some(c) = &cursor {
                url.push_str(&format!("&after={c}"));
            }
            let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
            charges.extend(page["charges"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return charges,
            }
        }
        panic!("the ledger did not end");
    }

    /// `GET /v1/payments/{id}` with the test key.
    pub async fn payment(api: &str, id: &str) -> Value {
        http()
            .get(format!("{api}/v1/payments/{id}"))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many of the test tenant's payments are pending (a read-only look at the store).
    pub async fn pending_payments(api: &str) -> Option<usize> {
        let page: Value = http()
            .get(format!("{api}/v1/payments?status=pending&limit=100"))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(page["data"].as_array()?.len())
    }

    /// `GET /v1/status` of the API (an operator route: with the test operator key).
    pub async fn status(api: &str) -> Value {
        http()
            .get(format!("{api}/v1/status"))
            .bearer_auth(TEST_OPERATOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Polls `check` every 20 ms until it returns `Some`, within `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`FAST_API`] with some flags' values replaced (clap refuses a flag given twice).
pub fn fast_api_with(overrides: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut args = FAST_API.to_vec();
    for (flag, value) in overrides {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value,
            None => args.extend([*flag, *value]),
        }
    }
    args
}

/// API flags that make the resilience timings test-sized (sub-second). The lease must be at
/// least the deadline plus max(2 s, 20% of it) (the API refuses to start otherwise): a test
/// that raises `--deadline-ms` raises `--lease-ms` with it.
pub const FAST_API: &[&str] = &[
    "--attempt-timeout-ms",
    "300",
    "--deadline-ms",
    "1500",
    "--backoff-base-ms",
    "20",
    "--backoff-max-ms",
    "100",
    "--breaker-open-ms",
    "400",
    "--breaker-max-open-ms",
    "1000",
    "--reconcile-interval-ms",
    "100",
    "--reconcile-grace-ms",
    "300",
    "--lease-ms",
    "4000",
];

/// Running `run chaos` from a test and reading its report.
pub mod chaos {
    use std::{process::ExitStatus, time::Duration};

    use super::{binary, wait_exit, Process};

    /// Runs `run chaos ARGS` until its `chaos result:` line (or an error), within `timeout`;
    /// returns the exit status, the whole output and the result line (or the error line).
    pub fn run_chaos(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        let mut argv = vec!["chaos"];
        argv.extend_from_slice(args);
        let mut run = Process::start("run chaos", &binary("run"), &argv, &[]);
        let lines = run.read_until(timeout, |l| {
            l.starts_with("chaos result:") || l.starts_with("run: error")
        });
        let mut output = lines.join("\n");
        let result = lines.last().cloned().unwrap_or_default();
        let status = wait_exit(&mut run.child, Duration::from_secs(60)).expect("run chaos exits");
        // Whatever came after the result line (the shutdown, an error).
        while let Some(line) = run.next_line(Duration::from_millis(200)) {
            output.push('\n');
            output.push_str(&line);
        }
        (status, output, result)
    }

    /// A CI-sized `run chaos` (within 150 s): the `everything` scenario for 20 s at 20
    /// payments/s with two API kills, giving up after 20 s and settling within 40 s, from
    /// `seed`, with the `extra` flags (store faults, the store, instances). Returns what
    /// [`run_chaos`] does.
    pub fn run_ci_sized(seed: &str, extra: &[&str]) -> (ExitStatus, String, String) {
        let mut args = vec![
            "--scenario",
            "everything",
            "--duration",
            "20s",
            "--rate",
            "20",
            "--kills",
            "2",
            "--seed",
            seed,
            "--give-up-after",
            "20s",
            "--settle-timeout",
            "40s",
        ];
        args.extend_from_slice(extra);
        run_chaos(&args, Duration::from_secs(150))
    }

    /// The number before `suffix` in the `, `-separated result line, e.g. `answered 201` in
    /// `385 answered 201` (a parenthesised tail such as `started (99.5%)` is ignored).
    pub fn figure(result: &str, suffix: &str) -> u64 {
        result
            .split(", ")
            .find_map(|part| {
                let (number, rest) = part.split_once(' ')?;
                let rest = rest.split(" (").next()?;
                (rest == suffix.trim()).then(|| number.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no `N {suffix}` in the result line: {result}"))
    }

    /// A result line with 0 violations, and each invariant in `invariants` reported clean.
    pub fn assert_clean(result: &str, output: &str, invariants: &[u8]) {
        assert!(result.starts_with("chaos result:"), "no report:\n{output}");
        assert!(result.ends_with(" 0 violations"), "{result}\n{output}");
        for invariant in invariants {
            assert!(
                output.contains(&format!("[ok  ] invariant {invariant}:")),
                "invariant {invariant} not reported clean:\n{output}"
            );
        }
    }

    /// Floors a run must clear besides "0 violations" (which an API refusing everything would
    /// also report): a quarter of the offered payments answered 201 and charged, nine in ten
    /// started and audited, none left pending. Returns the payments offered.
    pub fn assert_floors(result: &str, output: &str) -> u64 {
        let offered = figure(result, " payments offered");
        let started = figure(result, " started");
        let answered_201 = figure(result, " answered 201");
        let succeeded = figure(result, " charges succeeded");
        let audited = figure(result, " keys audited");
        let pending = figure(result, " pending");
        let context = || format!("{result}\n{output}");
        assert!(offered > 0, "{}", context());
        assert!(
            started * 10 >= offered * 9,
            "only {started} of {offered} payments started: {}",
            context()
        );
        assert!(
            answered_201 * 4 >= offered,
            "only {answered_201} of {offered} payments answered 201: {}",
            context()
        );
        assert!(
            succeeded * 4 >= offered,
            "only {succeeded} succeeded charges in the ledger for {offered} payments: {}",
            context()
        );
        assert!(
            audited * 10 >= offered * 9,
            "only {audited} keys audited of {offered}: {}",
            context()
        );
        assert_eq!(pending, 0, "payments left pending: {}", context());
        offered
    }
}

/// The Standard Webhooks reference library (Python's `standardwebhooks`, installed by
/// `.ci/setup`), run as a subprocess: an implementation of the signing that is not ours.
pub mod reference_webhooks {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use serde_json::Value;

    /// One request, in `mode` `sign` (`secrets`, `id`, `timestamp`, `body` → the signature
    /// header) or `verify` (`secret`, `id`, `timestamp`, `signature`, `body` → `verified` or
    /// `refused: …`). Everything, secrets included, goes over stdin: nothing in a process
    /// listing.
    const SCRIPT: &str = r#"
import json, sys
from datetime import datetime, timezone
from standardwebhooks import Webhook
req = json.load(sys.stdin)
if req.get("mode") == "sign":
    ts = datetime.fromtimestamp(req["timestamp"], tz=timezone.utc)
    print(" ".join(Webhook(s).sign(req["id"], ts, req["body"]) for s in req["secrets"]))
else:
    headers = {"webhook-id": req["id"], "webhook-timestamp": str(req["timestamp"]),
               "webhook-signature": req["signature"]}
    try:
        Webhook(req["secret"]).verify(req["body"].encode(), headers, json_parse=False)
        print("verified")
    except Exception as e:
        print("refused: %s" % e)
"#;

    /// `Some(())` when `python3` can import the library; else SKIPPED (a failure under CI).
    pub fn available() -> Option<()> {
        let found = Command::new("python3")
            .args(["-c", "import standardwebhooks"])
            .output()
            .map_err(|e| format!("python3: {e}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    // The traceback's last line says it ("No module named 'standardwebhooks'").
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    Err(stderr
                        .trim()
                        .lines()
                        .last()
                        .unwrap_or("import failed")
                        .to_owned())
                }
            });
        crate::require(
            "Python's standardwebhooks library",
            found,
            "`sudo bash .ci/setup` installs it (pip install standardwebhooks==1.1.0)",
        )
    }

    /// Runs one request (see [`SCRIPT`]) and returns what the library printed.
    pub fn run(request: &Value) -> String {
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}
