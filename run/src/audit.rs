//! The chaos verifier's audit: pure functions over the API's payments, the bank's ledger and
//! what the clients were told, giving one verdict per DESIGN.md §6 invariant (1–5).
//!
//! The bank's ledger is the ground truth. A payment is tied to its idempotency key by the
//! `metadata.load_key` the load generator puts in every body (the API does not return the key),
//! and to its bank charge by `bank_reference`. Nothing here does I/O, so every kind of violation
//! is unit-tested on hand-made inputs.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
};

use payment_types::{
    bank::{Charge, ChargeStatus},
    payment::{Payment, PaymentStatus},
};
use serde_json::Value;

/// The metadata field that names the idempotency key a payment was created under.
pub const KEY_FIELD: &str = "load_key";

/// How many examples each invariant prints at most.
pub const MAX_EXAMPLES: usize = 5;

/// One HTTP answer a client got for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ClientAnswer {
    /// A settled outcome the API stores under the key and must replay unchanged: 201
    /// succeeded, 402 declined, 502 failed.
    pub fn is_final(&self) -> bool {
        matches!(self.status, 201 | 402 | 502)
    }

    /// An answer about the key itself, as opposed to a transient refusal (409 in flight, 429,
    /// 503) that says nothing about the stored outcome: only these are compared with the first
    /// final answer.
    pub fn is_outcome(&self) -> bool {
        !matches!(self.status, 409 | 429 | 503 | 504)
    }

    /// The payment id in the body (201/202 carry the payment, 402/502 carry it under `payment`).
    pub fn payment_id(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        let payment = body.get("payment").unwrap_or(&body);
        payment.get("id")?.as_str().map(str::to_owned)
    }
}

/// Everything the clients saw for one idempotency key, in the order the answers arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRecord {
    pub key: String,
    pub answers: Vec<ClientAnswer>,
}

/// The verdict on one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub number: u8,
    pub title: &'static str,
    /// What was checked, e.g. "412 keys, 380 charges".
    pub checked: String,
    pub violations: usize,
    /// Up to [`MAX_EXAMPLES`] descriptions of violations.
    pub examples: Vec<String>,
}

impl Check {
    fn new(number: u8, title: &'static str) -> Self {
        Self {
            number,
            title,
            checked: String::new(),
            violations: 0,
            examples: Vec::new(),
        }
    }

    fn violation(&mut self, example: impl FnOnce() -> String) {
        self.violations += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example());
        }
    }
}

/// The audit: one [`Check`] per invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub payments: usize,
    pub charges: usize,
    pub keys: usize,
    pub checks: Vec<Check>,
}

impl Report {
    /// Violations over every invariant.
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations).sum()
    }

    /// The check of invariant `number`.
    pub fn check(&self, number: u8) -> &Check {
        self.checks
            .iter()
            .find(|c| c.number == number)
            .expect("every invariant is checked")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "audit: {} keys sent, {} payments in the API, {} charges in the bank ledger",
            self.keys, self.payments, self.charges
        )?;
        for check in &self.checks {
            let verdict = if check.violations == 0 {
                "ok  "
            } else {
                "FAIL"
            };
            writeln!(
                f,
                "  [{verdict}] invariant {}: {}",
                check.number, check.title
            )?;
            writeln!(
                f,
                "         checked {}; violations: {}",
                check.checked, check.violations
            )?;
            for example in &check.examples {
                writeln!(f, "         - {example}")?;
            }
        }
        write!(f, "audit result: {} violations", self.violations())
    }
}

/// The key a payment was created under (`metadata.load_key`), if any.
fn key_of(payment: &Payment) -> Option<&str> {
    payment.metadata.as_ref()?.get(KEY_FIELD)?.as_str()
}

