//! `dashboard`: parse flags, start logging, serve until SIGINT/SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = dashboard::Cli::parse();
    // Kept until `main` returns: dropping it writes out the last log lines.
    let _telemetry = telemetry::init("dashboard", &cli.log)?;
    let app = dashboard::Application::build(cli.config).await?;
    app.run_until_stopped(service_runtime::shutdown_signal())
        .await?;
    Ok(())
}
