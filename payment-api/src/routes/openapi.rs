//! What the OpenAPI document adds to the derived schemas: every constraint the server enforces,
//! generated from the constants the validation uses (`domain`, `MAX_PAGE`, the log buffer's
//! `MAX_LIMIT`, `Currency::all()`), and the answers every route can give from the edge
//! (timeouts, body and header limits, shedding, rate limits). Applied to the whole document once
//! the routes have added their schemas (a `Modify` in `#[openapi(modifiers)]` would run before
//! them).
//!
//! `payment-api/tests/openapi_contract.rs` walks the result: a value just inside each bound is
//! accepted and one just outside refused, so the document and the server cannot drift apart.

use payment_types::currency::{Currency, MAX_MAJOR_UNITS};
use serde_json::{json, Map, Value};

use super::{
    edge::NEVER_SHED,
    payments::{CURSOR_PATTERN, EXPAND_VALUES, MAX_PAGE},
    webhooks::{EVENT_CURSOR_PATTERN, MAX_EVENT_PAGE},
    MAX_BODY_BYTES,
};
use crate::domain::{
    IdempotencyKey, MAX_DESCRIPTION, MAX_METADATA_KEY, MAX_METADATA_KEYS, MAX_METADATA_VALUE,
    MAX_SOURCE, SOURCE_PATTERN,
};

/// The levels `GET /v1/logs?level=` accepts (case-insensitive).
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The breaker actions of `POST /v1/breaker/{action}`.
const BREAKER_ACTIONS: [&str; 5] = [
    "force-open",
    "force-closed",
    "disable",
    "metrics-only",
    "reset",
];

/// Attaches the server's constraints to the document (as JSON: utoipa's types do not read
/// back every document they write, and the constraints read best as a client sees them).
pub(crate) fn constrain(doc: &mut Value, banks: &[&str]) {
    events_params(doc);
    create_payment(&mut doc["components"]["schemas"]["CreatePayment"]);
    set_param(
        doc,
        ("/v1/payments", "post", "Idempotency-Key"),
        &json!({
            "type": "string",
            "minLength": 1,
            "maxLength": IdempotencyKey::MAX_LEN,
            "pattern": IdempotencyKey::PATTERN,
        }),
        &format!(
            "1-{} visible ASCII characters, not beginning or ending with `\"` (the pattern is the bare form). \
             The same key may also be sent as an RFC 8941 quoted string (`\"order-1\"`, where `\\\"` and `\\\\` are the only escapes); \
             bare and quoted spellings name the same key. Reuse it when you retry.",
            IdempotencyKey::MAX_LEN
        ),
    );
    set_param(
        doc,
        ("/v1/payments", "get", "limit"),
        &json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_PAGE}),
        &format!("Payments per page, 1-{MAX_PAGE} (default 20)"),
    );
    set_param(
        doc,
        ("/v1/payments", "get", "tenant"),
        &json!({"type": "string", "pattern": crate::auth::NAME_PATTERN}),
        "Operator keys: only this tenant's payments (absent: every tenant's). A tenant key may name only its own tenant; another is 403 `forbidden`",
    );
    set_param(
        doc,
        ("/v1/payments", "get", "cursor"),
        &json!({"type": "string", "pattern": CURSOR_PATTERN}),
        "`next_cursor` of the previous page, as returned (opaque to clients)",
    );
    for path in ["/v1/payments", "/v1/payments/{id}"] {
        set_param(
            doc,
            (path, "get", "expand"),
            &json!({"type": "string", "enum": EXPAND_VALUES}),
            "`routes`: each payment also has `routes`, every bank it was sent to with its reference there, oldest first (`#/components/schemas/PaymentRouteView`). Absent: the payment as without it",
        );
    }
    set_param(
        doc,
        ("/v1/logs", "get", "limit"),
        &json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": telemetry::buffer::MAX_LIMIT}),
        &format!(
            "At most this many records, 1-{} (default {})",
            telemetry::buffer::MAX_LIMIT,
            telemetry::buffer::DEFAULT_LIMIT
        ),
    );
    set_param(
        doc,
        ("/v1/logs", "get", "level"),
        &json!({"type": "string", "enum": LOG_LEVELS}),
        "Minimum level (case-insensitive)",
    );
    set_param(
        doc,
        ("/v1/breaker/{action}", "post", "action"),
        &json!({"type": "string", "enum": BREAKER_ACTIONS}),
        "What to do with the breaker",
    );
    set_param(
        doc,
        ("/v1/breaker/{action}", "post", "bank"),
        &json!({"type": "string", "enum": banks}),
        "The bank whose breaker to act on, by its configured name (this server's banks); absent: the first bank. Another name is 404 `bank_not_found`",
    );
    edge_responses(doc);
}

