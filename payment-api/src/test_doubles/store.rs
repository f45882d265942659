//! [`FaultyStore`]: a real store behind a switchboard of injected faults.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payment_store::{
    ClaimOutcome, DeliveryNext, DeliveryRecord, EndpointRecord, EventQuery, EventRecord, KeyRecord,
    LeasedDelivery, NewAttempt, NewEndpoint, NewPayment, PaymentQuery, PaymentRecord, PaymentRoute,
    Settlement, Store, StoreError, StoreKind, StoredResponse,
};
use uuid::Uuid;

/// A store operation a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Claim,
    FindKey,
    AcquireLease,
    Settle,
    MarkPending,
    Release,
    SwitchBank,
    GetPayment,
    DueForReconcile,
    Reschedule,
    ReapKeys,
    Ping,
    /// The webhook endpoints' writes and reads (create, list, get, delete, rotate).
    Endpoints,
    /// Event reads (list, get, deliveries) and redelivery.
    Events,
    LeaseDeliveries,
    RecordDelivery,
}

/// How an operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Fails without touching the store (unreachable, disk full before the write, lock timeout).
    Fail,
    /// Applies the operation, then fails as if its answer was lost (a commit whose
    /// acknowledgement never arrived).
    FailAfterApplying,
    /// Never answers (a lock held forever, a server that stopped mid-query).
    Hang,
    /// `release` finds no row it may delete (the lease was lost): answers `Ok(false)` without
    /// touching the store. Only meaningful for [`Op::Release`].
    NoRow,
}

#[derive(Debug, Default)]
struct Switchboard {
    /// Fault and how many more calls it hits (`None`: every call until healed).
    faults: HashMap<Op, (Fault, Option<u32>)>,
    calls: HashMap<Op, u32>,
}

/// A real store whose operations fail on demand; counts every call.
#[derive(Debug)]
pub(crate) struct FaultyStore {
    inner: Arc<dyn Store>,
    board: Mutex<Switchboard>,
}

impl FaultyStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            board: Mutex::default(),
        }
    }

    /// The next `times` calls of `op` fail with `fault`.
    pub(crate) fn fail_next(&self, op: Op, fault: Fault, times: u32) {
        self.board().faults.insert(op, (fault, Some(times)));
    }

    /// Every call of `op` fails with `fault` until [`FaultyStore::heal`].
    pub(crate) fn fail_always(&self, op: Op, fault: Fault) {
        self.board().faults.insert(op, (fault, None));
    }

    pub(crate) fn heal(&self) {
        self.board().faults.clear();
    }

    /// How many times `op` was called (faulted calls included).
    pub(crate) fn calls(&self, op: Op) -> u32 {
        self.board().calls.get(&op).copied().unwrap_or(0)
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Switchboard> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the call and takes the fault that hits it, if any.
    fn enter(&self, op: Op) -> Option<Fault> {
        let mut board = self.board();
        *board.calls.entry(op).or_default() += 1;
        let (fault, left) = board.faults.get_mut(&op)?;
        let fault = *fault;
        match left {
            Some(0) => {
                board.faults.remove(&op);
                None
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    board.faults.remove(&op);
                }
                Some(fault)
            }
            None => Some(fault),
        }
    }

    /// Runs `apply` through the fault (if any) on `op`.
    async fn run<T>(
        &self,
        op: Op,
        apply: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.enter(op) {
            None => apply.await,
            Some(Fault::Fail) | Some(Fault::NoRow) => Err(injected(op)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::FailAfterApplying) => {
                let _ = apply.await;
                Err(injected(op))
            }
        }
    }
}

fn injected(op: Op) -> StoreError {
    StoreError::Config(format!("injected fault in {op:?}"))
}

