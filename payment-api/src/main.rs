//! `payment-api`: parse flags, start logging, serve until SIGINT/SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = payment_api::Cli::parse();
    telemetry::init("payment-api", &cli.log)?;
    let app = payment_api::Application::build(cli.config).await?;
    app.run_until_stopped(service_runtime::shutdown_signal())
        .await?;
    Ok(())
}
