//! Flags of `run` (docs/contract.md §7). Each has an environment variable.

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
    Service(Box<ServiceArgs>),
    /// Send open-loop payment traffic to a running system and print throughput, outcomes and
    /// latency percentiles.
    Load(LoadArgs),
    /// Start a system, drive traffic under bank chaos and API kills, then audit the API's
    /// payments against the bank's ledger (docs/contract.md §6); exits 1 on any violation.
    Chaos(ChaosArgs),
}

/// Flags for starting the whole system.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Port of the payment API (0 picks a free one).
    #[arg(long, env = "RUN_API_PORT", default_value_t = 8000)]
    pub api_port: u16,

    /// Port of the first mock bank; bank *i* listens on this port + *i* (0 picks free ones).
    #[arg(long, env = "RUN_BANK_PORT", default_value_t = 8001)]
    pub bank_port: u16,

    /// Mock bank processes, named `bank-a`, `bank-b`, ... in priority order; each has its own
    /// port, admin token and chaos, and the API routes payments over all of them (failover:
    /// docs/failover.md).
    #[arg(long, env = "RUN_BANKS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub banks: u8,

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

    /// Extra flag for the payment API child, repeatable: `--api-arg=--bulkhead --api-arg=8`, or
    /// several words in one value: `--api-arg '--lease-ms 3000'`. Overrides `run`'s own choices.
    #[arg(
        long = "api-arg",
        env = "RUN_API_ARGS",
        value_name = "ARG",
        allow_hyphen_values = true,
        value_delimiter = ' '
    )]
    pub api_arg: Vec<String>,

    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// Traffic shape shared by `run load` and `run chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrafficArgs {
    /// Payments started per second (open loop: on schedule, whatever the answers' latency).
    #[arg(long, env = "RUN_LOAD_RATE", default_value_t = 50.0)]
    pub rate: f64,

    /// How long to send new payments: `90s`, `10m`, `1h` or plain seconds.
    #[arg(long, env = "RUN_LOAD_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: std::time::Duration,

    /// Payments in progress at once; a payment due while the bound is reached is shed (counted).
    #[arg(long, env = "RUN_LOAD_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// Share of payments sent twice with the same key: half at once (a double click), half
    /// after the first answer (a user retrying after a dropped connection).
    #[arg(long, env = "RUN_LOAD_DUPLICATE_SHARE", default_value_t = 0.1)]
    pub duplicate_share: f64,

    /// Share of payments with a card the bank declines.
    #[arg(long, env = "RUN_LOAD_DECLINE_SHARE", default_value_t = 0.05)]
    pub decline_share: f64,

    /// Client timeout of one HTTP request, in milliseconds.
    #[arg(long, env = "RUN_LOAD_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// How long a client keeps retrying one payment (timeouts, 409, 429, 503) before giving up.
    #[arg(long, env = "RUN_LOAD_GIVE_UP_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub give_up_after: std::time::Duration,

    /// Seed of every random choice (amounts, cards, duplicates, chaos schedule, kill times);
    /// random when unset and always printed, so a run can be replayed.
    #[arg(long, env = "RUN_SEED")]
    pub seed: Option<u64>,
}

/// `run load`: traffic against a system that is already running.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the payment API (loopback only).
    #[arg(
        long,
        env = "RUN_LOAD_API_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub api_url: String,

    /// API key; prefer `--api-key-file` (arguments show in `ps`).
    #[arg(long, env = "RUN_LOAD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// File holding the API key (what `run` writes into its data directory).
    #[arg(
        long,
        env = "RUN_LOAD_API_KEY_FILE",
        default_value = "./.data/dev-api-key"
    )]
    pub api_key_file: PathBuf,

    /// Prefix of the idempotency keys (default: `load-<seed>-<random>`, unique per run).
    #[arg(long, env = "RUN_LOAD_KEY_PREFIX")]
    pub key_prefix: Option<String>,

    #[command(flatten)]
    pub traffic: TrafficArgs,
}

/// The chaos verifier's scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioName {
    /// The `flaky` preset throughout: 500/503/429 errors and ambiguous 500s.
    Flaky,
    /// The `lossy` preset throughout: charges whose answers are lost.
    Lossy,
    /// Healthy, then the bank down, then flaky, then healthy again.
    OutageAndRecovery,
    /// `lossy`, and the API killed with SIGKILL at random moments.
    Crashes,
    /// A seeded random schedule of every preset, and API kills (with several banks, each bank
    /// follows a schedule of its own).
    Everything,
    /// Two banks: all healthy, then `bank-a` down (503s) from 1/6 of the run to its end while
    /// the others stay healthy: payments must fail over. With `--banks 1`, the outage itself.
    BankADown,
    /// Two banks: all healthy, then `bank-a` black-holed (requests hang) from 1/6 of the run
    /// to its end: payments that reached it go pending at it and must never move.
    BankABlackhole,
    /// Two banks: `bank-a` lossy (answers lost after charging), `bank-b` flaky, throughout.
    ALossyBFlaky,
    /// Two banks: `bank-a` and `bank-b` take turns being down, with overlaps where both are,
    /// and API kills.
    AlternatingOutages,
}

