//! The admin token: a secret that never prints, and the check that guards chaos control.

use std::fmt;

use axum::http::{header::AUTHORIZATION, HeaderMap};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A string that `Debug` and `Display` never reveal, so a config or a log line cannot leak it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place that must compare it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Passes when no token is configured, or when `Authorization: Bearer <token>` matches it
/// (compared in constant time). Anything else is [`ApiError::Unauthorized`].
pub(crate) fn require_admin(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(presented) if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) => {
            Ok(())
        }
        _ => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn without_a_configured_token_everything_passes() {
        assert!(require_admin(&HeaderMap::new(), None).is_ok());
    }

    #[test]
    fn the_right_bearer_token_passes_and_anything_else_fails() {
        let token = Secret::from("s3cret".to_owned());
        assert!(require_admin(&with_auth("Bearer s3cret"), Some(&token)).is_ok());
        assert!(require_admin(&with_auth("Bearer s3cre"), Some(&token)).is_err());
        assert!(require_admin(&with_auth("Basic s3cret"), Some(&token)).is_err());
        assert!(require_admin(&HeaderMap::new(), Some(&token)).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Secret::from("s3cret".to_owned());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
