//! The bank's ledger: one charge per reference, decided by the first request that names it.

use chrono::Utc;
use dashmap::{mapref::entry::Entry, DashMap};
use payment_types::bank::{Charge, ChargeRequest, ChargeStatus};

/// Charges by reference. The map's entry lock makes "first request decides" atomic.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    charges: DashMap<String, Charge>,
}

impl Ledger {
    /// Records the charge for `request.reference`, or returns the one already recorded.
    /// The boolean is `true` when this call created it.
    pub(crate) fn charge(&self, request: &ChargeRequest) -> (Charge, bool) {
        match self.charges.entry(request.reference.clone()) {
            Entry::Occupied(existing) => (existing.get().clone(), false),
            Entry::Vacant(slot) => {
                let (status, decline_code) = outcome_for(&request.source);
                let charge = Charge {
                    id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
                    reference: request.reference.clone(),
                    amount: request.amount,
                    currency: request.currency.clone(),
                    status,
                    decline_code: decline_code.map(str::to_owned),
                    created_at: Utc::now(),
                };
                slot.insert(charge.clone());
                (charge, true)
            }
        }
    }

    pub(crate) fn get(&self, reference: &str) -> Option<Charge> {
        self.charges.get(reference).map(|c| c.clone())
    }
}

/// Test tokens decide the business outcome, as a card network's test cards do.
fn outcome_for(source: &str) -> (ChargeStatus, Option<&'static str>) {
    match source {
        "tok_decline" => (ChargeStatus::Declined, Some("card_declined")),
        "tok_insufficient_funds" => (ChargeStatus::Declined, Some("insufficient_funds")),
        _ => (ChargeStatus::Succeeded, None),
    }
}
