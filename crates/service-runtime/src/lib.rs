//! What every service shares at its edge: binding a listener with an error a person can act on,
//! serving a router until a shutdown future resolves, and the SIGINT/SIGTERM future itself.
//!
//! Shutdown is an argument (as in mini-redis): binaries pass [`shutdown_signal`], tests pass a
//! oneshot receiver, and the orchestrator's children get SIGTERM.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::net::TcpListener;

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process holds the port.
    #[error("{addr} is already in use: pick another port with {flag} (or stop what holds it)")]
    InUse {
        addr: SocketAddr,
        flag: &'static str,
    },
    /// Anything else the OS refused (permission, bad address).
    #[error("cannot listen on {addr} (set with {flag}): {source}")]
    Other {
        addr: SocketAddr,
        flag: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Binds `addr`, naming the flag that sets it in the error. Port 0 picks a free port; read the
/// bound address from the returned listener.
pub async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::InUse { addr, flag }
        } else {
            BindError::Other { addr, flag, source }
        }
    })
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

/// How long in-flight requests get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most [`DRAIN_TIMEOUT`] (a hung client must not keep the process alive).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        joined = &mut server => return joined.map_err(io::Error::other)?,
        _ = stopping_rx => {}
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(joined) => joined.map_err(io::Error::other)?,
        Err(_) => {
            tracing::warn!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "drain timed out; closing"
            );
            server.abort();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_port_and_the_flag() {
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = held.local_addr().unwrap();
        let error = bind(addr, "--listen").await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, BindError::InUse { .. }), "{text}");
        assert!(text.contains(&addr.port().to_string()), "{text}");
        assert!(text.contains("--listen"), "{text}");
    }

    #[tokio::test]
    async fn serve_returns_once_shutdown_resolves() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "--listen")
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Router::new(), async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