/// `CreatePayment`: bounds, the currency list, and no unknown fields.
fn create_payment(schema: &mut Value) {
    let currencies = Currency::all();
    let codes: Vec<&str> = currencies.iter().map(|c| c.code()).collect();
    let max_amount = currencies
        .iter()
        .map(|c| c.max_amount())
        .max()
        .unwrap_or(MAX_MAJOR_UNITS);
    // The bound per number of decimals, with a few currencies of each.
    let mut by_exponent: Vec<(u32, i64, Vec<&str>)> = Vec::new();
    for currency in &currencies {
        match by_exponent
            .iter_mut()
            .find(|(e, _, _)| *e == currency.exponent())
        {
            Some((_, _, codes)) => codes.push(currency.code()),
            None => by_exponent.push((
                currency.exponent(),
                currency.max_amount(),
                vec![currency.code()],
            )),
        }
    }
    by_exponent.sort_unstable();
    let bounds: Vec<String> = by_exponent
        .iter()
        .map(|(exponent, max, codes)| {
            let shown: Vec<&str> = codes.iter().take(6).copied().collect();
            format!(
                "{max} for the {} currencies with {exponent} decimals ({}{})",
                codes.len(),
                shown.join(", "),
                if codes.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        })
        .collect();
    let properties = &mut schema["properties"];
    merge(
        &mut properties["amount"],
        &json!({
            "type": "integer",
            "format": "int64",
            "minimum": 1,
            "maximum": max_amount,
            "description": format!(
                "Amount in minor units of `currency` (1999 is 19.99 TRY, 1999 JPY, 1.999 KWD), from 1 to {MAX_MAJOR_UNITS} major units: {}. \
                 An amount over the bound of its currency is refused with 422 `invalid_amount`.",
                bounds.join("; ")
            ),
        }),
    );
    merge(
        &mut properties["currency"],
        &json!({
            "type": "string",
            "enum": codes,
            "description": "An active ISO 4217 alphabetic code with a minor unit (upper case); anything else is 422 `invalid_currency`.",
        }),
    );
    merge(
        &mut properties["source"],
        &json!({
            "minLength": 1,
            "maxLength": MAX_SOURCE,
            "pattern": SOURCE_PATTERN,
            "description": format!("A card token: 1-{MAX_SOURCE} letters, digits or underscores, e.g. `tok_visa`."),
        }),
    );
    // `Option<String>` is `["string", "null"]`: `null` is accepted (as absent).
    merge(
        &mut properties["description"],
        &json!({
            "maxLength": MAX_DESCRIPTION,
            "description": format!("Free text shown on statements, at most {MAX_DESCRIPTION} characters."),
        }),
    );
    merge(
        &mut properties["metadata"],
        &json!({
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"type": "string", "minLength": 1, "maxLength": MAX_METADATA_KEY},
            "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
            "description": format!(
                "At most {MAX_METADATA_KEYS} pairs; keys 1-{MAX_METADATA_KEY} characters, values strings of at most {MAX_METADATA_VALUE} characters."
            ),
        }),
    );
    schema["additionalProperties"] = Value::Bool(false);
}

/// `GET /v1/events`'s parameters, from the values the handler accepts.
fn events_params(doc: &mut Value) {
    let route = |name| ("/v1/events", "get", name);
    set_param(
        doc,
        route("type"),
        &json!({"type": "string", "enum": payment_store::webhooks::EVENT_TYPES}),
        "Only events of this type",
    );
    set_param(
        doc,
        route("delivery_state"),
        &json!({"type": "string", "enum": ["pending", "delivered", "failed"]}),
        "Only events with at least one delivery in this state",
    );
    set_param(
        doc,
        route("limit"),
        &json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_EVENT_PAGE}),
        &format!("Events per page, 1-{MAX_EVENT_PAGE} (default 20)"),
    );
    set_param(
        doc,
        route("cursor"),
        &json!({"type": "string", "pattern": EVENT_CURSOR_PATTERN}),
        "`next_cursor` of the previous page (an event id)",
    );
}

/// Sets `schema` and `description` of a parameter; a parameter the document lacks is a bug in
/// the routes, so this panics (every test that builds the router would fail).
fn set_param(
    doc: &mut Value,
    (path, method, name): (&str, &str, &str),
    schema: &Value,
    description: &str,
) {
    let parameters = doc["paths"][path][method]["parameters"].as_array_mut();
    let param = parameters
        .and_then(|params| params.iter_mut().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("OpenAPI: no parameter {name} on {method} {path}"));
    param["schema"] = schema.clone();
    param["description"] = Value::from(description);
}

/// Adds `extra`'s members to `target` (an object), replacing those it already has.
fn merge(target: &mut Value, extra: &Value) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// The answers of the edge (`edge::enforce`, the body limit, `auth`) on every route they apply
/// to, unless the route documents that status itself.
fn edge_responses(doc: &mut Value) {
    let problem = |description: String| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        })
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let authenticated = operation.get("security").is_some();
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            let mut add = |status: &str, description: String| {
                if !responses.contains_key(status) {
                    responses.insert(status.to_owned(), problem(description));
                }
            };
            add(
                "408",
                "`request_timeout`: the request took longer than the request timeout".to_owned(),
            );
            add(
                "413",
                format!("`body_too_large`: a body over {MAX_BODY_BYTES} bytes"),
            );
            add(
                "431",
                "`headers_too_large`: too many or too large request headers".to_owned(),
            );
            if authenticated {
                add(
                    "401",
                    "`unauthenticated`: missing or unknown API key".to_owned(),
                );
                // `/metrics` checks its token without a rate limit (scrapes are few).
                if path != "/metrics" {
                    add(
                        "429",
                        "`rate_limited`: this API key is over its rate limit (Retry-After)"
                            .to_owned(),
                    );
                }
            }
            if !NEVER_SHED.contains(&path.as_str()) {
                add("503", "`overloaded`: too many requests in progress, shed before any work (Retry-After)".to_owned());
            }
        }
    }
}
