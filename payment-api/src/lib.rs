//! The payment API: takes payments idempotently and charges them through the bank.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - `auth`: API keys (from the environment or a file), their tenants, constant-time checks.
//! - `domain`: parsed request values (amount, currency, source token, idempotency key).
//! - `bank`: the HTTP client for the bank and the classification of each attempt.
//! - `routes`: the HTTP surface; `error` maps every failure to a problem+json answer in one place.

pub mod config;

mod auth;
mod bank;
mod domain;
mod error;
mod routes;

use std::{future::Future, net::SocketAddr, sync::Arc};

pub use config::{Cli, Config};

/// A bound, not yet serving, payment API.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl Application {
    /// Loads the API keys, builds the bank client, binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let keys = auth::ApiKeys::load(&config)?;
        let bank = bank::BankClient::new(&config)?;
        let state = Arc::new(routes::AppState { keys, bank });
        let listener =
            service_runtime::bind(config.listen, "--listen (PAYMENT_API_LISTEN)").await?;
        tracing::info!(addr = %listener.local_addr()?, bank_url = %config.bank_url, "payment API listening");
        Ok(Self {
            listener,
            router: routes::router(state),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        service_runtime::serve(self.listener, self.router, shutdown).await
    }
}
