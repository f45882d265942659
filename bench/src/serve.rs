//! The hidden `serve` subcommand: `bench serve stub|proxy|minimal --listen ADDR [...]` runs one
//! of the reference servers (see [`crate::stub`], [`crate::proxy`], [`crate::minimal`]) as its
//! own process, so each is measured as the API is: a process of its own on the same machine,
//! started by [`crate::services::Service::start_reference`] and checked with `GET /health`.
//!
//! What they share is here: the listener (`TCP_NODELAY`, as the API's), `/health`, and the
//! pooled keep-alive HTTP/1.1 client (hyper-util's legacy client: the pool under `reqwest`,
//! without reqwest's layers) that the proxy and the minimal server call the stub with. The
//! binary's allocator is mimalloc, as the API's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use http::Uri;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Which reference server to run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Kind {
    /// A minimal JSON bank: `POST /v1/charges` → 201 with a charge.
    Stub,
    /// `POST /v1/payments` forwarded to the stub's `/v1/charges`: two hops, no logic.
    Proxy,
    /// A minimal durable payment server (SQLite, group commit) in front of the stub.
    Minimal,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stub => "stub",
            Self::Proxy => "proxy",
            Self::Minimal => "minimal",
        }
    }
}

/// `bench serve ...`: the flags of a reference server.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    pub(crate) kind: Kind,
    /// Address to listen on.
    #[arg(long)]
    pub(crate) listen: SocketAddr,
    /// Accepted for the services' common command line, ignored: the reference servers do not
    /// log.
    #[arg(long, default_value = "json")]
    pub(crate) log_format: String,
    /// The bank (`http://HOST:PORT`): the stub, for `proxy` and `minimal`.
    #[arg(long)]
    pub(crate) bank_url: Option<String>,
    /// Where `minimal` keeps its SQLite file.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

/// Serves the chosen reference server until the process is killed.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let bank = || {
        args.bank_url
            .as_deref()
            .with_context(|| format!("{} needs --bank-url", args.kind.as_str()))
    };
    let router = match args.kind {
        Kind::Stub => crate::stub::router(),
        Kind::Proxy => crate::proxy::router(charges_uri(bank()?)?),
        Kind::Minimal => {
            let dir = args
                .data_dir
                .as_deref()
                .context("minimal needs --data-dir")?;
            crate::minimal::router(charges_uri(bank()?)?, dir)?
        }
    };
    let router: Router = router.route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?
        .tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
    axum::serve(listener, router).await?;
    Ok(())
}

/// The pooled keep-alive HTTP/1.1 client the proxy and the minimal server call the stub with.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// `<bank_url>/v1/charges`.
fn charges_uri(bank_url: &str) -> anyhow::Result<Uri> {
    format!("{}/v1/charges", bank_url.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("bad --bank-url {bank_url}"))
}
