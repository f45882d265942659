//! The payment API's flags; each has an environment variable, and `--help` lists both.
//! Defaults are docs/contract.md §3's; the effective values are published in `/v1/status`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use resilience::{
    breaker::{BreakerConfig, WindowKind},
    budget::BudgetConfig,
    bulkhead::BulkheadConfig,
    pipeline::PipelineConfig,
    retry::RetryConfig,
};
use secrecy::SecretString;

use crate::payments::HealthSettings;
pub use crate::payments::RoutingMode;

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

    /// Base URL of the bank, when there is one (it is named `bank`). Unset, and no --bank:
    /// http://127.0.0.1:8001. For several banks use --bank instead.
    #[arg(long, env = "BANK_URL")]
    pub bank_url: Option<reqwest::Url>,

    /// A bank as `NAME=URL`, repeatable (env: comma-separated `NAME=URL,NAME=URL`), in
    /// priority order: a payment goes to the first bank whose breaker and bulkhead take it,
    /// and moves to the next only when every attempt was definitely not processed
    /// (docs/failover.md). NAME: letters, digits, - and _. Each bank gets its own breaker,
    /// retry budget and bulkhead, with the settings below.
    #[arg(long = "bank", env = "PAYMENT_API_BANKS", value_delimiter = ',')]
    pub banks: Vec<String>,

    /// One bank's own resilience setting as `NAME.KEY=VALUE`, repeatable (env: comma-separated);
    /// every other setting of that bank is the shared flag's. KEY is the shared flag's name
    /// without `--`: attempt-timeout-ms, max-attempts, backoff-base-ms, backoff-max-ms,
    /// breaker-window, breaker-minimum-calls, breaker-failure-rate, breaker-slow-call-ms,
    /// breaker-slow-rate, breaker-consecutive-failures, breaker-open-ms, breaker-max-open-ms,
    /// breaker-half-open-probes, bulkhead, retry-budget-ratio, retry-budget-min-per-second
    /// (not --deadline-ms: one deadline covers a payment's whole route). E.g.
    /// `--bank-setting b.bulkhead=16 --bank-setting b.breaker-open-ms=10000`.
    #[arg(
        long = "bank-setting",
        env = "PAYMENT_API_BANK_SETTINGS",
        value_delimiter = ','
    )]
    pub bank_settings: Vec<String>,

    /// Decline codes after which a payment may move to the next bank (comma-separated; none
    /// by default). A decline decides the payment's reference at that bank, so nothing was
    /// charged there; any other decline is final.
    #[arg(long, env = "PAYMENT_API_CASCADE_DECLINE_CODES", value_delimiter = ',')]
    pub cascade_decline_codes: Vec<String>,

    /// Tenant API keys as `tenant:key,tenant:key` (several may be valid at once, for
    /// rotation); an entry `operator:NAME:key` is an operator key instead.
    #[arg(long, env = "PAYMENT_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<SecretString>,

    /// File holding API keys separated by commas or newlines (`#` starts a comment):
    /// `tenant:key` for a tenant key, `operator:NAME:key` for an operator key.
    #[arg(long, env = "PAYMENT_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Operator keys as `NAME:key,NAME:key`: breaker controls, /v1/status, /v1/logs and reads
    /// of every tenant's payments. NAME (letters, digits, - and _) is what the breaker history
    /// and the logs show for the operator; never the key.
    #[arg(long, env = "PAYMENT_API_OPERATOR_KEYS", hide_env_values = true)]
    pub operator_keys: Option<SecretString>,

    /// Bearer token `GET /metrics` requires (an operator key is accepted too). Unset: /metrics
    /// is open, and a warning is logged at start when the listener is not on loopback.
    #[arg(long, env = "PAYMENT_API_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,

    /// File holding the /metrics bearer token (alternative to --metrics-token).
    #[arg(long, env = "PAYMENT_API_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Directory for the embedded SQLite store (`payments.db`).
    #[arg(long, env = "PAYMENT_API_DATA_DIR", default_value = "./.data")]
    pub data_dir: PathBuf,

    /// Store URL: `postgres://...` to share one store between instances, or `sqlite://PATH`.
    /// Unset: SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    #[command(flatten)]
    pub resilience: ResilienceArgs,

    #[command(flatten)]
    pub routing: RoutingArgs,

    #[command(flatten)]
    pub reconciler: ReconcilerArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Webhook deliveries (docs/webhooks.md).
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Accept endpoint URLs on private, loopback and link-local addresses (and `localhost`),
    /// and deliver to them. Off by default: an endpoint URL is chosen by a tenant, and without
    /// this rule it could make the API call into the operator's own network (SSRF). `run` sets
    /// it for local use.
    #[arg(long, env = "PAYMENT_API_WEBHOOK_ALLOW_PRIVATE_URLS")]
    pub webhook_allow_private_urls: bool,
    /// Multiplies every delay of the retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then
    /// every 10 h for 3 days) and of each endpoint's breaker (open 5 s, growing to 10 min);
    /// e.g. 0.001 for tests. The number of attempts stays the same.
    #[arg(long, env = "PAYMENT_API_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    pub webhook_retry_scale: f64,
    /// How long one delivery attempt may take (connect, send, answer), in milliseconds.
    #[arg(long, env = "PAYMENT_API_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// How often the delivery worker looks for due deliveries, in milliseconds.
    #[arg(long, env = "PAYMENT_API_WEBHOOK_POLL_MS", default_value_t = 500)]
    pub webhook_poll_ms: u64,
    /// Deliveries in flight at once to one endpoint (its bulkhead); more are postponed.
    #[arg(
        long,
        env = "PAYMENT_API_WEBHOOK_ENDPOINT_CONCURRENCY",
        default_value_t = 8
    )]
    pub webhook_endpoint_concurrency: u32,
}

