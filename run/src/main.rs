//! `run`: start the whole system (or one service, when re-executed by itself as a child).

use clap::Parser;

/// The payment API's allocator (see `payment-api/src/main.rs`); `run` re-executes itself as each
/// service, so the API started by `run` gets it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run::main(run::Cli::parse()).await
}
