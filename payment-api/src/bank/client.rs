//! The bank's HTTP client. One attempt is one `POST /v1/charges` carrying the payment's bank
//! reference as the bank's `Idempotency-Key`, so a retried attempt can never charge twice; its
//! answer is classified here, once, into what the retry loop and the breaker need to know
//! (docs/contract.md §3 step 4).

use std::time::Duration;

use payment_types::{
    bank::{Charge, ChargeRequest},
    headers, Problem,
};
use reqwest::StatusCode;

use crate::config::ResilienceArgs;

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
}

/// The bank client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub(crate) struct BankClient {
    http: reqwest::Client,
    /// `…/v1/charges/`, the base of lookups by reference.
    charges_url: reqwest::Url,
    /// `…/v1/charges`, parsed once rather than on every attempt.
    charge_url: reqwest::Url,
}

impl BankClient {
    /// A client of the bank at `bank_url`, with `config`'s timeouts and pool size.
    /// A client of the bank at `bank_url`, sized by that bank's resilience `settings`.
    pub(crate) fn new(settings: &ResilienceArgs, bank_url: &reqwest::Url) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // The pipeline cuts each attempt at the attempt timeout; this is only a backstop.
            .timeout(Duration::from_millis(settings.attempt_timeout_ms) + Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(90))
            // As many idle connections as the bulkhead lets calls run at once: after a burst,
            // every connection it needed stays warm instead of being closed and redialled.
            .pool_max_idle_per_host(settings.bulkhead.max(1) as usize)
            .tcp_nodelay(true)
            // Our retry loop is the only one: reqwest must neither re-send a charge on its own
            // nor follow a bank's redirect with it. Both layers also cost CPU on every attempt
            // (cloning the request for a possible retry; the redirect policy's bookkeeping).
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            charges_url: bank_url.join("v1/charges/")?,
            charge_url: bank_url.join("v1/charges")?,
        })
    }

    /// Asks the bank what became of the charge with `reference` (the reconciler's question).
    pub(crate) async fn lookup(&self, reference: &str, request_id: &str) -> Lookup {
        let Ok(url) = self.charges_url.join(reference) else {
            return Lookup::Unavailable;
        };
        let response = match self
            .http
            .get(url)
            .header(headers::REQUEST_ID, request_id)
            .send()
            .await
        {
            Ok(response) => response,
            Err(_) => return Lookup::Unavailable,
        };
        match response.status() {
            StatusCode::OK => match response.json::<Charge>().await {
                Ok(charge) => Lookup::Found(charge),
                Err(_) => Lookup::Unavailable,
            },
            StatusCode::NOT_FOUND => Lookup::NotFound,
            _ => Lookup::Unavailable,
        }
    }

    /// Makes one charge attempt and classifies its answer.
    pub(crate) async fn charge(&self, request: &ChargeRequest, request_id: &str) -> AttemptOutcome {
        let sent = self
            .http
            .post(self.charge_url.clone())
            .header(headers::IDEMPOTENCY_KEY, &request.reference)
            .header(headers::REQUEST_ID, request_id)
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                return AttemptOutcome::NotProcessed {
                    status: None,
                    retry_after: None,
                }
            }
            Err(error) => {
                let reason = if error.is_timeout() {
                    "timeout"
                } else {
                    "transport error"
                };
                return AttemptOutcome::Ambiguous {
                    reason: reason.to_owned(),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            s if s.is_success() => match response.json::<Charge>().await {
                Ok(charge) => AttemptOutcome::Charged(charge),
                // A 2xx we cannot read might still be a charge: only the reconciler can tell.
                Err(_) => AttemptOutcome::Ambiguous {
                    reason: "unreadable success body".to_owned(),
                },
            },
            StatusCode::PAYMENT_REQUIRED => {
                let decline_code = response
                    .json::<Problem>()
                    .await
                    .ok()
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
                AttemptOutcome::NotProcessed {
                    status: Some(status.as_u16()),
                    retry_after,
                }
            }
            s if s.is_server_error() => AttemptOutcome::Ambiguous {
                reason: format!("bank answered {}", s.as_u16()),
            },
            s => {
                let code = response
                    .json::<Problem>()
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
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
