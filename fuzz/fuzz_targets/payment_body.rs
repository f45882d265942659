//! A `POST /v1/payments` body through the handler's parsing steps (JSON, fingerprint, validation).
//! The properties are in `src/lib.rs` (`check_payment_body`), shared with the corpus replay test.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    resilient_payments_fuzz::check_payment_body(data);
});
