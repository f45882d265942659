//! What every service shares at its edge: binding a listener with an error a person can act on,
//! serving a router until a shutdown future resolves, and the SIGINT/SIGTERM future itself.
//!
//! Shutdown is an argument (as in mini-redis): binaries pass [`shutdown_signal`], tests pass a
//! oneshot receiver, and the orchestrator's children get SIGTERM.
//!
//! [`problems`]: error answers of layers, the router and extractors re-issued as problems.

pub mod problems;

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
///
/// Binding to anything but loopback is allowed (it is how a deployment is reached) but never
/// silent: it is logged as a warning, since these services speak plain HTTP.
pub async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, BindError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            flag,
            "listening beyond loopback: reachable from the network over plain HTTP; put TLS and an access policy in front (see docs/security.md)"
        );
    }
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

/// How long in-flight requests get to finish after shutdown starts, for [`serve`].
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished its request in progress and closed.
    Complete,
    /// The drain time ran out with connections still open (they are left to the caller's exit).
    TimedOut,
}

/// Header fields hyper parses before refusing a request with a bare 431. Set well above any
/// service's own (problem+json) limit, so the service's limit is the one clients meet.
pub const PARSER_MAX_HEADERS: usize = 256;

/// How long a client may take to send a request's headers (a slowloris bound); the body is
/// bounded by each service's request timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most [`DRAIN_TIMEOUT`] (a hung client must not keep the process alive).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_drain(listener, router, shutdown, DRAIN_TIMEOUT)
        .await
        .map(|_| ())
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting (the listener
/// is closed, so new connections are refused), tells every open connection to close once its
/// request in progress is answered (idle keep-alive connections close at once), and waits up to
/// `drain` for them all.
///
/// This is `axum::serve` spelt out over hyper's HTTP/1 connection builder, for the settings
/// `axum::serve` does not expose: the parser's header limit, the header read timeout, and
/// `TCP_NODELAY` (answers are small; send them at once).
pub async fn serve_with_drain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<Drain> {
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        server::graceful::GracefulShutdown,
        service::TowerToHyperService,
    };

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(PARSER_MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                request
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            connections = open,
            drain_timeout_ms = drain.as_millis() as u64,
            "listener closed; draining the connections still open"
        );
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = drain.as_millis() as u64,
            "drain timed out; closing"
        );
        return Ok(Drain::TimedOut);
    }
    Ok(Drain::Complete)
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

    /// A router whose `/slow` answers when told to, and that says when a request reached it.
    fn gated_router() -> (
        Router,
        tokio::sync::mpsc::Receiver<()>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (reached_tx, reached) = tokio::sync::mpsc::channel::<()>(8);
        let (release, release_rx) = tokio::sync::watch::channel(false);
        let router = Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let reached_tx = reached_tx.clone();
                let mut release_rx = release_rx.clone();
                async move {
                    let _ = reached_tx.send(()).await;
                    let _ = release_rx.wait_for(|go| *go).await;
                    "done"
                }
            }),
        );
        (router, reached, release)
    }

    /// One raw HTTP/1.1 GET; returns everything the server sent until it closed.
    async fn raw_get(addr: SocketAddr) -> io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// A server on a free port (drain time `drain`) with a `GET /slow` in progress at its
    /// handler when shutdown begins: the address, the server's task, the client's task (all
    /// the server sent) and the handler's release.
    async fn shutdown_with_a_request_in_progress(
        drain: Duration,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<io::Result<Drain>>,
        tokio::task::JoinHandle<io::Result<String>>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "--listen")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (router, mut reached, release) = gated_router();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_drain(
            listener,
            router,
            async {
                let _ = rx.await;
            },
            drain,
        ));
        let client = tokio::spawn(raw_get(addr));
        tokio::time::timeout(Duration::from_secs(5), reached.recv())
            .await
            .expect("the request reaches the handler");
        tx.send(()).unwrap();
        (addr, server, client, release)
    }

    #[tokio::test]
    async fn a_request_in_progress_at_shutdown_is_answered_and_new_connections_are_refused() {
        let (addr, server, client, release) =
            shutdown_with_a_request_in_progress(Duration::from_secs(10)).await;
        // The server stops accepting while the request is still in progress.
        let refused = async {
            for _ in 0..500 {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        assert!(
            refused.await,
            "new connections are refused once shutdown starts"
        );
        assert!(!server.is_finished(), "the drain waits for the request");
        release.send(true).unwrap();
        let answer = client.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        assert_eq!(server.await.unwrap().unwrap(), Drain::Complete);
    }

    #[tokio::test]
    async fn a_request_that_outlives_the_drain_time_does_not_hold_the_server() {
        let (_addr, server, _client, _release) =
            shutdown_with_a_request_in_progress(Duration::from_millis(200)).await;
        let drained = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once the drain time is over");
        assert_eq!(drained.unwrap().unwrap(), Drain::TimedOut);
    }
}
