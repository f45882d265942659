//! The chaos verifier's audit: pure functions over the API's payments, the banks' ledgers and
//! what the clients were told, giving one verdict per docs/contract.md §6 invariant (1–5, 7
//! and, with several banks, 8).
//!
//! The banks' ledgers are the ground truth. A payment is tied to its idempotency key by the
//! `metadata.load_key` the load generator puts in every body (the API does not return the key),
//! and to its bank charges by its references. For invariants 1 and 7 a charge is also tied to
//! its key **without trusting the API**: in chaos runs every key is sent with an amount no other
//! key uses, so a ledger charge's amount names its key whatever the API stored (see
//! [`audit_with_amounts`]). Nothing here does I/O, so every kind of violation is unit-tested on
//! hand-made inputs.
//!
//! # One bank, or several
//!
//! - [`audit`] and [`audit_with_amounts`] take **one** ledger and tie a charge to the payment
//!   whose `bank_reference` is the charge's `reference`, whatever the banks are called. They
//!   check invariants 1–5 and 7 only (no invariant 8: without routes there is nothing to check
//!   it against).
//! - [`audit_banks`] takes **every** bank's ledger ([`BankLedger`]) and every payment's
//!   [`Route`]s (`GET /v1/payments?expand=routes`: each bank the payment was ever sent to, with
//!   its reference there, recorded before that bank was called). A charge belongs to the payment
//!   one of whose routes is the charge's (bank, reference); the payment's current
//!   (`bank`, `bank_reference`) counts as one of its routes even if the caller gave none. So a
//!   decline at an earlier bank of the route (a cascadable decline) is tied to its payment, not
//!   reported as "a charge without a payment", nor held against how the payment ended at the
//!   next bank (2); a reported success may be charged under any of the payment's routes (3;
//!   8 checks which); and invariant 1 counts successful charges across all banks (through the
//!   API's routes, and by amount: only successful entries, since a key may be declined at one
//!   bank and charged at the next). It also checks invariant 8:
//!
//! **8. Several banks: at most one successful charge per payment, at the bank the payment names,
//! and only where the payment recorded a route** (docs/failover.md):
//!
//! - (a) a payment (all payments of its key, and every charge its key's amount names, so
//!   without trusting the API) has at most one successful charge over all banks;
//! - (b) that charge is at the bank the payment names (`payment.bank`), under its
//!   `bank_reference`; and the payment's (`bank`, `bank_reference`) is one of its routes;
//! - (c) no charge, of any status, at a bank the payment never recorded a route at, nor under a
//!   reference that is not the payment's route at that bank (such a charge is tied to its
//!   payment by its reference at another bank, or by its amount).
//!
//! A charge tied to no payment at all (no route, no amount) is invariant 2's "no payment".
//! A payment released after every bank refused (its routes deleted with it) leaves nothing to
//! tie an entry to: a cascadable decline at an earlier bank of such a payment is reported by 2
//! (and by 8 when its amount names a key that has a payment).

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
    pub(crate) fn new(number: u8, title: &'static str) -> Self {
        Self {
            number,
            title,
            checked: String::new(),
            violations: 0,
            examples: Vec::new(),
        }
    }

    pub(crate) fn violation(&mut self, example: impl FnOnce() -> String) {
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
    /// Every entry in the ledger (succeeded and declined); over every bank's ledger in
    /// [`audit_banks`].
    pub charges: usize,
    /// Succeeded entries in the ledger (every bank's).
    pub succeeded_charges: usize,
    /// Each bank's ledger ([`audit_banks`]); empty for the one ledger of [`audit`].
    pub ledgers: Vec<LedgerCount>,
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
        if self.ledgers.is_empty() {
            writeln!(
                f,
                "audit: {} keys sent, {} payments in the API, {} charges in the bank ledger ({} succeeded)",
                self.keys, self.payments, self.charges, self.succeeded_charges
            )?;
        } else {
            let banks: Vec<String> = self
                .ledgers
                .iter()
                .map(|l| format!("{} {} ({} succeeded)", l.bank, l.charges, l.succeeded))
                .collect();
            writeln!(
                f,
                "audit: {} keys sent, {} payments in the API, {} charges in {} bank ledgers ({} succeeded; {})",
                self.keys,
                self.payments,
                self.charges,
                self.ledgers.len(),
                self.succeeded_charges,
                banks.join(", ")
            )?;
        }
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
/// Charges are tied to keys through the API's payments only; see [`audit_with_amounts`]. One
/// ledger: invariants 1–5 and 7, no 8 (see [`audit_banks`]).
pub fn audit(payments: &[Payment], charges: &[Charge], records: &[KeyRecord]) -> Report {
    audit_with_amounts(payments, charges, records, &HashMap::new())
}

/// [`audit`], where `key_by_amount` also ties each ledger charge to the key that was sent with
/// its amount (every key of a chaos run has an amount of its own), without trusting anything
/// the API stored. Used by invariants 1 (two charges whose amounts name the same key) and 7.
/// One ledger, charges tied to payments by reference alone: invariants 1–5 and 7, no 8.
pub fn audit_with_amounts(
    payments: &[Payment],
    charges: &[Charge],
    records: &[KeyRecord],
    key_by_amount: &HashMap<i64, String>,
) -> Report {
    let no_routes: HashMap<String, &[Route]> = HashMap::new();
    let ledgers = Ledgers::new(
        false,
        payments,
        &no_routes,
        charges.iter().map(|c| ("", c)).collect(),
    );
    run_checks(&ledgers, records, key_by_amount, Vec::new())
}

/// One bank a payment was sent to: an entry of `routes` in `GET /v1/payments?expand=routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The bank's name, as the API names it (`payment.bank`).
    pub bank: String,
    /// The payment's reference at that bank.
    pub reference: String,
}

