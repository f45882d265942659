//! The dashboard's flags; each has an environment variable. Secrets are read here and stay on
//! the server: the browser never receives them, and no log line carries one.
//!
//! Banks mirror the payment API's flags (`docs/failover.md`): `--bank NAME=URL`, repeatable, in
//! priority order, or the single `--bank-url` (one bank named `bank`). Each bank's admin token
//! may be its own (`--bank-admin-token-file NAME=PATH`) or shared (`--bank-admin-token-file
//! PATH`, for every bank without its own): one leaked token should reach one bank.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

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

    /// Base URL of the mock bank, when there is one (it is named `bank`). Unset, and no --bank:
    /// http://127.0.0.1:8001. For several banks use --bank instead.
    #[arg(long, env = "BANK_URL")]
    pub bank_url: Option<reqwest::Url>,

    /// A mock bank as `NAME=URL`, repeatable (env: comma-separated `NAME=URL,NAME=URL`), in the
    /// API's priority order. NAME: letters, digits, - and _; use the names the API uses, so
    /// each bank's panel joins its breaker with its chaos.
    #[arg(
        long = "bank",
        env = "DASHBOARD_BANKS",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub banks: Vec<String>,

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

    /// A bank's admin token for chaos controls, kept server-side: `NAME=TOKEN` for that bank,
    /// or `TOKEN` for every bank without its own. Repeatable (env: comma-separated).
    #[arg(
        long,
        env = "DASHBOARD_BANK_ADMIN_TOKEN",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "[NAME=]TOKEN"
    )]
    pub bank_admin_token: Vec<SecretString>,

    /// File holding a bank's admin token (alternative to --bank-admin-token): `NAME=PATH` for
    /// that bank, or `PATH` for every bank without its own. Repeatable (env: comma-separated).
    #[arg(
        long,
        env = "DASHBOARD_BANK_ADMIN_TOKEN_FILE",
        value_delimiter = ',',
        value_name = "[NAME=]PATH"
    )]
    pub bank_admin_token_file: Vec<String>,

    /// At start, register this dashboard's webhook receiver (`/webhooks/receiver`) with the
    /// payment API under the tenant key: rotate the secret of the endpoint with its URL, or
    /// create one. Retried in the background until the API answers; the page works meanwhile.
    #[arg(
        long,
        env = "DASHBOARD_WEBHOOK_REGISTER",
        conflicts_with = "webhook_secret_file"
    )]
    pub webhook_register: bool,

    /// File with the webhook endpoint secret(s) the receiver verifies with, one `whsec_...` per
    /// line (two during a rotation): the alternative to --webhook-register.
    #[arg(long, env = "DASHBOARD_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// The receiver's URL as the payment API reaches it, for --webhook-register. Default:
    /// http://<the listening address>/webhooks/receiver (127.0.0.1 for an unspecified one).
    #[arg(long, env = "DASHBOARD_WEBHOOK_RECEIVER_URL")]
    pub webhook_receiver_url: Option<reqwest::Url>,
}

/// The bank `--bank-url` (or the default URL) names, when no `--bank` is given: the same name
/// the payment API gives it, so the two join.
pub use payment_types::banks::SINGLE_BANK_NAME;

/// A mock bank the dashboard watches and drives: its name and base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankTarget {
    pub name: String,
    pub url: reqwest::Url,
}

/// Why the configuration cannot start the dashboard; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--bank (DASHBOARD_BANKS) {0}")]
    Bank(String),
    #[error("cannot read {flag} {path}: {detail}")]
    SecretFile {
        flag: &'static str,
        path: String,
        detail: String,
    },
    #[error("{flag} {path} is empty")]
    EmptySecretFile { flag: &'static str, path: String },
    #[error("{flag} names bank {bank:?}, which is not configured (--bank / --bank-url)")]
    UnknownBank { flag: &'static str, bank: String },
    #[error("{flag} gives bank {bank:?} two tokens")]
    DuplicateToken { flag: &'static str, bank: String },
    #[error("--webhook-secret-file {path} line {line}: {error}")]
    WebhookSecret {
        path: String,
        line: usize,
        error: webhooks::SecretError,
    },
}

impl Config {
    /// A one-bank config for tests (the bank is named `bank`, as with `--bank-url`): loopback
    /// on a free port, pointing at the given services.
    pub fn for_tests(api_url: reqwest::Url, bank_url: reqwest::Url) -> Self {
        let mut config = Self::for_tests_with_banks(api_url, &[]);
        config.bank_url = Some(bank_url);
        config
    }

    /// A config for tests over several banks (`NAME`, URL), in priority order.
    pub fn for_tests_with_banks(api_url: reqwest::Url, banks: &[(&str, reqwest::Url)]) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_url,
            bank_url: None,
            banks: banks
                .iter()
                .map(|(name, url)| format!("{name}={url}"))
                .collect(),
            api_key: None,
            api_key_file: None,
            operator_key: None,
            operator_key_file: None,
            bank_admin_token: Vec::new(),
            bank_admin_token_file: Vec::new(),
            webhook_register: false,
            webhook_secret_file: None,
            webhook_receiver_url: None,
        }
    }

    /// The banks in priority order: each `--bank NAME=URL`, or the one bank of `--bank-url`
    /// (named `bank`). Refuses both at once, a malformed entry, a bad name or URL, and a name
    /// given twice, with the same rules as the payment API.
    pub fn bank_list(&self) -> Result<Vec<BankTarget>, ConfigError> {
        let banks =
            payment_types::banks::parse_banks(&self.banks, self.bank_url.as_ref(), valid_bank_name)
                .map_err(ConfigError::Bank)?;
        Ok(banks
            .into_iter()
            .map(|(name, url)| BankTarget { name, url })
            .collect())
    }
}

