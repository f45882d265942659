//! The webhooks part of the chaos audit (issue 20, item 6): pure functions over what the chaos
//! receiver recorded ([`Delivery`]) and the payments the API lists, checked after healing:
//!
//! - **W1**: every payment that reached a final state (succeeded, declined, failed) has its final
//!   event (`payment.succeeded`, `payment.declined`, `payment.failed`) answered 2xx at least
//!   once by the endpoint, with `data.payment` naming the payment's id and final status.
//! - **W2**: every delivery's `webhook-signature` verifies with the endpoint's secret, the refused
//!   and hung ones included, judged at the moment it arrived.
//! - **W3**: no event id (`webhook-id`) arrives with two different payloads.
//!
//! Plus the counts of the report: events, deliveries, redeliveries and duplicates, refused and
//! hung answers, and the longest delay from an event's creation to its first 2xx.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use webhooks::Secret;

/// How the receiver answered one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Answer {
    /// 200: delivered.
    Accepted,
    /// 500 (the failing part of the receiver's schedule).
    Refused,
    /// Held longer than the API's attempt timeout, then answered 503 (to nobody by then).
    Hung,
}

impl Answer {
    pub(crate) fn status(self) -> u16 {
        match self {
            Answer::Accepted => 200,
            Answer::Refused => 500,
            Answer::Hung => 503,
        }
    }
}

/// One request the receiver got, as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (absent if the request had none).
    pub(crate) id: Option<String>,
    pub(crate) timestamp: Option<String>,
    pub(crate) signature: Option<String>,
    /// The exact body bytes.
    pub(crate) body: Vec<u8>,
    /// When the request reached the receiver (before any hold).
    pub(crate) arrived: SystemTime,
    pub(crate) answer: Answer,
}

/// A payment in a final state, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinalPayment {
    pub(crate) id: String,
    /// `succeeded`, `declined` or `failed`.
    pub(crate) status: String,
}

/// The verdict on one webhook rule: an [`crate::audit::Check`] numbered 1–3, shown as W1–W3.
pub(crate) type WebhookCheck = crate::audit::Check;

/// The webhooks audit: W1–W3 and the run's delivery figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookAudit {
    pub(crate) checks: Vec<WebhookCheck>,
    /// Distinct event ids that arrived.
    pub(crate) events: usize,
    /// Distinct event ids answered 2xx at least once.
    pub(crate) events_delivered: usize,
    /// Requests that arrived, and how they were answered.
    pub(crate) deliveries: usize,
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    pub(crate) hung: usize,
    /// Arrivals of an event id already seen (retries after a refusal or a hang, redeliveries).
    pub(crate) redeliveries: usize,
    /// 2xx answers to an event id already answered 2xx (at least once, not exactly once).
    pub(crate) duplicates: usize,
    /// Event ids refused or hung at least once and answered 2xx later.
    pub(crate) recovered: usize,
    /// The longest time from an event's `timestamp` to its first 2xx, and that event's id.
    pub(crate) max_delay: Option<(Duration, String)>,
    /// The signature check's tolerance around each arrival, in seconds.
    pub(crate) tolerance_secs: i64,
}

impl WebhookAudit {
    pub(crate) fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations).sum()
    }
}

