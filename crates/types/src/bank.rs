//! The mock bank's bodies: charges, the ledger and its totals, the chaos profile (presets and
//! scenarios) and the status snapshot.
//!
//! The bank serves these and the payment API, the dashboard and the chaos verifier read them, so
//! they live here where both sides compile against the same shape. `docs/mock-bank.md` documents
//! every field and default.

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `POST /v1/charges` body. The `Idempotency-Key` header carries the same `reference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChargeRequest {
    /// Amount in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Card token; test tokens decide the business outcome.
    pub source: String,
    /// The caller's reference for this charge, unique per payment.
    pub reference: String,
}

/// The business outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ChargeStatus {
    Succeeded,
    Declined,
}

impl ChargeStatus {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Declined => "declined",
        }
    }
}

/// A charge as the bank records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Charge {
    /// The bank's own id, `ch_...`.
    pub id: String,
    pub reference: String,
    pub amount: i64,
    pub currency: String,
    pub status: ChargeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Ledger
// ---------------------------------------------------------------------------------------------

/// `GET /v1/ledger?after=CURSOR&limit=N`: one page of charges in commit order, with totals over
/// the whole ledger and the identity of the bank instance that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerPage {
    /// A fresh id per bank process: a change means the bank restarted and its in-memory ledger
    /// started empty again.
    pub instance_id: String,
    /// When this bank process started.
    pub started_at: DateTime<Utc>,
    /// Charges after the requested cursor, oldest commit first.
    pub charges: Vec<Charge>,
    /// Pass as `after` to read the next page; `null` when this page reached the end. To follow
    /// the ledger as it grows, keep the last non-null cursor (or [`LedgerPage::last_cursor`]).
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// The cursor just after the last charge of this page (the `after` given when the page is
    /// empty): polling with it later returns only charges committed since.
    pub last_cursor: String,
    /// Totals over every charge in the ledger, not just this page.
    pub totals: LedgerTotals,
}

/// Counts and amounts over the whole ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerTotals {
    /// Number of charges of any status and currency.
    pub count: u64,
    /// Currency code → status → count and amount.
    pub by_currency: BTreeMap<String, BTreeMap<ChargeStatus, AmountTotal>>,
}

/// A count of charges and the sum of their amounts (minor units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AmountTotal {
    pub count: u64,
    pub amount: i64,
}

impl LedgerTotals {
    /// Adds one charge to the totals.
    pub fn add(&mut self, charge: &Charge) {
        self.count += 1;
        let total = self
            .by_currency
            .entry(charge.currency.clone())
            .or_default()
            .entry(charge.status)
            .or_default();
        total.count += 1;
        total.amount = total.amount.saturating_add(charge.amount);
    }
}

// ---------------------------------------------------------------------------------------------
// Chaos
// ---------------------------------------------------------------------------------------------

/// A named chaos profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Preset {
    /// No faults and no added latency: the performance baseline.
    Healthy,
    /// About 30% errors mixed 500/503/429, small latency.
    Flaky,
    /// A share of calls take longer than a second.
    Slow,
    /// Every charge request answers 503 with `Retry-After`; nothing is processed.
    Down,
    /// Every charge request hangs: never processed, never answered.
    Blackhole,
    /// A share of charges commit and lose their response, plus ambiguous 500s after commit.
    Lossy,
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 6] = [
        Self::Healthy,
        Self::Flaky,
        Self::Slow,
        Self::Down,
        Self::Blackhole,
        Self::Lossy,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Flaky => "flaky",
            Self::Slow => "slow",
            Self::Down => "down",
            Self::Blackhole => "blackhole",
            Self::Lossy => "lossy",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown preset `{s}`; expected one of {}", names.join(", "))
            })
    }
}

/// What the bank does wrong, and how often. Every field has a default (the healthy value), so a
/// partial JSON body is a complete profile: `{"error_rate": 0.2}` means 20% errors and nothing
/// else. The fault rates (`hang_rate`, `error_rate`, `lost_response_rate`) are shares of charge
/// requests drawn from one roll, so they add up and their sum must not exceed 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChaosProfile {
    /// Share (0–1) of requests answered with an injected error, chosen by `errors`.
    pub error_rate: f64,
    /// Relative weights of the injected errors.
    pub errors: ErrorMix,
    /// Share (0–1) of injected 500s that come *after* the charge committed (the ambiguous
    /// case); the rest come before anything was processed.
    pub error_500_committed_rate: f64,
    /// `Retry-After` seconds sent with injected 503 and 429 answers.
    pub retry_after_s: u32,
    /// Added latency (applies to every charge request, also to injected errors).
    pub latency: Latency,
    /// Share (0–1) of requests that hang: never processed, never answered, the connection is
    /// closed after `hold_max_ms`.
    pub hang_rate: f64,
    /// Share (0–1) of requests whose charge commits and whose answer is then lost.
    pub lost_response_rate: f64,
    /// How a response is lost.
    pub lost_response_mode: LostResponseMode,
    /// Server-side bound on hangs and withheld answers, in milliseconds: after it the connection
    /// is closed without an answer, so nothing leaks however patient the client is.
    pub hold_max_ms: u64,
}

impl Default for ChaosProfile {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            errors: ErrorMix {
                http_500: 1,
                http_503: 1,
                http_429: 1,
            },
            error_500_committed_rate: 0.0,
            retry_after_s: 1,
            latency: Latency::default(),
            hang_rate: 0.0,
            lost_response_rate: 0.0,
            lost_response_mode: LostResponseMode::Drop,
            hold_max_ms: 30_000,
        }
    }
}

/// Relative weights of the injected errors; a missing weight is 0 (a profile without `errors`
/// at all gets 1/1/1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorMix {
    /// 500: ambiguous, the charge may have committed (see `error_500_committed_rate`).
    pub http_500: u32,
    /// 503 with `Retry-After`: definitely not processed.
    pub http_503: u32,
    /// 429 with `Retry-After`: definitely not processed.
    pub http_429: u32,
}

/// Added latency: `base_ms + uniform(0..=jitter_ms)`, plus `tail_ms` for a `tail_rate` share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
    /// Share (0–1) of requests that also get the slow tail.
    pub tail_rate: f64,
    pub tail_ms: u64,
}

/// How a lost response is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LostResponseMode {
    /// The connection is closed at once without an answer (the client sees a reset/EOF).
    #[default]
    Drop,
    /// The answer is withheld until `hold_max_ms`, then the connection is closed (the client
    /// sees its own timeout).
    Withhold,
}

/// One step of a scenario: from `at_ms` after the scenario started, `preset` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScenarioStep {
    pub at_ms: u64,
    pub preset: Preset,
}

/// `PUT /v1/chaos` body: exactly one of three shapes.
///
/// - `{"preset": "down"}`: switch to a named preset (ends any scenario).
/// - `{"scenario": [{"at_ms": 0, "preset": "healthy"}, {"at_ms": 10000, "preset": "down"}]}`:
///   start a timed scenario now.
/// - any other object: a [`ChaosProfile`] (missing fields take their defaults; ends any scenario).
#[derive(Debug, Clone, PartialEq)]
pub enum ChaosUpdate {
    Preset(Preset),
    Scenario(Vec<ScenarioStep>),
    Profile(ChaosProfile),
}

impl Serialize for ChaosUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct PresetBody<'a> {
            preset: &'a Preset,
        }
        #[derive(Serialize)]
        struct ScenarioBody<'a> {
            scenario: &'a [ScenarioStep],
        }
        match self {
            Self::Preset(preset) => PresetBody { preset }.serialize(serializer),
            Self::Scenario(scenario) => ScenarioBody { scenario }.serialize(serializer),
            Self::Profile(profile) => profile.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ChaosUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Value::Object(mut map) = Value::deserialize(deserializer)? else {
            return Err(D::Error::custom("expected a JSON object"));
        };
        let only = |map: &Map<String, Value>, key: &str| -> Result<(), D::Error> {
            if map.len() == 1 {
                Ok(())
            } else {
                Err(D::Error::custom(format!(
                    "`{key}` cannot be combined with other fields"
                )))
            }
        };
        if let Some(preset) = map.get("preset") {
            only(&map, "preset")?;
            return Preset::deserialize(preset)
                .map(Self::Preset)
                .map_err(D::Error::custom);
        }
        if map.contains_key("scenario") {
            only(&map, "scenario")?;
            let steps = map.remove("scenario").unwrap_or_default();
            return Vec::<ScenarioStep>::deserialize(steps)
                .map(Self::Scenario)
                .map_err(D::Error::custom);
        }
        ChaosProfile::deserialize(Value::Object(map))
            .map(Self::Profile)
            .map_err(D::Error::custom)
    }
}

/// `GET /v1/chaos` (and the answer to `PUT`): what is in effect now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosState {
    /// The preset in effect, or `null` for a custom profile.
    pub preset: Option<Preset>,
    /// The profile in effect.
    pub profile: ChaosProfile,
    /// The running or finished scenario, if the last change started one.
    #[serde(default)]
    pub scenario: Option<ScenarioState>,
    /// The seed chaos decisions are drawn from (random when `--seed` was not given).
    pub seed: u64,
    /// When the profile in effect was last changed (by a PUT or a scenario step).
    pub changed_at: DateTime<Utc>,
}

/// A scenario's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioState {
    pub steps: Vec<ScenarioStep>,
    pub started_at: DateTime<Utc>,
    /// Milliseconds since the scenario started.
    pub elapsed_ms: u64,
    /// Index into `steps` of the step in effect; `null` before the first step's offset (the
    /// profile from before the scenario still applies).
    pub current_step: Option<usize>,
    /// The last step is in effect; it stays in effect until the next change.
    pub finished: bool,
}

/// `GET /v1/chaos/presets`: every preset and its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetInfo {
    pub name: Preset,
    pub profile: ChaosProfile,
}

// ---------------------------------------------------------------------------------------------
// Status and health
// ---------------------------------------------------------------------------------------------

/// `GET /v1/status`: counters and the chaos in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankStatus {
    pub instance_id: String,
    pub started_at: DateTime<Utc>,
    pub uptime_s: u64,
    /// Charge requests that have received a chaos decision (the `i` of "the i-th request").
    pub chaos_requests: u64,
    /// Answers by outcome, e.g. `created`, `replayed`, `declined`, `invalid`, `reference_reused`.
    pub outcomes: BTreeMap<String, u64>,
    /// Injected faults by kind, e.g. `http_503`, `hang`, `lost_response`, `slow_tail`.
    pub faults: BTreeMap<String, u64>,
    /// Charges in the ledger.
    pub ledger_charges: u64,
    /// Charges claimed and not yet committed.
    pub in_flight: u64,
    /// Connections held open by hangs and withheld answers.
    pub held: u64,
    pub chaos: ChaosState,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BankHealth {
    pub status: String,
    pub instance_id: String,
    pub started_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_profile_takes_defaults_for_missing_fields() {
        let update: ChaosUpdate = serde_json::from_str(r#"{"error_rate":0.2}"#).unwrap();
        let ChaosUpdate::Profile(profile) = update else {
            panic!("not a profile")
        };
        assert_eq!(profile.error_rate, 0.2);
        assert_eq!(
            profile.errors,
            ErrorMix {
                http_500: 1,
                http_503: 1,
                http_429: 1
            }
        );
        assert_eq!(profile.hold_max_ms, 30_000);
    }

    #[test]
    fn a_partial_error_mix_zeroes_the_missing_weights() {
        let p: ChaosProfile = serde_json::from_str(r#"{"errors":{"http_503":1}}"#).unwrap();
        assert_eq!(
            p.errors,
            ErrorMix {
                http_500: 0,
                http_503: 1,
                http_429: 0
            }
        );
    }

    #[test]
    fn updates_round_trip_in_all_three_shapes() {
        for update in [
            ChaosUpdate::Preset(Preset::Down),
            ChaosUpdate::Scenario(vec![
                ScenarioStep {
                    at_ms: 0,
                    preset: Preset::Healthy,
                },
                ScenarioStep {
                    at_ms: 10,
                    preset: Preset::Down,
                },
            ]),
            ChaosUpdate::Profile(ChaosProfile {
                hang_rate: 0.5,
                ..Default::default()
            }),
        ] {
            let json = serde_json::to_string(&update).unwrap();
            assert_eq!(
                serde_json::from_str::<ChaosUpdate>(&json).unwrap(),
                update,
                "{json}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_mixed_shapes_are_rejected() {
        assert!(serde_json::from_str::<ChaosUpdate>(r#"{"eror_rate":0.2}"#).is_err());
        assert!(
            serde_json::from_str::<ChaosUpdate>(r#"{"preset":"down","error_rate":1}"#).is_err()
        );
        assert!(serde_json::from_str::<ChaosUpdate>(r#"{"preset":"sideways"}"#).is_err());
    }

    #[test]
    fn totals_serialise_with_status_names_as_keys() {
        let mut totals = LedgerTotals::default();
        let charge = Charge {
            id: "ch_1".into(),
            reference: "r".into(),
            amount: 100,
            currency: "TRY".into(),
            status: ChargeStatus::Succeeded,
            decline_code: None,
            created_at: Utc::now(),
        };
        totals.add(&charge);
        totals.add(&charge);
        let v = serde_json::to_value(&totals).unwrap();
        assert_eq!(v["count"], 2);
        assert_eq!(v["by_currency"]["TRY"]["succeeded"]["amount"], 200);
        assert_eq!(serde_json::from_value::<LedgerTotals>(v).unwrap(), totals);
    }

    #[test]
    fn presets_parse_from_their_names() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>().unwrap(), preset);
        }
        assert!("nope".parse::<Preset>().is_err());
    }
}
