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
/// As an extractor it admits tenant keys only: an operator key is 403 `forbidden`.
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

/// The operator a request authenticated as: the configured name of its operator key (never
/// the key). As an extractor it admits operator keys only: a tenant key is 403 `forbidden`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Operator(String);

impl Operator {
    /// The name the breaker history and the logs show for this operator.
    pub(crate) fn id(&self) -> &str {
        &self.0
    }
}

/// What a key may do (docs/security.md has the table of routes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Creates and reads its own tenant's payments.
    Tenant(Tenant),
    /// The operator surface: breaker controls, `/v1/logs`, `/v1/status`, reads of every
    /// tenant's payments. Creates no payments.
    Operator(Operator),
}

/// Why the configured keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("no API keys configured: set --api-keys / PAYMENT_API_KEYS, --api-keys-file or --operator-keys / PAYMENT_API_OPERATOR_KEYS")]
    None,
    #[error("cannot read the API keys file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API key entry {index} is not `tenant:key` or `operator:NAME:key` with a non-empty name (letters, digits, - and _) and a key of 16+ characters")]
    Malformed { index: usize },
    #[error("operator key entry {index} (--operator-keys) is not `NAME:key` with a non-empty name (letters, digits, - and _) and a key of 16+ characters")]
    MalformedOperator { index: usize },
}

/// The marker of an operator key in `--api-keys` and the keys file: `operator:NAME:key`. The
/// tenant name `operator` is therefore reserved.
pub(crate) const OPERATOR_MARKER: &str = "operator";

/// The configured keys, as (digest, role) pairs.
#[derive(Clone)]
pub(crate) struct ApiKeys {
    entries: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mut tenants, mut operators) = (Vec::new(), Vec::new());
        for (_, role) in &self.entries {
            match role {
                Role::Tenant(t) => tenants.push(t.as_str()),
                Role::Operator(o) => operators.push(o.id()),
            }
        }
        f.debug_struct("ApiKeys")
            .field("tenants", &tenants)
            .field("operators", &operators)
            .finish()
    }
}

/// Entries separated by commas or newlines; `#` starts a comment line.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
}

/// What a tenant's or an operator's name may be (as `GET /v1/payments?tenant=` documents it).
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// A name matching [`NAME_PATTERN`]: letters, digits, `-` and `_`, at least one.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `name:key` with a valid name and a long enough key.
fn name_and_key(entry: &str) -> Option<(&str, &str)> {
    let (name, key) = entry.split_once(':')?;
    let (name, key) = (name.trim(), key.trim());
    (valid_name(name) && key.len() >= 16).then_some((name, key))
}