impl ScenarioName {
    /// Banks a run of this scenario starts unless `--banks` says otherwise.
    pub fn default_banks(self) -> u8 {
        match self {
            Self::BankADown
            | Self::BankABlackhole
            | Self::ALossyBFlaky
            | Self::AlternatingOutages => 2,
            Self::Flaky
            | Self::Lossy
            | Self::OutageAndRecovery
            | Self::Crashes
            | Self::Everything => 1,
        }
    }

    /// The name on the command line, e.g. `outage-and-recovery`.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// `run chaos`: start a system, attack it, audit it.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// What to do to the bank (and to the API).
    #[arg(
        long,
        env = "RUN_CHAOS_SCENARIO",
        value_enum,
        default_value = "everything"
    )]
    pub scenario: ScenarioName,

    /// SIGKILLs of the API at seeded random moments (default: 0 for `flaky`, `lossy` and
    /// `outage-and-recovery`; one per 30 s, at least 2, for `crashes` and `everything`).
    #[arg(long, env = "RUN_CHAOS_KILLS")]
    pub kills: Option<usize>,

    /// Mock banks the API routes over, `bank-a` first (default: 2 for the scenarios that name
    /// banks, 1 for the others, where with more every bank follows the scenario).
    #[arg(long, env = "RUN_CHAOS_BANKS", value_parser = clap::value_parser!(u8).range(1..=4))]
    pub banks: Option<u8>,

    /// Data directory of the system under test (default: a fresh one under the temp dir,
    /// removed after a clean run).
    #[arg(long, env = "RUN_CHAOS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the data directory even after a clean run.
    #[arg(long)]
    pub keep_data: bool,

    /// How long to wait, once the banks are healthy again, for the reconciler to settle every
    /// pending payment, and then (with `--webhooks on`, the receiver healed) for the API's
    /// webhook backlog to empty, before auditing.
    #[arg(long, env = "RUN_CHAOS_SETTLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub settle_timeout: std::time::Duration,

    /// Store of the API: `postgres://...` (an empty database; the runner can then only drop
    /// its connections, not restart the server); unset, SQLite in the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Use a throwaway PostgreSQL server the runner starts (initdb/pg_ctl, as the tests do) and
    /// can crash, stop and restart.
    #[arg(long, conflicts_with = "database_url")]
    pub postgres: bool,

    /// API processes on one PostgreSQL database, each on its own port; client retries and
    /// SIGKILLs are spread across them. More than 1 needs PostgreSQL.
    #[arg(long, env = "RUN_CHAOS_API_INSTANCES", default_value_t = 1)]
    pub api_instances: usize,

    /// Store faults to inject: `none`, `auto` (every fault the store and the environment
    /// allow), or a list of `disk-full`, `lock` (SQLite), `pg-restart`, `pg-stop`, `pg-drop`
    /// (PostgreSQL).
    #[arg(
        long,
        env = "RUN_CHAOS_STORE_FAULTS",
        default_value = "auto",
        value_parser = crate::store_faults::parse_store_faults
    )]
    pub store_faults: crate::store_faults::StoreFaultChoice,

    /// How many store faults in the run (default: one per 20 s of traffic, at least 2), taken
    /// in turn from the chosen kinds at seeded random moments.
    #[arg(long, env = "RUN_CHAOS_STORE_FAULT_COUNT")]
    pub store_fault_count: Option<usize>,

    /// Size of the tmpfs mounted as the data directory for the disk-full fault, in MiB.
    #[arg(long, env = "RUN_CHAOS_STORE_DISK_MB", default_value_t = 512)]
    pub store_disk_mb: u64,

    /// Extra flag for the API child (see `run --help`); overrides the fast timings chaos uses.
    #[arg(
        long = "api-arg",
        env = "RUN_API_ARGS",
        value_name = "ARG",
        allow_hyphen_values = true,
        value_delimiter = ' '
    )]
    pub api_arg: Vec<String>,

    /// Webhooks: `on` starts a receiver on 127.0.0.1 that fails and hangs for part of the run,
    /// registers it for the tenant and audits its deliveries after healing (W1–W3,
    /// docs/chaos.md); `off` leaves webhooks out.
    #[arg(long, env = "RUN_CHAOS_WEBHOOKS", value_enum, default_value = "on")]
    pub webhooks: Switch,

    /// Also start the dashboard (its URL is printed) to watch the run.
    #[arg(long)]
    pub dashboard: bool,

    /// Show the children's info-level logs (by default only their errors).
    #[arg(long)]
    pub verbose: bool,

    #[command(flatten)]
    pub traffic: TrafficArgs,

    /// Log flags of the children.
    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// A feature of `run chaos` turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Parses `500ms`, `90s`, `10m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h"
            ))
        }
    };
    if !(0.0..=7.0 * 86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 7 days)"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn the_chaos_command_parses_its_flags() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "run",
            "chaos",
            "--scenario",
            "outage-and-recovery",
            "--duration",
            "2m",
            "--seed",
            "7",
            "--api-arg=--bulkhead 8",
        ])
        .unwrap();
        let Some(Command::Chaos(chaos)) = cli.command else {
            panic!("not chaos");
        };
        assert_eq!(chaos.scenario, ScenarioName::OutageAndRecovery);
        assert_eq!(chaos.traffic.duration, Duration::from_secs(120));
        assert_eq!(chaos.traffic.seed, Some(7));
        assert_eq!(chaos.api_arg, ["--bulkhead", "8"]);
    }
}
