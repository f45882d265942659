//! The bank's HTTP client. One attempt is one `POST /v1/charges` carrying the payment's bank
//! reference as the bank's `Idempotency-Key`, so a retried attempt can never charge twice; its
//! answer is classified here, once, into what the retry loop and the breaker need to know
//! (docs/contract.md §3 step 4).
//!
//! It drives hyper-util's pooled client directly rather than through reqwest (performance issue
//! 18): under reqwest every attempt re-parsed the bank's URL (`Url` → `Uri`, through the URL
//! parser and IDNA) and went through reqwest's own layers (its `PendingRequest`, a header map
//! built up, the request cloned), all of which showed in the profile. Here the charge `Uri` is
//! parsed once, the request is three headers and a body serialized once, and the only layers
//! are the ones we need: one connect deadline, one deadline over the whole exchange, no
//! retries, no redirects. The pool, the connector and the TLS are what reqwest built under the
//! hood (the same hyper-util client, hyper-rustls with ring and the webpki roots), configured
//! the same way. Two things reqwest did are gone: a default `Accept: */*` (the bank answers
//! JSON whatever we accept), and proxies from the environment (`HTTPS_PROXY`, …): the bank is
//! dialled directly.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    Method, Request, Response, StatusCode, Uri,
};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use payment_types::{
    bank::{Charge, ChargeRequest},
    headers, Problem,
};
use serde::de::DeserializeOwned;
use tokio::{net::TcpStream, time::Sleep};

use crate::config::ResilienceArgs;

/// How long a new connection to the bank may take: DNS, TCP and the TLS handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one attempt told us.
#[derive(Debug, Clone)]
pub(crate) enum AttemptOutcome {
    /// The bank charged the card.
    Charged(Charge),
    /// The bank declined (a business outcome, not a bank failure).
    Declined { decline_code: String },
    /// The bank definitely did not process it (503, 429, connection refused): safe to retry.
    NotProcessed {
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// The charge may or may not have happened (timeout, reset after send, 500/502/504).
    Ambiguous { reason: String },
    /// The bank refused the request itself (another 4xx): retrying would not help.
    Refused { status: u16, code: String },
}

/// What the bank knows of a reference.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    Found(Charge),
    NotFound,
    /// No answer we can trust (unreachable, 5xx, unreadable).
    Unavailable,
}

impl AttemptOutcome {
    /// A short name for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Charged(_) => "charged",
            Self::Declined { .. } => "declined",
            Self::NotProcessed { .. } => "not_processed",
            Self::Ambiguous { .. } => "ambiguous",
            Self::Refused { .. } => "refused",
        }
    }

    fn ambiguous(reason: &str) -> Self {
        Self::Ambiguous {
            reason: reason.to_owned(),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// No connection to send it on (refused, DNS, connect timeout): it never left.
    Connect,
    /// The backstop (or the socket) timed out after it may have been sent.
    Timeout,
    /// Anything else after the connection was there (reset, a cut answer).
    Transport,
}

/// The bank client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct BankClient {
    http: Client<Connector, Full<Bytes>>,
    /// One deadline over each exchange, from sending the request to the end of the answer's
    /// body. The pipeline cuts each attempt at the attempt timeout; this is only a backstop.
    backstop: Duration,
    /// `…/v1/charges/`, the base of lookups by reference.
    charges_url: reqwest::Url,
    /// `…/v1/charges`, parsed once rather than on every attempt.
    charge_uri: Uri,
}

impl BankClient {
    /// A client of the bank at `bank_url`, sized by that bank's resilience `settings`.
    pub(crate) fn new(settings: &ResilienceArgs, bank_url: &reqwest::Url) -> anyhow::Result<Self> {
        let mut tcp = HttpConnector::new();
        // hyper-rustls picks TLS or not by the scheme; this one only dials.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // The keepalive reqwest set by default, kept: a pooled connection whose bank went away
        // is found dead by the kernel instead of costing an attempt.
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        // ring and the webpki roots, as reqwest's `rustls-tls` had; HTTP/1.1 only, also in ALPN.
        // The provider is named rather than taken from rustls' process default, which panics
        // when a build links two providers and none was installed.
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // Our retry loop is the only one: this client neither re-sends a charge on its own nor
        // follows a bank's redirect with it (hyper-util's client does neither; it only retries
        // a request a pooled connection closed before it was written, as under reqwest).
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // As many idle connections as the bulkhead lets calls run at once: after a burst,
            // every connection it needed stays warm instead of being closed and redialled.
            .pool_max_idle_per_host(settings.bulkhead.max(1) as usize)
            .build(Connector {
                https,
                timeout: CONNECT_TIMEOUT,
            });
        let charge_url = bank_url.join("v1/charges")?;
        Ok(Self {
            http,
            backstop: Duration::from_millis(settings.attempt_timeout_ms) + Duration::from_secs(1),
            charges_url: bank_url.join("v1/charges/")?,
            charge_uri: charge_url.as_str().parse()?,
        })
    }

    /// Asks the bank what became of the charge with `reference` (the reconciler's question).
    pub(crate) async fn lookup(&self, reference: &str, request_id: &str) -> Lookup {
        let Some(request) = self.lookup_request(reference, request_id) else {
            return Lookup::Unavailable;
        };
        let deadline = tokio::time::sleep(self.backstop);
        tokio::pin!(deadline);
        let Ok(response) = self.send(request, deadline.as_mut()).await else {
            return Lookup::Unavailable;
        };
        match response.status() {
            StatusCode::OK => match json::<Charge>(response, deadline.as_mut()).await {
                Some(charge) => Lookup::Found(charge),
                None => Lookup::Unavailable,
            },
            StatusCode::NOT_FOUND => Lookup::NotFound,
            _ => Lookup::Unavailable,
        }
    }

