//! `run` with no subcommand: reserve the ports, create the dev credentials, start the bank, the
//! API and the dashboard in that order, print where they are, and stop them all on a signal.
//!
//! [`start`] is the start-up alone, returning the running [`System`]: the chaos verifier starts
//! its own system with it.

use std::{
    ffi::OsString,
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

use crate::{
    cli::UpArgs,
    credentials::DevCredentials,
    ports,
    supervisor::{ChildSpec, RestartPolicy, Supervisor},
};

/// Names of the children, as the supervisor and the banner know them.
pub(crate) const API: &str = "payment API";
pub(crate) const DASHBOARD: &str = "dashboard";

/// The API flag that lets endpoints on loopback (the dashboard's receiver) be registered.
const PRIVATE_URLS: &str = "--webhook-allow-private-urls";

/// The mock banks' names, in priority order: the API, the dashboard, the supervisor and the
/// banner all call bank *i* by `BANKS[i]`.
pub(crate) const BANKS: [&str; 4] = ["bank-a", "bank-b", "bank-c", "bank-d"];

/// One mock bank of a started system.
#[derive(Debug, Clone)]
pub(crate) struct Bank {
    /// `bank-a`, ...: its name in the API's routing and the supervisor.
    pub(crate) name: &'static str,
    pub(crate) url: String,
    /// Its admin token (chaos controls).
    pub(crate) token_file: PathBuf,
}

/// How [`start`] starts the system, beyond the flags of `run`.
#[derive(Debug, Clone)]
pub(crate) struct StartOptions {
    pub(crate) policy: RestartPolicy,
    /// Start the dashboard too.
    pub(crate) dashboard: bool,
    /// Flags passed to the API before `--api-arg` ones (which override them).
    pub(crate) api_defaults: Vec<(String, String)>,
    /// Extra environment for every child (e.g. `RUST_LOG`).
    pub(crate) child_env: Vec<(String, String)>,
    /// Payment API processes (the chaos verifier's `--api-instances`, on one PostgreSQL
    /// database): the first on `--api-port`, the others on free ports.
    pub(crate) api_instances: usize,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::default(),
            dashboard: true,
            api_defaults: Vec::new(),
            child_env: Vec::new(),
            api_instances: 1,
        }
    }
}

/// A started system: its supervisor and where everything is.
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) supervisor: Supervisor,
    pub(crate) api_url: String,
    /// Every API instance: `(child name, URL)`, the first being [`API`] at `api_url`.
    pub(crate) apis: Vec<(&'static str, String)>,
    /// Every mock bank, in the API's priority order.
    pub(crate) banks: Vec<Bank>,
    pub(crate) dashboard_url: String,
    pub(crate) creds: DevCredentials,
    pub(crate) data_dir: PathBuf,
}