impl WebhookArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        let scale = self.webhook_retry_scale;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(ConfigError::Webhooks(format!(
                "--webhook-retry-scale (PAYMENT_API_WEBHOOK_RETRY_SCALE) must be a positive number, not {scale}"
            )));
        }
        if self.webhook_timeout_ms == 0 || self.webhook_poll_ms == 0 {
            return Err(ConfigError::Webhooks(
                "--webhook-timeout-ms and --webhook-poll-ms must be at least 1".into(),
            ));
        }
        if self.webhook_endpoint_concurrency == 0 {
            return Err(ConfigError::Webhooks(
                "--webhook-endpoint-concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for WebhookArgs {
    fn default() -> Self {
        Self {
            webhook_allow_private_urls: false,
            webhook_retry_scale: 1.0,
            webhook_timeout_ms: 10_000,
            webhook_poll_ms: 500,
            webhook_endpoint_concurrency: 8,
        }
    }
}

/// Limits at the edge, enforced before any payment work: what one client, or all of them
/// together, can make this process do.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Requests handled at once; one more is shed with 503 `overloaded` and Retry-After
    /// (`/health`, `/ready`, `/metrics` and `/v1/status` are never shed).
    #[arg(long, env = "PAYMENT_API_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: u32,
    /// Requests per second each API key may make (0: no limit); over it, 429 `rate_limited`
    /// with Retry-After.
    #[arg(long, env = "PAYMENT_API_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Requests an API key may make at once above its rate, after being idle (0: one second's
    /// worth).
    #[arg(long, env = "PAYMENT_API_RATE_LIMIT_BURST", default_value_t = 0)]
    pub rate_limit_burst: u32,
    /// Longest a request may take, body upload included, in milliseconds; then 408
    /// `request_timeout`. Must exceed the payment deadline (a payment in progress is finished
    /// and recorded anyway; its key then replays the outcome).
    #[arg(long, env = "PAYMENT_API_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Most header fields a request may carry; more is 431 `headers_too_large`.
    #[arg(long, env = "PAYMENT_API_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,
    /// Most bytes of header names and values a request may carry; more is 431.
    #[arg(long, env = "PAYMENT_API_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT: how long requests and payments in progress get to finish, in
    /// milliseconds, after the listener closes. Unset: --deadline-ms plus the lease safety
    /// margin (12000 with the defaults), enough for a payment that has just started. A payment
    /// still running after it keeps its lease in the store; the next process resumes it.
    #[arg(long, env = "PAYMENT_API_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
}

impl Default for EdgeArgs {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            rate_limit: 1000,
            rate_limit_burst: 0,
            request_timeout_ms: 30_000,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            drain_timeout_ms: None,
        }
    }
}

/// The bank pipeline: timeouts, retries, breaker, bulkhead. These are every bank's unless
/// `--bank-setting` gives a bank its own.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ResilienceArgs {
    /// Timeout of one bank attempt, in milliseconds.
    #[arg(long, env = "PAYMENT_API_ATTEMPT_TIMEOUT_MS", default_value_t = 2000)]
    pub attempt_timeout_ms: u64,
    /// Deadline of a whole payment (all attempts and delays), in milliseconds.
    #[arg(long, env = "PAYMENT_API_DEADLINE_MS", default_value_t = 10_000)]
    pub deadline_ms: u64,
    /// Attempts per payment, the first included.
    #[arg(long, env = "PAYMENT_API_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: u32,
    /// Base of the exponential backoff (full jitter), in milliseconds.
    #[arg(long, env = "PAYMENT_API_BACKOFF_BASE_MS", default_value_t = 100)]
    pub backoff_base_ms: u64,
    /// Cap of the backoff, in milliseconds.
    #[arg(long, env = "PAYMENT_API_BACKOFF_MAX_MS", default_value_t = 2000)]
    pub backoff_max_ms: u64,
    /// Breaker: calls in the sliding window.
    #[arg(long, env = "PAYMENT_API_BREAKER_WINDOW", default_value_t = 20)]
    pub breaker_window: u32,
    /// Breaker: calls the window must hold before rates count.
    #[arg(long, env = "PAYMENT_API_BREAKER_MINIMUM_CALLS", default_value_t = 10)]
    pub breaker_minimum_calls: u32,
    /// Breaker: failure rate (0-1] that opens it.
    #[arg(long, env = "PAYMENT_API_BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Breaker: a success at least this slow (ms) is a slow call.
    #[arg(long, env = "PAYMENT_API_BREAKER_SLOW_CALL_MS", default_value_t = 1000)]
    pub breaker_slow_call_ms: u64,
    /// Breaker: slow-call rate (0-1] that opens it.
    #[arg(long, env = "PAYMENT_API_BREAKER_SLOW_RATE", default_value_t = 0.8)]
    pub breaker_slow_rate: f64,
    /// Breaker: consecutive failures that open it at once (0 disables).
    #[arg(
        long,
        env = "PAYMENT_API_BREAKER_CONSECUTIVE_FAILURES",
        default_value_t = 5
    )]
    pub breaker_consecutive_failures: u32,
    /// Breaker: first open wait, in milliseconds (grows on repeated openings).
    #[arg(long, env = "PAYMENT_API_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub breaker_open_ms: u64,
    /// Breaker: cap of the open wait, in milliseconds.
    #[arg(
        long,
        env = "PAYMENT_API_BREAKER_MAX_OPEN_MS",
        default_value_t = 60_000
    )]
    pub breaker_max_open_ms: u64,
    /// Breaker: probes admitted in half-open.
    #[arg(
        long,
        env = "PAYMENT_API_BREAKER_HALF_OPEN_PROBES",
        default_value_t = 3
    )]
    pub breaker_half_open_probes: u32,
    /// Bulkhead: concurrent bank calls.
    #[arg(long, env = "PAYMENT_API_BULKHEAD", default_value_t = 64)]
    pub bulkhead: u32,
    /// Retry budget: retries allowed per first attempt, as a fraction (0.2 = 20%), so retries
    /// cannot multiply the load on a failing bank.
    #[arg(long, env = "PAYMENT_API_RETRY_BUDGET_RATIO", default_value_t = 0.2)]
    pub retry_budget_ratio: f64,
    /// Retry budget: retries always allowed per second, whatever the traffic.
    #[arg(
        long,
        env = "PAYMENT_API_RETRY_BUDGET_MIN_PER_SECOND",
        default_value_t = 10
    )]
    pub retry_budget_min_per_second: u32,
}