/// Audits `payments` (every payment of the tenant, after the reconciler finished) against
/// `charges` (the whole bank ledger) and `records` (every answer the clients got, per key).
pub fn audit(payments: &[Payment], charges: &[Charge], records: &[KeyRecord]) -> Report {
    let charges_by_reference: HashMap<&str, Vec<&Charge>> =
        charges.iter().fold(HashMap::new(), |mut map, charge| {
            map.entry(charge.reference.as_str())
                .or_insert_with(Vec::new)
                .push(charge);
            map
        });
    let payments_by_reference: HashMap<&str, Vec<&Payment>> =
        payments.iter().fold(HashMap::new(), |mut map, payment| {
            map.entry(payment.bank_reference.as_str())
                .or_insert_with(Vec::new)
                .push(payment);
            map
        });
    let payments_by_id: HashMap<String, &Payment> =
        payments.iter().map(|p| (p.id.to_string(), p)).collect();

    let checks = vec![
        one_charge_per_key(payments, &charges_by_reference, records),
        every_charge_has_its_payment(charges, &payments_by_reference),
        reported_successes_are_charged(records, &payments_by_id, &charges_by_reference),
        nothing_left_pending(payments),
        replays_match_the_first_answer(records),
    ];
    Report {
        payments: payments.len(),
        charges: charges.len(),
        keys: records.len(),
        checks,
    }
}

/// 1. At most one bank charge per (tenant, key): one payment per key, one charge per reference,
///    and every answer for a key names the same payment.
fn one_charge_per_key(
    payments: &[Payment],
    charges_by_reference: &HashMap<&str, Vec<&Charge>>,
    records: &[KeyRecord],
) -> Check {
    let mut check = Check::new(1, "at most one bank charge per idempotency key");
    let mut payments_by_key: BTreeMap<&str, Vec<&Payment>> = BTreeMap::new();
    for payment in payments {
        if let Some(key) = key_of(payment) {
            payments_by_key.entry(key).or_default().push(payment);
        }
    }
    for (key, found) in &payments_by_key {
        if found.len() > 1 {
            check.violation(|| {
                let ids: Vec<String> = found.iter().map(|p| p.id.to_string()).collect();
                format!(
                    "key {key} made {} payments: {}",
                    found.len(),
                    ids.join(", ")
                )
            });
        }
    }
    let mut references: Vec<(&&str, &Vec<&Charge>)> = charges_by_reference.iter().collect();
    references.sort_by_key(|(reference, _)| **reference);
    for (reference, found) in references {
        if found.len() > 1 {
            check.violation(|| {
                let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
                format!(
                    "reference {reference} was charged {} times: {}",
                    found.len(),
                    ids.join(", ")
                )
            });
        }
    }
    for record in records {
        let ids: HashSet<String> = record
            .answers
            .iter()
            .filter_map(ClientAnswer::payment_id)
            .collect();
        if ids.len() > 1 {
            check.violation(|| {
                let mut ids: Vec<String> = ids.into_iter().collect();
                ids.sort();
                format!(
                    "key {} was answered with {} different payments: {}",
                    record.key,
                    ids.len(),
                    ids.join(", ")
                )
            });
        }
    }
    check.checked = format!(
        "{} keys with payments, {} charged references, {} client keys",
        payments_by_key.len(),
        charges_by_reference.len(),
        records.len()
    );
    check
}

