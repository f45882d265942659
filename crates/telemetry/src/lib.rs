//! Telemetry shared by every service: one place decides the log format and fields, keeps the
//! recent records for `GET /v1/logs`, and holds the Prometheus recorder behind `GET /metrics`.
//!
//! Every log record carries `timestamp`, `level`, `service`, `target`, `message` and `fields`:
//! the event's own fields and those of every span it happened in (a request's `request_id`,
//! `payment_id`, `tenant`, `idempotency_key`; a bank attempt's `attempt` and `outcome`; ...).
//! Records are JSON lines when stderr is not a terminal and human-readable otherwise
//! (`--log-format` overrides the guess); `--log-dir` adds a rotating JSON log file. The level
//! comes from `RUST_LOG` (default `info`). `docs/observability.md` is the operator's guide.
//!
//! # Layout
//! - [`buffer`]: the bounded in-memory [`LogBuffer`] with its sequence-number cursor.
//! - [`layer`]: the tracing layer that builds records and writes lines.
//! - [`metrics`]: the process-wide Prometheus recorder.

pub mod buffer;
pub mod layer;
pub mod metrics;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

pub use buffer::{FieldValue, Fields, LogBuffer, LogPage, LogParams, LogQuery, LogRecord};
use layer::{LineFormat, Output, TelemetryLayer};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON if stderr is not a terminal, pretty otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured when a terminal.
    Pretty,
}

/// How often the log file starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogRotation {
    /// A new file every hour.
    Hourly,
    /// A new file every day.
    Daily,
    /// One file, never rotated.
    Never,
}

/// Logging flags every service binary flattens into its own CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: auto (json unless stderr is a terminal), json or pretty.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Also write JSON log lines to files `<service>.log.<date>` in this directory (created if
    /// missing), e.g. `.data/logs`. Off when unset.
    #[arg(long = "log-dir", env = "LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// When the log file rotates: hourly, daily or never.
    #[arg(
        long = "log-rotation",
        env = "LOG_ROTATION",
        value_enum,
        default_value = "daily"
    )]
    pub log_rotation: LogRotation,

    /// How many rotated log files to keep (older ones are deleted).
    #[arg(long = "log-max-files", env = "LOG_MAX_FILES", default_value_t = 7)]
    pub log_max_files: usize,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_dir: None,
            log_rotation: LogRotation::Daily,
            log_max_files: 7,
        }
    }
}

static BUFFER: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// The process-wide log buffer that [`init`] feeds (empty until it is called), holding the
/// last [`buffer::DEFAULT_CAPACITY`] records.
pub fn log_buffer() -> Arc<LogBuffer> {
    BUFFER
        .get_or_init(|| Arc::new(LogBuffer::new(buffer::DEFAULT_CAPACITY)))
        .clone()
}

/// What [`init`] set up. Keep it alive for the life of the process: dropping it waits (briefly)
/// until every line logged so far is written, so a binary's last lines are not lost when `main`
/// returns.
#[derive(Debug)]
pub struct Telemetry {
    /// The buffer behind `/v1/logs` (the same as [`log_buffer`]).
    pub buffer: Arc<LogBuffer>,
    /// Whether this call installed the subscriber (false when one was already installed).
    pub installed: bool,
    outputs: Vec<Output>,
}

