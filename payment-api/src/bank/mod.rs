//! Talking to the bank: the HTTP client, what each attempt's answer means, and the gateway that
//! runs every charge through the resilience pipeline.

mod client;
mod gateway;

use std::sync::Arc;

use payment_types::bank::ChargeRequest;

pub(crate) use client::{AttemptOutcome, BankClient, Lookup};
pub(crate) use gateway::{BankGateway, BankRun, CascadeReason, ChargeOutcome, Refusal};

/// What the gateway needs from a bank: one classified charge attempt, and a lookup by
/// reference. [`BankClient`] is the real one (HTTP); the flow's tests script one, so every
/// pipeline outcome can be produced on demand.
#[async_trait::async_trait]
pub(crate) trait BankApi: Send + Sync + std::fmt::Debug + 'static {
    /// Makes one charge attempt carrying `request.reference` as the idempotency key.
    async fn charge(&self, request: &ChargeRequest, request_id: &str) -> AttemptOutcome;
    /// Asks what became of the charge with `reference`.
    async fn lookup(&self, reference: &str, request_id: &str) -> Lookup;
}

#[async_trait::async_trait]
impl BankApi for BankClient {
    async fn charge(&self, request: &ChargeRequest, request_id: &str) -> AttemptOutcome {
        BankClient::charge(self, request, request_id).await
    }

    async fn lookup(&self, reference: &str, request_id: &str) -> Lookup {
        BankClient::lookup(self, reference, request_id).await
    }
}

/// One gateway per configured bank, in priority order, each with its own breaker, retry budget
/// and bulkhead built from that bank's settings (the shared flags with its `--bank-setting`
/// overrides), and its own HTTP client.
pub(crate) fn gateways(
    banks: &[crate::config::BankConfig],
    counters: &Arc<crate::stats::Counters>,
) -> anyhow::Result<Vec<Arc<BankGateway>>> {
    banks
        .iter()
        .map(|bank| {
            let pipeline = resilience::pipeline::Pipeline::new(bank.pipeline())
                .map_err(|e| anyhow::anyhow!("bank {:?}: {e}", bank.name))?;
            Ok(Arc::new(
                BankGateway::new(
                    BankClient::new(&bank.resilience, &bank.url)?,
                    pipeline,
                    counters.clone(),
                )
                .named(&bank.name, bank.url.as_str()),
            ))
        })
        .collect()
}
