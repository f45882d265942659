//! The mock bank: a bank double whose ledger is the ground truth for every audit.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - `ledger`: charges by reference; the first request for a reference decides its outcome.
//! - `routes`: the HTTP surface (`/v1/charges`, `/health`).

pub mod config;
mod ledger;
mod routes;

use std::{future::Future, net::SocketAddr, sync::Arc};

pub use config::{Cli, Config};

/// A bound, not yet serving, mock bank.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = service_runtime::bind(config.listen, "--listen (MOCK_BANK_LISTEN)").await?;
        let state = Arc::new(routes::AppState::new());
        let router = routes::router(state);
        tracing::info!(addr = %listener.local_addr()?, "mock bank listening");
        Ok(Self { listener, router })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        service_runtime::serve(self.listener, self.router, shutdown).await
    }
}