    /// Makes one charge attempt and classifies its answer.
    pub(crate) async fn charge(&self, request: &ChargeRequest, request_id: &str) -> AttemptOutcome {
        let Some(sent) = self.charge_request(request, request_id) else {
            // A reference or request id that cannot be a header value (ours never are): reqwest
            // failed such a request as a transport error, and so does this.
            return AttemptOutcome::ambiguous("transport error");
        };
        let deadline = tokio::time::sleep(self.backstop);
        tokio::pin!(deadline);
        let response = match self.send(sent, deadline.as_mut()).await {
            Ok(response) => response,
            Err(Failure::Connect) => {
                return AttemptOutcome::NotProcessed {
                    status: None,
                    retry_after: None,
                }
            }
            Err(Failure::Timeout) => return AttemptOutcome::ambiguous("timeout"),
            Err(Failure::Transport) => return AttemptOutcome::ambiguous("transport error"),
        };
        let status = response.status();
        match status {
            s if s.is_success() => match json::<Charge>(response, deadline.as_mut()).await {
                Some(charge) => AttemptOutcome::Charged(charge),
                // A 2xx we cannot read might still be a charge: only the reconciler can tell.
                None => AttemptOutcome::ambiguous("unreadable success body"),
            },
            StatusCode::PAYMENT_REQUIRED => {
                let decline_code = json::<Problem>(response, deadline.as_mut())
                    .await
                    .and_then(|p| {
                        p.extensions
                            .get("decline_code")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "card_declined".to_owned());
                AttemptOutcome::Declined { decline_code }
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                AttemptOutcome::NotProcessed {
                    status: Some(status.as_u16()),
                    retry_after,
                }
            }
            s if s.is_server_error() => AttemptOutcome::Ambiguous {
                reason: format!("bank answered {}", s.as_u16()),
            },
            s => {
                let code = json::<Problem>(response, deadline.as_mut())
                    .await
                    .map(|p| p.code)
                    .unwrap_or_default();
                AttemptOutcome::Refused {
                    status: s.as_u16(),
                    code,
                }
            }
        }
    }

    /// `POST …/v1/charges` with `charge` as its body and its reference as the idempotency key;
    /// `None` if a value cannot be a header.
    fn charge_request(
        &self,
        charge: &ChargeRequest,
        request_id: &str,
    ) -> Option<Request<Full<Bytes>>> {
        let body = serde_json::to_vec(charge).ok()?;
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.charge_uri.clone();
        let map = request.headers_mut();
        map.reserve(3);
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        map.insert(
            headers::IDEMPOTENCY_KEY,
            HeaderValue::from_str(&charge.reference).ok()?,
        );
        map.insert(headers::REQUEST_ID, HeaderValue::from_str(request_id).ok()?);
        Some(request)
    }

    /// `GET …/v1/charges/{reference}`; `None` if `reference` makes no URL or a value cannot be a
    /// header.
    fn lookup_request(&self, reference: &str, request_id: &str) -> Option<Request<Full<Bytes>>> {
        let url = self.charges_url.join(reference).ok()?;
        let mut request = Request::new(Full::default());
        *request.uri_mut() = url.as_str().parse().ok()?;
        request
            .headers_mut()
            .insert(headers::REQUEST_ID, HeaderValue::from_str(request_id).ok()?);
        Some(request)
    }

    /// Sends `request` and waits for the head of its answer, until `deadline`.
    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Pin<&mut Sleep>,
    ) -> Result<Response<Incoming>, Failure> {
        match within(deadline, self.http.request(request)).await {
            None => Err(Failure::Timeout),
            Some(Ok(response)) => Ok(response),
            // hyper-util calls every error of the connector (ours, with its deadline, included)
            // a connect error: the request was never written.
            Some(Err(error)) if error.is_connect() => Err(Failure::Connect),
            Some(Err(error)) if timed_out(&error) => Err(Failure::Timeout),
            Some(Err(_)) => Err(Failure::Transport),
        }
    }
}

/// Reads `response`'s body to the end, until `deadline`, as JSON `T`; `None` if it cannot (cut,
/// out of time, not a `T`), as reqwest's `Response::json` failed.
async fn json<T: DeserializeOwned>(
    response: Response<Incoming>,
    deadline: Pin<&mut Sleep>,
) -> Option<T> {
    let body = within(deadline, response.into_body().collect())
        .await?
        .ok()?
        .to_bytes();
    serde_json::from_slice(&body).ok()
}

/// `work`'s output, or `None` if `deadline` passes first (checked first, as reqwest did).
async fn within<F: Future>(deadline: Pin<&mut Sleep>, work: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = deadline => None,
        output = work => Some(output),
    }
}

/// Whether a timeout is anywhere in `error`'s chain (a socket's, or hyper's): how reqwest's
/// `is_timeout` read it, so that an attempt's reason stays "timeout" where it was.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// hyper-rustls' connector (TLS for an `https://` bank, plain TCP for an `http://` one) under one
/// deadline for the whole connect, DNS, TCP and TLS handshake, as reqwest's `connect_timeout`
/// was (`HttpConnector`'s own covers each TCP dial alone). Running out of it is a connect error
/// like any other here, so such an attempt is "not processed": nothing was sent.
#[derive(Debug, Clone)]
struct Connector {
    https: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl tower::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    // Boxed, as hyper-util wants an `Unpin` future; once per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting to the bank timed out",
                    )
                    .into())
                })
        })
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
