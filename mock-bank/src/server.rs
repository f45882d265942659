//! Serving with connections a handler can sever: the lost-response and hang faults close the
//! TCP connection without writing an answer, which plain `axum::serve` cannot do.
//!
//! Every accepted stream is wrapped in a [`SeverableStream`] whose [`Severer`] reaches handlers
//! as connect info. Once severed, the stream refuses to write, so hyper drops the connection
//! instead of sending the response the handler returned. Everything else is `axum::serve` with
//! graceful shutdown and a drain bound, as in `service_runtime::serve`.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use axum::{
    extract::{connect_info::Connected, ConnectInfo, FromRequestParts},
    http::request::Parts,
    serve::{IncomingStream, Listener},
    Router,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// Severs one connection: after [`Severer::sever`], nothing more is written to it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Severer(Arc<AtomicBool>);

impl Severer {
    pub(crate) fn sever(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_severed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A TCP stream that fails every write (and read) once severed.
#[derive(Debug)]
pub(crate) struct SeverableStream {
    inner: TcpStream,
    severer: Severer,
}

fn severed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection severed by chaos",
    )
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.severer.is_severed() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.severer.is_severed() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.severer.is_severed() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.severer.is_severed() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose streams are severable.
#[derive(Debug)]
pub(crate) struct SeverableListener(pub(crate) TcpListener);

impl Listener for SeverableListener {
    type Io = SeverableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, addr) = Listener::accept(&mut self.0).await;
        // Answers are small; send them at once rather than waiting for more bytes.
        let _ = inner.set_nodelay(true);
        (
            SeverableStream {
                inner,
                severer: Severer::default(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// What a handler learns about its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) severer: Severer,
}

impl Connected<IncomingStream<'_, SeverableListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, SeverableListener>) -> Self {
        Self {
            severer: stream.io().severer.clone(),
        }
    }
}

/// Extractor: the connection's severer, or `None` when the router runs without a socket
/// (in-process `oneshot` tests).
#[derive(Debug, Clone)]
pub(crate) struct Connection(pub(crate) Option<Severer>);

impl<S: Send + Sync> FromRequestParts<S> for Connection {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<ConnInfo>>()
                .map(|c| c.0.severer.clone()),
        ))
    }
}

/// Serves `router` until `shutdown` resolves, then drains in-flight requests for at most
/// [`service_runtime::DRAIN_TIMEOUT`].
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        SeverableListener(listener),
        router.into_make_service_with_connect_info::<ConnInfo>(),
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
    match tokio::time::timeout(service_runtime::DRAIN_TIMEOUT, &mut server).await {
        Ok(joined) => joined.map_err(io::Error::other)?,
        Err(_) => {
            tracing::warn!(
                timeout_s = service_runtime::DRAIN_TIMEOUT.as_secs(),
                "drain timed out; closing"
            );
            server.abort();
            Ok(())
        }
    }
}