/// One bank's whole ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankLedger {
    /// The bank's name, as the API names it (`payment.bank`, [`Route::bank`]).
    pub bank: String,
    pub charges: Vec<Charge>,
}

/// How many entries one bank's ledger holds ([`Report::ledgers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCount {
    pub bank: String,
    pub charges: usize,
    pub succeeded: usize,
}

/// The audit over several banks: invariants 1–5 and 7 over the union of `ledgers` (give every
/// bank the API routes to, each once), and invariant 8 (see the module documentation).
///
/// `routes` maps a payment id (a `Uuid`, or the id as the API prints it: it is compared as
/// text, hyphens and case aside) to the banks the payment was sent to, in order, with its
/// reference at each. A charge belongs to the payment one of whose routes is the charge's
/// (bank, reference); a payment's current (`bank`, `bank_reference`) counts as one of its
/// routes even when `routes` has no entry for it. `key_by_amount` is as in
/// [`audit_with_amounts`] (may be empty). The [`Report`] has a seventh check, number 8, and
/// [`Report::ledgers`] counts each bank's ledger.
pub fn audit_banks<K: fmt::Display>(
    payments: &[Payment],
    routes: &HashMap<K, Vec<Route>>,
    ledgers: &[BankLedger],
    records: &[KeyRecord],
    key_by_amount: &HashMap<i64, String>,
) -> Report {
    let counts = ledgers
        .iter()
        .map(|ledger| LedgerCount {
            bank: ledger.bank.clone(),
            charges: ledger.charges.len(),
            succeeded: ledger
                .charges
                .iter()
                .filter(|c| c.status == ChargeStatus::Succeeded)
                .count(),
        })
        .collect();
    let located = ledgers
        .iter()
        .flat_map(|ledger| ledger.charges.iter().map(|c| (ledger.bank.as_str(), c)))
        .collect();
    let routes: HashMap<String, &[Route]> = routes
        .iter()
        .map(|(id, routes)| (normalized_id(&id.to_string()), routes.as_slice()))
        .collect();
    let ledgers = Ledgers::new(true, payments, &routes, located);
    run_checks(&ledgers, records, key_by_amount, counts)
}

/// Where a charge was made, or where a payment was sent: (bank, reference). The bank is `""` in
/// the one-ledger audit, where charges tie to payments by reference alone.
type Place<'a> = (&'a str, &'a str);

/// The ledgers and the payments' routes, indexed by place.
struct Ledgers<'a> {
    /// Several named banks ([`audit_banks`]), or one ledger ([`audit_with_amounts`]).
    multi: bool,
    payments: &'a [Payment],
    /// Every ledger entry, with its bank.
    charges: Vec<(&'a str, &'a Charge)>,
    /// The banks that gave a ledger.
    banks: BTreeSet<&'a str>,
    by_place: HashMap<Place<'a>, Vec<&'a Charge>>,
    /// Each payment's routes (indexed like `payments`), the payment's current place last when
    /// the caller's routes do not list it.
    routes: Vec<Vec<Place<'a>>>,
    /// Whether the caller gave routes for the payment that do not list its current place.
    current_unlisted: Vec<bool>,
    /// Payments (indices) by each of their routes.
    owners: HashMap<Place<'a>, Vec<usize>>,
}

