//! Black-box tests of the mock bank over a real port: every failure mode as a client sees it.
//!
//! One test binary (faster to link than one per file); `helpers` starts a bank on port 0.

mod chaos;
mod charges;
mod control;
mod helpers;
mod openapi;
mod scenario;