impl Telemetry {
    /// Waits until every line logged so far is written out (at most two seconds).
    pub fn flush(&self) {
        for output in &self.outputs {
            output.flush(std::time::Duration::from_secs(2));
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber for `service` and the Prometheus recorder. Safe to call twice
/// (the second call installs nothing), which keeps in-process tests that start several
/// services from panicking. Fails only when the log directory cannot be created.
pub fn init(service: &'static str, args: &LogArgs) -> std::io::Result<Telemetry> {
    let buffer = log_buffer();
    let _ = metrics::prometheus();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_terminal = std::io::stderr().is_terminal();
    let format = match args.log_format {
        LogFormat::Json => LineFormat::Json,
        LogFormat::Pretty => LineFormat::Pretty {
            ansi: stderr_terminal,
        },
        LogFormat::Auto if stderr_terminal => LineFormat::Pretty { ansi: true },
        LogFormat::Auto => LineFormat::Json,
    };
    // Lines are written by background threads, off the request path (see `layer::Output`).
    let mut outputs = vec![Output::background(format, std::io::stderr())];
    if let Some(dir) = &args.log_dir {
        std::fs::create_dir_all(dir)?;
        let rotation = match args.log_rotation {
            LogRotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
            LogRotation::Daily => tracing_appender::rolling::Rotation::DAILY,
            LogRotation::Never => tracing_appender::rolling::Rotation::NEVER,
        };
        let file = tracing_appender::rolling::Builder::new()
            .rotation(rotation)
            .filename_prefix(format!("{service}.log"))
            .max_log_files(args.log_max_files.max(1))
            .build(dir)
            .map_err(std::io::Error::other)?;
        outputs.push(Output::background(LineFormat::Json, file));
    }
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(TelemetryLayer::new(
            service,
            buffer.clone(),
            outputs.clone(),
        ))
        .try_init()
        .is_ok();
    if installed {
        tracing::info!(
            log_dir = args.log_dir.as_ref().map(|d| d.display().to_string()),
            buffer_capacity = buffer.capacity(),
            "logging initialised"
        );
    }
    Ok(Telemetry {
        buffer,
        installed,
        outputs: if installed { outputs } else { Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects everything written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LineFormat, body: impl FnOnce()) -> (String, Arc<LogBuffer>) {
        let captured = Captured::default();
        let buffer = Arc::new(LogBuffer::new(100));
        let subscriber = tracing_subscriber::registry().with(TelemetryLayer::new(
            "test-service",
            buffer.clone(),
            vec![Output::new(format, captured.clone())],
        ));
        tracing::subscriber::with_default(subscriber, body);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (text, buffer)
    }

    #[test]
    fn json_lines_carry_the_record_and_the_fields_of_every_span() {
        let (text, buffer) = capture(LineFormat::Json, || {
            let request = tracing::info_span!(
                "request",
                request_id = "req-1",
                payment_id = tracing::field::Empty,
                tenant = "acme",
                idempotency_key = "order-1"
            );
            let _r = request.enter();
            // Learnt half-way through: shows on every later line.
            request.record("payment_id", "pay-9");
            let attempt = tracing::info_span!("bank_attempt", attempt = 2u32);
            let _a = attempt.enter();
            tracing::warn!(
                outcome = "ambiguous",
                breaker_state = "closed",
                "bank attempt"
            );
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        assert_eq!(line["service"], "test-service");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "bank attempt");
        assert_eq!(line["target"], "telemetry::tests");
        assert_eq!(line["seq"], 1);
        let ts = line["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
        let fields = &line["fields"];
        assert_eq!(fields["request_id"], "req-1");
        assert_eq!(fields["payment_id"], "pay-9");
        assert_eq!(fields["tenant"], "acme");
        assert_eq!(fields["idempotency_key"], "order-1");
        assert_eq!(fields["attempt"], 2);
        assert_eq!(fields["outcome"], "ambiguous");
        assert_eq!(fields["breaker_state"], "closed");
        // The same record is in the buffer.
        let page = buffer.query(&LogQuery::default());
        assert_eq!(page.records.len(), 1);
        assert_eq!(
            serde_json::to_value(&*page.records[0]).unwrap(),
            lines[0].clone()
        );
    }

    #[test]
    fn pretty_lines_name_the_service_and_the_fields() {
        let (text, _) = capture(LineFormat::Pretty { ansi: false }, || {
            let span = tracing::info_span!("request", request_id = "req-2");
            let _e = span.enter();
            tracing::info!(status = 201u16, "request finished");
        });
        assert!(text.contains(" INFO test-service telemetry::tests: request finished"));
        assert!(text.contains("request_id=req-2"), "{text}");
        assert!(text.contains("status=201"), "{text}");
    }

    #[test]
    fn fields_named_like_credentials_are_redacted() {
        let (text, _) = capture(LineFormat::Json, || {
            tracing::info!(
                authorization = "Bearer sk_live_secret",
                api_key = "sk_live_secret",
                admin_token = true,
                "careless"
            );
        });
        assert!(!text.contains("sk_live_secret"), "{text}");
        assert!(text.contains(r#""api_key":"[redacted]""#), "{text}");
        assert!(text.contains(r#""admin_token":true"#), "{text}");
    }

    #[test]
    fn a_background_output_writes_every_line_whole_and_in_order_by_the_time_flush_returns() {
        let captured = Captured::default();
        let output = Output::background(LineFormat::Json, captured.clone());
        let buffer = Arc::new(LogBuffer::new(100));
        let subscriber = tracing_subscriber::registry().with(TelemetryLayer::new(
            "test-service",
            buffer,
            vec![output.clone()],
        ));
        let dispatch = tracing::Dispatch::new(subscriber);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let dispatch = dispatch.clone();
                scope.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        for i in 0..500 {
                            tracing::info!(thread, i, "line");
                        }
                    })
                });
            }
        });
        output.flush(std::time::Duration::from_secs(10));
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let records: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is whole JSON"))
            .collect();
        assert_eq!(records.len(), 2000);
        // Each thread's lines arrive in the order it logged them.
        for thread in 0..4 {
            let order: Vec<u64> = records
                .iter()
                .filter(|r| r["fields"]["thread"] == thread)
                .map(|r| r["fields"]["i"].as_u64().unwrap())
                .collect();
            assert_eq!(order, (0..500).collect::<Vec<_>>());
        }
        // Every record once: sequence numbers 1..=2000, none lost or doubled.
        let mut seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    }

    #[test]
    fn init_twice_does_not_panic_and_shares_one_buffer() {
        let first = init("test", &LogArgs::default()).unwrap();
        let second = init("test", &LogArgs::default()).unwrap();
        assert!(!second.installed);
        assert!(Arc::ptr_eq(&first.buffer, &second.buffer));
        assert!(Arc::ptr_eq(&first.buffer, &log_buffer()));
    }

    #[test]
    fn the_log_dir_gets_a_json_file_named_after_the_service() {
        let dir = tempfile::Builder::new()
            .prefix("telemetry-test-")
            .tempdir()
            .unwrap();
        let captured = Captured::default();
        let file = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("svc.log")
            .build(dir.path())
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(TelemetryLayer::new(
            "svc",
            Arc::new(LogBuffer::new(10)),
            vec![
                Output::new(LineFormat::Pretty { ansi: false }, captured),
                Output::new(LineFormat::Json, file),
            ],
        ));
        tracing::subscriber::with_default(subscriber, || tracing::info!(n = 1, "to a file"));
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1);
        let name = entries[0].file_name().into_string().unwrap();
        assert!(name.starts_with("svc.log."), "{name}");
        let text = std::fs::read_to_string(entries[0].path()).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["message"], "to a file");
    }
}
