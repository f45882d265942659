//! `run`: start the whole system (or one service, when re-executed by itself as a child).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run::main(run::Cli::parse()).await
}
