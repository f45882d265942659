//! The dashboard's flags; each has an environment variable. Secrets are read here and stay on
//! the server: the browser never receives them.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
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

    /// Tenant API key the dashboard sends and reads its payments with (kept server-side).
    #[arg(long, env = "DASHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<SecretString>,

    /// File holding the tenant API key (alternative to --api-key).
    #[arg(long, env = "DASHBOARD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Operator key for the API's status, logs and breaker controls (kept server-side).
    #[arg(long, env = "DASHBOARD_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<SecretString>,

    /// File holding the operator key (alternative to --operator-key).
    #[arg(long, env = "DASHBOARD_OPERATOR_KEY_FILE")]
    pub operator_key_file: Option<PathBuf>,

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
            operator_key: None,
            operator_key_file: None,
            bank_admin_token: None,
            bank_admin_token_file: None,
        }
    }
}

/// The three secrets the dashboard holds, resolved from their flag or file.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The tenant key, sent to the payment API as `Authorization: Bearer` with the payments
    /// the dashboard sends and reads; `None` makes those answer "no API key configured".
    pub api_key: Option<SecretString>,
    /// The operator key, sent with reads of `/v1/status` and `/v1/logs` and with breaker
    /// controls; `None` makes those answer "no operator key configured".
    pub operator_key: Option<SecretString>,
    /// Sent to the bank's `PUT /v1/chaos`; `None` sends no token (a bank without one accepts).
    pub bank_admin_token: Option<SecretString>,
}

impl Config {
    /// Reads the secrets: the flag wins over the file; a file's content is trimmed.
    pub fn secrets(&self) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            api_key: resolve(&self.api_key, &self.api_key_file, "--api-key-file")?,
            operator_key: resolve(
                &self.operator_key,
                &self.operator_key_file,
                "--operator-key-file",
            )?,
            bank_admin_token: resolve(
                &self.bank_admin_token,
                &self.bank_admin_token_file,
                "--bank-admin-token-file",
            )?,
        })
    }
}

fn resolve(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<SecretString>> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(!text.is_empty(), "{flag} {} is empty", path.display());
    Ok(Some(SecretString::from(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn config() -> Config {
        Config::for_tests(
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:2".parse().unwrap(),
        )
    }

    #[test]
    fn a_secret_file_is_read_and_trimmed_and_the_flag_wins() {
        let path = std::env::temp_dir().join(format!("dash-key-{}", std::process::id()));
        std::fs::write(&path, "  sk_from_file_0123456789\n").unwrap();
        let mut config = config();
        config.api_key_file = Some(path.clone());
        let secrets = config.secrets().unwrap();
        assert_eq!(
            secrets.api_key.unwrap().expose_secret(),
            "sk_from_file_0123456789"
        );
        config.api_key = Some(SecretString::from("sk_from_flag_0123456789".to_owned()));
        let secrets = config.secrets().unwrap();
        assert_eq!(
            secrets.api_key.unwrap().expose_secret(),
            "sk_from_flag_0123456789"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_missing_secret_file_is_an_error_naming_the_flag() {
        let mut config = config();
        config.bank_admin_token_file = Some("/nonexistent/token".into());
        let error = config.secrets().unwrap_err().to_string();
        assert!(error.contains("--bank-admin-token-file"), "{error}");
    }
}