impl ApiKeys {
    /// Loads keys from the flags/env values and the file; any may be given.
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
        let operators = config
            .operator_keys
            .as_ref()
            .map(|keys| keys.expose_secret().to_owned())
            .unwrap_or_default();
        let keys = Self::parse_all(&text, &operators)?;
        let operators = keys.operator_count();
        tracing::info!(
            tenant_keys = keys.entries.len() - operators,
            operator_keys = operators,
            "API keys loaded"
        );
        if operators == 0 {
            tracing::warn!("no operator key configured (--operator-keys / PAYMENT_API_OPERATOR_KEYS, or `operator:NAME:key` in the keys file): breaker controls, /v1/status and /v1/logs refuse every request");
        }
        Ok(keys)
    }

    /// Parses `tenant:key` and `operator:NAME:key` entries separated by commas or newlines;
    /// `#` starts a comment line.
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Result<Self, KeysError> {
        Self::parse_all(text, "")
    }

    /// [`parse`](Self::parse) of `keys`, plus `operators`: `NAME:key` entries that are all
    /// operator keys (`--operator-keys`).
    pub(crate) fn parse_all(keys: &str, operators: &str) -> Result<Self, KeysError> {
        let mut parsed = Vec::new();
        for (index, entry) in entries(keys) {
            let malformed = KeysError::Malformed { index };
            let (name, rest) = entry
                .split_once(':')
                .ok_or(KeysError::Malformed { index })?;
            let role = if name.trim() == OPERATOR_MARKER {
                let (name, key) = name_and_key(rest).ok_or(malformed)?;
                (digest(key), Role::Operator(Operator(name.to_owned())))
            } else {
                let (name, key) = name_and_key(entry).ok_or(malformed)?;
                (digest(key), Role::Tenant(Tenant(name.to_owned())))
            };
            parsed.push(role);
        }
        for (index, entry) in entries(operators) {
            let (name, key) = name_and_key(entry).ok_or(KeysError::MalformedOperator { index })?;
            parsed.push((digest(key), Role::Operator(Operator(name.to_owned()))));
        }
        if parsed.is_empty() {
            return Err(KeysError::None);
        }
        Ok(Self { entries: parsed })
    }

    /// The tenant whose key this is (`None` for an operator key or an unknown key).
    #[cfg(test)]
    pub(crate) fn verify(&self, presented: &str) -> Option<Tenant> {
        match self.verify_entry(presented) {
            Some((_, Role::Tenant(tenant))) => Some(tenant),
            _ => None,
        }
    }

    /// The role of the key presented, with the index of its entry (the key's identity for its
    /// rate limit). Every entry is compared, in constant time, so the time taken does not
    /// depend on which entry (if any) matched.
    pub(crate) fn verify_entry(&self, presented: &str) -> Option<(usize, Role)> {
        let presented = digest(presented);
        let mut found = None;
        for (index, (expected, role)) in self.entries.iter().enumerate() {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some((index, role));
            }
        }
        found.map(|(index, role)| (index, role.clone()))
    }

    /// How many keys are configured.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn operator_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, role)| matches!(role, Role::Operator(_)))
            .count()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Reads the key from `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(parts: &Parts) -> Option<&str> {
    presented(&parts.headers)
}

fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim());
    }
    headers
        .get(payment_types::headers::API_KEY)?
        .to_str()
        .ok()
        .map(str::trim)
}

/// The digest `--metrics-token` is kept as.
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    digest(token)
}

/// `GET /metrics` with `--metrics-token`: the token, or an operator key (401 without either,
/// 403 for a tenant key). Without a token configured, everyone may scrape.
pub(crate) fn check_metrics(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<(), ApiError> {
    let Some(expected) = &state.metrics_token else {
        return Ok(());
    };
    let presented = presented(headers).ok_or(ApiError::Unauthenticated)?;
    if bool::from(digest(presented).ct_eq(expected)) {
        return Ok(());
    }
    match state.keys.verify_entry(presented) {
        Some((_, Role::Operator(_))) => Ok(()),
        Some((_, Role::Tenant(_))) => Err(ApiError::Forbidden(
            "/metrics needs the metrics token or an operator key; a tenant key cannot read it.",
        )),
        None => Err(ApiError::Unauthenticated),
    }
}

/// The role of the request's key: 401 for a missing or unknown key, 429 over the key's rate
/// limit. Every later line of the request names its tenant or operator (never its key).
async fn authenticate(parts: &Parts, state: &Arc<AppState>) -> Result<Role, ApiError> {
    let key = presented_key(parts).ok_or(ApiError::Unauthenticated)?;
    let (index, role) = state
        .keys
        .verify_entry(key)
        .ok_or(ApiError::Unauthenticated)?;
    match &role {
        Role::Tenant(tenant) => tracing::Span::current().record("tenant", tenant.as_str()),
        Role::Operator(operator) => tracing::Span::current().record("operator", operator.id()),
    };
    // Before any work: a refused request never touches the store (nor consumes its key).
    if let Err(retry_after) = state.rate_limits.check(index) {
        crate::stats::Counters::inc(&state.payments.counters.rate_limited);
        return Err(ApiError::RateLimited { retry_after });
    }
    Ok(role)
}

impl FromRequestParts<Arc<AppState>> for Role {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

impl FromRequestParts<Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await? {
            Role::Tenant(tenant) => Ok(tenant),
            Role::Operator(_) => Err(ApiError::Forbidden(
                "This route takes a tenant key: an operator key belongs to no tenant and creates no payments.",
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await? {
            Role::Operator(operator) => Ok(operator),
            Role::Tenant(_) => Err(ApiError::Forbidden(
                "This route is part of the operator surface and needs an operator key; a tenant key cannot use it.",
            )),
        }
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
        let keys = ApiKeys::parse_all(
            "acme:0123456789abcdef\noperator:alice:opopopopopopopop",
            "bob:1111111111111111",
        )
        .unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("acme") && shown.contains("alice") && shown.contains("bob"));
        for key in ["0123456789abcdef", "opopopopopopopop", "1111111111111111"] {
            assert!(!shown.contains(key), "{shown}");
        }
    }

    #[test]
    fn operator_keys_come_from_the_marker_and_the_flag_and_name_their_operator() {
        let keys = ApiKeys::parse_all(
            "acme:0123456789abcdef\noperator:alice:opopopopopopopop,operator:alice:rotatedrotated00",
            "bob:1111111111111111",
        )
        .unwrap();
        let role = |key: &str| keys.verify_entry(key).map(|(_, role)| role);
        assert_eq!(
            role("0123456789abcdef"),
            Some(Role::Tenant(Tenant("acme".into())))
        );
        for (key, name) in [
            ("opopopopopopopop", "alice"),
            ("rotatedrotated00", "alice"),
            ("1111111111111111", "bob"),
        ] {
            assert_eq!(
                role(key),
                Some(Role::Operator(Operator(name.into()))),
                "{key}"
            );
            // An operator key is no tenant's key.
            assert!(keys.verify(key).is_none());
        }
        assert_eq!(role("alice:opopopopopopopop"), None);
        assert_eq!(keys.len(), 4);
        // Operator keys alone are enough to start.
        assert!(ApiKeys::parse_all("", "bob:1111111111111111").is_ok());
    }

    #[test]
    fn malformed_operator_entries_are_refused() {
        for text in [
            "operator:0123456789abcdef",
            "operator::0123456789abcdef",
            "operator:al ice:0123456789abcdef",
            "operator:alice:short",
        ] {
            assert!(
                matches!(ApiKeys::parse(text), Err(KeysError::Malformed { .. })),
                "{text}"
            );
        }
        for text in ["0123456789abcdef", "bob:short", ":0123456789abcdef"] {
            assert!(
                matches!(
                    ApiKeys::parse_all("acme:0123456789abcdef", text),
                    Err(KeysError::MalformedOperator { index: 0 })
                ),
                "{text}"
            );
        }
    }
}
