//! The webhook cases of the store suite (run against both backends like every case): the
//! outbox written with each state change, endpoints, leased deliveries and their attempts.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use payment_store::webhooks::EVENT_TYPES;
use payment_store::{
    DeliveryNext, DeliveryState, EventQuery, EventRecord, NewAttempt, NewEndpoint, Settlement,
    Store, StoredResponse,
};
use serde_json::Value;
use uuid::Uuid;

use super::{at, new_payment};

fn endpoint(tenant: &str, types: &[&str], secs: i64) -> NewEndpoint {
    NewEndpoint {
        id: format!("we_{}", Uuid::new_v4().simple()),
        tenant: tenant.to_owned(),
        url: "https://example.com/hooks".to_owned(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        secret: "whsec_c2VjcmV0".to_owned(),
        now: at(secs),
    }
}

async fn registered(store: &Arc<dyn Store>, tenant: &str, types: &[&str], secs: i64) -> String {
    let new = endpoint(tenant, types, secs);
    store.create_endpoint(&new).await.unwrap();
    new.id
}

async fn claimed(store: &Arc<dyn Store>, tenant: &str, key: &str) -> Uuid {
    let new = new_payment(tenant, key, "h", at(0), at(30));
    store.claim(&new).await.unwrap();
    new.id
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![],
        body: b"{}".to_vec(),
    }
}

fn succeeded() -> Settlement {
    Settlement::Succeeded {
        charge_id: "ch_1".to_owned(),
    }
}

async fn events(store: &Arc<dyn Store>, tenant: &str) -> Vec<EventRecord> {
    store
        .list_events(&EventQuery {
            tenant: Some(tenant.to_owned()),
            ..EventQuery::default()
        })
        .await
        .unwrap()
}

fn attempt(secs: i64, status: Option<u16>) -> NewAttempt {
    NewAttempt {
        at: at(secs),
        status,
        latency_ms: 12,
        error: status.filter(|s| *s >= 300).map(|s| format!("status {s}")),
    }
}

/// A 202 announces `payment.pending` and the settlement its final state, each written with the
/// state change; the payload carries the payment exactly as read back; only matching endpoints
/// of the payment's tenant get a delivery.
pub(crate) async fn each_state_change_writes_its_event_and_fans_out_to_matching_endpoints(
    store: Arc<dyn Store>,
) {
    let all = registered(&store, "acme", &EVENT_TYPES, 0).await;
    let declines_only = registered(&store, "acme", &["payment.declined"], 0).await;
    let _other_tenant = registered(&store, "globex", &EVENT_TYPES, 0).await;

    let id = claimed(&store, "acme", "k1").await;
    assert!(
        events(&store, "acme").await.is_empty(),
        "a claim announces nothing"
    );
    store
        .mark_pending(id, "h", 1, Some(at(1)), at(10), at(2))
        .await
        .unwrap();
    // A second mark pending of the same payment (its key is pending already) is no new state.
    assert!(store.acquire_lease(id, "h", at(40), at(3)).await.unwrap());
    store
        .mark_pending(id, "h", 2, None, at(10), at(3))
        .await
        .unwrap();
    let pending = events(&store, "acme").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_type, "payment.pending");

    assert!(store
        .settle(id, &succeeded(), 2, &response(), at(5))
        .await
        .unwrap());
    // Settling twice writes nothing, so no second event.
    assert!(!store
        .settle(id, &succeeded(), 2, &response(), at(6))
        .await
        .unwrap());
    let all_events = events(&store, "acme").await;
    assert_eq!(
        all_events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["payment.succeeded", "payment.pending"],
        "newest first"
    );
    let event = &all_events[0];
    assert_eq!(event.payment_id, id);
    assert_eq!(event.created_at, at(5));
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    let payment = store.get_payment(None, id).await.unwrap().unwrap();
    assert_eq!(payload["id"], event.id.as_str());
    assert_eq!(payload["type"], "payment.succeeded");
    assert_eq!(payload["timestamp"], "2023-11-14T22:13:25.000Z");
    assert_eq!(
        payload["data"]["payment"],
        serde_json::to_value(payment.to_api()).unwrap()
    );
    let pending_payload: Value = serde_json::from_str(&all_events[1].payload).unwrap();
    assert_eq!(pending_payload["data"]["payment"]["status"], "pending");

    for event in &all_events {
        let deliveries = store.deliveries(&event.id).await.unwrap();
        assert_eq!(
            deliveries
                .iter()
                .map(|d| (d.endpoint_id.as_str(), d.state))
                .collect::<Vec<_>>(),
            [(all.as_str(), DeliveryState::Pending)],
            "not {declines_only} (other types) nor globex's endpoint"
        );
    }
    assert_eq!(store.delivery_backlog().await.unwrap(), 2);
    assert!(events(&store, "globex").await.is_empty());
}