/// 2. Every ledger charge belongs to exactly one payment, and that payment ended in the same
///    outcome (a succeeded charge ↔ a succeeded payment, a decline ↔ a declined payment).
fn every_charge_has_its_payment(
    charges: &[Charge],
    payments_by_reference: &HashMap<&str, Vec<&Payment>>,
) -> Check {
    let mut check = Check::new(
        2,
        "every charge belongs to exactly one payment that ended the same way",
    );
    for charge in charges {
        let found = payments_by_reference
            .get(charge.reference.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let want = match charge.status {
            ChargeStatus::Succeeded => PaymentStatus::Succeeded,
            ChargeStatus::Declined => PaymentStatus::Declined,
        };
        match found {
            [] => check.violation(|| {
                format!(
                    "charge {} (reference {}, {} {}) has no payment",
                    charge.id, charge.reference, charge.amount, charge.currency
                )
            }),
            [payment] if payment.status != want => check.violation(|| {
                format!(
                    "charge {} is {} but payment {} ended {}",
                    charge.id,
                    charge.status.as_str(),
                    payment.id,
                    payment.status.as_str()
                )
            }),
            [payment] if payment.amount != charge.amount || payment.currency != charge.currency => {
                check.violation(|| {
                    format!(
                        "charge {} is {} {} but payment {} is {} {}",
                        charge.id,
                        charge.amount,
                        charge.currency,
                        payment.id,
                        payment.amount,
                        payment.currency
                    )
                })
            }
            [_] => {}
            many => check.violation(|| {
                format!(
                    "charge {} (reference {}) is claimed by {} payments",
                    charge.id,
                    charge.reference,
                    many.len()
                )
            }),
        }
    }
    check.checked = format!("{} charges", charges.len());
    check
}

/// 3. Every payment the API answered 201 for is `succeeded` and has a succeeded charge.
fn reported_successes_are_charged(
    records: &[KeyRecord],
    payments_by_id: &HashMap<String, &Payment>,
    charges_by_reference: &HashMap<&str, Vec<&Charge>>,
) -> Check {
    let mut check = Check::new(3, "every payment reported succeeded (201) is in the ledger");
    let mut reported = 0;
    for record in records {
        let Some(id) = record
            .answers
            .iter()
            .filter(|a| a.status == 201)
            .find_map(ClientAnswer::payment_id)
        else {
            continue;
        };
        reported += 1;
        let Some(payment) = payments_by_id.get(&id) else {
            check.violation(|| {
                format!(
                    "key {}: payment {id} was reported succeeded but the API does not list it",
                    record.key
                )
            });
            continue;
        };
        let charged = charges_by_reference
            .get(payment.bank_reference.as_str())
            .is_some_and(|c| c.iter().any(|c| c.status == ChargeStatus::Succeeded));
        if !charged {
            check.violation(|| {
                format!(
                    "key {}: payment {id} (reference {}) was reported succeeded but the bank has no succeeded charge",
                    record.key, payment.bank_reference
                )
            });
        } else if payment.status != PaymentStatus::Succeeded {
            check.violation(|| {
                format!(
                    "key {}: payment {id} was reported succeeded but is now {}",
                    record.key,
                    payment.status.as_str()
                )
            });
        }
    }
    check.checked = format!("{reported} payments reported succeeded");
    check
}

/// 4. Nothing is pending once the bank has been healthy for the reconciler's window (the caller
///    audits only after that window).
fn nothing_left_pending(payments: &[Payment]) -> Check {
    let mut check = Check::new(4, "no payment left pending after the reconciler's window");
    for payment in payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Pending)
    {
        check.violation(|| {
            format!(
                "payment {} (key {}, reference {}) is still pending after {} attempts",
                payment.id,
                key_of(payment).unwrap_or("?"),
                payment.bank_reference,
                payment.attempts
            )
        });
    }
    check.checked = format!("{} payments", payments.len());
    check
}

/// 5. Every answer after the first final one for a key has the same status and body.
fn replays_match_the_first_answer(records: &[KeyRecord]) -> Check {
    let mut check = Check::new(
        5,
        "replays of a final outcome return the same status and body",
    );
    let mut compared = 0;
    for record in records {
        let mut answers = record.answers.iter();
        let Some(first) = answers.by_ref().find(|a| a.is_final()) else {
            continue;
        };
        for later in answers.filter(|a| a.is_outcome()) {
            compared += 1;
            if !same_answer(first, later) {
                check.violation(|| {
                    format!(
                        "key {}: first final answer {} {}, later {} {}",
                        record.key,
                        first.status,
                        excerpt(&first.body),
                        later.status,
                        excerpt(&later.body)
                    )
                });
            }
        }
    }
    check.checked = format!("{compared} replays of final outcomes");
    check
}