/// A bank name as the payment API accepts it: 1 to 64 letters, digits, `-` and `_`. Such a name
/// is safe in a query string, an HTML attribute and a CSS selector.
pub(crate) fn valid_bank_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The secrets the dashboard holds, resolved from their flags or files.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The tenant key, sent to the payment API as `Authorization: Bearer` with the payments
    /// the dashboard sends and reads; `None` makes those answer "no API key configured".
    pub api_key: Option<SecretString>,
    /// The operator key, sent with reads of `/v1/status` and `/v1/logs` and with breaker
    /// controls; `None` makes those answer "no operator key configured".
    pub operator_key: Option<SecretString>,
    /// Each bank's admin token by bank name, sent to that bank's `PUT /v1/chaos` only; a bank
    /// without one gets no token (a bank without one accepts).
    pub bank_admin_tokens: BTreeMap<String, SecretString>,
}

impl Secrets {
    /// These secrets with `token` as bank `bank`'s admin token (tests).
    pub fn with_bank_token(mut self, bank: &str, token: &str) -> Self {
        self.bank_admin_tokens
            .insert(bank.to_owned(), SecretString::from(token.to_owned()));
        self
    }
}

/// Where one bank-token entry applies.
#[derive(Debug, PartialEq, Eq)]
enum Scope<'a> {
    /// `NAME=VALUE` with NAME a configured bank.
    Bank(&'a str, &'a str),
    /// Anything else: the value for every bank without its own.
    Default(&'a str),
}

/// Splits `NAME=VALUE` when NAME is one of `banks`; otherwise the whole entry is the value. So a
/// plain token or path that happens to hold `=` keeps working, and `NAME=...` can only pick a
/// bank that exists.
fn scope<'a>(entry: &'a str, banks: &[BankTarget]) -> Scope<'a> {
    match entry.split_once('=') {
        Some((name, value)) if banks.iter().any(|b| b.name == name.trim()) => {
            Scope::Bank(name.trim(), value)
        }
        _ => Scope::Default(entry),
    }
}