/// Without endpoints the event is still written (listed, redeliverable later) and no delivery.
pub(crate) async fn a_payment_without_endpoints_writes_its_event_and_no_delivery(
    store: Arc<dyn Store>,
) {
    let id = claimed(&store, "acme", "k1").await;
    let declined = Settlement::Declined {
        decline_code: "card_declined".to_owned(),
    };
    assert!(store
        .settle(id, &declined, 1, &response(), at(5))
        .await
        .unwrap());
    let listed = events(&store, "acme").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_type, "payment.declined");
    assert!(store.deliveries(&listed[0].id).await.unwrap().is_empty());
    assert_eq!(store.delivery_backlog().await.unwrap(), 0);

    // An endpoint registered later gets it on a redelivery.
    let late = registered(&store, "acme", &["payment.declined"], 6).await;
    assert_eq!(
        store
            .redeliver(Some("acme"), &listed[0].id, at(7))
            .await
            .unwrap(),
        Some(1)
    );
    let deliveries = store.deliveries(&listed[0].id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].endpoint_id, late);
    assert_eq!(deliveries[0].next_attempt_at, Some(at(7)));
    // Another tenant cannot redeliver it, nor does an unknown event exist.
    assert_eq!(
        store
            .redeliver(Some("globex"), &listed[0].id, at(7))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.redeliver(None, "evt_nope", at(7)).await.unwrap(),
        None
    );
}

/// Each event fans out to the endpoints its tenant has when it is written: none before the
/// first is registered, the new one right after, none after it is deleted, and only to types it
/// subscribed to. (SQLite answers the fan-out from the writer's copy of the endpoints, which a
/// tenant's first event fills: a registration or deletion must reach the very next event.)
pub(crate) async fn the_fan_out_follows_endpoints_created_and_deleted_between_payments(
    store: Arc<dyn Store>,
) {
    let mut settled = Vec::new();
    let settle = |key: &'static str, secs: i64| {
        let store = store.clone();
        async move {
            let id = claimed(&store, "acme", key).await;
            assert!(store
                .settle(id, &succeeded(), 1, &response(), at(secs))
                .await
                .unwrap());
            let event = events(&store, "acme")
                .await
                .into_iter()
                .find(|e| e.payment_id == id)
                .expect("the settlement's event");
            store
                .deliveries(&event.id)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.endpoint_id)
                .collect::<Vec<_>>()
        }
    };
    settled.push(settle("before", 1).await);
    let declines = registered(&store, "acme", &["payment.declined"], 2).await;
    settled.push(settle("declines-only", 3).await);
    let succeeded_too = registered(&store, "acme", &["payment.succeeded"], 4).await;
    settled.push(settle("registered", 5).await);
    assert!(store
        .delete_endpoint(Some("acme"), &succeeded_too)
        .await
        .unwrap());
    settled.push(settle("deleted", 6).await);
    // Another tenant's registration changes nothing for acme.
    let _globex = registered(&store, "globex", &EVENT_TYPES, 7).await;
    settled.push(settle("other-tenant", 8).await);
    assert_eq!(
        settled,
        [vec![], vec![], vec![succeeded_too.clone()], vec![], vec![]],
        "{declines} subscribed to declines only"
    );
}