/// The keys `--bank-setting NAME.KEY=VALUE` takes: the shared flags' names without `--`.
pub const BANK_SETTING_KEYS: [&str; 16] = [
    "attempt-timeout-ms",
    "max-attempts",
    "backoff-base-ms",
    "backoff-max-ms",
    "breaker-window",
    "breaker-minimum-calls",
    "breaker-failure-rate",
    "breaker-slow-call-ms",
    "breaker-slow-rate",
    "breaker-consecutive-failures",
    "breaker-open-ms",
    "breaker-max-open-ms",
    "breaker-half-open-probes",
    "bulkhead",
    "retry-budget-ratio",
    "retry-budget-min-per-second",
];

impl ResilienceArgs {
    /// Sets the setting whose flag is `--KEY` to `value` (one of [`BANK_SETTING_KEYS`]).
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            value
                .trim()
                .parse()
                .map_err(|e| format!("{key}: {value:?} is not a valid value: {e}"))
        }
        match key {
            "attempt-timeout-ms" => self.attempt_timeout_ms = parse(key, value)?,
            "max-attempts" => self.max_attempts = parse(key, value)?,
            "backoff-base-ms" => self.backoff_base_ms = parse(key, value)?,
            "backoff-max-ms" => self.backoff_max_ms = parse(key, value)?,
            "breaker-window" => self.breaker_window = parse(key, value)?,
            "breaker-minimum-calls" => self.breaker_minimum_calls = parse(key, value)?,
            "breaker-failure-rate" => self.breaker_failure_rate = parse(key, value)?,
            "breaker-slow-call-ms" => self.breaker_slow_call_ms = parse(key, value)?,
            "breaker-slow-rate" => self.breaker_slow_rate = parse(key, value)?,
            "breaker-consecutive-failures" => {
                self.breaker_consecutive_failures = parse(key, value)?
            }
            "breaker-open-ms" => self.breaker_open_ms = parse(key, value)?,
            "breaker-max-open-ms" => self.breaker_max_open_ms = parse(key, value)?,
            "breaker-half-open-probes" => self.breaker_half_open_probes = parse(key, value)?,
            "bulkhead" => self.bulkhead = parse(key, value)?,
            "retry-budget-ratio" => self.retry_budget_ratio = parse(key, value)?,
            "retry-budget-min-per-second" => {
                self.retry_budget_min_per_second = parse(key, value)?
            }
            "deadline-ms" => {
                return Err(
                    "deadline-ms is not per bank: one deadline (--deadline-ms) covers a payment's whole route"
                        .to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "unknown key {other:?}; the keys are {}",
                    BANK_SETTING_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The pipeline these settings make.
    pub(crate) fn pipeline(&self) -> PipelineConfig {
        let r = self;
        let ms = Duration::from_millis;
        PipelineConfig {
            breaker: BreakerConfig {
                window: WindowKind::CountBased {
                    size: r.breaker_window,
                },
                minimum_calls: r.breaker_minimum_calls,
                failure_rate_threshold: r.breaker_failure_rate,
                slow_call_duration: ms(r.breaker_slow_call_ms),
                slow_call_rate_threshold: r.breaker_slow_rate,
                consecutive_failures: r.breaker_consecutive_failures,
                open_duration: ms(r.breaker_open_ms),
                max_open_duration: ms(r.breaker_max_open_ms),
                half_open_probes: r.breaker_half_open_probes,
                ..BreakerConfig::default()
            },
            retry: RetryConfig {
                max_attempts: r.max_attempts,
                base_delay: ms(r.backoff_base_ms),
                max_delay: ms(r.backoff_max_ms),
                ..RetryConfig::default()
            },
            budget: BudgetConfig {
                retry_ratio: r.retry_budget_ratio,
                min_retries_per_second: r.retry_budget_min_per_second,
                ..BudgetConfig::default()
            },
            bulkhead: BulkheadConfig {
                max_concurrent: r.bulkhead,
                ..BulkheadConfig::default()
            },
            attempt_timeout: ms(r.attempt_timeout_ms),
            deadline: ms(r.deadline_ms),
            ..PipelineConfig::default()
        }
    }
}

/// How a new payment's banks are ordered (docs/failover.md, "Routing").
#[derive(Debug, Clone, clap::Args)]
pub struct RoutingArgs {
    /// `priority`: the banks in the order configured. `health`: by each bank's success rate
    /// over its last --routing-window attempts, priority breaking ties; a bank below
    /// --routing-min-success goes last, and --routing-exploration of payments try it first so
    /// its recovery is noticed. Either way a payment moves on only under the cascade rule.
    #[arg(
        long = "routing",
        env = "PAYMENT_API_ROUTING",
        value_enum,
        default_value_t = RoutingMode::Priority
    )]
    pub mode: RoutingMode,
    /// Health routing: a bank's score covers its last this many charge attempts.
    #[arg(long, env = "PAYMENT_API_ROUTING_WINDOW", default_value_t = 100)]
    pub routing_window: u32,
    /// Health routing: attempts a bank needs in its window before its score counts (until
    /// then it keeps its priority place).
    #[arg(long, env = "PAYMENT_API_ROUTING_MIN_SAMPLES", default_value_t = 10)]
    pub routing_min_samples: u32,
    /// Health routing: a bank whose score is below this (0-1) is tried after every other bank.
    #[arg(long, env = "PAYMENT_API_ROUTING_MIN_SUCCESS", default_value_t = 0.5)]
    pub routing_min_success: f64,
    /// Health routing: the share (0-1) of payments that try a dropped bank first, so its
    /// recovery is noticed.
    #[arg(long, env = "PAYMENT_API_ROUTING_EXPLORATION", default_value_t = 0.05)]
    pub routing_exploration: f64,
}