impl Config {
    /// Reads the secrets: the flag wins over the file; a file's content is trimmed. A bank's
    /// own token wins over a shared one.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        let banks = self.bank_list()?;
        Ok(Secrets {
            api_key: resolve(&self.api_key, &self.api_key_file, "--api-key-file")?,
            operator_key: resolve(
                &self.operator_key,
                &self.operator_key_file,
                "--operator-key-file",
            )?,
            bank_admin_tokens: self.bank_tokens(&banks)?,
        })
    }

    fn bank_tokens(
        &self,
        banks: &[BankTarget],
    ) -> Result<BTreeMap<String, SecretString>, ConfigError> {
        use secrecy::ExposeSecret;
        const FLAG: &str = "--bank-admin-token";
        const FILE_FLAG: &str = "--bank-admin-token-file";
        // Per bank: (from the flag, from a file); the default likewise.
        let mut own: BTreeMap<String, (Option<SecretString>, Option<SecretString>)> =
            BTreeMap::new();
        let mut default: (Option<SecretString>, Option<SecretString>) = (None, None);
        for token in &self.bank_admin_token {
            let text = token.expose_secret();
            if text.trim().is_empty() {
                continue;
            }
            let (slot, value, bank) = match scope(text, banks) {
                Scope::Bank(name, value) => (
                    &mut own.entry(name.to_owned()).or_default().0,
                    value,
                    name.to_owned(),
                ),
                Scope::Default(value) => (&mut default.0, value, EVERY_BANK.to_owned()),
            };
            if slot.is_some() {
                return Err(ConfigError::DuplicateToken { flag: FLAG, bank });
            }
            *slot = Some(SecretString::from(value.trim().to_owned()));
        }
        for entry in &self.bank_admin_token_file {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (slot, path, bank) = match scope(entry, banks) {
                Scope::Bank(name, path) => (
                    &mut own.entry(name.to_owned()).or_default().1,
                    path,
                    name.to_owned(),
                ),
                Scope::Default(path) => (&mut default.1, path, EVERY_BANK.to_owned()),
            };
            if slot.is_some() {
                return Err(ConfigError::DuplicateToken {
                    flag: FILE_FLAG,
                    bank,
                });
            }
            let path = PathBuf::from(path);
            *slot = Some(read_secret(&path, FILE_FLAG).map_err(|e| match e {
                // A file that is not there, under a prefix that looks like a bank name, is
                // most likely a typo in the name: say so.
                ConfigError::SecretFile { .. } if looks_like_bank_entry(entry) => {
                    ConfigError::UnknownBank {
                        flag: FILE_FLAG,
                        bank: entry.split_once('=').map_or("", |(n, _)| n).to_owned(),
                    }
                }
                other => other,
            })?);
        }
        let default = default.0.or(default.1);
        let mut tokens = BTreeMap::new();
        for bank in banks {
            let (flag, file) = own.remove(&bank.name).unwrap_or_default();
            if let Some(token) = flag.or(file).or_else(|| default.clone()) {
                tokens.insert(bank.name.clone(), token);
            }
        }
        Ok(tokens)
    }
}

impl Config {
    /// The webhook receiver's secrets from --webhook-secret-file (none without it): one
    /// `whsec_...` per non-empty line. A bad line names its number, never its content.
    pub fn webhook_secrets(&self) -> Result<Vec<webhooks::Secret>, ConfigError> {
        const FLAG: &str = "--webhook-secret-file";
        let Some(path) = &self.webhook_secret_file else {
            return Ok(Vec::new());
        };
        use secrecy::ExposeSecret;
        let text = read_secret(path, FLAG)?;
        text.expose_secret()
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                webhooks::Secret::parse(line).map_err(|error| ConfigError::WebhookSecret {
                    path: path.display().to_string(),
                    line: i + 1,
                    error,
                })
            })
            .collect()
    }
}

/// How an error names the shared token.
const EVERY_BANK: &str = "(every bank without its own)";

/// `NAME=...` whose NAME could be a bank name.
fn looks_like_bank_entry(entry: &str) -> bool {
    entry
        .split_once('=')
        .is_some_and(|(name, _)| valid_bank_name(name.trim()))
}

fn resolve(
    value: &Option<SecretString>,
    file: &Option<PathBuf>,
    flag: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    read_secret(path, flag).map(Some)
}

