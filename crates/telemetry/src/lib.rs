//! Logging set-up shared by every service: one place decides the format and the fields.
//!
//! Records are JSON lines when stderr is not a terminal (so the orchestrator and log shippers get
//! structured fields) and human-readable otherwise; `--log-format` overrides the guess. The level
//! comes from `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

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
}

/// Installs the global subscriber for `service`. Safe to call twice (the second call is a no-op),
/// which keeps in-process tests that start several services from panicking.
pub fn init(service: &'static str, args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match args.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "logging initialised");
    }
}
