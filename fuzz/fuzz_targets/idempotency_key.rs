//! An `Idempotency-Key` header value: bounds, visible ASCII, bare and quoted round trips.
//! The properties are in `src/lib.rs` (`check_idempotency_key`), shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resilient_payments_fuzz::check_idempotency_key(data);
});
