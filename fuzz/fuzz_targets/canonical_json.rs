//! Any JSON document through the store's canonical JSON and fingerprint.
//! The properties are in `src/lib.rs` (`check_canonical_json`), shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resilient_payments_fuzz::check_canonical_json(data);
});