impl Default for RoutingArgs {
    fn default() -> Self {
        Self {
            mode: RoutingMode::Priority,
            routing_window: 100,
            routing_min_samples: 10,
            routing_min_success: 0.5,
            routing_exploration: 0.05,
        }
    }
}

impl RoutingArgs {
    /// The health settings, checked: a window of at least 1, at most as many samples as the
    /// window holds, and shares between 0 and 1.
    pub(crate) fn health(&self) -> Result<HealthSettings, ConfigError> {
        let invalid = |flag: &str, why: String| ConfigError::Routing(format!("{flag} {why}"));
        if self.routing_window == 0 {
            return Err(invalid("--routing-window", "must be at least 1".into()));
        }
        if self.routing_min_samples > self.routing_window {
            return Err(invalid(
                "--routing-min-samples",
                format!(
                    "({}) must not exceed --routing-window ({})",
                    self.routing_min_samples, self.routing_window
                ),
            ));
        }
        for (flag, value) in [
            ("--routing-min-success", self.routing_min_success),
            ("--routing-exploration", self.routing_exploration),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(flag, format!("({value}) must be between 0 and 1")));
            }
        }
        Ok(HealthSettings {
            window: self.routing_window as usize,
            min_samples: self.routing_min_samples as usize,
            min_success: self.routing_min_success,
            exploration: self.routing_exploration,
        })
    }
}

/// The reconciler and the key store's bookkeeping.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcilerArgs {
    /// How often the reconciler looks for pending payments, in milliseconds.
    #[arg(
        long,
        env = "PAYMENT_API_RECONCILE_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub reconcile_interval_ms: u64,
    /// How long after the last charge attempt a charge the bank has no record of is re-sent.
    #[arg(long, env = "PAYMENT_API_RECONCILE_GRACE_MS", default_value_t = 5000)]
    pub reconcile_grace_ms: u64,
    /// Lease of a request (or of the reconciler) on its payment, in milliseconds; a crashed
    /// or stopped handler's payment is resumed by a reconciler once it expires. Must be at
    /// least --deadline-ms plus a safety margin of max(2000 ms, 20% of --deadline-ms)
    /// (12000 with the default deadline): the API refuses to start otherwise, since a lease
    /// that ends while its payment is still running lets a second worker take it.
    #[arg(long, env = "PAYMENT_API_LEASE_MS", default_value_t = 15_000)]
    pub lease_ms: u64,
    /// How long completed idempotency keys are kept, in hours.
    #[arg(long, env = "PAYMENT_API_KEY_RETENTION_HOURS", default_value_t = 72)]
    pub key_retention_hours: u64,
    /// How long webhook events are kept, in days, once none of their deliveries is pending
    /// (with their deliveries and attempts); 0 keeps them forever. An event a delivery still
    /// waits on is never deleted.
    #[arg(long, env = "PAYMENT_API_EVENT_RETENTION_DAYS", default_value_t = 30)]
    pub event_retention_days: u64,
}

