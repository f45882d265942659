//! The chaos verifier's audit: pure functions over the API's payments, the bank's ledger and
//! what the clients were told, giving one verdict per docs/contract.md §6 invariant (1–5 and 7).
//!
//! The bank's ledger is the ground truth. A payment is tied to its idempotency key by the
//! `metadata.load_key` the load generator puts in every body (the API does not return the key),
//! and to its bank charge by `bank_reference`. For invariant 7 (truthful answers) a charge is
//! also tied to its key **without trusting the API**: in chaos runs every key is sent with an
//! amount no other key uses, so a ledger charge's amount names its key whatever the API stored
//! (see [`audit_with_amounts`]). Nothing here does I/O, so every kind of violation is
//! unit-tested on hand-made inputs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    time::{SystemTime, UNIX_EPOCH},
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

/// One HTTP request a client sent for a key, and the answer it got: `status` 0 when it got
/// none (a timeout or a transport error, named in `body`): such a request may still be
/// processed by the API after the client stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    /// When the request was sent (wall clock, to compare with the ledger's times).
    pub sent_at: SystemTime,
    /// When the client had the whole answer, or gave up waiting for one.
    pub received_at: SystemTime,
}

/// What a `429`/`5xx` answer lets the client conclude about a charge (docs/contract.md §2, `charged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChargedClaim {
    /// `"charged": "no"`, or a `429`/`5xx` without a `charged` member (the API before the
    /// member existed said "nothing was processed" on these): the client may pay again.
    No,
    /// `"charged": "unknown"`: no claim; the client must retry with the same key.
    Unknown,
}

impl ClientAnswer {
    /// An answer received now, to a request sent now (hand-made inputs).
    pub fn new(status: u16, body: Vec<u8>) -> Self {
        let now = SystemTime::now();
        Self {
            status,
            body,
            sent_at: now,
            received_at: now,
        }
    }

    /// A request sent at `sent_at` that got no answer (`kind`: `timeout`, `transport_error`).
    pub fn none(kind: &str, sent_at: SystemTime) -> Self {
        Self {
            status: 0,
            body: kind.as_bytes().to_vec(),
            sent_at,
            received_at: SystemTime::now(),
        }
    }

    /// The problem body's `code`, if any.
    pub fn code(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        body.get("code")?.as_str().map(str::to_owned)
    }

    /// The body's `charged` member, verbatim, if any.
    pub fn charged_member(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        body.get("charged")?.as_str().map(str::to_owned)
    }

    /// What this answer claims about a charge: `None` for answers outside `429`/`5xx` (they
    /// are outcomes, audited by invariants 1–5), else [`ChargedClaim::Unknown`] only for an
    /// explicit `"charged": "unknown"`; anything else (`"no"`, no member, a body that is not
    /// JSON) counts as [`ChargedClaim::No`].
    pub fn charged_claim(&self) -> Option<ChargedClaim> {
        if self.status != 429 && self.status < 500 {
            return None;
        }
        match self.charged_member().as_deref() {
            Some("unknown") => Some(ChargedClaim::Unknown),
            _ => Some(ChargedClaim::No),
        }
    }

    /// `"503 store_unavailable charged=unknown"`: how answers are tallied in the report.
    pub fn tally_label(&self) -> String {
        if self.status == 0 {
            return format!("no answer ({})", String::from_utf8_lossy(&self.body));
        }
        let code = self.code().unwrap_or_else(|| "-".to_owned());
        match (self.charged_claim(), self.charged_member()) {
            (None, _) => format!("{} {code}", self.status),
            (Some(_), Some(member)) => format!("{} {code} charged={member}", self.status),
            (Some(_), None) => format!("{} {code} charged=(none)", self.status),
        }
    }

    /// A settled outcome the API stores under the key and must replay unchanged: 201
    /// succeeded, 402 declined, 502 failed.
    pub fn is_final(&self) -> bool {
        matches!(self.status, 201 | 402 | 502)
    }