/// Reserves the ports, creates the credentials and starts the children, each ready before the
/// next. `None` when a signal arrived during start-up (whatever started was stopped).
pub(crate) async fn start(args: &UpArgs, options: StartOptions) -> anyhow::Result<Option<System>> {
    // Reserve every port first: a taken port is one clear error before anything starts.
    let mut bank_addrs = Vec::new();
    for i in 0..usize::from(args.banks) {
        let port = match args.bank_port {
            0 => 0,
            first => first.checked_add(i as u16).ok_or_else(|| {
                anyhow::anyhow!("--bank-port {first} + {i} is past the last port")
            })?,
        };
        bank_addrs.push(ports::reserve(port, "mock bank", "--bank-port")?);
    }
    let api = ports::reserve(args.api_port, "payment API", "--api-port")?;
    let dashboard = ports::reserve(args.dashboard_port, "dashboard", "--dashboard-port")?;
    let mut more_apis = Vec::new();
    for i in 2..=options.api_instances {
        let addr = ports::reserve(0, "payment API", "--api-instances")?;
        // A child's name lives as long as the supervisor; a few bytes per instance, once.
        let name: &'static str = Box::leak(format!("{API} {i}").into_boxed_str());
        more_apis.push((name, addr));
    }
    let bank_names = &BANKS[..bank_addrs.len()];
    let creds = DevCredentials::load_or_create(&args.data_dir, bank_names)?;
    let banks: Vec<Bank> = bank_names
        .iter()
        .zip(&bank_addrs)
        .zip(&creds.bank_token_files)
        .map(|((name, addr), (_, token_file))| Bank {
            name,
            url: format!("http://{addr}"),
            token_file: token_file.clone(),
        })
        .collect();
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
        env: options.child_env.clone(),
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
    let api_url = format!("http://{api}");

    let bank_args = |bank: &Bank, listen: SocketAddr| {
        let mut bank_args = service("mock-bank");
        bank_args.extend(os(["--listen", &listen.to_string()]));
        bank_args.extend([
            "--admin-token-file".into(),
            bank.token_file.clone().into_os_string(),
        ]);
        bank_args
    };
    // `--bank NAME=URL` in priority order, for the API and the dashboard alike.
    let bank_flags: Vec<OsString> = banks
        .iter()
        .flat_map(|b| ["--bank".into(), format!("{}={}", b.name, b.url).into()])
        .collect();
    let api_args = |listen: SocketAddr| {
        let mut api_args = service("payment-api");
        api_args.extend(os(["--listen", &listen.to_string()]));
        api_args.extend(bank_flags.iter().cloned());
        api_args.extend([
            "--api-keys-file".into(),
            creds.api_keys_file.clone().into_os_string(),
            "--data-dir".into(),
            data_dir.clone().into_os_string(),
        ]);
        // The dashboard's demo receiver listens on loopback: a local system delivers webhooks
        // to it, which the API refuses by default (SSRF; docs/webhooks.md).
        if !args.api_arg.iter().any(|a| a.starts_with(PRIVATE_URLS)) {
            api_args.push(PRIVATE_URLS.into());
        }
        api_args.extend(api_flags(&options.api_defaults, &args.api_arg));
        api_args
    };
    let mut apis = vec![(API, api_url.clone())];
    apis.extend(more_apis.iter().map(|(n, a)| (*n, format!("http://{a}"))));
    let mut dashboard_args = service("dashboard");
    dashboard_args.extend(os([
        "--listen",
        &dashboard.to_string(),
        "--api-url",
        &api_url,
    ]));
    dashboard_args.extend(bank_flags.iter().cloned());
    dashboard_args.extend([
        "--api-key-file".into(),
        creds.api_key_file.clone().into_os_string(),
        "--operator-key-file".into(),
        creds.operator_key_file.clone().into_os_string(),
        // Registers its demo receiver for the dev tenant, so every event shows on the page.
        "--webhook-register".into(),
    ]);
    for bank in &banks {
        let mut value = OsString::from(format!("{}=", bank.name));
        value.push(bank.token_file.as_os_str());
        dashboard_args.extend(["--bank-admin-token-file".into(), value]);
    }

    let mut supervisor = Supervisor::new(options.policy);
    let started = async {
        for (bank, addr) in banks.iter().zip(&bank_addrs) {
            supervisor
                .start(spec(bank.name, *addr, bank_args(bank, *addr)))
                .await?;
        }
        for (name, addr) in std::iter::once((API, api)).chain(more_apis.iter().copied()) {
            let mut api_spec = spec(name, addr, api_args(addr));
            // By environment, not argument: a URL may hold a password, and arguments show in
            // `ps`.
            if let Some(url) = &args.database_url {
                api_spec.env.push(("DATABASE_URL".to_owned(), url.clone()));
            }
            supervisor.start(api_spec).await?;
        }
        if options.dashboard {
            supervisor
                .start(spec(DASHBOARD, dashboard, dashboard_args))
                .await?;
        }
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
            return Ok(None);
        }
        Err(error) => {
            supervisor.stop().await;
            return Err(error).context("start-up failed; everything that started was stopped");
        }
    }
    Ok(Some(System {
        supervisor,
        api_url,
        apis,
        banks,
        dashboard_url: format!("http://{dashboard}"),
        creds,
        data_dir,
    }))
}

/// `run`: start everything, print the banner, run until a signal or a child gives up.
pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let Some(System {
        mut supervisor,
        api_url,
        apis: _,
        banks,
        dashboard_url,
        creds,
        data_dir,
    }) = start(&args, StartOptions::default()).await?
    else {
        return Ok(());
    };
    print_banner(
        &supervisor,
        &api_url,
        &banks,
        &dashboard_url,
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

/// The API's extra flags: `defaults` (flag, value) pairs unless `overrides` names the same flag
/// (as `--flag value` or `--flag=value`; clap refuses a flag given twice), then `overrides`.
fn api_flags(defaults: &[(String, String)], overrides: &[String]) -> Vec<OsString> {
    let overridden = |flag: &str| {
        overrides
            .iter()
            .any(|o| o == flag || o.starts_with(&format!("{flag}=")))
    };
    defaults
        .iter()
        .filter(|(flag, _)| !overridden(flag))
        .flat_map(|(flag, value)| [flag.clone(), value.clone()])
        .chain(overrides.iter().cloned())
        .map(OsString::from)
        .collect()
}

fn os<const N: usize>(args: [&str; N]) -> impl Iterator<Item = OsString> + '_ {
    args.into_iter().map(OsString::from)
}

