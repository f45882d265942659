//! The mock bank's flags; each has an environment variable named `MOCK_BANK_*`.

use std::{net::SocketAddr, path::PathBuf};

use payment_types::bank::Preset;

use crate::auth::Secret;

/// Command line of the `mock-bank` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mock-bank",
    version,
    about = "A bank double with switchable failure modes"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub log: telemetry::LogArgs,
}

/// Everything the mock bank needs to start.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "MOCK_BANK_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,

    /// Seed of the chaos decisions: the same seed and the same sequence of charge requests give
    /// the same decisions. Random when unset (the seed in use is shown by GET /v1/status).
    #[arg(long, env = "MOCK_BANK_SEED")]
    pub seed: Option<u64>,

    /// Chaos preset at start: healthy, flaky, slow, down, blackhole or lossy.
    #[arg(long, env = "MOCK_BANK_CHAOS", default_value = "healthy")]
    pub chaos: Preset,

    /// Token that PUT /v1/chaos requires as `Authorization: Bearer <token>`. Without a token
    /// (and without --admin-token-file) chaos control is open to anyone who can reach the bank.
    #[arg(
        long,
        env = "MOCK_BANK_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<Secret>,

    /// File holding the admin token (surrounding whitespace is ignored); preferred over
    /// --admin-token, which shows up in process listings.
    #[arg(long, env = "MOCK_BANK_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Most charges being processed at once (claimed, not yet committed); beyond it a charge
    /// request is answered 503 `bank_busy` with Retry-After.
    #[arg(long, env = "MOCK_BANK_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Most connections held open at once by hangs and withheld answers; beyond it such a
    /// connection is closed at once instead of held.
    #[arg(long, env = "MOCK_BANK_MAX_HELD", default_value_t = 1024)]
    pub max_held: usize,

    /// Most charges the in-memory ledger keeps; beyond it new charges are answered 507
    /// `ledger_full` (existing references still replay).
    #[arg(long, env = "MOCK_BANK_MAX_CHARGES", default_value_t = 1_000_000)]
    pub max_charges: usize,
}

impl Config {
    /// A config for tests: loopback, any free port, seed 1, healthy, no admin token.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: Some(1),
            chaos: Preset::Healthy,
            admin_token: None,
            admin_token_file: None,
            max_in_flight: 1024,
            max_held: 1024,
            max_charges: 1_000_000,
        }
    }

    /// The admin token from `--admin-token` or `--admin-token-file`, if any.
    pub(crate) fn resolve_admin_token(&self) -> anyhow::Result<Option<Secret>> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    anyhow::anyhow!(
                        "cannot read the admin token file {} (--admin-token-file, \
                         MOCK_BANK_ADMIN_TOKEN_FILE): {error}",
                        path.display()
                    )
                })?;
                Some(Secret::from(text.trim().to_owned()))
            }
            (None, None) => None,
        };
        if token.as_ref().is_some_and(|t| t.expose().is_empty()) {
            anyhow::bail!("the admin token is empty (--admin-token / --admin-token-file)");
        }
        Ok(token)
    }
}