impl Default for ResilienceArgs {
    fn default() -> Self {
        Self {
            attempt_timeout_ms: 2000,
            deadline_ms: 10_000,
            max_attempts: 4,
            backoff_base_ms: 100,
            backoff_max_ms: 2000,
            breaker_window: 20,
            breaker_minimum_calls: 10,
            breaker_failure_rate: 0.5,
            breaker_slow_call_ms: 1000,
            breaker_slow_rate: 0.8,
            breaker_consecutive_failures: 5,
            breaker_open_ms: 5000,
            breaker_max_open_ms: 60_000,
            breaker_half_open_probes: 3,
            bulkhead: 64,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10,
        }
    }
}

impl Default for ReconcilerArgs {
    fn default() -> Self {
        Self {
            reconcile_interval_ms: 1000,
            reconcile_grace_ms: 5000,
            lease_ms: 15_000,
            key_retention_hours: 72,
            event_retention_days: 30,
        }
    }
}

/// The least a lease must exceed the payment deadline by: the larger of 2 s and 20% of the
/// deadline. A payment's handler holds its lease for the whole deadline, then writes its
/// outcome (a store write that may wait behind others), on a runtime that may be busy, on a
/// host whose clock may step; the margin covers that tail, so the reconciler never takes a
/// payment whose handler is still running.
pub fn lease_margin(deadline: Duration) -> Duration {
    (deadline / 5).max(Duration::from_secs(2))
}

/// A combination of settings the API refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A webhook flag out of range (names the flag).
    #[error("{0}")]
    Webhooks(String),
    #[error(
        "--lease-ms ({lease_ms}) must be at least --deadline-ms ({deadline_ms}) plus a safety margin of {margin_ms} ms (the larger of 2000 ms and 20% of the deadline): set --lease-ms to {min_lease_ms} or more (PAYMENT_API_LEASE_MS), or lower --deadline-ms. A lease that ends while its payment is still running lets another worker take the payment."
    )]
    LeaseTooShort {
        lease_ms: u64,
        deadline_ms: u64,
        margin_ms: u64,
        min_lease_ms: u64,
    },
    #[error(
        "--request-timeout-ms ({request_timeout_ms}) must exceed --deadline-ms ({deadline_ms}): a payment needs its whole deadline"
    )]
    RequestTimeoutTooShort {
        request_timeout_ms: u64,
        deadline_ms: u64,
    },
    #[error("--bank (PAYMENT_API_BANKS) {0}")]
    Bank(String),
    #[error("--bank-setting (PAYMENT_API_BANK_SETTINGS) {0}")]
    BankSetting(String),
    #[error("{0}")]
    Routing(String),
}

/// The bank `--bank-url` (or the default URL) configures, when no `--bank` is given.
pub use payment_types::banks::SINGLE_BANK_NAME;

/// A bank as configured: its name, base URL and resilience settings (the shared ones with its
/// `--bank-setting` overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct BankConfig {
    pub name: String,
    pub url: reqwest::Url,
    pub resilience: ResilienceArgs,
}

impl BankConfig {
    /// This bank's pipeline.
    pub(crate) fn pipeline(&self) -> PipelineConfig {
        self.resilience.pipeline()
    }
}

