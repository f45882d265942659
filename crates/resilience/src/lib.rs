//! Resilience primitives for calls to an unreliable dependency (the bank): a circuit breaker,
//! a retry policy, a retry budget, a bulkhead, and a [`Pipeline`](pipeline::Pipeline) that
//! composes them. Pure logic: no HTTP, time through an injectable [`Clock`](clock::Clock),
//! randomness through an injectable `rand::RngCore`.
//!
//! # Layout
//! - [`clock`]: the `Clock` trait, the tokio-backed clock and a manual clock for tests.
//! - [`breaker`]: the circuit breaker (states, sliding windows, probes, events, snapshot).
//! - [`retry`]: the retry policy (attempts, capped exponential backoff with jitter,
//!   `Retry-After`, deadline).
//! - [`budget`]: the retry budget (a share of calls plus a floor per second).
//! - [`bulkhead`]: the bound on concurrent calls.
//! - [`pipeline`]: deadline → retry → breaker → bulkhead → attempt timeout, with per-attempt
//!   reports.
//! - [`error`]: configuration errors.
//!
//! Every `*Config` has a `Default` with the values of docs/contract.md §3, derives `Serialize`
//! (durations as `*_ms` fields), and is checked by `validate()` when a component is built.
//! The crate README lists every setting, the semantics and the benchmark figures.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use resilience::pipeline::{AttemptResult, ExecutionOutcome, Pipeline, PipelineConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let pipeline = Pipeline::new(PipelineConfig::default()).unwrap();
//!
//! // The closure makes one attempt and classifies its result.
//! let execution = pipeline
//!     .execute(|attempt| async move {
//!         if attempt == 1 {
//!             // e.g. the bank answered 503 with `Retry-After: 1`
//!             AttemptResult::NotProcessed { retry_after: Some(Duration::from_secs(1)) }
//!         } else {
//!             AttemptResult::Success("ch_123")
//!         }
//!     })
//!     .await;
//!
//! assert_eq!(execution.outcome, ExecutionOutcome::Success("ch_123"));
//! assert_eq!(execution.attempts.len(), 2);
//! assert!(execution.attempts[0].delay_before_next.unwrap() >= Duration::from_secs(1));
//! assert!(!execution.any_ambiguous);
//!
//! // The breaker on its own: ask, then record.
//! let breaker = pipeline.breaker();
//! match breaker.try_acquire() {
//!     Ok(permit) => permit.record_elapsed(
//!         resilience::breaker::Outcome::Success,
//!         Duration::from_millis(40),
//!     ),
//!     Err(rejected) => println!("503, Retry-After: {:?}", rejected.retry_after),
//! }
//! println!("{}", serde_json::to_string(&breaker.snapshot()).unwrap());
//! # }
//! ```

pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod clock;
pub mod error;
pub mod pipeline;
pub mod retry;
mod ser;

pub use breaker::{BreakerConfig, CircuitBreaker, Outcome, Permit, Rejected};
pub use clock::{Clock, ManualClock, TokioClock};
pub use error::ConfigError;
pub use pipeline::{AttemptResult, Execution, ExecutionOutcome, Pipeline, PipelineConfig};
