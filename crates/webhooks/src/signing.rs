//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, symmetric `v1` scheme).
//!
//! The signed content is `{msg_id}.{timestamp}.{body}` with the body's exact bytes: a receiver
//! must verify the raw body before parsing it. Verification follows the reference libraries:
//! the timestamp must be within a tolerance of now (replay window), the header may list several
//! space-separated signatures (a secret rotation sends one per secret), unknown versions are
//! ignored, and any `v1` signature matching any known secret is enough.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Mac as _, SimpleHmac};
use sha2::Sha256;

use crate::Secret;

/// Header carrying the event's stable id (the same on every retry: receivers dedupe on it).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's Unix time in seconds (fresh on every attempt).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The reference libraries' replay window: five minutes either way.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

const VERSION: &str = "v1";

/// Why a delivery does not verify. The messages name no key and no expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no secret to verify with")]
    NoSecrets,
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is {age_secs} s old, more than the {tolerance_secs} s tolerated")]
    TimestampTooOld { age_secs: i64, tolerance_secs: i64 },
    #[error("webhook-timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s tolerated")]
    TimestampInFuture {
        ahead_secs: i64,
        tolerance_secs: i64,
    },
    #[error("webhook-signature lists no v1 signature")]
    NoSignature,
    #[error("no webhook-signature matches the endpoint's secret")]
    Mismatch,
}

/// A fresh HMAC-SHA256 over the signed content. `SimpleHmac` takes any key length (the spec
/// allows 24 to 64 bytes, more than SHA-256's block-size-aware `Hmac` needs but equally valid).
fn mac(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> SimpleHmac<Sha256> {
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(secret.key())
        .expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `v1,<base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))>`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, msg_id, timestamp, body).finalize().into_bytes();
    format!("{VERSION},{}", STANDARD.encode(tag))
}

