//! The orchestrator: `cargo run -p run` starts the mock banks (two by default, `--banks N`), the
//! payment API routing over them, and the dashboard as supervised OS processes and prints where
//! they are.
//!
//! The services are linked into this binary as libraries, and each child is this same executable
//! re-run with the hidden `service NAME` subcommand. So `cargo run -p run` needs no other build
//! step and always runs services built from the same source as the orchestrator.
//!
//! # Layout
//! - [`cli`]: flags of `run` and of its subcommands.
//! - `credentials`: the dev API and operator keys and one admin token per bank, generated into
//!   the data directory.
//! - `ports`: checking (or picking) the ports before anything starts, with errors that name the flag.
//! - `supervisor`: starting, watching, restarting and stopping the children.
//! - `service`: the child side: run one service until a signal or until the parent goes away.
//! - `up`: the start-up of the whole system, as `run` and `run chaos` use it.
//! - [`load`]: the traffic generator (`run load`), also a library function.
//! - `chaos`: the chaos verifier (`run chaos`): scenarios, kills, settling, the audit's inputs.
//! - `store_faults`: store faults for `run chaos` (SQLite disk full and lock timeouts,
//!   PostgreSQL crash-restart, stop and dropped connections) and a throwaway PostgreSQL server.
//! - [`audit`]: the pure audit of payments against the banks' ledgers (docs/contract.md §6, 1–5,
//!   7 and, over several banks, 8).
//! - `webhook_receiver`: the chaos run's webhook receiver (records every delivery, answers on a
//!   seeded schedule: healthy, failing, hanging, healthy).
//! - `webhook_audit`: the pure audit of those deliveries (W1–W3: final events delivered,
//!   signatures verify, one payload per event id).

pub mod audit;
mod chaos;
pub mod cli;
mod credentials;
pub mod load;
mod ports;
mod service;
pub mod store_faults;
mod supervisor;
mod up;
mod webhook_audit;
mod webhook_receiver;

use std::process::ExitCode;

pub use cli::Cli;

/// Runs the command the user asked for and turns its result into an exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Some(cli::Command::Service(service)) => service::run(*service).await,
        Some(cli::Command::Load(load)) => load::command(load).await,
        Some(cli::Command::Chaos(chaos)) => chaos::command(chaos).await,
        None => up::run(cli.up).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("run: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