    /// An answer about the key itself, as opposed to a transient refusal (409 in flight, 429,
    /// 503) that says nothing about the stored outcome: only these are compared with the first
    /// final answer.
    pub fn is_outcome(&self) -> bool {
        !matches!(self.status, 0 | 409 | 429 | 503 | 504)
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
    /// Every entry in the ledger (succeeded and declined).
    pub charges: usize,
    /// Succeeded entries in the ledger.
    pub succeeded_charges: usize,
    pub keys: usize,
    /// Keys at least one client was answered `201` for.
    pub keys_answered_201: usize,
    /// Payments still `pending` when audited.
    pub pending: usize,
    /// Every answer the clients got, by status, code and `charged` (see
    /// [`ClientAnswer::tally_label`]).
    pub answers: BTreeMap<String, u64>,
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
            "audit: {} keys sent, {} payments in the API, {} charges in the bank ledger ({} succeeded)",
            self.keys, self.payments, self.charges, self.succeeded_charges
        )?;
        let tally: Vec<String> = self
            .answers
            .iter()
            .map(|(label, n)| format!("{label}: {n}"))
            .collect();
        writeln!(f, "  answers by code and charged: {}", tally.join(", "))?;
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
/// Charges are tied to keys through the API's payments only; see [`audit_with_amounts`].
pub fn audit(payments: &[Payment], charges: &[Charge], records: &[KeyRecord]) -> Report {
    audit_with_amounts(payments, charges, records, &HashMap::new())
}

/// [`audit`], where `key_by_amount` also ties each ledger charge to the key that was sent with
/// its amount (every key of a chaos run has an amount of its own), without trusting anything
/// the API stored. Used by invariants 1 (two charges whose amounts name the same key) and 7.
pub fn audit_with_amounts(
    payments: &[Payment],
    charges: &[Charge],
    records: &[KeyRecord],
    key_by_amount: &HashMap<i64, String>,
) -> Report {
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

    let mut checks = vec![
        one_charge_per_key(payments, &charges_by_reference, records),
        every_charge_has_its_payment(charges, &payments_by_reference),
        reported_successes_are_charged(records, &payments_by_id, &charges_by_reference),
        nothing_left_pending(payments, records, &payments_by_id),
        replays_match_the_first_answer(records),
        truthful_answers(records, charges, &payments_by_reference, key_by_amount),
    ];
    if !key_by_amount.is_empty() {
        one_charge_per_key_by_amount(&mut checks[0], charges, key_by_amount);
    }
    let mut answers = BTreeMap::new();
    for answer in records.iter().flat_map(|r| &r.answers) {
        *answers.entry(answer.tally_label()).or_default() += 1;
    }
    Report {
        payments: payments.len(),
        charges: charges.len(),
        succeeded_charges: charges
            .iter()
            .filter(|c| c.status == ChargeStatus::Succeeded)
            .count(),
        keys: records.len(),
        keys_answered_201: records
            .iter()
            .filter(|r| r.answers.iter().any(|a| a.status == 201))
            .count(),
        pending: payments
            .iter()
            .filter(|p| p.status == PaymentStatus::Pending)
            .count(),
        answers,
        checks,
    }
}

/// 1, independently of the API: two ledger entries under different references whose amounts
/// name the same key are two charges for one key.
fn one_charge_per_key_by_amount(
    check: &mut Check,
    charges: &[Charge],
    key_by_amount: &HashMap<i64, String>,
) {
    let mut references_by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for charge in charges {
        if let Some(key) = key_by_amount.get(&charge.amount) {
            references_by_key
                .entry(key.as_str())
                .or_default()
                .insert(charge.reference.as_str());
        }
    }
    for (key, references) in &references_by_key {
        if references.len() > 1 {
            check.violation(|| {
                let list: Vec<&str> = references.iter().copied().collect();
                format!(
                    "key {key} (by its unique amount) has ledger entries under {} references: {}",
                    references.len(),
                    list.join(", ")
                )
            });
        }
    }
    check.checked.push_str(&format!(
        ", {} keys tied to ledger entries by amount",
        references_by_key.len()
    ));
}

/// Whether the "no" answer `record.answers[i]` is untruthful given the key's succeeded
/// `charges`; if so, the violation's description.
///
/// - A charge made before the answer was received: the key was charged when the client was
///   told it was not.
/// - A charge made after: a lie unless another request for the key, sent before the charge and
///   not itself answered "no", was still in flight when this one was sent or came later (a
///   retry, a double click, a request the client stopped waiting for, which the API may still
///   process). A request answered before this one was sent (say `202 pending` or `"unknown"`)
///   does not excuse it: the key already held that payment when the client was told "no".
fn untruthful(record: &KeyRecord, i: usize, charges: &[&Charge]) -> Option<String> {
    let answer = &record.answers[i];
    let told = micros(answer.received_at);
    let sent = micros(answer.sent_at);
    let describe = |charge: &Charge, when: String| {
        format!(
            "key {}: told {} {} ({}) {when} the bank charged it ({} {}, reference {})",
            record.key,
            answer.status,
            answer.code().unwrap_or_else(|| "-".to_owned()),
            answer
                .charged_member()
                .map_or("no charged member".to_owned(), |m| format!("charged: {m}")),
            charge.id,
            charge.amount,
            charge.reference
        )
    };
    for charge in charges {
        let at = charge.created_at.timestamp_micros();
        if at < sent {
            // Charged before the question was even asked: the key held a charge all along.
            return Some(describe(
                charge,
                format!("{:.1} s after", (told - at) as f64 / 1e6),
            ));
        }
        // Charged while this request was in progress, or after it: the API's "no" was true
        // when it read the key (nothing charged, the key free) only if another request of the
        // key, racing this one, made the charge. A charge no other request can have made is
        // this answer's lie.
        let explained = record.answers.iter().enumerate().any(|(j, other)| {
            j != i
                && other.charged_claim() != Some(ChargedClaim::No)
                && micros(other.sent_at) < at
                && (other.status == 0 || micros(other.received_at) > sent)
        });
        if !explained {
            let when = if at <= told {
                format!(
                    "{:.1} s after (while it was in progress, and no other request for the key can have made that charge)",
                    (told - at) as f64 / 1e6
                )
            } else {
                format!(
                    "{:.1} s before (and no other request for the key can have made that charge)",
                    (at - told) as f64 / 1e6
                )
            };
            return Some(describe(charge, when));
        }
    }
    None
}

/// Microseconds since the epoch.
fn micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// 7. No client was told "no charge" (`"charged": "no"`, or a `429`/`5xx` without `charged`)
///    for a key the bank had charged at that moment or charged later. A key is charged when a
///    succeeded ledger entry's amount names it (`key_by_amount`, independent of the API) or its
///    reference belongs to a payment made under the key. A charge made after the "no" is the
///    answer's fault unless another request for the key can have made it (see
///    [`untruthful`]): "no" speaks for its own request, and a careful client retries with the
///    same key, which may then be charged.
fn truthful_answers(
    records: &[KeyRecord],
    charges: &[Charge],
    payments_by_reference: &HashMap<&str, Vec<&Payment>>,
    key_by_amount: &HashMap<i64, String>,
) -> Check {
    let mut check = Check::new(
        7,
        "no \"charged\": \"no\" answer for a key the bank charged (then or later)",
    );
    let mut charged: HashMap<&str, Vec<&Charge>> = HashMap::new();
    for charge in charges
        .iter()
        .filter(|c| c.status == ChargeStatus::Succeeded)
    {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        if let Some(key) = key_by_amount.get(&charge.amount) {
            keys.insert(key.as_str());
        }
        for payment in payments_by_reference
            .get(charge.reference.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(key) = key_of(payment) {
                keys.insert(key);
            }
        }
        for key in keys {
            charged.entry(key).or_default().push(charge);
        }
    }
    let by_amount = charges
        .iter()
        .filter(|c| key_by_amount.contains_key(&c.amount))
        .count();
    let (mut no, mut no_without_member, mut unknown) = (0usize, 0usize, 0usize);
    let mut audited_keys = 0usize;
    for record in records {
        let charges = charged.get(record.key.as_str());
        if charges.is_some() {
            audited_keys += 1;
        }
        for (i, answer) in record.answers.iter().enumerate() {
            match answer.charged_claim() {
                None => continue,
                Some(ChargedClaim::Unknown) => unknown += 1,
                Some(ChargedClaim::No) => {
                    no += 1;
                    if answer.charged_member().is_none() {
                        no_without_member += 1;
                    }
                    let Some(charges) = charges else { continue };
                    if let Some(lie) = untruthful(record, i, charges) {
                        check.violation(|| lie);
                    }
                }
            }
        }
    }
    check.checked = format!(
        "{no} answers claiming no charge ({no_without_member} of them without a charged member), {unknown} \"unknown\", against {} charged keys ({audited_keys} of them sent by the clients; {by_amount} ledger entries tied to keys by amount)",
        charged.len(),
    );
    check
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
                // Each payment with the statuses that named it, in the order they came.
                let mut named: Vec<(String, Vec<u16>)> = Vec::new();
                for answer in &record.answers {
                    let Some(id) = answer.payment_id() else {
                        continue;
                    };
                    match named.iter_mut().find(|(known, _)| *known == id) {
                        Some((_, statuses)) => statuses.push(answer.status),
                        None => named.push((id, vec![answer.status])),
                    }
                }
                let named: Vec<String> = named
                    .iter()
                    .map(|(id, statuses)| {
                        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
                        format!("{id} ({})", statuses.join(" "))
                    })
                    .collect();
                format!(
                    "key {} was answered with {} different payments: {}",
                    record.key,
                    ids.len(),
                    named.join(", ")
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
///    audits only after that window), and nothing a client was told is pending (`202`) was lost:
///    the API still lists every such payment.
fn nothing_left_pending(
    payments: &[Payment],
    records: &[KeyRecord],
    payments_by_id: &HashMap<String, &Payment>,
) -> Check {
    let mut check = Check::new(4, "no payment left pending after the reconciler's window");
    let mut accepted = 0;
    for record in records {
        let ids: BTreeSet<String> = record
            .answers
            .iter()
            .filter(|a| a.status == 202)
            .filter_map(ClientAnswer::payment_id)
            .collect();
        for id in ids {
            accepted += 1;
            if !payments_by_id.contains_key(&id) {
                check.violation(|| {
                    format!(
                        "key {}: payment {id} was answered 202 pending but the API does not list it (lost)",
                        record.key
                    )
                });
            }
        }
    }
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
    check.checked = format!(
        "{} payments, {accepted} payments answered 202 pending",
        payments.len()
    );
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
            bank: "bank".into(),
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
        ClientAnswer::new(status, body)
    }

    fn refusal(status: u16, code: &str, charged: Option<&str>) -> ClientAnswer {
        let mut body = json!({"type": "about:blank", "status": status, "code": code});
        if let Some(charged) = charged {
            body["charged"] = json!(charged);
        }
        ClientAnswer::new(status, serde_json::to_vec(&body).unwrap())
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
                    ClientAnswer::new(409, b"{}".to_vec()),
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
        assert_eq!(report.checks.len(), 6);
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
        records[0]
            .answers
            .push(refusal(503, "circuit_open", Some("unknown")));
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

    /// [`clean`] plus a fourth key `k4` the clients were refused with (no payment, no charge),
    /// and the amounts of every key, as a chaos run makes them.
    fn with_amounts() -> (
        Vec<Payment>,
        Vec<Charge>,
        Vec<KeyRecord>,
        HashMap<i64, String>,
    ) {
        let (mut payments, mut charges, mut records) = clean();
        for (i, payment) in payments.iter_mut().enumerate() {
            payment.amount = 1000 + i as i64;
            charges[i].amount = payment.amount;
        }
        records.push(record(
            "k4",
            vec![
                refusal(503, "circuit_open", Some("no")),
                refusal(503, "bank_unavailable", None),
                refusal(429, "rate_limited", Some("no")),
            ],
        ));
        let amounts = (0..4).map(|i| (1000 + i, format!("k{}", i + 1))).collect();
        (payments, charges, records, amounts)
    }

    #[test]
    fn no_answers_for_keys_never_charged_and_unknown_answers_are_truthful() {
        let (payments, charges, mut records, amounts) = with_amounts();
        // A charged key may be answered "unknown" any number of times, before and after.
        records[0]
            .answers
            .insert(0, refusal(503, "store_unavailable", Some("unknown")));
        records[0]
            .answers
            .push(refusal(503, "outcome_unknown", Some("unknown")));
        // A declined key may be told "no" (a decline is not a charge).
        records[1]
            .answers
            .push(refusal(503, "circuit_open", Some("no")));
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(report.violations(), 0, "{report}");
        let seven = report.check(7);
        assert!(
            seven.checked.starts_with(
                "5 answers claiming no charge (2 of them without a charged member), 2 \"unknown\""
            ),
            "{}",
            seven.checked
        );
        assert_eq!(report.answers["503 store_unavailable charged=unknown"], 1);
        assert_eq!(report.answers["503 bank_unavailable charged=(none)"], 1);
        assert_eq!(report.answers["201 -"], 2);
        assert_eq!(report.keys_answered_201, 1);
        assert_eq!(report.succeeded_charges, 2);
    }

    /// `answer` sent and received `secs` after the epoch.
    fn at(mut answer: ClientAnswer, secs: u64) -> ClientAnswer {
        answer.sent_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        answer.received_at = answer.sent_at + std::time::Duration::from_millis(100);
        answer
    }

    #[test]
    fn a_no_for_a_key_the_bank_charged_later_breaks_invariant_7() {
        let (payments, charges, mut records, amounts) = with_amounts();
        // k3's first request went pending (202); a later one was told "no" before the
        // reconciler's charge landed: the key already held that payment, so it was a lie.
        records[2].answers = vec![
            at(answer(202, &payments[2]), 1),
            at(refusal(503, "breaker_open", Some("no")), 2),
        ];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(failing(&report), [7], "{report}");
        let example = &report.check(7).examples[0];
        assert!(
            example.contains("key k3: told 503 breaker_open (charged: no)"),
            "{example}"
        );
        assert!(
            example.contains("before (and no other request"),
            "{example}"
        );
    }

    #[test]
    fn a_no_followed_by_a_retry_that_charged_is_truthful() {
        let (payments, charges, mut records, amounts) = with_amounts();
        // k1: "no" (the bank was refusing), then the client's retry with the same key
        // succeeded: the charge is the retry's, the "no" spoke for its own request.
        records[0].answers = vec![
            at(refusal(503, "bank_unavailable", Some("no")), 1),
            at(answer(201, &payments[0]), 2),
        ];
        // k3: a request the client stopped waiting for (the API may still process it), then
        // a "no" for the next one, then the charge: the first request may have made it.
        records[2].answers = vec![
            at(ClientAnswer::none("timeout", SystemTime::UNIX_EPOCH), 1),
            at(refusal(503, "breaker_open", Some("no")), 6),
        ];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(report.check(7).violations, 0, "{report}");
        assert_eq!(report.answers["no answer (timeout)"], 1);
    }

    /// A charge at `millis` after the epoch.
    fn charged_at(charge: &mut Charge, millis: i64) {
        charge.created_at = chrono::DateTime::from_timestamp_millis(millis).unwrap();
    }

    #[test]
    fn a_no_racing_another_request_that_charged_is_truthful_a_no_with_no_such_request_is_not() {
        let (payments, mut charges, mut records, amounts) = with_amounts();
        // k3: the client's first request is still in flight (it timed out at the client) when
        // a second is sent to another instance whose breaker is open; that one reads the key,
        // finds it free, and says "no"; meanwhile the first claims the key and the bank
        // charges it, 50 ms into the second request's 100 ms. The "no" was true when the API
        // read the key: the charge is the first request's.
        charged_at(&mut charges[2], 2_050);
        records[2].answers = vec![
            at(ClientAnswer::none("timeout", SystemTime::UNIX_EPOCH), 1),
            at(refusal(503, "breaker_open", Some("no")), 2),
        ];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(report.check(7).violations, 0, "{report}");
        // The same "no" with no other request of the key that could have charged it: a lie.
        records[2].answers = vec![at(refusal(503, "breaker_open", Some("no")), 2)];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(failing(&report), [7], "{report}");
        assert!(
            report.check(7).examples[0].contains("while it was in progress"),
            "{report}"
        );
        // And a charge made before the request was even sent is a lie whatever else was in
        // flight.
        charged_at(&mut charges[2], 1_500);
        records[2].answers = vec![
            at(ClientAnswer::none("timeout", SystemTime::UNIX_EPOCH), 1),
            at(refusal(503, "breaker_open", Some("no")), 2),
        ];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(failing(&report), [7], "{report}");
        assert!(report.check(7).examples[0].contains("after the bank charged it"));
    }

    #[test]
    fn a_5xx_without_a_charged_member_for_a_charged_key_breaks_invariant_7() {
        let (payments, charges, mut records, amounts) = with_amounts();
        records[0]
            .answers
            .push(refusal(503, "store_unavailable", None));
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert_eq!(failing(&report), [7], "{report}");
        assert!(report.check(7).examples[0].contains("no charged member"));
        assert!(report.check(7).examples[0].contains("after the bank charged it"));
    }

    #[test]
    fn invariant_7_ties_charges_to_keys_by_amount_without_the_apis_records() {
        let (mut payments, charges, mut records, amounts) = with_amounts();
        // The API lost k1's payment (its store says nothing), yet the bank charged k1's amount:
        // a "no" for k1 is caught through the amount alone.
        payments.remove(0);
        records[0].answers = vec![refusal(503, "store_unavailable", Some("no"))];
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert!(failing(&report).contains(&7), "{report}");
        assert!(report.check(7).examples[0].contains("key k1"));
        // Without the amounts, nothing ties that charge to k1.
        let blind = audit(&payments, &charges, &records);
        assert_eq!(blind.check(7).violations, 0, "{blind}");
    }

    #[test]
    fn two_ledger_entries_for_one_keys_amount_break_invariant_1_even_when_the_api_hides_one() {
        let (payments, mut charges, records, amounts) = with_amounts();
        let mut second = charges[0].clone();
        second.id = "ch_second".into();
        second.reference = "pay_unknown_to_the_api".into();
        charges.push(second);
        let report = audit_with_amounts(&payments, &charges, &records, &amounts);
        assert!(failing(&report).contains(&1), "{report}");
        assert!(report
            .check(1)
            .examples
            .iter()
            .any(|e| e.contains("key k1 (by its unique amount)")));
    }

    #[test]
    fn a_payment_answered_pending_that_the_api_lost_breaks_invariant_4() {
        let (payments, charges, mut records) = clean();
        let lost = payment("k1", PaymentStatus::Pending);
        records[0].answers.insert(0, answer(202, &lost));
        let report = audit(&payments, &charges, &records);
        assert!(failing(&report).contains(&4), "{report}");
        assert!(report
            .check(4)
            .examples
            .iter()
            .any(|e| e.contains("answered 202 pending but the API does not list it")));
    }
}