/// Unix seconds of `t` (0 before the epoch).
fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The event's creation time (`timestamp`, RFC 3339) as a `SystemTime`.
fn event_time(body: &Value) -> Option<SystemTime> {
    let text = body.get("timestamp")?.as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let millis = u64::try_from(at.timestamp_millis()).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

/// Audits `deliveries` (everything the endpoint received, in arrival order) against `payments`
/// (every payment of the tenant in a final state) with the endpoint's `secret`; a signature is
/// judged at its delivery's arrival, within `tolerance_secs` either way.
pub(crate) fn audit(
    deliveries: &[Delivery],
    payments: &[FinalPayment],
    secret: &Secret,
    tolerance_secs: i64,
) -> WebhookAudit {
    let mut w1 = WebhookCheck::new(
        1,
        "every final payment's final event was delivered (2xx) with its id and status",
    );
    let mut w2 = WebhookCheck::new(
        2,
        "every delivery's signature verifies with the endpoint's secret",
    );
    let mut w3 = WebhookCheck::new(3, "no event id arrives with two different payloads");

    // W2, and the figures, over every arrival.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut accepted_ids: HashSet<&str> = HashSet::new();
    let mut troubled: HashSet<&str> = HashSet::new();
    let mut recovered: HashSet<&str> = HashSet::new();
    let mut bodies: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    let (mut accepted, mut refused, mut hung, mut redeliveries, mut duplicates) = (0, 0, 0, 0, 0);
    let mut max_delay: Option<(Duration, String)> = None;
    // (payment id, event type) → the `data.payment.status` of each event delivered for it.
    let mut delivered: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        match d.answer {
            Answer::Accepted => accepted += 1,
            Answer::Refused => refused += 1,
            Answer::Hung => hung += 1,
        }
        let (Some(id), Some(timestamp), Some(signature)) = (&d.id, &d.timestamp, &d.signature)
        else {
            w2.violation(|| {
                format!(
                    "delivery {} (answered {}) lacks a webhook-id, webhook-timestamp or webhook-signature header",
                    i + 1,
                    d.answer.status()
                )
            });
            continue;
        };
        let id = id.as_str();
        if let Err(error) = webhooks::verify(
            &[secret],
            id,
            timestamp,
            signature,
            &d.body,
            unix_secs(d.arrived),
            tolerance_secs,
        ) {
            w2.violation(|| {
                format!(
                    "event {id}, delivery {} (answered {}): {error}",
                    i + 1,
                    d.answer.status()
                )
            });
        }
        if !seen.insert(id) {
            redeliveries += 1;
        }
        let same = bodies.entry(id).or_default();
        if !same.contains(&d.body.as_slice()) {
            same.push(&d.body);
        }
        if d.answer != Answer::Accepted {
            troubled.insert(id);
            continue;
        }
        if !accepted_ids.insert(id) {
            duplicates += 1;
            continue;
        }
        if troubled.contains(id) {
            recovered.insert(id);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&d.body) else {
            continue;
        };
        if let Some(created) = event_time(&body) {
            let delay = d.arrived.duration_since(created).unwrap_or_default();
            let longer = match &max_delay {
                Some((longest, _)) => delay > *longest,
                None => true,
            };
            if longer {
                max_delay = Some((delay, id.to_owned()));
            }
        }
        let payment = &body["data"]["payment"];
        if let (Some(kind), Some(payment_id), Some(status)) = (
            body["type"].as_str(),
            payment["id"].as_str(),
            payment["status"].as_str(),
        ) {
            delivered
                .entry((payment_id.to_owned(), kind.to_owned()))
                .or_default()
                .push(status.to_owned());
        }
    }
    w2.checked = format!(
        "{} deliveries ({refused} refused, {hung} hung), {tolerance_secs} s tolerance around each arrival",
        deliveries.len()
    );

    // W3: one payload per event id.
    for (id, payloads) in &bodies {
        if payloads.len() > 1 {
            w3.violation(|| {
                let shown: Vec<String> = payloads
                    .iter()
                    .take(2)
                    .map(|b| String::from_utf8_lossy(b).chars().take(160).collect())
                    .collect();
                format!(
                    "event {id} arrived with {} different payloads: {}",
                    payloads.len(),
                    shown.join(" | ")
                )
            });
        }
    }
    w3.checked = format!("{} event ids", bodies.len());

    // W1: each final payment's final event, delivered, naming the payment and its status.
    let mut final_count = 0;
    for payment in payments {
        final_count += 1;
        let kind = format!("payment.{}", payment.status);
        match delivered.get(&(payment.id.clone(), kind.clone())) {
            None => w1.violation(|| {
                let tried = deliveries
                    .iter()
                    .filter(|d| {
                        serde_json::from_slice::<Value>(&d.body).is_ok_and(|b| {
                            b["type"].as_str() == Some(&kind)
                                && b["data"]["payment"]["id"].as_str() == Some(&payment.id)
                        })
                    })
                    .count();
                format!(
                    "payment {} ended {} but no {kind} event for it was answered 2xx ({tried} arrivals refused or hung)",
                    payment.id, payment.status
                )
            }),
            Some(statuses) if !statuses.contains(&payment.status) => {
                w1.violation(|| {
                    format!(
                        "payment {} ended {} but its delivered {kind} event says status {}",
                        payment.id, payment.status, statuses[0]
                    )
                });
            }
            Some(_) => {}
        }
    }
    w1.checked = format!(
        "{final_count} payments in a final state against {} events delivered",
        accepted_ids.len()
    );

    WebhookAudit {
        checks: vec![w1, w2, w3],
        events: seen.len(),
        events_delivered: accepted_ids.len(),
        deliveries: deliveries.len(),
        accepted,
        refused,
        hung,
        redeliveries,
        duplicates,
        recovered: recovered.len(),
        max_delay,
        tolerance_secs,
    }
}

