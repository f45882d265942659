//! Header names shared by the services, so a client and a server never disagree on spelling.

/// The client's idempotency key (payment API) or the bank reference (mock bank).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `true` when a response is a stored answer replayed for a repeated key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Correlates one request across the API, the bank and every log line.
pub const REQUEST_ID: &str = "x-request-id";
/// The alternative to `Authorization: Bearer` for API keys.
pub const API_KEY: &str = "x-api-key";
/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
