//! The payment API's flags; each has an environment variable, and `--help` lists both.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

/// Command line of the `payment-api` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "payment-api",
    version,
    about = "Idempotent payments through a retry loop and a circuit breaker"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// Everything the payment API needs to start.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "PAYMENT_API_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Base URL of the bank.
    #[arg(long, env = "BANK_URL", default_value = "http://127.0.0.1:8001")]
    pub bank_url: reqwest::Url,

    /// API keys as `tenant:key,tenant:key` (several may be valid at once, for rotation).
    #[arg(long, env = "PAYMENT_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<SecretString>,

    /// File holding API keys, `tenant:key` separated by commas or newlines (`#` starts a comment).
    #[arg(long, env = "PAYMENT_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Directory for the embedded store and log files.
    #[arg(long, env = "PAYMENT_API_DATA_DIR", default_value = "./.data")]
    pub data_dir: PathBuf,

    /// Timeout of one bank attempt, in milliseconds.
    #[arg(long, env = "PAYMENT_API_ATTEMPT_TIMEOUT_MS", default_value_t = 2000)]
    pub attempt_timeout_ms: u64,
}

impl Config {
    /// A config for tests: loopback on a free port, the given bank and keys, a private data dir.
    pub fn for_tests(bank_url: reqwest::Url, api_keys: &str, data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bank_url,
            api_keys: Some(SecretString::from(api_keys.to_owned())),
            api_keys_file: None,
            data_dir,
            attempt_timeout_ms: 2000,
        }
    }

    pub(crate) fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }
}
