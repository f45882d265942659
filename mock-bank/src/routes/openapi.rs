//! What the bank's OpenAPI document adds to the derived schemas: every constraint the bank
//! enforces, generated from the constants its checks use (`charges`, `ledger`, the log buffer's
//! `MAX_LIMIT`, `Currency::all()`), applied once every route has added its schemas.
//! `payment-api/tests/openapi_contract.rs` walks the result against a running bank.

use payment_types::currency::{Currency, MAX_MAJOR_UNITS};
use serde_json::{json, Value};

use super::{
    charges::{MAX_AMOUNT, MAX_FIELD, VISIBLE_ASCII},
    ledger::{CURSOR_PATTERN, MAX_LIMIT},
};

/// Attaches the bank's constraints to the document (edited as JSON, as a client reads it).
pub(crate) fn constrain(doc: &mut Value) {
    let currencies = Currency::all();
    let codes: Vec<&str> = currencies.iter().map(|c| c.code()).collect();
    let max_amount = currencies
        .iter()
        .map(|c| c.max_amount().min(MAX_AMOUNT))
        .max()
        .unwrap_or(MAX_AMOUNT);
    let visible = |what: &str| {
        json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_FIELD,
            "pattern": VISIBLE_ASCII,
            "description": format!("{what}: 1-{MAX_FIELD} visible ASCII characters."),
        })
    };
    let schema = &mut doc["components"]["schemas"]["ChargeRequest"];
    let properties = &mut schema["properties"];
    properties["amount"] = json!({
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": max_amount,
        "description": format!(
            "Amount in minor units of `currency`, at most {MAX_MAJOR_UNITS} major units of it (10^8 x 10^decimals minor units); over that, 422 `invalid_request`."
        ),
    });
    properties["currency"] = json!({
        "type": "string",
        "enum": codes,
        "description": "An active ISO 4217 code with a minor unit, upper case.",
    });
    properties["source"] = visible("Card token; test tokens decide the business outcome");
    properties["reference"] = visible(
        "The caller's reference for this charge, unique per payment; also the Idempotency-Key",
    );
    schema["additionalProperties"] = Value::Bool(false);
    let mut key = visible("The charge's reference");
    key["description"] = Value::from(format!(
        "The charge's `reference` (1-{MAX_FIELD} visible ASCII characters), bare or as an RFC 8941 quoted string (`\"ref-1\"`)."
    ));
    set_param(doc, ("/v1/charges", "post", "Idempotency-Key"), key);
    set_param(
        doc,
        ("/v1/ledger", "get", "limit"),
        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_LIMIT, "description": format!("Charges per page, 1-{MAX_LIMIT} (default 100)")}),
    );
    set_param(
        doc,
        ("/v1/ledger", "get", "after"),
        json!({"type": "string", "pattern": CURSOR_PATTERN, "description": "`next_cursor` or `last_cursor` of an earlier page (a decimal position); empty or absent reads from the start"}),
    );
    set_param(
        doc,
        ("/v1/logs", "get", "limit"),
        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": telemetry::buffer::MAX_LIMIT, "description": format!("At most this many records, 1-{} (default {})", telemetry::buffer::MAX_LIMIT, telemetry::buffer::DEFAULT_LIMIT)}),
    );
    chaos(doc);
    set_param(
        doc,
        ("/v1/logs", "get", "level"),
        json!({"type": "string", "enum": ["error", "warn", "info", "debug", "trace"], "description": "Minimum level (case-insensitive)"}),
    );
}

/// Sets a parameter's schema (its `description` moves to the parameter); a parameter the
/// document lacks is a bug in the routes, so this panics (every router test would fail).
fn set_param(doc: &mut Value, (path, method, name): (&str, &str, &str), mut schema: Value) {
    let param = doc["paths"][path][method]["parameters"]
        .as_array_mut()
        .and_then(|params| params.iter_mut().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("OpenAPI: no parameter {name} on {method} {path}"));
    if let Some(description) = schema.as_object_mut().and_then(|s| s.remove("description")) {
        param["description"] = description;
    }
    param["schema"] = schema;
}

/// Bounds of a chaos profile and a scenario, as `chaos::profile::validate` and
/// `chaos::Scenario::start` check them. Those constants are private to `chaos`, so they are
/// repeated here; the contract test walks every one against a running bank, so a change on
/// either side fails it.
const CHAOS_MAX_MS: u64 = 120_000;
const CHAOS_MAX_RETRY_AFTER_S: u64 = 3600;
const SCENARIO_MAX_STEPS: usize = 100;
const SCENARIO_MAX_OFFSET_MS: u64 = 24 * 60 * 60 * 1000;

/// `PUT /v1/chaos`: exactly one of a preset, a scenario or a profile, with their bounds.
fn chaos(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let rate = |description: &str| json!({"type": "number", "format": "double", "minimum": 0, "maximum": 1, "description": description});
    let ms = |description: &str| json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": CHAOS_MAX_MS, "description": description});
    let profile = &mut schemas["ChaosProfile"]["properties"];
    profile["error_rate"] = rate("Share (0-1) of requests answered with an injected error, chosen by `errors` (which then needs a non-zero weight).");
    profile["error_500_committed_rate"] =
        rate("Share (0-1) of injected 500s that come after the charge committed.");
    profile["hang_rate"] = rate("Share (0-1) of requests that hang; `hang_rate + error_rate + lost_response_rate` is at most 1.");
    profile["lost_response_rate"] =
        rate("Share (0-1) of requests whose charge commits and whose answer is then lost.");
    profile["hold_max_ms"] = ms("Bound on hangs and withheld answers, in milliseconds.");
    profile["retry_after_s"] = json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": CHAOS_MAX_RETRY_AFTER_S, "description": "`Retry-After` seconds sent with injected 503 and 429 answers."});
    let latency = &mut schemas["Latency"]["properties"];
    latency["base_ms"] = ms("Added latency, in milliseconds.");
    latency["jitter_ms"] = ms("Uniform extra latency up to this, in milliseconds.");
    latency["tail_ms"] = ms("Extra latency of the slow tail, in milliseconds.");
    latency["tail_rate"] = rate("Share (0-1) of requests that also get the slow tail.");
    schemas["ScenarioStep"]["properties"]["at_ms"] = json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": SCENARIO_MAX_OFFSET_MS, "description": "Offset from the scenario's start, in milliseconds; steps in order of at_ms."});
    let body = json!({
        "description": "Exactly one of: `{\"preset\": NAME}`, `{\"scenario\": [{\"at_ms\", \"preset\"}]}` (steps in order of `at_ms`), or a whole profile (missing fields take their defaults). Cross-field rules the schema cannot state: `hang_rate + error_rate + lost_response_rate` is at most 1, and `error_rate > 0` needs a non-zero weight in `errors`; otherwise 422 `invalid_chaos`.",
        "content": {"application/json": {"schema": {"oneOf": [
            {
                "type": "object",
                "required": ["preset"],
                "properties": {"preset": {"$ref": "#/components/schemas/Preset"}},
                "additionalProperties": false,
            },
            {
                "type": "object",
                "required": ["scenario"],
                "properties": {"scenario": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": SCENARIO_MAX_STEPS,
                    "items": {"$ref": "#/components/schemas/ScenarioStep"},
                }},
                "additionalProperties": false,
            },
            {"$ref": "#/components/schemas/ChaosProfile"},
        ]}}},
        "required": true,
    });
    doc["paths"]["/v1/chaos"]["put"]["requestBody"] = body;
}
