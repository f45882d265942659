//! Resilience primitives for calls to an unreliable dependency (the bank).
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod clock;
pub mod error;
pub mod pipeline;
pub mod retry;
mod ser;
