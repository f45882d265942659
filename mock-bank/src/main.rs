//! `mock-bank`: parse flags, start logging, serve until SIGINT/SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = mock_bank::Cli::parse();
    // Kept until `main` returns: dropping it writes out the last log lines.
    let _telemetry = telemetry::init("mock-bank", &cli.log)?;
    let app = mock_bank::Application::build(cli.config).await?;
    app.run_until_stopped(service_runtime::shutdown_signal())
        .await?;
    Ok(())
}
