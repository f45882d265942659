//! The dashboard: a web page served by its own process, with its assets compiled into the binary
//! (no CDN, no build step), that watches the payment API and drives the bank's chaos controls.
//!
//! # Layout
//! - [`config`]: flags and environment variables (the API key and bank token stay server-side).
//! - `routes`: the page, its assets with security headers, and `/health`.

pub mod config;
mod routes;

use std::{future::Future, net::SocketAddr};

pub use config::{Cli, Config};

/// A bound, not yet serving, dashboard.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = service_runtime::bind(config.listen, "--listen (DASHBOARD_LISTEN)").await?;
        tracing::info!(addr = %listener.local_addr()?, api_url = %config.api_url, "dashboard listening");
        Ok(Self {
            listener,
            router: routes::router(&config),
        })
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
