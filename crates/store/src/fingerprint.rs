//! The request fingerprint: SHA-256 over the method, the path and the body as canonical JSON
//! (object keys sorted, no insignificant whitespace), so the same request sent with its fields
//! in another order or spacing has the same fingerprint, and any change of value does not.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of `METHOD\npath\ncanonical-json`.
///
/// `body` must serialise as canonical JSON. A [`Value`] does (see [`canonical_json`]); so does
/// a struct whose fields are declared in sorted order and whose maps are sorted, such as
/// `CreatePayment::canonical`, which spares building a `Value` for every request.
pub fn fingerprint<T: Serialize + ?Sized>(method: &str, path: &str, body: &T) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    // The canonical JSON is streamed into the hash: the same bytes as `canonical_json`, without
    // building the string (this runs for every keyed request).
    serde_json::to_writer(HashWriter(&mut hasher), body)
        .expect("serialising a JSON value into a hash cannot fail");
    hex::encode(hasher.finalize())
}

/// Feeds everything written to it into a SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `body` as canonical JSON. `serde_json::Map` keeps keys sorted (the `preserve_order` feature is
/// off in this workspace), so serialising a `Value` is already canonical; this function is where
/// that assumption is written down and tested.
pub fn canonical_json(body: &Value) -> String {
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a = parse(r#"{"amount":1999,"currency":"TRY","metadata":{"b":"2","a":"1"}}"#);
        let b = parse("{ \"metadata\": {\"a\":\"1\", \"b\":\"2\"},\n \"currency\":\"TRY\", \"amount\": 1999 }");
        assert_eq!(
            fingerprint("POST", "/v1/payments", &a),
            fingerprint("POST", "/v1/payments", &b)
        );
    }

    #[test]
    fn any_changed_value_method_or_path_changes_the_fingerprint() {
        let base = parse(r#"{"amount":1999,"currency":"TRY"}"#);
        let f = fingerprint("POST", "/v1/payments", &base);
        assert_ne!(
            f,
            fingerprint(
                "POST",
                "/v1/payments",
                &parse(r#"{"amount":2000,"currency":"TRY"}"#)
            )
        );
        assert_ne!(f, fingerprint("PUT", "/v1/payments", &base));
        assert_ne!(f, fingerprint("POST", "/v1/refunds", &base));
    }

    #[test]
    fn the_streamed_fingerprint_is_the_hash_of_the_canonical_json_so_stored_ones_still_match() {
        let body = parse(r#"{"source":"tok_visa","amount":1999,"metadata":{"b":"ü","a":[1,2.5]}}"#);
        let mut hasher = Sha256::new();
        hasher.update(format!("POST\n/v1/payments\n{}", canonical_json(&body)).as_bytes());
        assert_eq!(
            fingerprint("POST", "/v1/payments", &body),
            hex::encode(hasher.finalize())
        );
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        assert_eq!(
            canonical_json(&parse(r#"{"b":{"y":1,"x":2},"a":[3,{"d":4,"c":5}]}"#)),
            r#"{"a":[3,{"c":5,"d":4}],"b":{"x":2,"y":1}}"#
        );
    }
}