/// A payment id with hyphens removed, in lower case (`Uuid::simple`).
fn normalized_id(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl<'a> Ledgers<'a> {
    fn new(
        multi: bool,
        payments: &'a [Payment],
        routes: &HashMap<String, &'a [Route]>,
        charges: Vec<(&'a str, &'a Charge)>,
    ) -> Self {
        let mut all_routes = Vec::with_capacity(payments.len());
        let mut current_unlisted = Vec::with_capacity(payments.len());
        let mut owners: HashMap<Place<'a>, Vec<usize>> = HashMap::new();
        for (i, payment) in payments.iter().enumerate() {
            let listed: &[Route] = routes
                .get(&payment.id.simple().to_string())
                .copied()
                .unwrap_or_default();
            let mut list: Vec<Place<'a>> = listed
                .iter()
                .map(|r| (r.bank.as_str(), r.reference.as_str()))
                .collect();
            let current = Self::current_of(multi, payment);
            let unlisted = !list.contains(&current);
            if unlisted {
                list.push(current);
            }
            current_unlisted.push(unlisted && !listed.is_empty());
            for place in &list {
                let found = owners.entry(*place).or_default();
                if !found.contains(&i) {
                    found.push(i);
                }
            }
            all_routes.push(list);
        }
        let mut by_place: HashMap<Place<'a>, Vec<&'a Charge>> = HashMap::new();
        for &(bank, charge) in &charges {
            by_place
                .entry((bank, charge.reference.as_str()))
                .or_default()
                .push(charge);
        }
        Self {
            multi,
            payments,
            banks: charges.iter().map(|(bank, _)| *bank).collect(),
            charges,
            by_place,
            routes: all_routes,
            current_unlisted,
            owners,
        }
    }

    fn current_of(multi: bool, payment: &'a Payment) -> Place<'a> {
        let bank = if multi { payment.bank.as_str() } else { "" };
        (bank, payment.bank_reference.as_str())
    }

    /// The place the payment names: its bank and its reference there.
    fn current(&self, payment: &'a Payment) -> Place<'a> {
        Self::current_of(self.multi, payment)
    }

    /// The payments (indices) one of whose routes is `place`.
    fn owner_ids(&self, place: Place<'a>) -> &[usize] {
        self.owners
            .get(&place)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// `" at bank B"` with several banks, nothing with one ledger (its messages as they were).
    fn at(&self, bank: &str) -> String {
        if self.multi {
            format!(" at bank {bank}")
        } else {
            String::new()
        }
    }

    /// `"pay_1 at a"`, or `"pay_1"` with one ledger.
    fn place(&self, (bank, reference): Place<'_>) -> String {
        if self.multi {
            format!("{reference} at {bank}")
        } else {
            reference.to_owned()
        }
    }

    /// `"ledgers"` for the `checked` texts: `"1 bank ledger"` / `"2 bank ledgers"`.
    fn ledgers(&self) -> String {
        match self.banks.len() {
            1 => "1 bank ledger".to_owned(),
            n => format!("{n} bank ledgers"),
        }
    }
}

fn run_checks(
    ledgers: &Ledgers<'_>,
    records: &[KeyRecord],
    key_by_amount: &HashMap<i64, String>,
    counts: Vec<LedgerCount>,
) -> Report {
    let payments = ledgers.payments;
    let payments_by_id: HashMap<String, usize> = payments
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.to_string(), i))
        .collect();

    let mut checks = vec![
        one_charge_per_key(ledgers, records),
        every_charge_has_its_payment(ledgers),
        reported_successes_are_charged(records, &payments_by_id, ledgers),
        nothing_left_pending(ledgers, records, &payments_by_id),
        replays_match_the_first_answer(records),
        truthful_answers(records, ledgers, key_by_amount),
    ];
    if !key_by_amount.is_empty() {
        one_charge_per_key_by_amount(&mut checks[0], ledgers, key_by_amount);
    }
    if ledgers.multi {
        checks.push(charges_follow_the_routes(ledgers, key_by_amount));
    }
    let mut answers = BTreeMap::new();
    for answer in records.iter().flat_map(|r| &r.answers) {
        *answers.entry(answer.tally_label()).or_default() += 1;
    }
    Report {
        payments: payments.len(),
        charges: ledgers.charges.len(),
        succeeded_charges: ledgers
            .charges
            .iter()
            .filter(|(_, c)| c.status == ChargeStatus::Succeeded)
            .count(),
        ledgers: counts,
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

/// 1, independently of the API: ledger entries under different places whose amounts name the
/// same key are two charges for one key. With one ledger, every entry counts (two references);
/// with several banks only successful ones do (a key may be declined at one bank, with a
/// cascadable decline, and charged at the next).
fn one_charge_per_key_by_amount(
    check: &mut Check,
    ledgers: &Ledgers<'_>,
    key_by_amount: &HashMap<i64, String>,
) {
    let mut places_by_key: BTreeMap<&str, BTreeSet<Place<'_>>> = BTreeMap::new();
    for &(bank, charge) in &ledgers.charges {
        if ledgers.multi && charge.status != ChargeStatus::Succeeded {
            continue;
        }
        if let Some(key) = key_by_amount.get(&charge.amount) {
            places_by_key
                .entry(key.as_str())
                .or_default()
                .insert((bank, charge.reference.as_str()));
        }
    }
    for (key, places) in &places_by_key {
        if places.len() > 1 {
            check.violation(|| {
                let list: Vec<String> = places.iter().map(|p| ledgers.place(*p)).collect();
                if ledgers.multi {
                    format!(
                        "key {key} (by its unique amount) has successful ledger entries under {} (bank, reference) pairs: {}",
                        places.len(),
                        list.join(", ")
                    )
                } else {
                    format!(
                        "key {key} (by its unique amount) has ledger entries under {} references: {}",
                        places.len(),
                        list.join(", ")
                    )
                }
            });
        }
    }
    let tied = if ledgers.multi {
        "successful ledger entries"
    } else {
        "ledger entries"
    };
    check.checked.push_str(&format!(
        ", {} keys tied to {tied} by amount",
        places_by_key.len()
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
    ledgers: &Ledgers<'_>,
    key_by_amount: &HashMap<i64, String>,
) -> Check {
    let mut check = Check::new(
        7,
        "no \"charged\": \"no\" answer for a key the bank charged (then or later)",
    );
    let mut charged: HashMap<&str, Vec<&Charge>> = HashMap::new();
    for &(bank, charge) in ledgers
        .charges
        .iter()
        .filter(|(_, c)| c.status == ChargeStatus::Succeeded)
    {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        if let Some(key) = key_by_amount.get(&charge.amount) {
            keys.insert(key.as_str());
        }
        for &i in ledgers.owner_ids((bank, charge.reference.as_str())) {
            if let Some(key) = key_of(&ledgers.payments[i]) {
                keys.insert(key);
            }
        }
        for key in keys {
            charged.entry(key).or_default().push(charge);
        }
    }
    let by_amount = ledgers
        .charges
        .iter()
        .filter(|(_, c)| key_by_amount.contains_key(&c.amount))
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

/// 1. At most one bank charge per (tenant, key): one payment per key, one charge per reference
///    (per (bank, reference) with several banks), and every answer for a key names the same
///    payment. With several banks, also at most one place (bank, reference) with a successful
///    charge over all the routes of the key's payments.
fn one_charge_per_key(ledgers: &Ledgers<'_>, records: &[KeyRecord]) -> Check {
    let mut check = Check::new(1, "at most one bank charge per idempotency key");
    let payments = ledgers.payments;
    let mut payments_by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, payment) in payments.iter().enumerate() {
        if let Some(key) = key_of(payment) {
            payments_by_key.entry(key).or_default().push(i);
        }
    }
    for (key, found) in &payments_by_key {
        if found.len() > 1 {
            check.violation(|| {
                let ids: Vec<String> = found.iter().map(|&i| payments[i].id.to_string()).collect();
                format!(
                    "key {key} made {} payments: {}",
                    found.len(),
                    ids.join(", ")
                )
            });
        }
    }
    let mut places: Vec<(&Place<'_>, &Vec<&Charge>)> = ledgers.by_place.iter().collect();
    places.sort_by_key(|(place, _)| **place);
    for (&(bank, reference), found) in places {
        if found.len() > 1 {
            check.violation(|| {
                let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
                format!(
                    "reference {reference}{} was charged {} times: {}",
                    ledgers.at(bank),
                    found.len(),
                    ids.join(", ")
                )
            });
        }
    }
    if ledgers.multi {
        // Across banks, through the API's routes.
        for (key, found) in &payments_by_key {
            let charged: BTreeSet<Place<'_>> = found
                .iter()
                .flat_map(|&i| ledgers.routes[i].iter().copied())
                .filter(|place| {
                    ledgers.by_place.get(place).is_some_and(|charges| {
                        charges.iter().any(|c| c.status == ChargeStatus::Succeeded)
                    })
                })
                .collect();
            if charged.len() > 1 {
                check.violation(|| {
                    let list: Vec<String> = charged.iter().map(|p| ledgers.place(*p)).collect();
                    format!(
                        "key {key} was charged under {} of its routes: {}",
                        charged.len(),
                        list.join(", ")
                    )
                });
            }
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
        "{} keys with payments, {} charged {}, {} client keys",
        payments_by_key.len(),
        ledgers.by_place.len(),
        if ledgers.multi {
            "(bank, reference) pairs"
        } else {
            "references"
        },
        records.len()
    );
    check
}

/// 2. Every ledger charge belongs to exactly one payment, and that payment ended in the same
///    outcome (a succeeded charge ↔ a succeeded payment, a decline ↔ a declined payment). With
///    several banks a charge belongs to the payment one of whose routes is its (bank,
///    reference), and a decline at a bank the payment has since left (a cascadable decline)
///    says nothing about how the payment ended.
fn every_charge_has_its_payment(ledgers: &Ledgers<'_>) -> Check {
    let mut check = Check::new(
        2,
        "every charge belongs to exactly one payment that ended the same way",
    );
    for &(bank, charge) in &ledgers.charges {
        let place = (bank, charge.reference.as_str());
        let found: Vec<&Payment> = ledgers
            .owner_ids(place)
            .iter()
            .map(|&i| &ledgers.payments[i])
            .collect();
        let want = match charge.status {
            ChargeStatus::Succeeded => PaymentStatus::Succeeded,
            ChargeStatus::Declined => PaymentStatus::Declined,
        };
        let left = |payment: &Payment| {
            charge.status == ChargeStatus::Declined && ledgers.current(payment) != place
        };
        let at = ledgers.at(bank);
        match found.as_slice() {
            [] => check.violation(|| {
                format!(
                    "charge {}{at} (reference {}, {} {}) has no payment",
                    charge.id, charge.reference, charge.amount, charge.currency
                )
            }),
            [payment] if payment.status != want && !left(payment) => check.violation(|| {
                format!(
                    "charge {}{at} is {} but payment {} ended {}",
                    charge.id,
                    charge.status.as_str(),
                    payment.id,
                    payment.status.as_str()
                )
            }),
            [payment] if payment.amount != charge.amount || payment.currency != charge.currency => {
                check.violation(|| {
                    format!(
                        "charge {}{at} is {} {} but payment {} is {} {}",
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
                    "charge {}{at} (reference {}) is claimed by {} payments",
                    charge.id,
                    charge.reference,
                    many.len()
                )
            }),
        }
    }
    check.checked = if ledgers.multi {
        format!("{} charges in {}", ledgers.charges.len(), ledgers.ledgers())
    } else {
        format!("{} charges", ledgers.charges.len())
    };
    check
}

/// 3. Every payment the API answered 201 for is `succeeded` and has a succeeded charge (with
///    several banks: under one of its routes; invariant 8 checks it is the one it names).
fn reported_successes_are_charged(
    records: &[KeyRecord],
    payments_by_id: &HashMap<String, usize>,
    ledgers: &Ledgers<'_>,
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
        let Some(&i) = payments_by_id.get(&id) else {
            check.violation(|| {
                format!(
                    "key {}: payment {id} was reported succeeded but the API does not list it",
                    record.key
                )
            });
            continue;
        };
        let payment = &ledgers.payments[i];
        let charged = ledgers.routes[i].iter().any(|place| {
            ledgers
                .by_place
                .get(place)
                .is_some_and(|c| c.iter().any(|c| c.status == ChargeStatus::Succeeded))
        });
        if !charged {
            check.violation(|| {
                if ledgers.multi {
                    format!(
                        "key {}: payment {id} (reference {} at bank {}) was reported succeeded but no bank has a succeeded charge under any of its routes",
                        record.key, payment.bank_reference, payment.bank
                    )
                } else {
                    format!(
                        "key {}: payment {id} (reference {}) was reported succeeded but the bank has no succeeded charge",
                        record.key, payment.bank_reference
                    )
                }
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
    ledgers: &Ledgers<'_>,
    records: &[KeyRecord],
    payments_by_id: &HashMap<String, usize>,
) -> Check {
    let payments = ledgers.payments;
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
                "payment {} (key {}, reference {}{}) is still pending after {} attempts",
                payment.id,
                key_of(payment).unwrap_or("?"),
                payment.bank_reference,
                ledgers.at(&payment.bank),
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

/// 8. Several banks ([`audit_banks`] only; see the module documentation): (a) at most one
///    successful charge per payment over all banks, counted per key (every payment of the key,
///    and every charge the key's amount names); (b) it is at the bank the payment names, under
///    its `bank_reference`, which is one of its routes; (c) no charge of any status at a bank
///    the payment has no route at, or under a reference other than its route there.
fn charges_follow_the_routes(ledgers: &Ledgers<'_>, key_by_amount: &HashMap<i64, String>) -> Check {
    let mut check = Check::new(
        8,
        "at most one successful charge per payment across banks, at the bank it names, only under its routes",
    );
    let payments = ledgers.payments;
    // A key's payments count as one (invariant 1 reports a key with several payments);
    // a payment without a key counts alone.
    let unit = |i: usize| match key_of(&payments[i]) {
        Some(key) => format!("key {key}"),
        None => format!("payment {}", payments[i].id),
    };
    let routes_text = |i: usize| {
        let routes = &ledgers.routes[i];
        let given = if ledgers.current_unlisted[i] {
            &routes[..routes.len() - 1]
        } else {
            &routes[..]
        };
        let list: Vec<String> = given.iter().map(|p| ledgers.place(*p)).collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    let mut payments_by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut payments_by_reference: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, payment) in payments.iter().enumerate() {
        if let Some(key) = key_of(payment) {
            payments_by_key.entry(key).or_default().push(i);
        }
        for (_, reference) in &ledgers.routes[i] {
            let found = payments_by_reference.entry(reference).or_default();
            if !found.contains(&i) {
                found.push(i);
            }
        }
    }

    // (b) The payment names one of its routes.
    for (i, payment) in payments.iter().enumerate() {
        if ledgers.current_unlisted[i] {
            check.violation(|| {
                format!(
                    "payment {} ({}) names bank {} (reference {}), which is not one of its routes ({})",
                    payment.id,
                    unit(i),
                    payment.bank,
                    payment.bank_reference,
                    routes_text(i)
                )
            });
        }
    }

    // (a) One successful charge per payment (per key), across banks.
    let succeeded: Vec<(&str, &Charge)> = ledgers
        .charges
        .iter()
        .copied()
        .filter(|(_, c)| c.status == ChargeStatus::Succeeded)
        .collect();
    let mut successes: BTreeMap<String, BTreeSet<(&str, &str, &str)>> = BTreeMap::new();
    for &(bank, charge) in &succeeded {
        let mut units: BTreeSet<String> = ledgers
            .owner_ids((bank, charge.reference.as_str()))
            .iter()
            .map(|&i| unit(i))
            .collect();
        if let Some(key) = key_by_amount.get(&charge.amount) {
            units.insert(format!("key {key}"));
        }
        for u in units {
            successes.entry(u).or_default().insert((
                bank,
                charge.reference.as_str(),
                charge.id.as_str(),
            ));
        }
    }
    for (unit, found) in &successes {
        if found.len() > 1 {
            check.violation(|| {
                let list: Vec<String> = found
                    .iter()
                    .map(|(bank, reference, id)| format!("{id} at {bank} (reference {reference})"))
                    .collect();
                format!(
                    "{unit} has {} successful charges across banks: {}",
                    found.len(),
                    list.join(", ")
                )
            });
        }
    }

    // (b) Each successful charge is at the place its payment names.
    for &(bank, charge) in &succeeded {
        let place = (bank, charge.reference.as_str());
        for &i in ledgers.owner_ids(place) {
            let payment = &payments[i];
            if ledgers.current(payment) != place {
                check.violation(|| {
                    format!(
                        "payment {} ({}, {}) names bank {} (reference {}) but was charged at bank {bank} (charge {}, reference {})",
                        payment.id,
                        unit(i),
                        payment.status.as_str(),
                        payment.bank,
                        payment.bank_reference,
                        charge.id,
                        charge.reference
                    )
                });
            }
        }
    }

    // (c) Every charge, of any status, is under one of its payment's routes.
    let mut tied_elsewhere = 0usize;
    for &(bank, charge) in &ledgers.charges {
        let place = (bank, charge.reference.as_str());
        if !ledgers.owner_ids(place).is_empty() {
            continue;
        }
        // Not under any route: tie it to a payment by its reference (recorded at another
        // bank) or by its amount.
        let mut candidates: BTreeSet<usize> = payments_by_reference
            .get(charge.reference.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if let Some(key) = key_by_amount.get(&charge.amount) {
            candidates.extend(payments_by_key.get(key.as_str()).into_iter().flatten());
        }
        if !candidates.is_empty() {
            tied_elsewhere += 1;
        }
        for i in candidates {
            let payment = &payments[i];
            let there: Vec<&str> = ledgers.routes[i]
                .iter()
                .filter(|(b, _)| *b == bank)
                .map(|(_, reference)| *reference)
                .collect();
            check.violation(|| {
                if there.is_empty() {
                    format!(
                        "charge {} ({}) at bank {bank}, reference {}: payment {} ({}) never recorded a route at bank {bank} (its routes: {})",
                        charge.id,
                        charge.status.as_str(),
                        charge.reference,
                        payment.id,
                        unit(i),
                        routes_text(i)
                    )
                } else {
                    format!(
                        "charge {} ({}) at bank {bank} has reference {}, which is not one of payment {}'s ({}) routes (its reference there: {})",
                        charge.id,
                        charge.status.as_str(),
                        charge.reference,
                        payment.id,
                        unit(i),
                        there.join(", ")
                    )
                }
            });
        }
    }

    let routes: usize = ledgers.routes.iter().map(Vec::len).sum();
    let moved = ledgers.routes.iter().filter(|r| r.len() > 1).count();
    let unaudited = ledgers
        .routes
        .iter()
        .flatten()
        .filter(|(bank, _)| !ledgers.banks.contains(bank))
        .count();
    check.checked = format!(
        "{} charges in {} ({} succeeded), {} payments with {routes} routes ({moved} sent to more than one bank), {tied_elsewhere} charges outside every route tied to a payment by reference or amount",
        ledgers.charges.len(),
        ledgers.ledgers(),
        succeeded.len(),
        payments.len(),
    );
    if unaudited > 0 {
        check.checked.push_str(&format!(
            "; {unaudited} routes at banks without a ledger (not audited)"
        ));
    }
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
        assert!(report.ledgers.is_empty());
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

    // ---------------------------------------------------------------------------------------
    // Several banks: audit_banks, invariant 8
    // ---------------------------------------------------------------------------------------

    fn route(bank: &str, reference: &str) -> Route {
        Route {
            bank: bank.into(),
            reference: reference.into(),
        }
    }

    /// A payment with `amount`, with bank `a` only (reference `pay_<id>`).
    fn at_a(key: &str, status: PaymentStatus, amount: i64) -> (Payment, Vec<Route>) {
        let mut p = payment(key, status);
        p.amount = amount;
        p.bank = "a".into();
        let routes = vec![route("a", &p.bank_reference)];
        (p, routes)
    }

    /// A payment with `amount` sent to bank `a` first, then moved to bank `b`: it names `b`
    /// and `pay_<id>_b`; its routes are `a` (`pay_<id>`), then `b`.
    fn cascaded(key: &str, status: PaymentStatus, amount: i64) -> (Payment, Vec<Route>) {
        let (mut p, mut routes) = at_a(key, status, amount);
        p.bank = "b".into();
        p.bank_reference = format!("{}_b", p.bank_reference);
        routes.push(route("b", &p.bank_reference));
        (p, routes)
    }

    fn charge_under(payment: &Payment, reference: &str, status: ChargeStatus) -> Charge {
        let mut charge = charge(payment, status);
        charge.reference = reference.into();
        charge
    }

    struct Banks {
        payments: Vec<Payment>,
        routes: HashMap<String, Vec<Route>>,
        /// `a`, then `b`.
        ledgers: Vec<BankLedger>,
        records: Vec<KeyRecord>,
        amounts: HashMap<i64, String>,
    }

    impl Banks {
        fn audit(&self) -> Report {
            audit_banks(
                &self.payments,
                &self.routes,
                &self.ledgers,
                &self.records,
                &self.amounts,
            )
        }

        fn audit_without_amounts(&self) -> Report {
            audit_banks(
                &self.payments,
                &self.routes,
                &self.ledgers,
                &self.records,
                &HashMap::new(),
            )
        }

        /// The payment of key `k{n}`.
        fn of(&self, n: usize) -> &Payment {
            let key = format!("k{n}");
            self.payments
                .iter()
                .find(|p| key_of(p) == Some(key.as_str()))
                .expect("the key has a payment")
        }

        /// The routes of the payment of key `k{n}`.
        fn routes_of(&mut self, n: usize) -> &mut Vec<Route> {
            let id = self.of(n).id;
            self.routes
                .iter_mut()
                .find(|(k, _)| normalized_id(k) == id.simple().to_string())
                .map(|(_, routes)| routes)
                .expect("every payment has routes")
        }
    }

    /// Two banks, `a` then `b`, four keys (amounts 2001..2004):
    /// - k1: declined at `a` with a cascadable decline (`a` holds the decline under `pay_<id>`),
    ///   moved to `b` and charged there: 201, replayed.
    /// - k2: `a`'s breaker was open (nothing at `a`), moved to `b`, declined there: 402.
    /// - k3: charged at `a`, never moved: 201.
    /// - k4: pending at `a` after an ambiguous attempt (202), settled at `a` by the
    ///   reconciler; never moved, so no route at `b`.
    fn two_banks() -> Banks {
        let (k1, k1_routes) = cascaded("k1", PaymentStatus::Succeeded, 2001);
        let (k2, k2_routes) = cascaded("k2", PaymentStatus::Declined, 2002);
        let (k3, k3_routes) = at_a("k3", PaymentStatus::Succeeded, 2003);
        let (mut k4, k4_routes) = at_a("k4", PaymentStatus::Pending, 2004);
        let a = vec![
            charge_under(&k1, &k1_routes[0].reference, ChargeStatus::Declined),
            charge(&k3, ChargeStatus::Succeeded),
            charge(&k4, ChargeStatus::Succeeded),
        ];
        let b = vec![
            charge(&k1, ChargeStatus::Succeeded),
            charge(&k2, ChargeStatus::Declined),
        ];
        let records = vec![
            record("k1", vec![answer(201, &k1), answer(201, &k1)]),
            record("k2", vec![answer(402, &k2)]),
            record("k3", vec![answer(201, &k3)]),
            record("k4", vec![answer(202, &k4)]),
        ];
        k4.status = PaymentStatus::Succeeded;
        // Ids as the API prints them, hyphenated, and in another spelling.
        let routes = HashMap::from([
            (k1.id.to_string(), k1_routes),
            (k2.id.to_string().to_uppercase(), k2_routes),
            (k3.id.simple().to_string(), k3_routes),
            (k4.id.to_string(), k4_routes),
        ]);
        Banks {
            payments: vec![k1, k2, k3, k4],
            routes,
            ledgers: vec![
                BankLedger {
                    bank: "a".into(),
                    charges: a,
                },
                BankLedger {
                    bank: "b".into(),
                    charges: b,
                },
            ],
            records,
            amounts: (1..=4).map(|i| (2000 + i, format!("k{i}"))).collect(),
        }
    }

    #[test]
    fn a_clean_two_bank_history_has_no_violations() {
        let banks = two_banks();
        let report = banks.audit();
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.checks.len(), 7);
        assert_eq!(
            report.check(8).checked,
            "5 charges in 2 bank ledgers (3 succeeded), 4 payments with 6 routes (2 sent to more than one bank), 0 charges outside every route tied to a payment by reference or amount"
        );
        assert_eq!(report.check(2).checked, "5 charges in 2 bank ledgers");
        assert_eq!((report.charges, report.succeeded_charges), (5, 3));
        let text = report.to_string();
        assert!(
            text.starts_with("audit: 4 keys sent, 4 payments in the API, 5 charges in 2 bank ledgers (3 succeeded; a 3 (2 succeeded), b 2 (1 succeeded))"),
            "{text}"
        );
        assert!(
            text.contains(
                "[ok  ] invariant 8: at most one successful charge per payment across banks"
            ),
            "{text}"
        );
        assert!(text.ends_with("audit result: 0 violations"));
        // Without the amounts, the routes alone tie every charge.
        assert_eq!(banks.audit_without_amounts().violations(), 0);

        // The one-ledger audit of the same charges ties by reference alone: k1's decline at
        // `a` has "no payment" (2) and k1's amount names two references (1).
        let all: Vec<Charge> = banks
            .ledgers
            .iter()
            .flat_map(|l| l.charges.clone())
            .collect();
        let one = audit_with_amounts(&banks.payments, &all, &banks.records, &banks.amounts);
        assert_eq!(failing(&one), [1, 2], "{one}");
    }

    #[test]
    fn a_payment_pending_at_a_and_settled_there_without_a_later_route_is_clean() {
        let mut banks = two_banks();
        let k4 = banks.of(4).clone();
        banks.payments = vec![k4.clone()];
        banks
            .routes
            .retain(|id, _| normalized_id(id) == k4.id.simple().to_string());
        banks.ledgers[0].charges.retain(|c| c.amount == 2004);
        banks.ledgers[1].charges.clear();
        banks.records = vec![record(
            "k4",
            vec![
                ClientAnswer::new(409, b"{}".to_vec()),
                answer(202, &{
                    let mut pending = k4.clone();
                    pending.status = PaymentStatus::Pending;
                    pending
                }),
                answer(201, &k4),
            ],
        )];
        let report = banks.audit();
        assert_eq!(report.violations(), 0, "{report}");
        assert!(
            report
                .check(8)
                .checked
                .contains("1 payments with 1 routes (0 sent to more than one bank)"),
            "{report}"
        );
        // Routes not given at all: the payment's own (bank, reference) is its route.
        let report = audit_banks(
            &banks.payments,
            &HashMap::<String, _>::new(),
            &banks.ledgers,
            &banks.records,
            &banks.amounts,
        );
        assert_eq!(report.violations(), 0, "{report}");

        // Had the API moved it to `b` after the ambiguous attempt at `a` (which charged it),
        // the payment would name `b` while `a` holds its charge.
        let mut moved = banks;
        let first = moved.payments[0].bank_reference.clone();
        moved.payments[0].bank = "b".into();
        moved.payments[0].bank_reference = format!("{first}_b");
        moved.routes_of(4).push(route("b", &format!("{first}_b")));
        let report = moved.audit();
        assert_eq!(failing(&report), [8], "{report}");
        assert!(report.check(8).examples[0].contains("names bank b"));
        assert!(report.check(8).examples[0].contains("was charged at bank a"));
    }

    #[test]
    fn a_payment_charged_at_both_banks_breaks_invariants_1_and_8() {
        let mut banks = two_banks();
        // k1 was charged at `a` (say the "decline" was ambiguous and `a` committed) and at `b`.
        banks.ledgers[0].charges[0].status = ChargeStatus::Succeeded;
        let report = banks.audit();
        assert_eq!(failing(&report), [1, 8], "{report}");
        let eight = &report.check(8);
        assert_eq!(eight.violations, 2, "{report}");
        assert!(
            eight.examples[0].starts_with("key k1 has 2 successful charges across banks: "),
            "{report}"
        );
        assert!(eight.examples[1].contains("names bank b"), "{report}");
        assert!(
            eight.examples[1].contains("was charged at bank a"),
            "{report}"
        );
        let one = &report.check(1);
        assert!(one
            .examples
            .iter()
            .any(|e| e.starts_with("key k1 was charged under 2 of its routes")));
        assert!(one.examples.iter().any(|e| e.starts_with(
            "key k1 (by its unique amount) has successful ledger entries under 2 (bank, reference) pairs"
        )));
        // The report prints 8 like the others, and counts it.
        assert_eq!(report.violations(), one.violations + eight.violations);
        let text = report.to_string();
        assert!(
            text.contains("[FAIL] invariant 8: at most one successful charge per payment"),
            "{text}"
        );
        assert!(text.contains("         - key k1 has 2 successful charges across banks"));
        assert!(text.ends_with(&format!("audit result: {} violations", report.violations())));
        // The routes alone catch it, without the amounts.
        assert_eq!(failing(&banks.audit_without_amounts()), [1, 8]);
    }

    #[test]
    fn a_payment_charged_at_b_while_it_names_a_breaks_invariant_8() {
        let mut banks = two_banks();
        // k1's store says it is with `a`, yet `b` (one of its routes) charged it.
        let first = banks.routes_of(1)[0].reference.clone();
        banks.payments[0].bank = "a".into();
        banks.payments[0].bank_reference = first;
        banks.ledgers[0].charges.remove(0); // nothing at `a`
        let report = banks.audit();
        assert_eq!(failing(&report), [8], "{report}");
        assert_eq!(report.check(8).violations, 1);
        let example = &report.check(8).examples[0];
        assert!(
            example.contains("(key k1, succeeded) names bank a"),
            "{example}"
        );
        assert!(example.contains("was charged at bank b"), "{example}");
    }

    #[test]
    fn a_charge_at_a_bank_the_payment_has_no_route_at_breaks_invariants_2_and_8() {
        let mut banks = two_banks();
        // k3 (only ever with `a`) shows up at `b` under its `a` reference, declined: the API
        // called `b` without recording a route there.
        let k3 = banks.of(3).clone();
        banks.ledgers[1]
            .charges
            .push(charge(&k3, ChargeStatus::Declined));
        let report = banks.audit();
        assert_eq!(failing(&report), [2, 8], "{report}");
        assert!(report.check(2).examples[0].contains("at bank b (reference"));
        let example = &report.check(8).examples[0];
        assert!(
            example.contains("(key k3) never recorded a route at bank b (its routes: pay_"),
            "{example}"
        );
        assert!(example.ends_with(" at a)"), "{example}");
        // Under a reference of its own, tied by amount alone.
        banks.ledgers[1].charges.pop();
        banks.ledgers[1]
            .charges
            .push(charge_under(&k3, "pay_unknown", ChargeStatus::Declined));
        let report = banks.audit();
        assert_eq!(failing(&report), [2, 8], "{report}");
        assert!(
            report.check(8).examples[0].starts_with("charge ch_")
                && report.check(8).examples[0]
                    .contains("(declined) at bank b, reference pay_unknown: payment")
        );
        assert!(report
            .check(8)
            .checked
            .contains("1 charges outside every route tied to a payment by reference or amount"));
        // Without the amounts nothing ties it to k3: only "no payment" (2).
        assert_eq!(failing(&banks.audit_without_amounts()), [2]);
    }

    #[test]
    fn a_charge_under_an_unknown_reference_at_a_route_bank_breaks_invariants_2_and_8() {
        let mut banks = two_banks();
        // k1 has a route at `b` (pay_<id>_b), and `b` also holds a charge of k1's amount under
        // a reference none of its routes has.
        let k1 = banks.of(1).clone();
        banks.ledgers[1]
            .charges
            .push(charge_under(&k1, "pay_elsewhere", ChargeStatus::Declined));
        let report = banks.audit();
        assert_eq!(failing(&report), [2, 8], "{report}");
        assert_eq!(report.check(8).violations, 1);
        let example = &report.check(8).examples[0];
        assert!(
            example.contains(&format!(
                "(declined) at bank b has reference pay_elsewhere, which is not one of payment {}'s (key k1) routes (its reference there: {})",
                k1.id, k1.bank_reference
            )),
            "{example}"
        );
    }

    #[test]
    fn invariant_1_across_banks_catches_a_double_charge_the_api_hides() {
        let mut banks = two_banks();
        // k3 was charged at `a` (the API's record) and at `b` under a reference the API never
        // recorded: nothing in the API leads to the charge at `b`, its amount does.
        let k3 = banks.of(3).clone();
        banks.ledgers[1]
            .charges
            .push(charge_under(&k3, "pay_hidden", ChargeStatus::Succeeded));
        let report = banks.audit();
        assert_eq!(failing(&report), [1, 2, 8], "{report}");
        assert_eq!(report.check(1).violations, 1);
        let example = &report.check(1).examples[0];
        assert!(
            example.starts_with("key k3 (by its unique amount) has successful ledger entries under 2 (bank, reference) pairs: "),
            "{example}"
        );
        assert!(example.contains("pay_hidden at b"), "{example}");
        assert!(report
            .check(8)
            .examples
            .iter()
            .any(|e| e.starts_with("key k3 has 2 successful charges across banks")));
        // Through the API alone (no amounts), k3 has one charge: 1 does not see it.
        let blind = banks.audit_without_amounts();
        assert_eq!(failing(&blind), [2], "{blind}");
    }

    #[test]
    fn a_payment_naming_a_place_none_of_its_routes_has_breaks_invariant_8() {
        let mut banks = two_banks();
        // The API lists k3's route at `a` under another reference than the payment names.
        banks.routes_of(3)[0].reference = "pay_other".into();
        let report = banks.audit();
        assert_eq!(failing(&report), [8], "{report}");
        let example = &report.check(8).examples[0];
        assert!(
            example.contains("(key k3) names bank a (reference pay_")
                && example.ends_with("which is not one of its routes (pay_other at a)"),
            "{example}"
        );
    }
}
