//! The bank's ledger: one charge per reference, decided by the first request that names it, and
//! the list of charges in commit order that `GET /v1/ledger` pages through.
//!
//! A reference moves `absent → in progress → committed`. The first request claims it (an entry
//! in a sharded map, so claiming is atomic); later requests with the same reference and body
//! either replay the committed charge or wait for the claim to commit. A different body under a
//! known reference is refused, never charged.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use chrono::Utc;
use dashmap::{mapref::entry::Entry, DashMap};
use payment_types::bank::{Charge, ChargeRequest, LedgerTotals};
use tokio::sync::watch;

use crate::tokens;

/// Charges by reference plus the commit-ordered book.
#[derive(Debug)]
pub(crate) struct Ledger {
    slots: DashMap<String, Slot>,
    book: RwLock<Book>,
    /// Claims not yet committed. Bounded by `max_in_flight` so a flood of slow charges cannot
    /// grow the in-progress state without limit.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// The in-memory ledger's cap (`--max-charges`).
    max_charges: usize,
}

#[derive(Debug, Default)]
struct Book {
    charges: Vec<Arc<Charge>>,
    totals: LedgerTotals,
}

/// What identifies "the same charge" beyond its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    amount: i64,
    currency: String,
    source: String,
}

impl From<&ChargeRequest> for Fingerprint {
    fn from(r: &ChargeRequest) -> Self {
        Self {
            amount: r.amount,
            currency: r.currency.clone(),
            source: r.source.clone(),
        }
    }
}

type Done = watch::Receiver<Option<Arc<Charge>>>;

#[derive(Debug)]
enum Slot {
    InProgress {
        fingerprint: Fingerprint,
        done: Done,
    },
    Committed {
        fingerprint: Fingerprint,
        charge: Arc<Charge>,
    },
}

/// The answer to submitting a charge request.
#[derive(Debug)]
pub(crate) enum Submission {
    /// Already committed: replay it.
    Replay(Arc<Charge>),
    /// The first request is still processing: wait for it with [`wait`].
    Wait(Done),
    /// This request is the first: process it, then [`Claim::commit`].
    Claimed(Claim),
}

/// What `GET /v1/charges/{reference}` finds.
#[derive(Debug)]
pub(crate) enum Lookup {
    Found(Arc<Charge>),
    InProgress(Done),
    Missing,
}

/// Why a charge request cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LedgerError {
    #[error("reference reused with a different charge")]
    ReferenceReused,
    #[error("too many charges in flight")]
    Busy,
    #[error("ledger full")]
    Full,
}

/// One page of the book.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) charges: Vec<Charge>,
    pub(crate) next_cursor: Option<u64>,
    pub(crate) last_cursor: u64,
    pub(crate) totals: LedgerTotals,
}

impl Ledger {
    pub(crate) fn new(max_in_flight: usize, max_charges: usize) -> Self {
        Self {
            slots: DashMap::new(),
            book: RwLock::new(Book::default()),
            in_flight: AtomicUsize::new(0),
            max_in_flight,
            max_charges,
        }
    }

