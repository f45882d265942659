//! The wire types every process of resilient-payments shares.
//!
//! # Layout
//! - [`problem`]: RFC 9457 `application/problem+json` bodies with a stable `code`.
//! - [`payment`]: the payment API's request and response bodies.
//! - [`bank`]: the mock bank's charge, ledger and health bodies.
//! - [`currency`]: the ISO 4217 currencies a payment may be made in, with their minor units.
//! - [`headers`]: header names both sides must spell the same way.
//!
//! Types here carry no validation logic beyond their shape: the payment API parses them into
//! domain newtypes, the bank into its own; keeping them here keeps client and server in step.

pub mod bank;
pub mod banks;
pub mod currency;
pub mod headers;
pub mod payment;
pub mod problem;

pub use problem::Problem;
