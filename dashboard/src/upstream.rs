//! The dashboard's client of the payment API and the banks. The tenant key, the operator key and
//! each bank's chaos token are attached here and nowhere else (a bank's token only to that
//! bank), and every one of them is redacted from every body and error this module hands back, so
//! nothing the browser receives can carry them even if an upstream echoed one.

use std::time::{Duration, Instant};

use reqwest::{header::HeaderMap, Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::{BankTarget, Secrets};

/// How long a read of status, logs or payments may take: the page polls every second.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a payment may take: longer than the API's default payment deadline (10 s).
const PAYMENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Upstream bodies larger than this are refused rather than buffered (a log page is ~100 KiB).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Which upstream a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service<'a> {
    Api,
    /// A configured bank (checked by [`Upstream::bank`]).
    Bank(&'a BankTarget),
}

impl Service<'_> {
    /// The upstream's name in an error message ("payment API", "mock bank a").
    fn name(&self) -> String {
        match self {
            Service::Api => "payment API".to_owned(),
            Service::Bank(bank) => format!("mock bank '{}'", bank.name),
        }
    }
}

/// Why an upstream call produced no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the {service} is unreachable: {detail}")]
    Unreachable { service: String, detail: String },
    #[error("no bank named {0:?} is configured (--bank)")]
    UnknownBank(String),
    #[error("the dashboard has no API key (start it with --api-key-file)")]
    NoApiKey,
    #[error("the dashboard has no operator key (start it with --operator-key-file)")]
    NoOperatorKey,
}

/// Which key a request to the payment API carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// None (open routes).
    None,
    /// The tenant key: payments the dashboard sends and reads.
    Tenant,
    /// The operator key: status, logs, breaker controls.
    Operator,
}

/// An upstream answer with its body parsed (JSON, or `{"text": ...}` when it is not JSON).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) latency: Duration,
}

impl Answer {
    /// A header's value as text, if present and printable.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// The API, the banks (in priority order) and the secrets for them.
#[derive(Debug)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    api: Url,
    banks: Vec<BankTarget>,
    secrets: Secrets,
}

impl Upstream {
    pub(crate) fn new(api: Url, banks: Vec<BankTarget>, secrets: Secrets) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client with rustls builds");
        Self {
            http,
            api,
            banks,
            secrets,
        }
    }

    /// The configured banks, in priority order.
    pub(crate) fn banks(&self) -> &[BankTarget] {
        &self.banks
    }

    /// The bank named `name`, or the first bank for `None` (what a one-bank page means).
    pub(crate) fn bank(&self, name: Option<&str>) -> Result<&BankTarget, UpstreamError> {
        match name {
            None => Ok(self
                .banks
                .first()
                .expect("the configuration always has a bank")),
            Some(name) => self
                .banks
                .iter()
                .find(|b| b.name == name)
                .ok_or_else(|| UpstreamError::UnknownBank(name.to_owned())),
        }
    }

    /// `GET` on the API with `key`.
    pub(crate) async fn api_get(&self, path: &str, key: Key) -> Result<Answer, UpstreamError> {
        self.send(
            Service::Api,
            Method::GET,
            path,
            None,
            &[],
            key,
            READ_TIMEOUT,
        )
        .await
    }

    /// `POST` on the API with `key`, a JSON body (or none) and extra headers.
    pub(crate) async fn api_post(
        &self,
        path: &str,
        key: Key,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, UpstreamError> {
        self.send(
            Service::Api,
            Method::POST,
            path,
            body,
            headers,
            key,
            PAYMENT_TIMEOUT,
        )
        .await
    }

    /// `GET` on bank `bank` (its read endpoints are open).
    pub(crate) async fn bank_get(&self, bank: &str, path: &str) -> Result<Answer, UpstreamError> {
        self.send(
            Service::Bank(self.bank(Some(bank))?),
            Method::GET,
            path,
            None,
            &[],
            Key::None,
            READ_TIMEOUT,
        )
        .await
    }

    /// `PUT /v1/chaos` on bank `bank` with that bank's admin token (when one is configured).
    pub(crate) async fn bank_put_chaos(
        &self,
        bank: &str,
        body: &Value,
    ) -> Result<Answer, UpstreamError> {
        self.send(
            Service::Bank(self.bank(Some(bank))?),
            Method::PUT,
            "/v1/chaos",
            Some(body),
            &[],
            Key::Operator,
            READ_TIMEOUT,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        service: Service<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        key: Key,
        timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        let base = match service {
            Service::Api => &self.api,
            Service::Bank(bank) => &bank.url,
        };
        let url = format!("{}{path}", base.as_str().trim_end_matches('/'));
        let mut request = self.http.request(method, url).timeout(timeout);
        // On a bank, any key means that bank's chaos token (its only credential), when
        // configured: never another bank's.
        let secret = match (service, key) {
            (_, Key::None) => None,
            (Service::Api, Key::Tenant) => Some(
                self.secrets
                    .api_key
                    .as_ref()
                    .ok_or(UpstreamError::NoApiKey)?,
            ),
            (Service::Api, Key::Operator) => Some(
                self.secrets
                    .operator_key
                    .as_ref()
                    .ok_or(UpstreamError::NoOperatorKey)?,
            ),
            (Service::Bank(bank), _) => self.secrets.bank_admin_tokens.get(&bank.name),
        };
        if let Some(secret) = secret {
            request = request.bearer_auth(secret.expose_secret());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| UpstreamError::Unreachable {
            service: service.name(),
            detail: self.redact(&error_chain(&e)),
        };
        let started = Instant::now();
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(UpstreamError::Unreachable {
                service: service.name(),
                detail: "answer too large".to_owned(),
            });
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        let latency = started.elapsed();
        let text = self.redact(&String::from_utf8_lossy(&bytes));
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "text": text }));
        Ok(Answer {
            status,
            headers,
            body,
            latency,
        })
    }

    /// `text` with every occurrence of any secret replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(
            text,
            [&self.secrets.api_key, &self.secrets.operator_key]
                .into_iter()
                .flatten()
                .chain(self.secrets.bank_admin_tokens.values()),
        )
    }
}

fn redact<'a>(text: &str, secrets: impl Iterator<Item = &'a SecretString>) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        let secret = secret.expose_secret();
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_secrets_are_redacted_wherever_they_appear() {
        let key = SecretString::from("sk_dev_abcdef0123456789".to_owned());
        let token = SecretString::from("bank-token-xyz".to_owned());
        let text =
            r#"{"echo":"Bearer sk_dev_abcdef0123456789","t":"bank-token-xyz bank-token-xyz"}"#;
        let out = redact(text, [&key, &token].into_iter());
        assert_eq!(
            out,
            r#"{"echo":"Bearer [redacted]","t":"[redacted] [redacted]"}"#
        );
    }

    #[test]
    fn an_empty_secret_redacts_nothing() {
        let empty = SecretString::from(String::new());
        assert_eq!(redact("abc", [&empty].into_iter()), "abc");
    }
}