    /// Claims `request.reference`, or says how the reference is already taken.
    pub(crate) fn submit(
        self: &Arc<Self>,
        request: &ChargeRequest,
    ) -> Result<Submission, LedgerError> {
        let fingerprint = Fingerprint::from(request);
        match self.slots.entry(request.reference.clone()) {
            Entry::Occupied(slot) => match slot.get() {
                Slot::Committed {
                    fingerprint: known,
                    charge,
                } => {
                    if *known == fingerprint {
                        Ok(Submission::Replay(charge.clone()))
                    } else {
                        Err(LedgerError::ReferenceReused)
                    }
                }
                Slot::InProgress {
                    fingerprint: known,
                    done,
                } => {
                    if *known == fingerprint {
                        Ok(Submission::Wait(done.clone()))
                    } else {
                        Err(LedgerError::ReferenceReused)
                    }
                }
            },
            Entry::Vacant(slot) => {
                if self.len() >= self.max_charges {
                    return Err(LedgerError::Full);
                }
                if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(LedgerError::Busy);
                }
                let (sender, done) = watch::channel(None);
                slot.insert(Slot::InProgress {
                    fingerprint: fingerprint.clone(),
                    done,
                });
                Ok(Submission::Claimed(Claim {
                    ledger: Arc::clone(self),
                    request: request.clone(),
                    fingerprint,
                    sender,
                    committed: false,
                }))
            }
        }
    }

    pub(crate) fn lookup(&self, reference: &str) -> Lookup {
        match self.slots.get(reference).as_deref() {
            Some(Slot::Committed { charge, .. }) => Lookup::Found(charge.clone()),
            Some(Slot::InProgress { done, .. }) => Lookup::InProgress(done.clone()),
            None => Lookup::Missing,
        }
    }

    /// Charges committed so far.
    pub(crate) fn len(&self) -> usize {
        self.read().charges.len()
    }

    /// Claims not yet committed.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Up to `limit` charges after position `after` (the cursor counts charges), with totals.
    pub(crate) fn page(&self, after: u64, limit: usize) -> Page {
        let book = self.read();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(book.charges.len());
        let end = start.saturating_add(limit).min(book.charges.len());
        let charges: Vec<Charge> = book.charges[start..end]
            .iter()
            .map(|c| (**c).clone())
            .collect();
        let last_cursor = if charges.is_empty() {
            after
        } else {
            end as u64
        };
        Page {
            charges,
            next_cursor: (end < book.charges.len()).then_some(end as u64),
            last_cursor,
            totals: book.totals.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The right (and duty) to commit one reference. Dropping it uncommitted frees the reference.
#[derive(Debug)]
pub(crate) struct Claim {
    ledger: Arc<Ledger>,
    request: ChargeRequest,
    fingerprint: Fingerprint,
    sender: watch::Sender<Option<Arc<Charge>>>,
    committed: bool,
}

impl Claim {
    /// Records the charge (its outcome decided by the source token) and wakes every waiter.
    pub(crate) fn commit(mut self) -> Arc<Charge> {
        let (status, decline_code) = tokens::outcome_for(&self.request.source);
        let charge = Arc::new(Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            reference: self.request.reference.clone(),
            amount: self.request.amount,
            currency: self.request.currency.clone(),
            status,
            decline_code: decline_code.map(str::to_owned),
            created_at: Utc::now(),
        });
        {
            let mut book = self
                .ledger
                .book
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            book.totals.add(&charge);
            book.charges.push(charge.clone());
        }
        self.ledger.slots.insert(
            self.request.reference.clone(),
            Slot::Committed {
                fingerprint: self.fingerprint.clone(),
                charge: charge.clone(),
            },
        );
        self.sender.send_replace(Some(charge.clone()));
        self.committed = true;
        charge
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.committed {
            self.ledger
                .slots
                .remove_if(&self.request.reference, |_, slot| {
                    matches!(slot, Slot::InProgress { .. })
                });
        }
        self.ledger.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits up to `bound` for an in-progress charge to commit. `None` when it did not commit in
/// time, or when its claim was abandoned (the caller may then submit again).
pub(crate) async fn wait(mut done: Done, bound: Duration) -> Option<Arc<Charge>> {
    let waited = tokio::time::timeout(bound, done.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(charge)) => charge.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use payment_types::bank::ChargeStatus;

    use super::*;

    fn request(reference: &str, amount: i64, source: &str) -> ChargeRequest {
        ChargeRequest {
            amount,
            currency: "TRY".into(),
            source: source.into(),
            reference: reference.into(),
        }
    }

    fn ledger() -> Arc<Ledger> {
        Arc::new(Ledger::new(10, 100))
    }

    fn commit(ledger: &Arc<Ledger>, r: &ChargeRequest) -> Arc<Charge> {
        match ledger.submit(r).unwrap() {
            Submission::Claimed(claim) => claim.commit(),
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn the_first_request_decides_and_repeats_replay_it() {
        let ledger = ledger();
        let first = commit(&ledger, &request("r1", 100, "tok_visa"));
        match ledger.submit(&request("r1", 100, "tok_visa")).unwrap() {
            Submission::Replay(charge) => assert_eq!(charge, first),
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.len(), 1);
    }

    #[test]
    fn a_different_body_under_a_known_reference_is_refused() {
        let ledger = ledger();
        let _claim = ledger.submit(&request("r1", 100, "tok_visa")).unwrap();
        assert_eq!(
            ledger.submit(&request("r1", 200, "tok_visa")).unwrap_err(),
            LedgerError::ReferenceReused
        );
        drop(_claim);
        commit(&ledger, &request("r2", 100, "tok_visa"));
        assert_eq!(
            ledger
                .submit(&request("r2", 100, "tok_decline"))
                .unwrap_err(),
            LedgerError::ReferenceReused
        );
    }

    #[tokio::test]
    async fn a_waiter_gets_the_charge_its_first_request_commits() {
        let ledger = ledger();
        let Submission::Claimed(claim) = ledger.submit(&request("r1", 1, "tok_visa")).unwrap()
        else {
            panic!()
        };
        let Submission::Wait(done) = ledger.submit(&request("r1", 1, "tok_visa")).unwrap() else {
            panic!()
        };
        let waiter = tokio::spawn(wait(done, Duration::from_secs(5)));
        let charge = claim.commit();
        assert_eq!(waiter.await.unwrap(), Some(charge));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn an_abandoned_claim_frees_the_reference() {
        let ledger = ledger();
        drop(ledger.submit(&request("r1", 1, "tok_visa")).unwrap());
        assert!(matches!(ledger.lookup("r1"), Lookup::Missing));
        assert_eq!(ledger.in_flight(), 0);
        commit(&ledger, &request("r1", 1, "tok_visa"));
    }

    #[test]
    fn claims_beyond_the_in_flight_bound_are_refused() {
        let ledger = Arc::new(Ledger::new(1, 100));
        let _held = ledger.submit(&request("a", 1, "tok_visa")).unwrap();
        assert_eq!(
            ledger.submit(&request("b", 1, "tok_visa")).unwrap_err(),
            LedgerError::Busy
        );
    }

    #[test]
    fn pages_follow_commit_order_and_totals_cover_everything() {
        let ledger = ledger();
        for i in 0..5 {
            commit(&ledger, &request(&format!("r{i}"), 100, "tok_visa"));
        }
        commit(&ledger, &request("d", 7, "tok_decline"));
        let first = ledger.page(0, 4);
        let refs: Vec<_> = first.charges.iter().map(|c| c.reference.as_str()).collect();
        assert_eq!(refs, ["r0", "r1", "r2", "r3"]);
        assert_eq!(first.next_cursor, Some(4));
        let second = ledger.page(4, 4);
        assert_eq!(second.charges.len(), 2);
        assert_eq!(second.next_cursor, None);
        assert_eq!(second.last_cursor, 6);
        assert_eq!(second.totals.count, 6);
        let try_totals = &second.totals.by_currency["TRY"];
        assert_eq!(try_totals[&ChargeStatus::Succeeded].amount, 500);
        assert_eq!(try_totals[&ChargeStatus::Declined].count, 1);
        assert_eq!(ledger.page(6, 4).last_cursor, 6);
    }
}