fn print_banner(
    supervisor: &Supervisor,
    api_url: &str,
    banks: &[Bank],
    dashboard_url: &str,
    creds: &DevCredentials,
    data_dir: &Path,
) {
    let url_of = |name: &str| match name {
        API => api_url,
        DASHBOARD => dashboard_url,
        bank => banks
            .iter()
            .find(|b| b.name == bank)
            .map_or("", |b| b.url.as_str()),
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
    // The key is shown to a person at a terminal. When the output is captured (a file, a CI
    // log, a journal) it would become a secret at rest, so the banner names the file instead
    // and the curl command reads it from there.
    let terminal = std::io::stdout().is_terminal();
    let shown = |key: &str, file: &Path| {
        let file = file.display().to_string();
        if terminal {
            (key.to_owned(), key.to_owned())
        } else {
            (
                "(not shown: output is not a terminal)".to_owned(),
                format!("'\"$(cat '{file}')\"'"),
            )
        }
    };
    let (shown_key, bearer) = shown(&creds.api_key, &creds.api_key_file);
    let (shown_operator, operator_bearer) = shown(&creds.operator_key, &creds.operator_key_file);
    println!(
        "  {:<12} {} (tenant {}, in {})",
        "dev API key",
        shown_key,
        crate::credentials::DEV_TENANT,
        creds.api_key_file.display()
    );
    println!(
        "  {:<12} {} (operator {}, in {})",
        "operator key",
        shown_operator,
        crate::credentials::DEV_OPERATOR,
        creds.operator_key_file.display()
    );
    println!();
    println!("Send a payment (send it again with the same Idempotency-Key to see a replay):");
    println!(
        "  curl -sS -i -X POST {api_url}/v1/payments -H 'Authorization: Bearer {bearer}' -H 'Idempotency-Key: demo-order-1' -H 'Content-Type: application/json' -d '{{\"amount\": 1999, \"currency\": \"TRY\", \"source\": \"tok_visa\"}}'"
    );
    println!("Read the operator's status (breakers, transitions, counters) with the operator key:");
    println!("  curl -sS {api_url}/v1/status -H 'Authorization: Bearer {operator_bearer}'");
    println!(
        "Webhooks: the dashboard's receiver is registered for tenant {}; every event shows, verified, on its Webhooks card. Read the events:",
        crate::credentials::DEV_TENANT
    );
    println!("  curl -sS {api_url}/v1/events -H 'Authorization: Bearer {bearer}'");
    if let [first, second, ..] = banks {
        let token = first.token_file.display();
        println!(
            "Take {} down (its chaos needs its admin token); new payments then go to {}:",
            first.name, second.name
        );
        println!(
            "  curl -sS -X PUT {}/v1/chaos -H \"Authorization: Bearer $(cat '{token}')\" -H 'Content-Type: application/json' -d '{{\"preset\": \"down\"}}'",
            first.url
        );
    }
    println!();
    println!("Open the dashboard at {dashboard_url}. Press Ctrl-C to stop everything.");
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_arg_overrides_a_default_flag_and_adds_new_ones() {
        let defaults = vec![
            ("--lease-ms".to_owned(), "3000".to_owned()),
            ("--deadline-ms".to_owned(), "2000".to_owned()),
        ];
        let overrides = vec![
            "--deadline-ms=5000".to_owned(),
            "--bulkhead".to_owned(),
            "8".to_owned(),
        ];
        let flags: Vec<String> = api_flags(&defaults, &overrides)
            .into_iter()
            .map(|f| f.into_string().unwrap())
            .collect();
        assert_eq!(
            flags,
            [
                "--lease-ms",
                "3000",
                "--deadline-ms=5000",
                "--bulkhead",
                "8"
            ]
        );
    }
}
