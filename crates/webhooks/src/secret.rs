//! An endpoint's signing secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretSlice};

/// The prefix Standard Webhooks gives secrets, so they are recognisable in a config or a leak scan.
const PREFIX: &str = "whsec_";
/// Bytes in a generated key (256 bits, the HMAC-SHA256 block's natural key size).
const GENERATED_LEN: usize = 32;
/// The specification asks for keys between 24 and 64 bytes; shorter is weak, longer is pointless
/// (HMAC hashes longer keys down anyway) and most likely a pasting mistake.
const MIN_LEN: usize = 24;
const MAX_LEN: usize = 64;

/// An endpoint's HMAC key. `Debug` and `Display` never show it; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

/// Why a text is not a usable secret. Never carries the text itself (it may be a real key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with \"whsec_\"")]
    MissingPrefix,
    #[error("a webhook secret is \"whsec_\" followed by standard base64")]
    NotBase64,
    #[error("a webhook secret's key is {MIN_LEN} to {MAX_LEN} bytes, this one is {0}")]
    BadLength(usize),
}

impl Secret {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; GENERATED_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Secret(key.into())
    }

    /// Reads `whsec_<base64>`; surrounding whitespace (a trailing newline in a file) is ignored.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Secret(key.into()))
    }

    /// `whsec_<base64>`: to show once on creation and to store. The only way out of the key.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(self.0.expose_secret()))
    }

    pub(crate) fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(whsec_[redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("whsec_[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.key().len(), 32);
        assert_ne!(a.key(), b.key());
        let text = a.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap().key(), a.key());
        assert_eq!(
            Secret::parse(&format!("  {text}\n")).unwrap().expose(),
            text
        );
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let s = Secret::generate();
        let text = s.expose();
        let encoded = text.trim_start_matches("whsec_");
        for shown in [format!("{s:?}"), format!("{s}"), format!("{:?}", Some(&s))] {
            assert!(!shown.contains(encoded), "{shown}");
            assert!(shown.contains("redacted"));
        }
    }

    #[test]
    fn bad_texts_are_refused_without_echoing_them() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            Secret::parse("whsec_!!!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::BadLength(5)
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(
            Secret::parse(&long).unwrap_err(),
            SecretError::BadLength(65)
        );
        assert!(!SecretError::NotBase64.to_string().contains("!!!"));
        // The specification's example secret is 24 bytes: the lower bound.
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    }
}
