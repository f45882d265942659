//! Flags of `run` (DESIGN.md §7). Each has an environment variable.

use std::path::PathBuf;

/// Command line of `run`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "run",
    version,
    about = "Start the mock bank, the payment API and the dashboard as supervised processes",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub up: UpArgs,
}

/// Subcommands; with none, `run` starts everything.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run one service in this process (how `run` starts its children).
    #[command(hide = true)]
    Service(ServiceArgs),
}

/// Flags for starting the whole system.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Port of the payment API (0 picks a free one).
    #[arg(long, env = "RUN_API_PORT", default_value_t = 8000)]
    pub api_port: u16,

    /// Port of the mock bank (0 picks a free one).
    #[arg(long, env = "RUN_BANK_PORT", default_value_t = 8001)]
    pub bank_port: u16,

    /// Port of the dashboard (0 picks a free one).
    #[arg(long, env = "RUN_DASHBOARD_PORT", default_value_t = 8501)]
    pub dashboard_port: u16,

    /// Where the store, the dev API key and the bank token live (created if missing).
    #[arg(long, env = "RUN_DATA_DIR", default_value = "./.data")]
    pub data_dir: PathBuf,

    /// Store of the payment API: `postgres://...` to use PostgreSQL; unset, SQLite in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How long to wait for each service to answer its health check, in seconds.
    #[arg(long, env = "RUN_READY_TIMEOUT_SECS", default_value_t = 60)]
    pub ready_timeout_secs: u64,

    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// `run service NAME ...`: the child side.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub service: ServiceKind,
    /// Exit when standard input closes (the parent died), so no child outlives `run`.
    #[arg(long, global = true)]
    pub exit_with_parent: bool,
}

/// The services `run` can start.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceKind {
    /// The payment API.
    PaymentApi {
        #[command(flatten)]
        config: payment_api::Config,
        #[command(flatten)]
        log: telemetry::LogArgs,
    },
    /// The mock bank.
    MockBank {
        #[command(flatten)]
        config: mock_bank::Config,
        #[command(flatten)]
        log: telemetry::LogArgs,
    },
    /// The dashboard.
    Dashboard {
        #[command(flatten)]
        config: dashboard::Config,
        #[command(flatten)]
        log: telemetry::LogArgs,
    },
}
