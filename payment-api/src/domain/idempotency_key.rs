//! The `Idempotency-Key` header: 1–255 visible ASCII characters, sent bare (`abc`) or as an
//! RFC 8941 structured-field string (`"abc"`, where `\"` and `\\` are the only escapes).

/// A valid idempotency key, unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdempotencyKey(String);

/// Why a header value is not a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdempotencyKeyError {
    #[error("the Idempotency-Key header is empty")]
    Empty,
    #[error("the Idempotency-Key header is longer than 255 characters")]
    TooLong,
    #[error("the Idempotency-Key header may hold only visible ASCII characters")]
    NotVisibleAscii,
    #[error("the Idempotency-Key header is a malformed quoted string")]
    BadQuoting,
}

impl IdempotencyKey {
    /// Longest key, unquoted.
    pub(crate) const MAX_LEN: usize = 255;
    /// The keys [`IdempotencyKey::parse`] accepts bare, as a regular expression for the OpenAPI
    /// document: visible ASCII, not beginning or ending with `"` (such a key could only be sent
    /// quoted). The RFC 8941 quoted form (`"abc"`, escapes `\"` and `\\`) is also accepted.
    pub(crate) const PATTERN: &'static str = "^[!#-~]([!-~]*[!#-~])?$";

    pub(crate) fn parse(raw: &[u8]) -> Result<Self, IdempotencyKeyError> {
        let key = match raw {
            [b'"', inner @ .., b'"'] => unquote(inner)?,
            [b'"', ..] | [.., b'"'] => return Err(IdempotencyKeyError::BadQuoting),
            _ => raw.to_vec(),
        };
        if key.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        // A key that begins or ends with `"` could only ever be sent quoted (bare, it reads as
        // a quoted string), so one key would have one spelling that works and one that does
        // not. Refused, so every key works bare and quoted alike (found by fuzzing).
        if key.first() == Some(&b'"') || key.last() == Some(&b'"') {
            return Err(IdempotencyKeyError::BadQuoting);
        }
        if key.len() > Self::MAX_LEN {
            return Err(IdempotencyKeyError::TooLong);
        }
        if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(IdempotencyKeyError::NotVisibleAscii);
        }
        // Only visible ASCII is left, so this cannot fail.
        String::from_utf8(key)
            .map(Self)
            .map_err(|_| IdempotencyKeyError::NotVisibleAscii)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

fn unquote(inner: &[u8]) -> Result<Vec<u8>, IdempotencyKeyError> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e),
                _ => return Err(IdempotencyKeyError::BadQuoting),
            },
            b'"' => return Err(IdempotencyKeyError::BadQuoting),
            _ => out.push(b),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_key_is_taken_as_is() {
        assert_eq!(
            IdempotencyKey::parse(b"order-42").unwrap().as_str(),
            "order-42"
        );
    }

    #[test]
    fn a_quoted_key_is_unquoted_and_unescaped() {
        assert_eq!(
            IdempotencyKey::parse(b"\"order-42\"").unwrap().as_str(),
            "order-42"
        );
        assert_eq!(
            IdempotencyKey::parse(br#""a\"b\\c""#).unwrap().as_str(),
            r#"a"b\c"#
        );
    }

    #[test]
    fn the_same_key_bare_or_quoted_is_the_same_key() {
        assert_eq!(
            IdempotencyKey::parse(b"k1").unwrap(),
            IdempotencyKey::parse(b"\"k1\"").unwrap()
        );
    }

    #[test]
    fn length_is_bounded_to_1_through_255() {
        assert_eq!(IdempotencyKey::parse(b""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(b"\"\""),
            Err(IdempotencyKeyError::Empty)
        );
        assert!(IdempotencyKey::parse(&[b'a'; 255]).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&[b'a'; 256]),
            Err(IdempotencyKeyError::TooLong)
        );
    }

    #[test]
    fn spaces_controls_and_non_ascii_are_refused() {
        for bad in [&b"a b"[..], b"a\tb", b"caf\xc3\xa9", b"\x7f"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::NotVisibleAscii),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn broken_quoting_is_refused() {
        for bad in [&b"\"abc"[..], b"abc\"", b"\"a\"b\"", br#""a\x""#, b"\""] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::BadQuoting),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_that_could_only_be_sent_quoted_is_refused() {
        // Found by the `idempotency_key` fuzz target: `"\""` named the key `"`, which sent bare
        // reads as broken quoting.
        for bad in [&br#""\"""#[..], br#"")&c\"""#, br#""\"abc""#] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::BadQuoting),
                "{bad:?}"
            );
        }
        // A quote inside a key is fine: it works bare and quoted.
        assert_eq!(IdempotencyKey::parse(b"a\"b").unwrap().as_str(), "a\"b");
    }
}
