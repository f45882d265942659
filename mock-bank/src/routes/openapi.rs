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
