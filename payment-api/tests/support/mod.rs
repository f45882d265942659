//! The system the in-process integration tests run against: a real mock bank and a real payment
//! API, each on a free loopback port in this process, stopped when the [`System`] is dropped
//! (and the API's data directory removed).

use std::time::Duration;

/// A running bank and API, and a client for them.
pub(crate) struct System {
    pub(crate) api: String,
    #[allow(dead_code)] // not every test binary talks to the bank directly
    pub(crate) bank: String,
    pub(crate) client: reqwest::Client,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The API's data directory, removed when the system is dropped (after the servers are
    /// told to stop: fields drop in order).
    _dir: tempfile::TempDir,
}

/// Starts a bank and an API whose keys are `api_keys` (as `--api-keys` takes them), with `tune`
/// applied to the API's configuration first; its data lives in a fresh `<prefix>-…` temp dir,
/// removed with the [`System`].
pub(crate) async fn start(
    prefix: &str,
    api_keys: &str,
    tune: impl FnOnce(&mut payment_api::Config),
) -> System {
    let mut stops = Vec::new();
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let bank_url = format!("http://{}", bank.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(bank.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .unwrap();
    let mut config =
        payment_api::Config::for_tests(bank_url.parse().unwrap(), api_keys, dir.path().to_owned());
    tune(&mut config);
    let api = payment_api::Application::build(config).await.unwrap();
    let api_url = format!("http://{}", api.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(api.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    System {
        api: api_url,
        bank: bank_url,
        client,
        _stop: stops,
        _dir: dir,
    }
}
