//! The dashboard's flags; each has an environment variable. Secrets are read here and stay on
//! the server: the browser never receives them.

use std::{net::SocketAddr, path::PathBuf};

use secrecy::SecretString;

/// Command line of the `dashboard` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "dashboard",
    version,
    about = "Live operations page for resilient-payments"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// Everything the dashboard needs to start.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8501")]
    pub listen: SocketAddr,

    /// Base URL of the payment API.
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:8000")]
    pub api_url: reqwest::Url,

    /// Base URL of the mock bank.
    #[arg(long, env = "BANK_URL", default_value = "http://127.0.0.1:8001")]
    pub bank_url: reqwest::Url,

    /// API key the dashboard uses to send payments (kept server-side).
    #[arg(long, env = "DASHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<SecretString>,

    /// File holding the API key (alternative to --api-key).
    #[arg(long, env = "DASHBOARD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// The bank's admin token for chaos controls (kept server-side).
    #[arg(long, env = "DASHBOARD_BANK_ADMIN_TOKEN", hide_env_values = true)]
    pub bank_admin_token: Option<SecretString>,

    /// File holding the bank's admin token (alternative to --bank-admin-token).
    #[arg(long, env = "DASHBOARD_BANK_ADMIN_TOKEN_FILE")]
    pub bank_admin_token_file: Option<PathBuf>,
}

impl Config {
    /// A config for tests: loopback on a free port, pointing at the given services.
    pub fn for_tests(api_url: reqwest::Url, bank_url: reqwest::Url) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_url,
            bank_url,
            api_key: None,
            api_key_file: None,
            bank_admin_token: None,
            bank_admin_token_file: None,
        }
    }
}
