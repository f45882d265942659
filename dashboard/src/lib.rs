//! The dashboard: a web page served by its own process, with its assets compiled into the binary
//! (no CDN, no build step), that watches the payment API and drives the banks' chaos controls:
//! one panel per bank (its breaker, route share, cascades and chaos), with one or several banks.
//!
//! # Layout
//! - [`config`]: flags and environment variables (the keys and bank tokens stay server-side).
//! - `routes`: the page, its assets with security headers, `/health`, and the page's same-origin
//!   JSON API (`/api/*`) with its cross-site checks.
//! - `upstream`: the client of the API and the banks; adds the secrets, redacts them from answers.
//! - `shape`: turns the upstream statuses into the overview the page draws (pure, unit-tested).
//! - `history`: the last ten minutes of once-a-second samples, for the charts.
//! - `traffic`: one payment, a burst, a replay, steady traffic; all bounded.
//! - `receiver`: the demo webhook receiver (`POST /webhooks/receiver`), its chaos, and its
//!   registration with the API (`--webhook-register`) or its secret file.

pub mod config;
mod history;
mod receiver;
mod routes;
mod shape;
mod traffic;
mod upstream;

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use config::{BankTarget, Cli, Config, ConfigError, Secrets};

/// How often the server samples the API's status into the history.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// A bound, not yet serving, dashboard.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    state: Arc<routes::AppState>,
    /// The receiver URL to register with the API once serving (`--webhook-register`).
    register: Option<String>,
}

impl Application {
    /// Reads the secrets, binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let secrets = config.secrets()?;
        Self::build_with_secrets(config, secrets).await
    }

    /// Like [`Self::build`] with the secrets given (tests pass them without files).
    pub async fn build_with_secrets(config: Config, secrets: Secrets) -> anyhow::Result<Self> {
        if secrets.api_key.is_none() {
            tracing::warn!(
                "no API key (--api-key-file): the page can watch but not send payments or move the breaker"
            );
        }
        let banks = config.bank_list()?;
        let listener = service_runtime::bind(config.listen, "--listen (DASHBOARD_LISTEN)").await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            api_url = %without_password(&config.api_url),
            banks = %banks
                .iter()
                .map(|b| format!("{}={}", b.name, without_password(&b.url)))
                .collect::<Vec<_>>()
                .join(","),
            "dashboard listening"
        );
        let webhooks = Arc::new(receiver::Receiver::default());
        let file_secrets = config.webhook_secrets()?;
        if !file_secrets.is_empty() {
            tracing::info!(
                secrets = file_secrets.len(),
                "webhook receiver verifies with the secret file"
            );
            webhooks.set_secrets(file_secrets);
            webhooks.set_registration(receiver::Registration::FromFile);
        }
        let has_api_key = secrets.api_key.is_some();
        let upstream = Arc::new(upstream::Upstream::new(
            config.api_url.clone(),
            banks,
            secrets,
        ));
        let register = if !config.webhook_register {
            None
        } else if !has_api_key {
            tracing::warn!("--webhook-register without an API key (--api-key-file): the webhook receiver stays unregistered");
            webhooks.set_registration(receiver::Registration::NoApiKey);
            None
        } else {
            let url = match &config.webhook_receiver_url {
                Some(url) => url.to_string(),
                None => receiver_url(listener.local_addr()?),
            };
            Some(url)
        };
        let state = Arc::new(routes::AppState {
            traffic: Arc::new(traffic::Traffic::new(Arc::clone(&upstream))),
            history: Arc::new(history::History::default()),
            webhooks,
            upstream,
        });
        Ok(Self {
            listener,
            router: routes::router(Arc::clone(&state)),
            state,
            register,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains. Samples the API's status once a second
    /// meanwhile; the sampler and any steady traffic stop with the server.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sampler = tokio::spawn(sample_forever(Arc::clone(&self.state)));
        let registration = self.register.map(|url| {
            tokio::spawn(receiver::register(
                Arc::clone(&self.state.upstream),
                Arc::clone(&self.state.webhooks),
                url,
                receiver::Backoff::default(),
            ))
        });
        let served = service_runtime::serve(self.listener, self.router, shutdown).await;
        sampler.abort();
        if let Some(registration) = registration {
            registration.abort();
        }
        self.state.traffic.stop_steady();
        served
    }
}

/// The receiver's URL on the bound address; an unspecified address is reached on loopback.
fn receiver_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "http://{}/webhooks/receiver",
        SocketAddr::new(ip, addr.port())
    )
}

/// A URL as it may be logged: a password in it (a URL may carry one) is dropped.
fn without_password(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    let _ = url.set_password(None);
    url
}

/// Polls the API's status and every bank's chaos into the history, once per
/// [`SAMPLE_INTERVAL`].
async fn sample_forever(state: Arc<routes::AppState>) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let (api, mut chaos) = tokio::join!(
            state
                .upstream
                .api_get("/v1/status", upstream::Key::Operator),
            routes::bank_answers(&state.upstream, "/v1/chaos"),
        );
        let api = routes::ok_json(api).ok();
        let polls: Vec<history::BankPoll> = shape::join_banks(api.as_ref(), state.upstream.banks())
            .into_iter()
            .map(|bank| history::BankPoll {
                chaos: bank
                    .target
                    .and_then(|t| chaos.get(&t.name).cloned())
                    .and_then(Result::ok),
                name: bank.name,
                api: bank.api,
            })
            .collect();
        let first = state.upstream.banks()[0].name.clone();
        let first = chaos.remove(&first).and_then(Result::ok);
        state
            .history
            .record(now_ms(), api.as_ref(), first.as_ref(), &polls);
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
