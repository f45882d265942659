//! The child side of `run`: one service in this process, stopped by SIGINT/SIGTERM or, with
//! `--exit-with-parent`, by its standard input closing (the orchestrator died without a word).

use tokio::io::AsyncReadExt;

use crate::cli::{ServiceArgs, ServiceKind};

pub(crate) async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let exit_with_parent = args.exit_with_parent;
    let shutdown = async move {
        tokio::select! {
            () = service_runtime::shutdown_signal() => {}
            () = parent_gone(), if exit_with_parent => {
                tracing::warn!("parent process went away; shutting down");
            }
        }
    };
    match args.service {
        ServiceKind::PaymentApi { config, log } => {
            let _telemetry = telemetry::init("payment-api", &log)?;
            payment_api::Application::build(config)
                .await?
                .run_until_stopped(shutdown)
                .await?;
        }
        ServiceKind::MockBank { config, log } => {
            let _telemetry = telemetry::init("mock-bank", &log)?;
            mock_bank::Application::build(config)
                .await?
                .run_until_stopped(shutdown)
                .await?;
        }
        ServiceKind::Dashboard { config, log } => {
            let _telemetry = telemetry::init("dashboard", &log)?;
            dashboard::Application::build(config)
                .await?
                .run_until_stopped(shutdown)
                .await?;
        }
    }
    Ok(())
}

/// Resolves when standard input reaches end of file: the parent holds the other end.
async fn parent_gone() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}
