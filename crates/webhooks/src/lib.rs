//! Webhook building blocks that need no store and no HTTP framework (DESIGN.md §10, issue 20).
//!
//! - [`Secret`]: an endpoint's signing key, `whsec_<base64>` on the wire, never printed.
//! - [`sign`], [`signature_header`], [`verify`]: the Standard Webhooks scheme
//!   (`webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`), with several
//!   signatures during a secret rotation.
//! - [`RetrySchedule`]: when a failed delivery is tried again, and when it is given up.
//! - [`UrlPolicy`]: which endpoint URLs (and resolved addresses) deliveries may go to (SSRF).
//!
//! The only I/O is reading randomness for [`Secret::generate`]; the clock is always passed in, so
//! every rule here is testable without waiting.

mod schedule;
mod secret;
mod signing;
mod url_policy;

pub use schedule::RetrySchedule;
pub use secret::{Secret, SecretError};
pub use signing::{
    sign, signature_header, verify, VerifyError, DEFAULT_TOLERANCE_SECS, HEADER_ID,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
pub use url_policy::{UrlError, UrlPolicy, MAX_URL_LEN};
