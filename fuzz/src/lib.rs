//! The properties the fuzz targets check, one function per target. Each takes the raw input bytes
//! and panics (an `assert!`) when a property does not hold, which libFuzzer reports as a crash.
//!
//! This file is shared: the targets in `fuzz_targets/` call it through this crate, and the stable
//! corpus replay test (`payment-api/tests/fuzz_corpus.rs`) includes it with `#[path]`, so the
//! seeds and every saved regression are checked against exactly the same properties under
//! `cargo test`. Keep it free of crate-level attributes and of dependencies other than
//! `payment_api`, `payment_store` and `serde_json` (the replay test has only those).

use payment_api::fuzzing::{parse_idempotency_key, parse_payment_body, BodyVerdict};
use payment_store::fingerprint::{canonical_json, fingerprint};
use serde_json::Value;

/// The method and path the payment API fingerprints bodies under.
const METHOD: &str = "POST";
const PATH: &str = "/v1/payments";

/// Largest idempotency key, in bytes (`IdempotencyKey::MAX_LEN`).
const MAX_KEY_LEN: usize = 255;

/// `payment_body`: a `POST /v1/payments` body through the handler's parsing steps.
///
/// - never panics (whatever the bytes);
/// - the verdict is deterministic: the same bytes give the same verdict and fingerprint;
/// - a `Valid` fingerprint is 64 lowercase hex characters (a hex SHA-256);
/// - a `Valid` body re-sent as canonical JSON (keys sorted, no spacing) is still `Valid` with the
///   same fingerprint: the fingerprint does not depend on key order or whitespace.
pub fn check_payment_body(data: &[u8]) {
    let verdict = parse_payment_body(data);
    assert_eq!(
        parse_payment_body(data),
        verdict,
        "the same body parsed twice gave different verdicts"
    );
    let BodyVerdict::Valid { fingerprint } = &verdict else {
        return;
    };
    assert!(
        is_lower_hex_sha256(fingerprint),
        "fingerprint {fingerprint:?} is not 64 lowercase hex characters"
    );
    let value: Value =
        serde_json::from_slice(data).expect("a body that parsed as a payment is valid JSON");
    let canonical = canonical_json(&value);
    assert_eq!(
        parse_payment_body(canonical.as_bytes()),
        verdict,
        "the canonical form {canonical:?} of a valid body has another verdict or fingerprint"
    );
}

/// `idempotency_key`: an `Idempotency-Key` header value.
///
/// - never panics;
/// - a usable key is 1 to 255 bytes, all visible ASCII (0x21..=0x7e);
/// - the key sent bare parses to itself;
/// - the key sent as a quoted string (`"`, then the key with `\` and `"` escaped, then `"`)
///   parses to itself.
pub fn check_idempotency_key(data: &[u8]) {
    let Some(key) = parse_idempotency_key(data) else {
        return;
    };
    assert!(
        (1..=MAX_KEY_LEN).contains(&key.len()),
        "key {key:?} is {} bytes long",
        key.len()
    );
    assert!(
        key.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "key {key:?} holds bytes outside visible ASCII"
    );
    assert_eq!(
        parse_idempotency_key(key.as_bytes()).as_deref(),
        Some(key.as_str()),
        "key {key:?} sent bare does not parse to itself"
    );
    let quoted = quote(&key);
    assert_eq!(
        parse_idempotency_key(quoted.as_bytes()).as_deref(),
        Some(key.as_str()),
        "key {key:?} sent quoted as {quoted:?} does not parse to itself"
    );
}

/// `canonical_json`: any JSON document through the store's canonical form and fingerprint.
///
/// - never panics;
/// - the canonical JSON parses back to an equal value;
/// - it is idempotent: canonical(parse(canonical(v))) == canonical(v);
/// - the fingerprint of the value equals the fingerprint of the re-parsed value;
/// - object keys come out sorted, at every depth;
/// - there is no whitespace outside strings.
pub fn check_canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = canonical_json(&value);
    let reparsed: Value = serde_json::from_str(&canonical)
        .unwrap_or_else(|error| panic!("canonical JSON {canonical:?} does not parse: {error}"));
    assert_eq!(
        reparsed, value,
        "canonical JSON {canonical:?} parses to another value"
    );
    assert_eq!(
        canonical_json(&reparsed),
        canonical,
        "canonical JSON is not idempotent"
    );
    assert_eq!(
        fingerprint(METHOD, PATH, &reparsed),
        fingerprint(METHOD, PATH, &value),
        "the re-parsed canonical JSON {canonical:?} has another fingerprint"
    );
    assert_keys_sorted(&reparsed);
    assert!(
        !has_whitespace_outside_strings(&canonical),
        "canonical JSON {canonical:?} holds whitespace outside strings"
    );
}

/// `key` as an RFC 8941 string: quoted, with `\` and `"` escaped.
fn quote(key: &str) -> String {
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn is_lower_hex_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn assert_keys_sorted(value: &Value) {
    match value {
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            assert!(
                keys.windows(2).all(|pair| pair[0] < pair[1]),
                "object keys are not sorted: {keys:?}"
            );
            map.values().for_each(assert_keys_sorted);
        }
        Value::Array(items) => items.iter().for_each(assert_keys_sorted),
        _ => {}
    }
}

/// Whether `json` has a space, tab, CR or LF outside its string literals.
fn has_whitespace_outside_strings(json: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b' ' | b'\t' | b'\n' | b'\r' => return true,
                _ => {}
            }
        }
    }
    false
}