/// Space-separated signatures, one per secret (several during a rotation), in the given order.
pub fn signature_header(secrets: &[&Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a delivery like the reference libraries: `timestamp` (the header's text) within
/// `tolerance_secs` of `now` (Unix seconds) either way, then any listed `v1` signature matching
/// any of `secrets`, compared in constant time.
pub fn verify(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    // Checked first, as the reference libraries do, so a replayed old delivery is named as such.
    let age = now.saturating_sub(ts);
    if age > tolerance_secs {
        return Err(VerifyError::TimestampTooOld {
            age_secs: age,
            tolerance_secs,
        });
    }
    if -age > tolerance_secs {
        return Err(VerifyError::TimestampInFuture {
            ahead_secs: -age,
            tolerance_secs,
        });
    }
    let candidates: Vec<&str> = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .map(|(_, sig)| sig)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    for secret in secrets {
        let expected = mac(secret, msg_id, ts, body);
        for candidate in &candidates {
            // A candidate that is not base64 cannot match; it must not hide a later good one.
            let Ok(tag) = STANDARD.decode(candidate) else {
                continue;
            };
            // `verify_slice` compares in constant time (no early exit on the first wrong byte).
            if expected.clone().verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks test vector, used by the sign tests of the reference libraries in
    // github.com/standard-webhooks/standard-webhooks (libraries/*, e.g. the Python, PHP and
    // JavaScript `sign` tests; the same vector as Svix's libraries).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> Secret {
        Secret::parse(VECTOR_SECRET).unwrap()
    }

    fn check(
        secrets: &[&Secret],
        id: &str,
        ts: &str,
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        verify(secrets, id, ts, header, body, now, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn the_specification_test_vector_signs_and_verifies() {
        let s = vector_secret();
        assert_eq!(sign(&s, VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
        check(
            &[&s],
            VECTOR_ID,
            "1614265330",
            VECTOR_SIG,
            VECTOR_BODY,
            VECTOR_TS,
        )
        .unwrap();
    }

    #[test]
    fn our_signatures_equal_the_reference_rust_library() {
        let s = Secret::generate();
        let reference = standardwebhooks::Webhook::new(&s.expose()).unwrap();
        let body = br#"{"type":"payment.succeeded","data":{"amount":1234}}"#;
        let ours = sign(&s, "evt_1", 1_700_000_000, body);
        assert_eq!(ours, reference.sign("evt_1", 1_700_000_000, body).unwrap());
        // And the reference library verifies what we send (it reads the real clock).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let other = Secret::generate();
        let mut headers = http::HeaderMap::new();
        headers.insert(HEADER_ID, "evt_1".parse().unwrap());
        headers.insert(HEADER_TIMESTAMP, now.to_string().parse().unwrap());
        headers.insert(
            HEADER_SIGNATURE,
            signature_header(&[&other, &s], "evt_1", now, body)
                .parse()
                .unwrap(),
        );
        reference.verify(body, &headers).unwrap();
    }

    #[test]
    fn a_rotation_sends_one_signature_per_secret_and_either_secret_verifies() {
        let old = Secret::generate();
        let new = Secret::generate();
        let header = signature_header(&[&new, &old], "evt_1", 100, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                sign(&new, "evt_1", 100, b"{}"),
                sign(&old, "evt_1", 100, b"{}")
            ]
        );
        check(&[&old], "evt_1", "100", &header, b"{}", 100).unwrap();
        check(&[&new], "evt_1", "100", &header, b"{}", 100).unwrap();
        // A receiver that knows both (it is rotating too) accepts a single old signature.
        let only_old = sign(&old, "evt_1", 100, b"{}");
        check(&[&new, &old], "evt_1", "100", &only_old, b"{}", 100).unwrap();
        // After the overlap only the new one is sent: a receiver still on the old one refuses it.
        let only_new = sign(&new, "evt_1", 100, b"{}");
        assert_eq!(
            check(&[&old], "evt_1", "100", &only_new, b"{}", 100),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tampering_with_body_id_or_timestamp_is_refused() {
        let s = vector_secret();
        let t = VECTOR_TS;
        assert_eq!(
            check(
                &[&s],
                VECTOR_ID,
                "1614265330",
                VECTOR_SIG,
                br#"{"test": 2432232315}"#,
                t
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&[&s], "msg_other", "1614265330", VECTOR_SIG, VECTOR_BODY, t),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&[&s], VECTOR_ID, "1614265331", VECTOR_SIG, VECTOR_BODY, t),
            Err(VerifyError::Mismatch)
        );
        let wrong = Secret::generate();
        assert_eq!(
            check(
                &[&wrong],
                VECTOR_ID,
                "1614265330",
                VECTOR_SIG,
                VECTOR_BODY,
                t
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance_either_way() {
        let s = vector_secret();
        let ok = |now| check(&[&s], VECTOR_ID, "1614265330", VECTOR_SIG, VECTOR_BODY, now);
        ok(VECTOR_TS + 300).unwrap();
        ok(VECTOR_TS - 300).unwrap();
        assert_eq!(
            ok(VECTOR_TS + 301),
            Err(VerifyError::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            ok(VECTOR_TS - 301),
            Err(VerifyError::TimestampInFuture {
                ahead_secs: 301,
                tolerance_secs: 300
            })
        );
        // A custom tolerance is honoured.
        verify(
            &[&s],
            VECTOR_ID,
            "1614265330",
            VECTOR_SIG,
            VECTOR_BODY,
            VECTOR_TS + 3600,
            3600,
        )
        .unwrap();
        // Extreme values do not overflow.
        assert!(matches!(
            check(
                &[&s],
                VECTOR_ID,
                &i64::MIN.to_string(),
                VECTOR_SIG,
                VECTOR_BODY,
                i64::MAX
            ),
            Err(VerifyError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        let s = vector_secret();
        let t = VECTOR_TS;
        for ts in ["", "abc", "1614265330.0", "1e9"] {
            assert_eq!(
                check(&[&s], VECTOR_ID, ts, VECTOR_SIG, VECTOR_BODY, t),
                Err(VerifyError::InvalidTimestamp),
                "{ts}"
            );
        }
        for header in [
            "",
            "   ",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v2,abc",
            "v1a,abc",
            "v1",
        ] {
            assert_eq!(
                check(&[&s], VECTOR_ID, "1614265330", header, VECTOR_BODY, t),
                Err(VerifyError::NoSignature),
                "{header:?}"
            );
        }
        for header in [
            "v1,",
            "v1,!!!",
            "v1,g0hM9SsE",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        ] {
            assert_eq!(
                check(&[&s], VECTOR_ID, "1614265330", header, VECTOR_BODY, t),
                Err(VerifyError::Mismatch),
                "{header:?}"
            );
        }
        // Garbage and other versions next to a good signature do not hide it.
        let mixed = format!("v1,!!! v2,xyz v1a,abc {VECTOR_SIG}");
        check(&[&s], VECTOR_ID, "1614265330", &mixed, VECTOR_BODY, t).unwrap();
        assert_eq!(
            check(&[], VECTOR_ID, "1614265330", VECTOR_SIG, VECTOR_BODY, t),
            Err(VerifyError::NoSecrets)
        );
    }

    #[test]
    fn error_messages_reveal_no_signature() {
        let e = VerifyError::Mismatch.to_string();
        assert!(!e.contains("v1,"));
    }
}
