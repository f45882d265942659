//! `run` with no subcommand: reserve the ports, create the dev credentials, start the bank, the
//! API and the dashboard in that order, print where they are, and stop them all on a signal.

use std::{ffi::OsString, io::IsTerminal, net::SocketAddr, time::Duration};

use anyhow::Context;

use crate::{
    cli::UpArgs,
    credentials::DevCredentials,
    ports,
    supervisor::{ChildSpec, RestartPolicy, Supervisor},
};

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Reserve every port first: a taken port is one clear error before anything starts.
    let bank = ports::reserve(args.bank_port, "mock bank", "--bank-port")?;
    let api = ports::reserve(args.api_port, "payment API", "--api-port")?;
    let dashboard = ports::reserve(args.dashboard_port, "dashboard", "--dashboard-port")?;
    let creds = DevCredentials::load_or_create(&args.data_dir)?;
    let data_dir = std::path::absolute(&args.data_dir).unwrap_or_else(|_| args.data_dir.clone());

    // Children log JSON into a pipe unless a person is watching this terminal.
    let log_format = match args.log.log_format {
        telemetry::LogFormat::Json => "json",
        telemetry::LogFormat::Pretty => "pretty",
        telemetry::LogFormat::Auto if std::io::stdout().is_terminal() => "pretty",
        telemetry::LogFormat::Auto => "json",
    };
    let ready_timeout = Duration::from_secs(args.ready_timeout_secs);
    let spec = |name: &'static str, addr: SocketAddr, args: Vec<OsString>| ChildSpec {
        name,
        args,
        health_url: format!("http://{addr}/health")
            .parse()
            .expect("a valid URL"),
        ready_timeout,
        env: Vec::new(),
    };
    let service = |name: &str| -> Vec<OsString> {
        [
            "service",
            "--exit-with-parent",
            name,
            "--log-format",
            log_format,
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    };
    let bank_url = format!("http://{bank}");
    let api_url = format!("http://{api}");

    let mut bank_args = service("mock-bank");
    bank_args.extend(os(["--listen", &bank.to_string()]));
    bank_args.extend([
        "--admin-token-file".into(),
        creds.bank_token_file.clone().into_os_string(),
    ]);
    let mut api_args = service("payment-api");
    api_args.extend(os(["--listen", &api.to_string(), "--bank-url", &bank_url]));
    api_args.extend([
        "--api-keys-file".into(),
        creds.api_keys_file.clone().into_os_string(),
        "--data-dir".into(),
        data_dir.clone().into_os_string(),
    ]);
    let mut dashboard_args = service("dashboard");
    dashboard_args.extend(os([
        "--listen",
        &dashboard.to_string(),
        "--api-url",
        &api_url,
        "--bank-url",
        &bank_url,
    ]));
    dashboard_args.extend([
        "--api-key-file".into(),
        creds.api_key_file.clone().into_os_string(),
        "--bank-admin-token-file".into(),
        creds.bank_token_file.clone().into_os_string(),
    ]);

    let mut supervisor = Supervisor::new(RestartPolicy::default());
    let started = async {
        supervisor.start(spec("mock bank", bank, bank_args)).await?;
        let mut api_spec = spec("payment API", api, api_args);
        // By environment, not argument: a URL may hold a password, and arguments show in `ps`.
        if let Some(url) = &args.database_url {
            api_spec.env.push(("DATABASE_URL".to_owned(), url.clone()));
        }
        supervisor.start(api_spec).await?;
        supervisor
            .start(spec("dashboard", dashboard, dashboard_args))
            .await?;
        anyhow::Ok(())
    };
    // A signal during start-up still stops whatever already started.
    let outcome = tokio::select! {
        started = started => started.map(|()| true),
        () = service_runtime::shutdown_signal() => Ok(false),
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            supervisor.stop().await;
            return Ok(());
        }
        Err(error) => {
            supervisor.stop().await;
            return Err(error).context("start-up failed; everything that started was stopped");
        }
    }

    print_banner(
        &supervisor,
        &api_url,
        &bank_url,
        &format!("http://{dashboard}"),
        &creds,
        &data_dir,
    );

    let failure = tokio::select! {
        () = service_runtime::shutdown_signal() => None,
        reason = supervisor.fatal() => Some(reason),
    };
    println!("[run] stopping all services");
    supervisor.stop().await;
    println!("[run] all services stopped");
    match failure {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!(reason)),
    }
}

fn os<const N: usize>(args: [&str; N]) -> impl Iterator<Item = OsString> + '_ {
    args.into_iter().map(OsString::from)
}

fn print_banner(
    supervisor: &Supervisor,
    api_url: &str,
    bank_url: &str,
    dashboard_url: &str,
    creds: &DevCredentials,
    data_dir: &std::path::Path,
) {
    let url_of = |name: &str| match name {
        "mock bank" => bank_url,
        "payment API" => api_url,
        _ => dashboard_url,
    };
    println!();
    println!("resilient-payments is ready");
    for child in supervisor.children() {
        println!(
            "  {:<12} {:<28} pid {}",
            child.name,
            url_of(child.name),
            child.pid()
        );
    }
    println!("  {:<12} {}", "data dir", data_dir.display());
    println!(
        "  {:<12} {} (tenant {}, in {})",
        "dev API key",
        creds.api_key,
        crate::credentials::DEV_TENANT,
        creds.api_key_file.display()
    );
    println!();
    println!("Send a payment (send it again with the same Idempotency-Key to see a replay):");
    println!(
        "  curl -sS -i -X POST {api_url}/v1/payments -H 'Authorization: Bearer {}' -H 'Idempotency-Key: demo-order-1' -H 'Content-Type: application/json' -d '{{\"amount\": 1999, \"currency\": \"TRY\", \"source\": \"tok_visa\"}}'",
        creds.api_key
    );
    println!();
    println!("Open the dashboard at {dashboard_url}. Press Ctrl-C to stop everything.");
    println!();
}
