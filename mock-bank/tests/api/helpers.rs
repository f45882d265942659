//! `spawn_bank()`: a bank on 127.0.0.1:0 in this process, plus typed request helpers.

use std::{future::Future, net::SocketAddr, time::Duration};

use mock_bank::{Application, Config};
use payment_types::bank::{BankStatus, ChaosState, Charge, LedgerPage};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// A running bank; stopped when dropped.
pub(crate) struct TestBank {
    pub(crate) addr: SocketAddr,
    pub(crate) instance_id: String,
    pub(crate) client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

pub(crate) async fn spawn_bank() -> TestBank {
    spawn_with(Config::for_tests()).await
}

pub(crate) async fn spawn_with(config: Config) -> TestBank {
    let app = Application::build(config).await.expect("bank builds");
    let addr = app.local_addr();
    let instance_id = app.instance_id().to_owned();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // A safety net only: no test should get near it.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    TestBank {
        addr,
        instance_id,
        client,
        _stop: stop,
    }
}

pub(crate) fn charge_body(reference: &str, source: &str, amount: i64) -> Value {
    json!({"amount": amount, "currency": "TRY", "source": source, "reference": reference})
}

impl TestBank {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A charge request with the reference as its Idempotency-Key, not yet sent.
    pub(crate) fn charge_request(
        &self,
        client: &reqwest::Client,
        reference: &str,
        source: &str,
    ) -> reqwest::RequestBuilder {
        client
            .post(self.url("/v1/charges"))
            .header("idempotency-key", reference)
            .json(&charge_body(reference, source, 1999))
    }

    pub(crate) async fn charge(&self, reference: &str, source: &str) -> reqwest::Response {
        self.charge_request(&self.client, reference, source)
            .send()
            .await
            .expect("charge sent")
    }

    pub(crate) async fn put_chaos(&self, body: Value) -> ChaosState {
        let response = self
            .client
            .put(self.url("/v1/chaos"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "PUT /v1/chaos {body}");
        response.json().await.unwrap()
    }

    pub(crate) async fn chaos(&self) -> ChaosState {
        self.client
            .get(self.url("/v1/chaos"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) async fn status(&self) -> BankStatus {
        self.client
            .get(self.url("/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The whole ledger, read page by page.
    pub(crate) async fn ledger(&self) -> Vec<Charge> {
        let mut charges = Vec::new();
        let mut after = String::new();
        loop {
            let page: LedgerPage = self
                .client
                .get(self.url(&format!("/v1/ledger?after={after}&limit=50")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            charges.extend(page.charges);
            match page.next_cursor {
                Some(next) => after = next,
                None => return charges,
            }
        }
    }

    pub(crate) async fn get_charge(&self, reference: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/charges/{reference}")))
            .send()
            .await
            .unwrap()
    }
}

/// Polls `check` every 10 ms until it returns true; panics after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
