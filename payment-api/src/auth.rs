//! API keys: where they come from, which tenant each names, and how a request proves one.
//!
//! Keys come from `--api-keys`/`PAYMENT_API_KEYS` or `--api-keys-file`, never from code. Only a
//! SHA-256 digest of each key is kept in memory after loading, and a presented key is compared
//! against every configured digest in constant time, so neither timing nor a memory dump of the
//! key table reveals a key. Keys never reach a log line: the request header is marked sensitive
//! and this module logs tenants only. Authenticating also takes the request from the key's
//! rate limit (`rate_limit`).

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{config::Config, error::ApiError, routes::AppState};

/// The tenant a request authenticated as. Idempotency keys and payments are scoped by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Tenant(String);

impl Tenant {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// Why the configured keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("no API keys configured: set --api-keys / PAYMENT_API_KEYS or --api-keys-file")]
    None,
    #[error("cannot read the API keys file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API key entry {index} is not `tenant:key` with a non-empty tenant and a key of 16+ characters")]
    Malformed { index: usize },
}

/// The configured keys, as (digest, tenant) pairs.
#[derive(Clone)]
pub(crate) struct ApiKeys {
    entries: Vec<([u8; 32], Tenant)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants: Vec<&str> = self.entries.iter().map(|(_, t)| t.as_str()).collect();
        f.debug_struct("ApiKeys")
            .field("tenants", &tenants)
            .finish()
    }
}

impl ApiKeys {
    /// Loads keys from the flag/env value and the file; both may be given.
    pub(crate) fn load(config: &Config) -> Result<Self, KeysError> {
        let mut text = String::new();
        if let Some(keys) = &config.api_keys {
            text.push_str(keys.expose_secret());
            text.push('\n');
        }
        if let Some(path) = &config.api_keys_file {
            let file = std::fs::read_to_string(path).map_err(|source| KeysError::File {
                path: path.display().to_string(),
                source,
            })?;
            text.push_str(&file);
        }
        let keys = Self::parse(&text)?;
        tracing::info!(tenants = keys.entries.len(), "API keys loaded");
        Ok(keys)
    }

    /// Parses `tenant:key` entries separated by commas or newlines; `#` starts a comment line.
    pub(crate) fn parse(text: &str) -> Result<Self, KeysError> {
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| {
                let (tenant, key) = entry
                    .split_once(':')
                    .ok_or(KeysError::Malformed { index })?;
                let (tenant, key) = (tenant.trim(), key.trim());
                let tenant_ok = !tenant.is_empty()
                    && tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !tenant_ok || key.len() < 16 {
                    return Err(KeysError::Malformed { index });
                }
                Ok((digest(key), Tenant(tenant.to_owned())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err(KeysError::None);
        }
        Ok(Self { entries })
    }

    /// The tenant whose key this is. Every entry is compared, so the time taken does not depend
    /// on which entry (if any) matched.
    #[cfg(test)]
    pub(crate) fn verify(&self, presented: &str) -> Option<Tenant> {
        self.verify_entry(presented).map(|(_, tenant)| tenant)
    }

    /// Like [`verify`](Self::verify), with the index of the matching entry (the key's identity
    /// for its rate limit).
    pub(crate) fn verify_entry(&self, presented: &str) -> Option<(usize, Tenant)> {
        let presented = digest(presented);
        let mut found = None;
        for (index, (expected, tenant)) in self.entries.iter().enumerate() {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some((index, tenant));
            }
        }
        found.map(|(index, tenant)| (index, tenant.clone()))
    }

    /// How many keys are configured.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Reads the key from `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim());
    }
    parts
        .headers
        .get(payment_types::headers::API_KEY)?
        .to_str()
        .ok()
        .map(str::trim)
}

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or(ApiError::Unauthenticated)?;
        let (index, tenant) = state
            .keys
            .verify_entry(key)
            .ok_or(ApiError::Unauthenticated)?;
        // Every later line of this request names its tenant (never its key).
        tracing::Span::current().record("tenant", tenant.as_str());
        // Before any work: a refused request never touches the store (nor consumes its key).
        if let Err(retry_after) = state.rate_limits.check(index) {
            crate::stats::Counters::inc(&state.payments.counters.rate_limited);
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_keys_for_rotation_and_names_their_tenants() {
        let keys = ApiKeys::parse(
            "acme:0123456789abcdef,\nacme:fedcba9876543210\n# old\nbeta:bbbbbbbbbbbbbbbb",
        )
        .unwrap();
        assert_eq!(keys.verify("0123456789abcdef").unwrap().as_str(), "acme");
        assert_eq!(keys.verify("fedcba9876543210").unwrap().as_str(), "acme");
        assert_eq!(keys.verify("bbbbbbbbbbbbbbbb").unwrap().as_str(), "beta");
        assert!(keys.verify("0123456789abcdeX").is_none());
        assert!(keys.verify("").is_none());
    }

    #[test]
    fn rejects_malformed_entries_and_an_empty_list() {
        assert!(matches!(
            ApiKeys::parse("nokey"),
            Err(KeysError::Malformed { index: 0 })
        ));
        assert!(matches!(
            ApiKeys::parse("a:short"),
            Err(KeysError::Malformed { .. })
        ));
        assert!(matches!(
            ApiKeys::parse(":0123456789abcdef"),
            Err(KeysError::Malformed { .. })
        ));
        assert!(matches!(
            ApiKeys::parse(" \n# only a comment"),
            Err(KeysError::None)
        ));
    }

    #[test]
    fn debug_output_shows_tenants_and_never_keys() {
        let keys = ApiKeys::parse("acme:0123456789abcdef").unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("acme"));
        assert!(!shown.contains("0123456789abcdef"));
    }
}