#[async_trait]
impl Store for FaultyStore {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }

    fn writer_stats(&self) -> Option<payment_store::WriterStats> {
        self.inner.writer_stats()
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(Op::Ping, self.inner.ping()).await
    }

    async fn claim(&self, new: &NewPayment) -> Result<ClaimOutcome, StoreError> {
        self.run(Op::Claim, self.inner.claim(new)).await
    }

    async fn find_key(&self, tenant: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.run(Op::FindKey, self.inner.find_key(tenant, key))
            .await
    }

    async fn acquire_lease(
        &self,
        payment_id: Uuid,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run(
            Op::AcquireLease,
            self.inner.acquire_lease(payment_id, owner, until, now),
        )
        .await
    }

    async fn settle(
        &self,
        payment_id: Uuid,
        settlement: &Settlement,
        attempts: u32,
        response: &StoredResponse,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run(
            Op::Settle,
            self.inner
                .settle(payment_id, settlement, attempts, response, now),
        )
        .await
    }

    async fn mark_pending(
        &self,
        payment_id: Uuid,
        owner: &str,
        attempts: u32,
        last_attempt_at: Option<DateTime<Utc>>,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run(
            Op::MarkPending,
            self.inner.mark_pending(
                payment_id,
                owner,
                attempts,
                last_attempt_at,
                next_reconcile_at,
                now,
            ),
        )
        .await
    }

    async fn release(
        &self,
        payment_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if self.board().faults.get(&Op::Release).map(|f| f.0) == Some(Fault::NoRow) {
            self.enter(Op::Release);
            return Ok(false);
        }
        self.run(Op::Release, self.inner.release(payment_id, owner, now))
            .await
    }

    async fn switch_bank(
        &self,
        payment_id: Uuid,
        owner: &str,
        bank: &str,
        reference: &str,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if self.board().faults.get(&Op::SwitchBank).map(|f| f.0) == Some(Fault::NoRow) {
            self.enter(Op::SwitchBank);
            return Ok(false);
        }
        self.run(
            Op::SwitchBank,
            self.inner
                .switch_bank(payment_id, owner, bank, reference, attempts, now),
        )
        .await
    }

    async fn routes(&self, payment_id: Uuid) -> Result<Vec<PaymentRoute>, StoreError> {
        self.inner.routes(payment_id).await
    }

    async fn get_payment(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.run(Op::GetPayment, self.inner.get_payment(tenant, id))
            .await
    }

    async fn list_payments(&self, query: &PaymentQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        self.inner.list_payments(query).await
    }

    async fn due_for_reconcile(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        self.run(
            Op::DueForReconcile,
            self.inner.due_for_reconcile(now, limit),
        )
        .await
    }

    async fn reschedule(
        &self,
        payment_id: Uuid,
        owner: &str,
        last_attempt_at: Option<DateTime<Utc>>,
        attempts: u32,
        next_reconcile_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run(
            Op::Reschedule,
            self.inner.reschedule(
                payment_id,
                owner,
                last_attempt_at,
                attempts,
                next_reconcile_at,
                now,
            ),
        )
        .await
    }

    async fn reap_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.run(Op::ReapKeys, self.inner.reap_keys(before)).await
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        self.inner.pending_count().await
    }
    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<(), StoreError> {
        self.run(Op::Endpoints, self.inner.create_endpoint(endpoint))
            .await
    }

    async fn list_endpoints(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.run(Op::Endpoints, self.inner.list_endpoints(tenant))
            .await
    }

    async fn get_endpoint(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.run(Op::Endpoints, self.inner.get_endpoint(tenant, id))
            .await
    }

    async fn delete_endpoint(&self, tenant: Option<&str>, id: &str) -> Result<bool, StoreError> {
        self.run(Op::Endpoints, self.inner.delete_endpoint(tenant, id))
            .await
    }

    async fn rotate_endpoint_secret(
        &self,
        tenant: Option<&str>,
        id: &str,
        secret: &str,
        previous_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.run(
            Op::Endpoints,
            self.inner
                .rotate_endpoint_secret(tenant, id, secret, previous_until, now),
        )
        .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.run(Op::Events, self.inner.list_events(query)).await
    }

    async fn get_event(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.run(Op::Events, self.inner.get_event(tenant, id)).await
    }

    async fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.run(Op::Events, self.inner.deliveries(event_id)).await
    }

    async fn reap_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.run(Op::Events, self.inner.reap_events(before)).await
    }

    async fn redeliver(
        &self,
        tenant: Option<&str>,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        self.run(Op::Events, self.inner.redeliver(tenant, event_id, now))
            .await
    }

    async fn lease_deliveries(
        &self,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        self.run(
            Op::LeaseDeliveries,
            self.inner.lease_deliveries(owner, until, now, limit),
        )
        .await
    }

    async fn record_delivery(
        &self,
        event_id: &str,
        endpoint_id: &str,
        owner: &str,
        attempt: Option<&NewAttempt>,
        next: DeliveryNext,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.run(
            Op::RecordDelivery,
            self.inner
                .record_delivery(event_id, endpoint_id, owner, attempt, next, now),
        )
        .await
    }

    async fn delivery_backlog(&self) -> Result<u64, StoreError> {
        self.inner.delivery_backlog().await
    }
}
