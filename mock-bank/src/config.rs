//! The mock bank's flags; each has an environment variable.

use std::net::SocketAddr;

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
}

impl Config {
    /// A config for tests: loopback, any free port.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}
