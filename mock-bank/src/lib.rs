//! The mock bank: a bank double with every failure mode a real bank shows, switchable at run
//! time and reproducible with a seed. Its ledger is the ground truth for every audit.
//!
//! `docs/mock-bank.md` is the user guide (endpoints, profile fields, presets, test tokens).
//!
//! # Layout
//! - [`config`]: flags and `MOCK_BANK_*` environment variables.
//! - `auth`: the admin token ([`Secret`]) and its constant-time check.
//! - `error`: every client-visible error and its problem+json mapping, in one place.
//! - `ledger`: charges by reference (first request decides) and the commit-ordered book.
//! - `tokens`: test card tokens and their business outcomes.
//! - `chaos`: the profile in effect (presets, scenarios) and the seeded per-request decision.
//! - `routes`: the HTTP surface; `router(state)` is pure.
//! - `request_id`: the per-request span with `request_id`, echoed as `X-Request-Id`.
//! - `metrics`: counters and their Prometheus text.
//! - `server`: serving with connections that chaos can sever (lost responses, hangs).

pub mod config;

mod auth;
mod chaos;
mod error;
mod ledger;
mod metrics;
mod request_id;
mod routes;
mod server;
mod tokens;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::sync::watch;

pub use auth::Secret;
pub use config::{Cli, Config};

/// A bound, not yet serving, mock bank.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    instance_id: String,
    /// Tells held connections (hangs, withheld answers) to let go when shutdown starts.
    stopping: watch::Sender<bool>,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let admin_token = config.resolve_admin_token()?;
        let listener = service_runtime::bind(config.listen, "--listen (MOCK_BANK_LISTEN)").await?;
        // Without --seed, a random one; /v1/status shows it so a run can be replayed.
        let seed = config
            .seed
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        let (stopping, stopping_rx) = watch::channel(false);
        let state = Arc::new(routes::AppState::new(routes::StateConfig {
            chaos: chaos::Chaos::new(seed, config.chaos),
            admin_token: admin_token.clone(),
            max_in_flight: config.max_in_flight,
            max_held: config.max_held,
            max_charges: config.max_charges,
            stopping: stopping_rx,
        }));
        let instance_id = state.instance_id.clone();
        tracing::info!(
            addr = %listener.local_addr()?,
            instance_id = %instance_id,
            started_at = %state.started_at,
            seed,
            chaos = %config.chaos,
            admin_token = admin_token.is_some(),
            "mock bank started with an empty in-memory ledger (a restart empties it and changes instance_id)"
        );
        let router = routes::router(state);
        Ok(Self {
            listener,
            router,
            instance_id,
            stopping,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// This process's instance id (as in `/health`, `/v1/ledger` and `/v1/status`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Serves until `shutdown` resolves, then drains (held connections are closed at once).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping;
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        server::serve(self.listener, self.router, shutdown).await
    }
}