/// A delivery is leased by one worker at a time; each turn records its attempt and moves the
/// delivery along the schedule; only the lease holder records; an expired lease makes it due.
pub(crate) async fn deliveries_are_leased_once_and_every_attempt_is_recorded(
    store: Arc<dyn Store>,
) {
    let endpoint_id = registered(&store, "acme", &EVENT_TYPES, 0).await;
    let id = claimed(&store, "acme", "k1").await;
    assert!(store
        .settle(id, &succeeded(), 1, &response(), at(1))
        .await
        .unwrap());
    let event_id = events(&store, "acme").await[0].id.clone();

    assert!(
        store
            .lease_deliveries("w1", at(60), at(0), 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let leased = store
        .lease_deliveries("w1", at(60), at(1), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let delivery = &leased[0];
    assert_eq!(
        (delivery.event_id.as_str(), delivery.endpoint_id.as_str()),
        (event_id.as_str(), endpoint_id.as_str())
    );
    assert_eq!(delivery.failures, 0);
    assert_eq!(delivery.endpoint.url, "https://example.com/hooks");
    assert_eq!(delivery.endpoint.secret, "whsec_c2VjcmV0");
    assert_eq!(delivery.payload, events(&store, "acme").await[0].payload);
    assert!(
        store
            .lease_deliveries("w2", at(60), at(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not taken"
    );
    // Only the holder records.
    assert!(!store
        .record_delivery(
            &event_id,
            &endpoint_id,
            "w2",
            Some(&attempt(2, Some(500))),
            DeliveryNext::Retry(at(5)),
            at(2)
        )
        .await
        .unwrap());
    assert!(store
        .record_delivery(
            &event_id,
            &endpoint_id,
            "w1",
            Some(&attempt(2, Some(500))),
            DeliveryNext::Retry(at(5)),
            at(2)
        )
        .await
        .unwrap());
    // Postponed without a call (an open breaker): no attempt, no failure counted.
    let leased = store
        .lease_deliveries("w2", at(60), at(5), 10)
        .await
        .unwrap();
    assert_eq!(leased[0].failures, 1);
    assert!(store
        .record_delivery(
            &event_id,
            &endpoint_id,
            "w2",
            None,
            DeliveryNext::Postpone(at(8)),
            at(5)
        )
        .await
        .unwrap());
    // A lease of zero length has run out at once: the delivery is due again (a crashed worker).
    let leased = store
        .lease_deliveries("w3", at(8), at(8), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let leased = store
        .lease_deliveries("w4", at(60), at(8), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1, "an expired lease is taken over");
    assert!(
        !store
            .record_delivery(
                &event_id,
                &endpoint_id,
                "w3",
                Some(&attempt(9, Some(200))),
                DeliveryNext::Delivered,
                at(9)
            )
            .await
            .unwrap(),
        "the expired holder records nothing once another holds it"
    );
    assert!(store
        .record_delivery(
            &event_id,
            &endpoint_id,
            "w4",
            Some(&attempt(9, Some(204))),
            DeliveryNext::Delivered,
            at(9)
        )
        .await
        .unwrap());
    assert_eq!(store.delivery_backlog().await.unwrap(), 0);
    assert!(store
        .lease_deliveries("w5", at(90), at(90), 10)
        .await
        .unwrap()
        .is_empty());

    let deliveries = store.deliveries(&event_id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(
        (d.state, d.failures, d.next_attempt_at),
        (DeliveryState::Delivered, 1, None)
    );
    assert_eq!(
        d.attempts
            .iter()
            .map(|a| (a.attempt, a.at, a.status, a.error.clone()))
            .collect::<Vec<_>>(),
        [
            (1, at(2), Some(500), Some("status 500".to_owned())),
            (2, at(9), Some(204), None)
        ]
    );
    for state in [DeliveryState::Delivered, DeliveryState::Pending] {
        let listed = store
            .list_events(&EventQuery {
                delivery_state: Some(state),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), usize::from(state == DeliveryState::Delivered));
    }

    // A redelivery starts the schedule again; the attempts keep counting.
    assert_eq!(
        store.redeliver(None, &event_id, at(100)).await.unwrap(),
        Some(1)
    );
    let leased = store
        .lease_deliveries("w6", at(160), at(100), 10)
        .await
        .unwrap();
    assert_eq!(leased[0].failures, 0);
    assert!(store
        .record_delivery(
            &event_id,
            &endpoint_id,
            "w6",
            Some(&attempt(101, None)),
            DeliveryNext::Failed,
            at(101)
        )
        .await
        .unwrap());
    let d = &store.deliveries(&event_id).await.unwrap()[0];
    assert_eq!(
        (d.state, d.attempts.len(), d.attempts[2].attempt),
        (DeliveryState::Failed, 3, 3)
    );
}

/// Workers racing for the same due deliveries never lease one twice.
pub(crate) async fn workers_racing_for_due_deliveries_never_share_one(store: Arc<dyn Store>) {
    registered(&store, "acme", &EVENT_TYPES, 0).await;
    registered(&store, "acme", &EVENT_TYPES, 0).await;
    for n in 0..20 {
        let id = claimed(&store, "acme", &format!("k{n}")).await;
        assert!(store
            .settle(id, &succeeded(), 1, &response(), at(1))
            .await
            .unwrap());
    }
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let leased = store
                        .lease_deliveries(&format!("w{w}"), at(600), at(2), 3)
                        .await
                        .unwrap();
                    if leased.is_empty() {
                        return mine;
                    }
                    mine.extend(leased.into_iter().map(|d| (d.event_id, d.endpoint_id)));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        for key in task.await.unwrap() {
            assert!(seen.insert(key.clone()), "{key:?} leased twice");
        }
    }
    assert_eq!(seen.len(), 40);
}

/// Endpoints are a tenant's own; a rotation keeps the previous secret for its overlap; a
/// deletion drops the endpoint's pending deliveries.
pub(crate) async fn endpoints_are_scoped_rotated_and_deleted(store: Arc<dyn Store>) {
    let first = registered(&store, "acme", &EVENT_TYPES, 0).await;
    let second = registered(&store, "acme", &["payment.failed"], 1).await;
    let theirs = registered(&store, "globex", &EVENT_TYPES, 2).await;

    let mine = store.list_endpoints(Some("acme")).await.unwrap();
    assert_eq!(
        mine.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [first.as_str(), second.as_str()]
    );
    assert_eq!(mine[1].event_types, ["payment.failed"]);
    assert_eq!(store.list_endpoints(None).await.unwrap().len(), 3);
    assert!(store
        .get_endpoint(Some("acme"), &theirs)
        .await
        .unwrap()
        .is_none());
    assert!(store.get_endpoint(None, &theirs).await.unwrap().is_some());

    assert!(
        store
            .rotate_endpoint_secret(Some("globex"), &first, "whsec_bmV3", at(100), at(10))
            .await
            .unwrap()
            .is_none(),
        "not another tenant's"
    );
    let rotated = store
        .rotate_endpoint_secret(Some("acme"), &first, "whsec_bmV3", at(100), at(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret, "whsec_bmV3");
    assert_eq!(rotated.previous_secret.as_deref(), Some("whsec_c2VjcmV0"));
    assert_eq!(rotated.previous_secret_expires_at, Some(at(100)));
    assert_eq!(
        rotated.signing_secrets(at(99)),
        ["whsec_bmV3", "whsec_c2VjcmV0"]
    );
    assert_eq!(rotated.updated_at, at(10));

    let id = claimed(&store, "acme", "k1").await;
    assert!(store
        .settle(id, &succeeded(), 1, &response(), at(11))
        .await
        .unwrap());
    assert_eq!(store.delivery_backlog().await.unwrap(), 1);
    assert!(!store.delete_endpoint(Some("globex"), &first).await.unwrap());
    assert!(store.delete_endpoint(Some("acme"), &first).await.unwrap());
    assert!(!store.delete_endpoint(Some("acme"), &first).await.unwrap());
    assert_eq!(
        store.delivery_backlog().await.unwrap(),
        0,
        "its pending delivery went with it"
    );
    assert!(store.get_endpoint(None, &first).await.unwrap().is_none());
}

/// Events list newest first, filtered by type, and page by the id cursor exactly once.
pub(crate) async fn events_list_newest_first_filtered_and_paged(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = claimed(&store, "acme", &format!("k{n}")).await;
        let settlement = if n % 2 == 0 {
            succeeded()
        } else {
            Settlement::Failed { reason: "r".into() }
        };
        assert!(store
            .settle(id, &settlement, 1, &response(), at(n))
            .await
            .unwrap());
        ids.push(events(&store, "acme").await[0].id.clone());
        // Ids are time-ordered at millisecond precision.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    ids.reverse();
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_events(&EventQuery {
                tenant: Some("acme".into()),
                before: before.clone(),
                limit: 2,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id.clone());
        paged.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(paged, ids);
    let failed = store
        .list_events(&EventQuery {
            event_type: Some("payment.failed".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert!(store
        .get_event(Some("globex"), &ids[0])
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .get_event(Some("acme"), &ids[0])
            .await
            .unwrap()
            .unwrap()
            .id,
        ids[0]
    );
    assert_eq!(
        store
            .get_event(None, &ids[0])
            .await
            .unwrap()
            .unwrap()
            .tenant,
        "acme"
    );
    let _: DateTime<Utc> = at(0);
}

/// The event reaper deletes an old event only when nothing waits on it (delivered, or no
/// delivery at all), with its deliveries and attempts; an event with a pending delivery, a
/// newer event and every payment stay.
pub(crate) async fn the_event_reaper_deletes_only_old_events_nothing_waits_on(
    store: Arc<dyn Store>,
) {
    let endpoint_id = registered(&store, "acme", &EVENT_TYPES, 0).await;
    let delivered = claimed(&store, "acme", "k1").await;
    assert!(store
        .settle(delivered, &succeeded(), 1, &response(), at(1))
        .await
        .unwrap());
    let delivered_event = events(&store, "acme").await[0].id.clone();
    let leased = store
        .lease_deliveries("w1", at(60), at(1), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert!(store
        .record_delivery(
            &delivered_event,
            &endpoint_id,
            "w1",
            Some(&attempt(2, Some(200))),
            DeliveryNext::Delivered,
            at(2)
        )
        .await
        .unwrap());
    // A tenant without endpoints: its event has no delivery at all.
    let quiet = claimed(&store, "solo", "k2").await;
    assert!(store
        .settle(quiet, &succeeded(), 1, &response(), at(1))
        .await
        .unwrap());
    // A delivery still pending.
    let waiting = claimed(&store, "acme", "k3").await;
    assert!(store
        .settle(waiting, &succeeded(), 1, &response(), at(1))
        .await
        .unwrap());
    let waiting_event = events(&store, "acme")
        .await
        .into_iter()
        .find(|e| e.id != delivered_event)
        .unwrap()
        .id;

    assert_eq!(
        store
            .reap_events(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0,
        "every event is newer than the cutoff"
    );
    assert_eq!(events(&store, "acme").await.len(), 2);

    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.reap_events(cutoff).await.unwrap(), 2);
    let left: Vec<String> = events(&store, "acme")
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&waiting_event),
        "the pending one stays"
    );
    assert!(events(&store, "solo").await.is_empty());
    assert!(store.deliveries(&delivered_event).await.unwrap().is_empty());
    let pending = store.deliveries(&waiting_event).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, DeliveryState::Pending);
    for (tenant, id) in [("acme", delivered), ("solo", quiet), ("acme", waiting)] {
        assert!(
            store.get_payment(Some(tenant), id).await.unwrap().is_some(),
            "payments are never reaped"
        );
    }
    assert_eq!(store.reap_events(cutoff).await.unwrap(), 0, "idempotent");
}
