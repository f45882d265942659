//! `payment-api`: parse flags, start logging, serve until SIGINT/SIGTERM.

use clap::Parser;

/// mimalloc: per-thread free lists; the system allocator's locking showed as ~15% of the API's
/// CPU on the payment path (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = payment_api::Cli::parse();
    // Kept until `main` returns: dropping it writes out the last log lines.
    let _telemetry = telemetry::init("payment-api", &cli.log)?;
    let app = payment_api::Application::build(cli.config).await?;
    app.run_until_stopped(service_runtime::shutdown_signal())
        .await?;
    Ok(())
}