/// A secret file's content, trimmed; empty is an error (a half-written file must not mean
/// "no token").
fn read_secret(path: &std::path::Path, flag: &'static str) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
        flag,
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::EmptySecretFile {
            flag,
            path: path.display().to_string(),
        });
    }
    Ok(SecretString::from(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use secrecy::ExposeSecret;

    use super::*;

    fn config() -> Config {
        Config::for_tests(
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:2".parse().unwrap(),
        )
    }

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["dashboard"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().config
    }

    fn names(config: &Config) -> Result<Vec<(String, String)>, ConfigError> {
        config.bank_list().map(|banks| {
            banks
                .into_iter()
                .map(|b| (b.name, b.url.to_string()))
                .collect()
        })
    }

    /// A fresh file under the system temp dir holding `text`, removed when dropped (pass or
    /// fail).
    fn temp_file(label: &str, text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new()
            .prefix(&format!("dash-{label}-"))
            .tempfile()
            .unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_secret_file_is_read_and_trimmed_and_the_flag_wins() {
        let file = temp_file("key", "  sk_from_file_0123456789\n");
        let mut config = config();
        config.api_key_file = Some(file.path().to_path_buf());
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
        file.close().unwrap();
    }

    #[test]
    fn a_missing_secret_file_is_an_error_naming_the_flag() {
        let mut config = config();
        config.bank_admin_token_file = vec!["/nonexistent/token".into()];
        let error = config.secrets().unwrap_err().to_string();
        assert!(error.contains("--bank-admin-token-file"), "{error}");
    }

    #[test]
    fn bank_url_alone_is_one_bank_named_bank_and_the_default_is_port_8001() {
        assert_eq!(
            names(&parse(&[])).unwrap(),
            [("bank".to_owned(), "http://127.0.0.1:8001/".to_owned())]
        );
        assert_eq!(
            names(&parse(&["--bank-url", "http://127.0.0.1:9000"])).unwrap(),
            [("bank".to_owned(), "http://127.0.0.1:9000/".to_owned())]
        );
    }

    #[test]
    fn banks_keep_their_order_from_repeated_flags_or_one_comma_separated_value() {
        let want = [
            ("a".to_owned(), "http://127.0.0.1:8001/".to_owned()),
            ("b".to_owned(), "http://127.0.0.1:8002/".to_owned()),
        ];
        let repeated = parse(&[
            "--bank",
            "a=http://127.0.0.1:8001",
            "--bank",
            "b=http://127.0.0.1:8002",
        ]);
        assert_eq!(names(&repeated).unwrap(), want);
        // The environment form is split the same way (clap's value delimiter).
        let joined = parse(&["--bank", "a=http://127.0.0.1:8001,b=http://127.0.0.1:8002"]);
        assert_eq!(names(&joined).unwrap(), want);
    }

    #[test]
    fn bad_bank_lists_are_refused_naming_the_flag() {
        for (args, needle) in [
            (
                &["--bank", "a=http://x:1", "--bank-url", "http://y:2"][..],
                "--bank-url",
            ),
            (&["--bank", "http://x:1"][..], "is not NAME=URL"),
            (&["--bank", "a b=http://x:1"][..], "letters, digits"),
            (&["--bank", "a=ftp://x:1"][..], "http:// or https://"),
            (
                &["--bank", "a=http://x:1", "--bank", "a=http://y:2"][..],
                "twice",
            ),
            (&["--bank", "a=not a url"][..], "is not a URL"),
        ] {
            let error = names(&parse(args)).unwrap_err().to_string();
            assert!(
                error.starts_with("--bank (DASHBOARD_BANKS)") && error.contains(needle),
                "{args:?}: {error}"
            );
        }
    }

    #[test]
    fn each_bank_gets_its_own_token_and_the_shared_one_fills_in() {
        let own_file = temp_file("tok-b", "token-b-from-file\n");
        let shared_file = temp_file("tok-shared", "token-shared\n");
        let own = format!("b={}", own_file.path().display());
        let shared = shared_file.path().display().to_string();
        let config = parse(&[
            "--bank",
            "a=http://127.0.0.1:8001",
            "--bank",
            "b=http://127.0.0.1:8002",
            "--bank",
            "c=http://127.0.0.1:8003",
            "--bank-admin-token",
            "c=token-c",
            "--bank-admin-token-file",
            &own,
            "--bank-admin-token-file",
            &shared,
        ]);
        let tokens = config.secrets().unwrap().bank_admin_tokens;
        let token = |bank: &str| tokens[bank].expose_secret().to_owned();
        assert_eq!(token("a"), "token-shared");
        assert_eq!(token("b"), "token-b-from-file");
        assert_eq!(token("c"), "token-c");
        own_file.close().unwrap();
        shared_file.close().unwrap();
    }

    #[test]
    fn a_plain_token_is_every_banks_and_one_with_an_unknown_prefix_stays_whole() {
        // One bank by --bank-url, the token as before: a base64 token ending in `=` is whole.
        let config = parse(&[
            "--bank-url",
            "http://127.0.0.1:8001",
            "--bank-admin-token",
            "dG9rZW4=",
        ]);
        let tokens = config.secrets().unwrap().bank_admin_tokens;
        assert_eq!(tokens["bank"].expose_secret(), "dG9rZW4=");
        // No token at all: no entry (the bank is called without one).
        assert!(parse(&[]).secrets().unwrap().bank_admin_tokens.is_empty());
    }

    #[test]
    fn a_token_file_for_an_unknown_bank_or_twice_for_one_bank_is_refused() {
        let error = parse(&[
            "--bank",
            "a=http://127.0.0.1:8001",
            "--bank-admin-token-file",
            "z=/nonexistent/token",
        ])
        .secrets()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("\"z\"") && error.contains("not configured"),
            "{error}"
        );
        let error = parse(&[
            "--bank",
            "a=http://127.0.0.1:8001",
            "--bank-admin-token",
            "a=one",
            "--bank-admin-token",
            "a=two",
        ])
        .secrets()
        .unwrap_err()
        .to_string();
        assert!(error.contains("two tokens"), "{error}");
    }
}