impl Config {
    /// Checks the settings that constrain each other; [`crate::Application::build`] refuses to
    /// start on the first error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let deadline_ms = self.resilience.deadline_ms;
        let margin_ms = duration_ms(lease_margin(Duration::from_millis(deadline_ms)));
        let min_lease_ms = deadline_ms.saturating_add(margin_ms);
        if self.reconciler.lease_ms < min_lease_ms {
            return Err(ConfigError::LeaseTooShort {
                lease_ms: self.reconciler.lease_ms,
                deadline_ms,
                margin_ms,
                min_lease_ms,
            });
        }
        if self.edge.request_timeout_ms <= deadline_ms {
            return Err(ConfigError::RequestTimeoutTooShort {
                request_timeout_ms: self.edge.request_timeout_ms,
                deadline_ms,
            });
        }
        self.bank_list()?;
        self.routing.health()?;
        self.webhooks.validate()?;
        Ok(())
    }

    /// The banks in priority order: each `--bank NAME=URL`, or the one bank of `--bank-url`
    /// (named `bank`). Refuses both at once, a malformed entry, a name that is not letters,
    /// digits, `-` and `_`, a URL that is not http(s) with a host, and a name given twice.
    ///
    /// Each bank's resilience settings are the shared flags with its `--bank-setting`
    /// overrides; an entry that is not `NAME.KEY=VALUE`, names no configured bank, has an
    /// unknown key or a value of the wrong type, or makes a pipeline the resilience crate
    /// refuses (a rate over 1, ...) is refused naming `--bank-setting`.
    pub fn bank_list(&self) -> Result<Vec<BankConfig>, ConfigError> {
        let mut banks = self.bank_names_and_urls()?;
        for entry in self.bank_settings.iter().map(|e| e.trim()) {
            if entry.is_empty() {
                continue;
            }
            let invalid = |why: String| ConfigError::BankSetting(format!("{entry:?}: {why}"));
            let Some((target, value)) = entry.split_once('=') else {
                return Err(invalid(
                    "is not NAME.KEY=VALUE (e.g. b.bulkhead=16)".to_owned(),
                ));
            };
            let Some((name, key)) = target.trim().split_once('.') else {
                return Err(invalid(
                    "is not NAME.KEY=VALUE (e.g. b.bulkhead=16)".to_owned(),
                ));
            };
            let Some(index) = banks.iter().position(|b| b.name == name) else {
                let known: Vec<&str> = banks.iter().map(|b| b.name.as_str()).collect();
                return Err(invalid(format!(
                    "no bank is named {name:?} (the banks are {})",
                    known.join(", ")
                )));
            };
            banks[index].resilience.set(key, value).map_err(invalid)?;
        }
        for bank in &banks {
            if bank.resilience != self.resilience {
                bank.pipeline()
                    .validate()
                    .map_err(|e| ConfigError::BankSetting(format!("bank {:?}: {e}", bank.name)))?;
            }
        }
        Ok(banks)
    }

    /// The banks in priority order, with the shared resilience settings.
    fn bank_names_and_urls(&self) -> Result<Vec<BankConfig>, ConfigError> {
        let banks = payment_types::banks::parse_banks(
            &self.banks,
            self.bank_url.as_ref(),
            crate::auth::valid_name,
        )
        .map_err(ConfigError::Bank)?;
        Ok(banks
            .into_iter()
            .map(|(name, url)| BankConfig {
                name,
                url,
                resilience: self.resilience.clone(),
            })
            .collect())
    }

    /// How long a shutdown waits for requests and payments in progress (see
    /// `--drain-timeout-ms`).
    pub fn drain_timeout(&self) -> Duration {
        match self.edge.drain_timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => {
                let deadline = Duration::from_millis(self.resilience.deadline_ms);
                deadline + lease_margin(deadline)
            }
        }
    }

    /// A config for tests: loopback on a free port, the given bank and keys, a private data dir.
    pub fn for_tests(bank_url: reqwest::Url, api_keys: &str, data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bank_url: Some(bank_url),
            banks: Vec::new(),
            bank_settings: Vec::new(),
            cascade_decline_codes: Vec::new(),
            api_keys: Some(SecretString::from(api_keys.to_owned())),
            api_keys_file: None,
            operator_keys: None,
            metrics_token: None,
            metrics_token_file: None,
            data_dir,
            database_url: None,
            resilience: ResilienceArgs::default(),
            routing: RoutingArgs::default(),
            reconciler: ReconcilerArgs::default(),
            edge: EdgeArgs::default(),
            webhooks: WebhookArgs::default(),
        }
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.reconciler.lease_ms)
    }

    pub(crate) fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.reconciler.reconcile_interval_ms.max(10))
    }

    pub(crate) fn reconcile_grace(&self) -> Duration {
        Duration::from_millis(self.reconciler.reconcile_grace_ms)
    }

    /// `None`: events are kept forever.
    pub(crate) fn event_retention(&self) -> Option<Duration> {
        match self.reconciler.event_retention_days {
            0 => None,
            days => Some(Duration::from_secs(days.saturating_mul(86_400))),
        }
    }

    pub(crate) fn key_retention(&self) -> Duration {
        Duration::from_secs(self.reconciler.key_retention_hours * 3600)
    }

    /// The shared pipeline settings (a bank without `--bank-setting` has exactly these).
    pub(crate) fn pipeline(&self) -> PipelineConfig {
        self.resilience.pipeline()
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["payment-api", "--api-keys", "acme:0123456789abcdef"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().config
    }

    #[test]
    fn the_defaults_are_valid() {
        let config = parse(&[]);
        assert_eq!(config.resilience.deadline_ms, 10_000);
        assert_eq!(config.reconciler.lease_ms, 15_000);
        assert_eq!(config.validate(), Ok(()));
        let tests = Config::for_tests(
            "http://127.0.0.1:1".parse().unwrap(),
            "acme:0123456789abcdef",
            PathBuf::from("/nonexistent"),
        );
        assert_eq!(tests.validate(), Ok(()));
    }

    #[test]
    fn the_margin_is_two_seconds_or_a_fifth_of_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(lease_margin(ms(1500)), ms(2000));
        assert_eq!(lease_margin(ms(10_000)), ms(2000));
        assert_eq!(lease_margin(ms(20_000)), ms(4000));
        assert_eq!(lease_margin(ms(60_000)), ms(12_000));
    }

    #[test]
    fn a_lease_within_the_margin_of_the_deadline_is_refused_naming_both_flags_and_the_minimum() {
        for (deadline, lease, min) in [
            ("10000", "10000", 12_000),
            ("10000", "11999", 12_000),
            ("1500", "2500", 3500),
            ("20000", "4000", 24_000),
            ("5000", "2500", 7000),
            ("30000", "35999", 36_000),
        ] {
            let config = parse(&["--deadline-ms", deadline, "--lease-ms", lease]);
            let error = config.validate().unwrap_err();
            assert!(
                matches!(error, ConfigError::LeaseTooShort { min_lease_ms, .. } if min_lease_ms == min),
                "{deadline}/{lease}: {error:?}"
            );
            let text = error.to_string();
            for needle in [
                "--lease-ms",
                "--deadline-ms",
                lease,
                deadline,
                &min.to_string(),
            ] {
                assert!(text.contains(needle), "{needle:?} missing from: {text}");
            }
        }
    }

    #[test]
    fn a_lease_at_or_over_the_minimum_is_accepted() {
        for (deadline, lease) in [
            ("10000", "12000"),
            ("1500", "3500"),
            ("2000", "5000"),
            ("20000", "24000"),
        ] {
            let config = parse(&["--deadline-ms", deadline, "--lease-ms", lease]);
            assert_eq!(config.validate(), Ok(()), "{deadline}/{lease}");
        }
    }

    #[test]
    fn a_request_timeout_within_the_deadline_is_refused() {
        let config = parse(&["--deadline-ms", "10000", "--request-timeout-ms", "10000"]);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::RequestTimeoutTooShort { .. })
        ));
    }

    #[test]
    fn the_drain_timeout_defaults_to_the_deadline_plus_the_margin() {
        assert_eq!(parse(&[]).drain_timeout(), Duration::from_secs(12));
        assert_eq!(
            parse(&["--deadline-ms", "20000", "--lease-ms", "30000"]).drain_timeout(),
            Duration::from_secs(24)
        );
        assert_eq!(
            parse(&["--drain-timeout-ms", "500"]).drain_timeout(),
            Duration::from_millis(500)
        );
    }

    fn banks(args: &[&str]) -> Result<Vec<(String, String)>, ConfigError> {
        parse(args).bank_list().map(|banks| {
            banks
                .into_iter()
                .map(|bank| (bank.name, bank.url.to_string()))
                .collect()
        })
    }

    #[test]
    fn bank_url_alone_is_one_bank_named_bank_and_the_default_is_port_8001() {
        assert_eq!(
            banks(&[]).unwrap(),
            [("bank".to_owned(), "http://127.0.0.1:8001/".to_owned())]
        );
        assert_eq!(
            banks(&["--bank-url", "http://127.0.0.1:9000"]).unwrap(),
            [("bank".to_owned(), "http://127.0.0.1:9000/".to_owned())]
        );
    }

    #[test]
    fn banks_are_listed_in_the_order_given_from_flags_or_the_env_form() {
        let expected = [
            ("a".to_owned(), "http://127.0.0.1:9001/".to_owned()),
            ("b-2".to_owned(), "http://127.0.0.1:9002/".to_owned()),
        ];
        assert_eq!(
            banks(&[
                "--bank",
                "a=http://127.0.0.1:9001",
                "--bank",
                "b-2=http://127.0.0.1:9002"
            ])
            .unwrap(),
            expected
        );
        // The env form is comma-separated: the same delimiter on the flag.
        assert_eq!(
            banks(&[
                "--bank",
                "a=http://127.0.0.1:9001, b-2=http://127.0.0.1:9002"
            ])
            .unwrap(),
            expected
        );
    }

    #[test]
    fn a_bad_bank_list_is_a_clear_startup_error() {
        for (args, needle) in [
            (
                vec!["--bank", "a=http://x:1", "--bank-url", "http://y:2"],
                "both given",
            ),
            (vec!["--bank", "http://x:1"], "is not NAME=URL"),
            (vec!["--bank", "a b=http://x:1"], "letters, digits"),
            (vec!["--bank", "=http://x:1"], "letters, digits"),
            (vec!["--bank", "a=not a url"], "is not a URL"),
            (vec!["--bank", "a=ftp://x:1"], "http:// or https://"),
            (
                vec!["--bank", "a=http://x:1", "--bank", "a=http://y:2"],
                "twice",
            ),
        ] {
            let error = parse(&args).validate().unwrap_err().to_string();
            assert!(
                error.starts_with("--bank (PAYMENT_API_BANKS)") && error.contains(needle),
                "{args:?}: {error}"
            );
        }
    }

    fn two_banks(settings: &[&str]) -> Result<Vec<BankConfig>, ConfigError> {
        let mut args = vec![
            "--bank",
            "a=http://127.0.0.1:9001",
            "--bank",
            "b=http://127.0.0.1:9002",
        ];
        for setting in settings {
            args.extend_from_slice(&["--bank-setting", setting]);
        }
        parse(&args).bank_list()
    }

    #[test]
    fn a_bank_setting_overrides_the_shared_flag_for_that_bank_only() {
        let banks = two_banks(&[
            "b.bulkhead=16",
            "b.breaker-open-ms=9000",
            "b.attempt-timeout-ms=750",
            "b.breaker-failure-rate=0.25",
            "b.retry-budget-ratio=0.5",
            "b.max-attempts=2",
        ])
        .unwrap();
        let shared = parse(&[]).resilience;
        assert_eq!(banks[0].resilience, shared, "a keeps the shared settings");
        let b = &banks[1];
        assert_eq!(b.resilience.bulkhead, 16);
        assert_eq!(b.resilience.breaker_open_ms, 9000);
        assert_eq!(b.resilience.breaker_failure_rate, 0.25);
        assert_eq!(b.resilience.breaker_window, shared.breaker_window);
        let pipeline = b.pipeline();
        assert_eq!(pipeline.bulkhead.max_concurrent, 16);
        assert_eq!(pipeline.breaker.open_duration, Duration::from_millis(9000));
        assert_eq!(pipeline.attempt_timeout, Duration::from_millis(750));
        assert_eq!(pipeline.budget.retry_ratio, 0.5);
        assert_eq!(pipeline.retry.max_attempts, 2);
        assert_eq!(pipeline.deadline, Duration::from_millis(shared.deadline_ms));
        // The shared flags are every bank's default, overrides included on top.
        let banks = parse(&[
            "--bank",
            "a=http://127.0.0.1:9001",
            "--bulkhead",
            "8",
            "--bank-setting",
            "a.breaker-window=40",
        ])
        .bank_list()
        .unwrap();
        assert_eq!(
            (
                banks[0].resilience.bulkhead,
                banks[0].resilience.breaker_window
            ),
            (8, 40)
        );
    }

    #[test]
    fn every_bank_setting_key_is_accepted_and_the_env_form_is_comma_separated() {
        for key in BANK_SETTING_KEYS {
            // A valid value other than the default for each.
            let value = match key {
                k if k.ends_with("rate") || k.ends_with("ratio") => "0.3",
                "backoff-base-ms" => "150",
                "breaker-window" => "30",
                k if k.ends_with("-ms") => "7000",
                _ => "7",
            };
            let setting = format!("a.{key}={value}");
            let banks = two_banks(&[&setting]).unwrap_or_else(|e| panic!("{setting}: {e}"));
            assert_ne!(
                banks[0].resilience, banks[1].resilience,
                "{setting} changed nothing"
            );
        }
        let banks = two_banks(&["a.bulkhead=3, b.bulkhead=5"]).unwrap();
        assert_eq!(
            (banks[0].resilience.bulkhead, banks[1].resilience.bulkhead),
            (3, 5)
        );
        // The single bank of --bank-url is named `bank`.
        let banks = parse(&["--bank-setting", "bank.bulkhead=9"])
            .bank_list()
            .unwrap();
        assert_eq!(banks[0].resilience.bulkhead, 9);
    }

    #[test]
    fn a_bad_bank_setting_is_a_startup_error_naming_the_flag() {
        for (setting, needle) in [
            ("b.bulkhead", "is not NAME.KEY=VALUE"),
            ("bulkhead=4", "is not NAME.KEY=VALUE"),
            ("c.bulkhead=4", "no bank is named \"c\""),
            ("b.bulkheads=4", "unknown key"),
            ("b.deadline-ms=4000", "whole route"),
            ("b.bulkhead=many", "not a valid value"),
            ("b.bulkhead=-1", "not a valid value"),
            ("b.breaker-failure-rate=2", "bank \"b\""),
            ("b.max-attempts=0", "bank \"b\""),
        ] {
            let error = two_banks(&[setting]).unwrap_err();
            assert!(
                matches!(error, ConfigError::BankSetting(_)),
                "{setting}: {error:?}"
            );
            let text = error.to_string();
            assert!(
                text.starts_with("--bank-setting (PAYMENT_API_BANK_SETTINGS)")
                    && text.contains(needle),
                "{setting}: {text}"
            );
            // validate() refuses the same, so the API never starts with it.
            let mut config = parse(&[]);
            config.bank_url = None;
            config.banks = vec!["a=http://x:1".into(), "b=http://y:2".into()];
            config.bank_settings = vec![setting.to_owned()];
            assert!(config.validate().is_err(), "{setting}");
        }
    }

    #[test]
    fn help_documents_bank_setting_and_its_keys() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--bank-setting"), "{help}");
        assert!(help.contains("PAYMENT_API_BANK_SETTINGS"));
        for key in ["breaker-open-ms", "retry-budget-ratio", "bulkhead"] {
            assert!(help.contains(key), "{key}");
        }
    }

    #[test]
    fn routing_defaults_to_priority_and_health_settings_are_checked_naming_the_flag() {
        let config = parse(&[]);
        assert_eq!(config.routing.mode, RoutingMode::Priority);
        let health = config.routing.health().unwrap();
        assert_eq!(
            (
                health.window,
                health.min_samples,
                health.min_success,
                health.exploration
            ),
            (100, 10, 0.5, 0.05)
        );
        let config = parse(&[
            "--routing",
            "health",
            "--routing-window",
            "20",
            "--routing-min-samples",
            "5",
            "--routing-min-success",
            "0.8",
            "--routing-exploration",
            "0.1",
        ]);
        assert_eq!(config.routing.mode, RoutingMode::Health);
        assert_eq!(config.validate(), Ok(()));
        let health = config.routing.health().unwrap();
        assert_eq!(
            (
                health.window,
                health.min_samples,
                health.min_success,
                health.exploration
            ),
            (20, 5, 0.8, 0.1)
        );
        let mut argv = vec!["payment-api", "--routing", "fastest"];
        argv.extend_from_slice(&["--api-keys", "acme:0123456789abcdef"]);
        assert!(Cli::try_parse_from(argv).is_err(), "an unknown mode");
        for (args, flag) in [
            (vec!["--routing-window", "0"], "--routing-window"),
            (
                vec!["--routing-window", "5", "--routing-min-samples", "6"],
                "--routing-min-samples",
            ),
            (
                vec!["--routing-min-success", "1.5"],
                "--routing-min-success",
            ),
            (vec!["--routing-exploration=-0.1"], "--routing-exploration"),
        ] {
            let error = parse(&args).validate().unwrap_err();
            assert!(matches!(error, ConfigError::Routing(_)), "{args:?}");
            assert!(error.to_string().starts_with(flag), "{args:?}: {error}");
        }
    }
}