impl fmt::Display for WebhookAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "webhooks: {} events ({} delivered), {} deliveries (answered 200 {}, refused 500 {}, hung {}), {} redeliveries of an event id, {} duplicates (2xx again), {} events refused or hung then delivered, max delivery delay {}",
            self.events,
            self.events_delivered,
            self.deliveries,
            self.accepted,
            self.refused,
            self.hung,
            self.redeliveries,
            self.duplicates,
            self.recovered,
            match &self.max_delay {
                Some((delay, id)) => format!("{:.1} s ({id})", delay.as_secs_f64()),
                None => "none".to_owned(),
            }
        )?;
        for check in &self.checks {
            let verdict = if check.violations == 0 {
                "ok  "
            } else {
                "FAIL"
            };
            writeln!(f, "  [{verdict}] W{}: {}", check.number, check.title)?;
            writeln!(
                f,
                "         checked {}; violations: {}",
                check.checked, check.violations
            )?;
            for example in &check.examples {
                writeln!(f, "         - {example}")?;
            }
        }
        write!(f, "webhooks result: {} violations", self.violations())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: i64 = 10;

    fn secret() -> Secret {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn body(event: &str, kind: &str, payment: &str, status: &str) -> Vec<u8> {
        serde_json::json!({
            "id": event,
            "type": kind,
            "timestamp": chrono::DateTime::<chrono::Utc>::from(at(0)).to_rfc3339(),
            "data": {"payment": {"id": payment, "status": status, "amount": 1000}},
        })
        .to_string()
        .into_bytes()
    }

    /// A delivery signed with `secret` at `secs`, arriving then.
    fn signed(event: &str, body: Vec<u8>, secs: u64, answer: Answer) -> Delivery {
        let ts = unix_secs(at(secs));
        Delivery {
            id: Some(event.to_owned()),
            timestamp: Some(ts.to_string()),
            signature: Some(webhooks::sign(&secret(), event, ts, &body)),
            body,
            arrived: at(secs),
            answer,
        }
    }

    fn done(id: &str, status: &str) -> FinalPayment {
        FinalPayment {
            id: id.to_owned(),
            status: status.to_owned(),
        }
    }

    fn failing(report: &WebhookAudit) -> Vec<String> {
        report
            .checks
            .iter()
            .filter(|c| c.violations > 0)
            .map(|c| format!("W{}", c.number))
            .collect()
    }

    #[test]
    fn a_clean_run_with_retries_and_a_duplicate_passes_and_counts_them() {
        let ok = body("evt_1", "payment.succeeded", "p1", "succeeded");
        let pending = body("evt_2", "payment.pending", "p2", "pending");
        let declined = body("evt_3", "payment.declined", "p2", "declined");
        let deliveries = vec![
            signed("evt_1", ok.clone(), 1, Answer::Refused),
            signed("evt_2", pending, 1, Answer::Accepted),
            signed("evt_1", ok.clone(), 2, Answer::Hung),
            signed("evt_1", ok.clone(), 4, Answer::Accepted),
            signed("evt_1", ok, 40, Answer::Accepted),
            signed("evt_3", declined, 3, Answer::Accepted),
        ];
        let report = audit(
            &deliveries,
            &[done("p1", "succeeded"), done("p2", "declined")],
            &secret(),
            TOLERANCE,
        );
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(
            (
                report.events,
                report.events_delivered,
                report.deliveries,
                report.accepted,
                report.refused,
                report.hung
            ),
            (3, 3, 6, 4, 1, 1)
        );
        assert_eq!(
            (report.redeliveries, report.duplicates, report.recovered),
            (3, 1, 1)
        );
        assert_eq!(
            report.max_delay,
            Some((Duration::from_secs(4), "evt_1".to_owned()))
        );
        let text = report.to_string();
        assert!(text.contains("[ok  ] W1: "), "{text}");
        assert!(text.contains("[ok  ] W2: "), "{text}");
        assert!(text.contains("[ok  ] W3: "), "{text}");
        assert!(text.ends_with("webhooks result: 0 violations"), "{text}");
    }

    #[test]
    fn w1_a_final_payment_whose_event_was_only_refused_or_never_sent() {
        let deliveries = vec![
            signed(
                "evt_1",
                body("evt_1", "payment.succeeded", "p1", "succeeded"),
                1,
                Answer::Refused,
            ),
            signed(
                "evt_1",
                body("evt_1", "payment.succeeded", "p1", "succeeded"),
                2,
                Answer::Hung,
            ),
            // The pending event of p2 is no final event.
            signed(
                "evt_2",
                body("evt_2", "payment.pending", "p2", "pending"),
                1,
                Answer::Accepted,
            ),
        ];
        let report = audit(
            &deliveries,
            &[done("p1", "succeeded"), done("p2", "failed")],
            &secret(),
            TOLERANCE,
        );
        assert_eq!(failing(&report), ["W1"]);
        assert_eq!(report.checks[0].violations, 2);
        let text = report.to_string();
        assert!(text.contains("[FAIL] W1: "), "{text}");
        assert!(
            text.contains("payment p1 ended succeeded but no payment.succeeded event for it was answered 2xx (2 arrivals refused or hung)"),
            "{text}"
        );
        assert!(text.contains("payment p2 ended failed but no payment.failed"));
        assert!(text.ends_with("webhooks result: 2 violations"));
    }

    #[test]
    fn w1_a_delivered_final_event_with_the_wrong_status() {
        let deliveries = vec![signed(
            "evt_1",
            body("evt_1", "payment.succeeded", "p1", "pending"),
            1,
            Answer::Accepted,
        )];
        let report = audit(
            &deliveries,
            &[done("p1", "succeeded")],
            &secret(),
            TOLERANCE,
        );
        assert_eq!(failing(&report), ["W1"]);
        assert!(report.checks[0].examples[0].contains("says status pending"));
    }

    #[test]
    fn w2_a_bad_signature_a_stale_one_and_missing_headers_even_on_refused_deliveries() {
        let b = body("evt_1", "payment.succeeded", "p1", "succeeded");
        let mut forged = signed("evt_1", b.clone(), 1, Answer::Refused);
        let other = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let ts = unix_secs(at(1));
        forged.signature = Some(webhooks::sign(&other, "evt_1", ts, &b));
        // Signed at 1 s, arriving 60 s later: outside the tolerance.
        let mut stale = signed("evt_1", b.clone(), 1, Answer::Hung);
        stale.arrived = at(61);
        let mut bare = signed("evt_1", b.clone(), 2, Answer::Refused);
        bare.signature = None;
        let good = signed("evt_1", b, 3, Answer::Accepted);
        let report = audit(
            &[forged, stale, bare, good],
            &[done("p1", "succeeded")],
            &secret(),
            TOLERANCE,
        );
        assert_eq!(failing(&report), ["W2"]);
        assert_eq!(report.checks[1].violations, 3);
        let text = report.to_string();
        assert!(text.contains("[FAIL] W2: "), "{text}");
        assert!(text.contains("(answered 500): no webhook-signature matches"));
        assert!(text.contains("(answered 503): webhook-timestamp is 60 s old"));
        assert!(text.contains("lacks a webhook-id, webhook-timestamp or webhook-signature"));
    }

    #[test]
    fn w3_one_event_id_with_two_payloads() {
        let deliveries = vec![
            signed(
                "evt_1",
                body("evt_1", "payment.succeeded", "p1", "succeeded"),
                1,
                Answer::Accepted,
            ),
            signed(
                "evt_1",
                body("evt_1", "payment.succeeded", "p2", "succeeded"),
                2,
                Answer::Refused,
            ),
            signed(
                "evt_2",
                body("evt_2", "payment.succeeded", "p2", "succeeded"),
                2,
                Answer::Accepted,
            ),
        ];
        let report = audit(
            &deliveries,
            &[done("p1", "succeeded"), done("p2", "succeeded")],
            &secret(),
            TOLERANCE,
        );
        assert_eq!(failing(&report), ["W3"]);
        assert!(report.checks[2].examples[0]
            .starts_with("event evt_1 arrived with 2 different payloads"));
    }

    #[test]
    fn no_deliveries_and_no_final_payments_is_clean_with_no_delay() {
        let report = audit(&[], &[], &secret(), TOLERANCE);
        assert_eq!(report.violations(), 0);
        assert_eq!(report.max_delay, None);
        assert!(report.to_string().contains("max delivery delay none"));
    }
}