/// Same status and the same body: byte-for-byte, or as the same JSON value.
fn same_answer(a: &ClientAnswer, b: &ClientAnswer) -> bool {
    if a.status != b.status {
        return false;
    }
    if a.body == b.body {
        return true;
    }
    match (
        serde_json::from_slice::<Value>(&a.body),
        serde_json::from_slice::<Value>(&b.body),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn payment(key: &str, status: PaymentStatus) -> Payment {
        let id = Uuid::new_v4();
        Payment {
            id,
            status,
            amount: 1000,
            currency: "TRY".into(),
            source: "tok_visa".into(),
            description: None,
            metadata: Some(
                json!({ KEY_FIELD: key })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            bank_reference: format!("pay_{}", id.simple()),
            bank_charge_id: None,
            decline_code: None,
            attempts: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn charge(payment: &Payment, status: ChargeStatus) -> Charge {
        Charge {
            id: format!("ch_{}", Uuid::new_v4().simple()),
            reference: payment.bank_reference.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            status,
            decline_code: None,
            created_at: Utc::now(),
        }
    }

    fn answer(status: u16, payment: &Payment) -> ClientAnswer {
        let body = match status {
            201 | 202 => serde_json::to_vec(payment).unwrap(),
            _ => serde_json::to_vec(&json!({"status": status, "payment": payment})).unwrap(),
        };
        ClientAnswer { status, body }
    }

    fn record(key: &str, answers: Vec<ClientAnswer>) -> KeyRecord {
        KeyRecord {
            key: key.into(),
            answers,
        }
    }

    /// Three keys: a success replayed once, a decline, and a success whose first answer was a
    /// 409 and then a 202 before it settled.
    fn clean() -> (Vec<Payment>, Vec<Charge>, Vec<KeyRecord>) {
        let a = payment("k1", PaymentStatus::Succeeded);
        let b = payment("k2", PaymentStatus::Declined);
        let mut c_pending = payment("k3", PaymentStatus::Pending);
        let charges = vec![
            charge(&a, ChargeStatus::Succeeded),
            charge(&b, ChargeStatus::Declined),
            charge(&c_pending, ChargeStatus::Succeeded),
        ];
        let records = vec![
            record("k1", vec![answer(201, &a), answer(201, &a)]),
            record(
                "k2",
                vec![answer(402, &b), answer(503, &b), answer(402, &b)],
            ),
            record(
                "k3",
                vec![
                    ClientAnswer {
                        status: 409,
                        body: b"{}".to_vec(),
                    },
                    answer(202, &c_pending),
                ],
            ),
        ];
        c_pending.status = PaymentStatus::Succeeded;
        (vec![a, b, c_pending], charges, records)
    }

    fn failing(report: &Report) -> Vec<u8> {
        report
            .checks
            .iter()
            .filter(|c| c.violations > 0)
            .map(|c| c.number)
            .collect()
    }

    #[test]
    fn a_consistent_history_has_no_violations() {
        let (payments, charges, records) = clean();
        let report = audit(&payments, &charges, &records);
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.checks.len(), 5);
        assert_eq!(report.check(5).checked, "2 replays of final outcomes");
        assert!(report.to_string().ends_with("audit result: 0 violations"));
    }

    #[test]
    fn a_reference_charged_twice_breaks_invariant_1() {
        let (payments, mut charges, records) = clean();
        charges.push(charge(&payments[0], ChargeStatus::Succeeded));
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [1], "{report}");
        assert!(report.check(1).examples[0].contains("charged 2 times"));
    }

    #[test]
    fn two_payments_under_one_key_break_invariant_1() {
        let (mut payments, mut charges, records) = clean();
        let twin = payment("k1", PaymentStatus::Succeeded);
        charges.push(charge(&twin, ChargeStatus::Succeeded));
        payments.push(twin);
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [1], "{report}");
        assert!(report.check(1).examples[0].contains("key k1 made 2 payments"));
    }

    #[test]
    fn a_key_answered_with_two_payments_breaks_invariant_1() {
        let (payments, charges, mut records) = clean();
        let other = payment("k1", PaymentStatus::Succeeded);
        records[0].answers.push(answer(202, &other));
        let report = audit(&payments, &charges, &records);
        assert!(failing(&report).contains(&1), "{report}");
        assert!(report
            .check(1)
            .examples
            .iter()
            .any(|e| e.contains("2 different payments")));
    }

    #[test]
    fn a_charge_without_a_payment_breaks_invariant_2() {
        let (payments, mut charges, records) = clean();
        let ghost = payment("ghost", PaymentStatus::Succeeded);
        charges.push(charge(&ghost, ChargeStatus::Succeeded));
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [2], "{report}");
        assert!(report.check(2).examples[0].contains("has no payment"));
    }

    #[test]
    fn a_charge_whose_payment_failed_breaks_invariant_2() {
        let (mut payments, charges, records) = clean();
        payments[1].status = PaymentStatus::Failed; // the bank declined, the API says failed
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [2], "{report}");
        assert!(report.check(2).examples[0].contains("ended failed"));
    }

    #[test]
    fn a_charge_of_another_amount_breaks_invariant_2() {
        let (payments, mut charges, records) = clean();
        charges[0].amount += 1;
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [2], "{report}");
    }

    #[test]
    fn a_reported_success_missing_from_the_ledger_breaks_invariants_3() {
        let (payments, mut charges, records) = clean();
        charges.remove(0);
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [3], "{report}");
        assert!(report.check(3).examples[0].contains("bank has no succeeded charge"));
    }

    #[test]
    fn a_reported_success_the_api_does_not_list_breaks_invariant_3() {
        let (mut payments, mut charges, records) = clean();
        payments.remove(0);
        charges.remove(0);
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [3], "{report}");
        assert!(report.check(3).examples[0].contains("does not list it"));
    }

    #[test]
    fn a_payment_left_pending_breaks_invariant_4() {
        let (mut payments, mut charges, records) = clean();
        payments[2].status = PaymentStatus::Pending;
        charges.pop(); // its charge never happened either
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [4], "{report}");
        assert!(report.check(4).examples[0].contains("key k3"));
    }

    #[test]
    fn a_replay_with_another_status_or_body_breaks_invariant_5() {
        let (payments, charges, mut records) = clean();
        let mut changed = payments[0].clone();
        changed.attempts += 1;
        records[0].answers.push(answer(201, &changed));
        records[1].answers.push(answer(202, &payments[1]));
        let report = audit(&payments, &charges, &records);
        assert_eq!(failing(&report), [5], "{report}");
        assert_eq!(report.check(5).violations, 2);
    }

    #[test]
    fn transient_refusals_after_a_final_answer_are_not_replays() {
        let (payments, charges, mut records) = clean();
        records[0].answers.push(ClientAnswer {
            status: 503,
            body: b"{\"code\":\"circuit_open\"}".to_vec(),
        });
        let report = audit(&payments, &charges, &records);
        assert_eq!(report.violations(), 0, "{report}");
    }

    #[test]
    fn examples_are_capped() {
        let (payments, mut charges, records) = clean();
        for _ in 0..(MAX_EXAMPLES + 3) {
            charges.push(charge(
                &payment("ghost", PaymentStatus::Succeeded),
                ChargeStatus::Succeeded,
            ));
        }
        let report = audit(&payments, &charges, &records);
        assert_eq!(report.check(2).violations, MAX_EXAMPLES + 3);
        assert_eq!(report.check(2).examples.len(), MAX_EXAMPLES);
    }
}
