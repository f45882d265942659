//! The OpenAPI documents against the running services (in process, over real sockets): every
//! constraint `/openapi.json` states is enforced, and every constrained value the server
//! accepts is one the document allows (issue 16, point 2). The walk is driven from the
//! document: it reads `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`, `enum`,
//! `maxProperties`, `propertyNames`, `additionalProperties` and `required`, sends a value just
//! inside each bound (accepted) and values just outside (refused with a 4xx problem naming the
//! field), and checks that every status it meets is documented for its operation. A constraint
//! added to the schema but not enforced (or enforced but not in the schema) fails here.
//!
//! Also here: errors produced by layers (body limit, timeout, router, extractors) are
//! `application/problem+json` with a stable `code` (issue 16, point 3).

mod support;

use std::time::Duration;

use e2e::raw_http::assert_problem;
use proptest::strategy::{Strategy, ValueTree};
use serde_json::{json, Map, Value};
use support::System;

const KEY: &str = "sk_test_contract_0123456789abcdef";
/// The operator key: the operator surface and reads across tenants (`tenant=` any name).
const OPERATOR_KEY: &str = "sk_test_contract_operator_0123456789";

/// The key an API request of `method path` is sent with: the operator key on operator routes
/// (and the payment list, whose `tenant` filter only an operator may set freely), the tenant
/// key elsewhere.
fn key_for(method: &str, path: &str) -> &'static str {
    let operator = path.starts_with("/v1/logs")
        || path.starts_with("/v1/status")
        || path.starts_with("/v1/breaker")
        || (method.eq_ignore_ascii_case("get") && path == "/v1/payments");
    if operator {
        OPERATOR_KEY
    } else {
        KEY
    }
}

/// The system with the contract test's keys and no rate limit in the way (hundreds of
/// requests in a few seconds), with `tweak` applied after.
async fn start(tweak: impl FnOnce(&mut payment_api::Config)) -> System {
    support::start("contract", &format!("acme:{KEY}"), |config| {
        config.operator_keys = Some(format!("ops:{OPERATOR_KEY}").into());
        config.edge.rate_limit = 0;
        tweak(config);
    })
    .await
}

async fn document(client: &reqwest::Client, base: &str) -> Value {
    let response = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// A small regular-expression matcher for the patterns of the documents (anchored; classes,
// groups, alternation, `? * + {m,n}`), so the walk can tell which probes a pattern allows.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Node {
    /// Inclusive ranges; `true` when negated.
    Class(Vec<(char, char)>, bool),
    Group(Vec<Vec<Item>>),
}

#[derive(Debug)]
struct Item {
    node: Node,
    min: usize,
    max: usize,
}

fn parse_regex(pattern: &str) -> Vec<Vec<Item>> {
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or_else(|| panic!("pattern {pattern:?} is not anchored"));
    let chars: Vec<char> = inner.chars().collect();
    let mut pos = 0;
    let alternatives = parse_alternatives(&chars, &mut pos);
    assert_eq!(pos, chars.len(), "pattern {pattern:?} did not parse");
    alternatives
}

fn parse_alternatives(c: &[char], pos: &mut usize) -> Vec<Vec<Item>> {
    let mut alternatives = vec![Vec::new()];
    while *pos < c.len() && c[*pos] != ')' {
        if c[*pos] == '|' {
            *pos += 1;
            alternatives.push(Vec::new());
            continue;
        }
        let node = match c[*pos] {
            '(' => {
                *pos += 1;
                let group = parse_alternatives(c, pos);
                assert_eq!(c.get(*pos), Some(&')'));
                *pos += 1;
                Node::Group(group)
            }
            '[' => {
                *pos += 1;
                let negated = c[*pos] == '^';
                if negated {
                    *pos += 1;
                }
                let mut ranges = Vec::new();
                while c[*pos] != ']' {
                    let mut from = c[*pos];
                    if from == '\\' {
                        *pos += 1;
                        from = c[*pos];
                    }
                    *pos += 1;
                    let mut to = from;
                    if c[*pos] == '-' && c[*pos + 1] != ']' {
                        *pos += 1;
                        to = c[*pos];
                        if to == '\\' {
                            *pos += 1;
                            to = c[*pos];
                        }
                        *pos += 1;
                    }
                    ranges.push((from, to));
                }
                *pos += 1;
                Node::Class(ranges, negated)
            }
            '.' => {
                *pos += 1;
                Node::Class(vec![('\n', '\n')], true)
            }
            '\\' => {
                let ch = c[*pos + 1];
                *pos += 2;
                match ch {
                    'd' => Node::Class(vec![('0', '9')], false),
                    ch => Node::Class(vec![(ch, ch)], false),
                }
            }
            ch => {
                *pos += 1;
                Node::Class(vec![(ch, ch)], false)
            }
        };
        let (min, max) = match c.get(*pos) {
            Some('?') => (0, 1),
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('{') => {
                let end = (*pos..c.len()).find(|&i| c[i] == '}').unwrap();
                let spec: String = c[*pos + 1..end].iter().collect();
                *pos = end;
                match spec.split_once(',') {
                    None => (spec.parse().unwrap(), spec.parse().unwrap()),
                    Some((m, "")) => (m.parse().unwrap(), usize::MAX),
                    Some((m, n)) => (m.parse().unwrap(), n.parse().unwrap()),
                }
            }
            _ => (1, 1),
        };
        if (min, max) != (1, 1) {
            *pos += 1;
        }
        alternatives
            .last_mut()
            .unwrap()
            .push(Item { node, min, max });
    }
    alternatives
}

fn matches(pattern: &str, value: &str) -> bool {
    let regex = parse_regex(pattern);
    let s: Vec<char> = value.chars().collect();
    regex
        .iter()
        .any(|seq| match_items(seq, &s, 0, &|p| p == s.len()))
}

fn match_items(items: &[Item], s: &[char], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match items.split_first() {
        None => k(pos),
        Some((item, rest)) => match_repeat(item, 0, s, pos, &|p| match_items(rest, s, p, k)),
    }
}

fn match_repeat(
    item: &Item,
    count: usize,
    s: &[char],
    pos: usize,
    k: &dyn Fn(usize) -> bool,
) -> bool {
    if count < item.max
        && match_node(&item.node, s, pos, &|p| {
            p != pos && match_repeat(item, count + 1, s, p, k)
        })
    {
        return true;
    }
    count >= item.min && k(pos)
}

fn match_node(node: &Node, s: &[char], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match node {
        Node::Class(ranges, negated) => {
            pos < s.len()
                && ranges.iter().any(|(a, b)| (*a..=*b).contains(&s[pos])) != *negated
                && k(pos + 1)
        }
        Node::Group(alternatives) => alternatives.iter().any(|seq| match_items(seq, s, pos, k)),
    }
}

#[test]
fn the_matcher_reads_the_patterns_of_the_documents() {
    let key = "^[!#-~]([!-~]*[!#-~])?$";
    for good in ["a", "a\"b", "!", &"k".repeat(300)] {
        assert!(matches(key, good), "{good}");
    }
    for bad in ["", "\"a", "a\"", "\"", "a b", "é"] {
        assert!(!matches(key, bad), "{bad}");
    }
    assert!(matches("^[A-Za-z0-9_]+$", "tok_visa"));
    assert!(!matches("^[A-Za-z0-9_]+$", "tok-visa"));
    assert!(matches("^[0-9]{0,3}$", ""));
    assert!(!matches("^[0-9]{0,3}$", "1234"));
}

// ---------------------------------------------------------------------------------------------
// Values just inside and just outside a schema.
// ---------------------------------------------------------------------------------------------

/// Strings that match `pattern` (from the document), drawn by proptest from the pattern.
fn samples(pattern: &str, min: usize, max: usize) -> Vec<String> {
    // proptest draws from the pattern without its anchors (the matcher checks them).
    let bare = pattern.trim_start_matches('^').trim_end_matches('$');
    let strategy = proptest::string::string_regex(bare).unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut out = Vec::new();
    for _ in 0..400 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let len = value.chars().count();
        if (min..=max).contains(&len) && matches(pattern, &value) && !out.contains(&value) {
            out.push(value);
        }
        if out.len() == 6 {
            break;
        }
    }
    assert!(
        !out.is_empty(),
        "no sample of {pattern} within {min}..={max}"
    );
    out
}

/// A string of `len` characters matching `pattern` (ignoring length), made of one repeated
/// character of the samples.
fn of_length(pattern: &str, samples: &[String], len: usize) -> Option<String> {
    samples
        .iter()
        .flat_map(|s| s.chars())
        .map(|c| c.to_string().repeat(len))
        .find(|candidate| len == 0 || matches(pattern, candidate))
}

/// Values inside and outside a string schema: (inside, outside).
fn string_cases(schema: &Value) -> (Vec<String>, Vec<String>) {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().map(|m| m as usize);
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let mut outside = Vec::new();
        let first = &values[0];
        for candidate in [
            format!("{first}x"),
            first[..first.len() - 1].to_owned(),
            first.to_lowercase(),
        ] {
            if !values.contains(&candidate)
                && !candidate.is_empty()
                && !outside.contains(&candidate)
            {
                outside.push(candidate);
            }
        }
        return (values, outside);
    }
    let pattern = schema["pattern"].as_str().unwrap_or("^.*$");
    let within = max.unwrap_or(64).max(min);
    let samples = samples(pattern, min.max(1), within);
    let mut inside = samples.clone();
    let mut outside = Vec::new();
    for len in [Some(min.max(1)), max].into_iter().flatten() {
        inside.extend(of_length(pattern, &samples, len));
    }
    if min > 0 {
        outside.extend(of_length(pattern, &samples, min - 1));
    }
    if let Some(max) = max {
        outside.extend(of_length(pattern, &samples, max + 1));
    }
    if schema["pattern"].is_string() {
        // One character replaced by a probe the pattern refuses, at the start, middle and end.
        let probes = [' ', '"', '-', '.', 'é', '~', '<', '_', '\u{7f}'];
        for sample in samples.iter().take(3) {
            let chars: Vec<char> = sample.chars().collect();
            for at in [0, chars.len() / 2, chars.len() - 1] {
                for probe in probes {
                    let mut c = chars.clone();
                    c[at] = probe;
                    let candidate: String = c.into_iter().collect();
                    if !matches(pattern, &candidate) && !outside.contains(&candidate) {
                        outside.push(candidate);
                    }
                }
            }
        }
    }
    (inside, outside)
}

/// Values just inside and just outside a constrained integer or string schema, as JSON.
fn bound_cases(schema: &Value) -> (Vec<Value>, Vec<Value>) {
    fn json<T: Into<Value>>((inside, outside): (Vec<T>, Vec<T>)) -> (Vec<Value>, Vec<Value>) {
        (
            inside.into_iter().map(Into::into).collect(),
            outside.into_iter().map(Into::into).collect(),
        )
    }
    if is_integer(schema) {
        json(integer_cases(schema))
    } else {
        json(string_cases(schema))
    }
}

/// Values inside and outside an integer schema.
fn integer_cases(schema: &Value) -> (Vec<i64>, Vec<i64>) {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    if let Some(min) = schema["minimum"].as_i64() {
        inside.push(min);
        outside.push(min - 1);
    }
    if let Some(max) = schema["maximum"].as_i64() {
        inside.push(max);
        outside.push(max + 1);
    }
    (inside, outside)
}

/// Values the schema allows because it lacks a keyword (no `maximum`, `maxLength`, `minLength`
/// or `pattern`): the server must accept them too, or it enforces what the document omits.
fn free_cases(schema: &Value) -> Vec<Value> {
    let mut free = Vec::new();
    if schema.get("enum").is_some() {
        return free;
    }
    if is_integer(schema) {
        let int32 = schema["format"] == "int32";
        if schema.get("maximum").is_none() {
            free.push(Value::from(if int32 {
                i64::from(i32::MAX)
            } else {
                i64::MAX
            }));
        }
        if schema.get("minimum").is_none() {
            free.push(Value::from(if int32 {
                i64::from(i32::MIN)
            } else {
                i64::MIN
            }));
        }
        return free;
    }
    if !is_string(schema) {
        return free;
    }
    let pattern = schema["pattern"].as_str();
    let allowed = |v: &str| pattern.is_none_or(|p| matches(p, v));
    if schema.get("maxLength").is_none() {
        let long = match pattern {
            None => "é".repeat(2000),
            Some(p) => of_length(p, &samples(p, 1, 64), 2000).unwrap_or_default(),
        };
        if allowed(&long) && !long.is_empty() {
            free.push(Value::from(long));
        }
    }
    if schema.get("minLength").is_none() && allowed("") {
        free.push(Value::from(""));
    }
    if pattern.is_none() {
        free.push(Value::from("a b<é>\"\\"));
    }
    free
}

fn is_string(schema: &Value) -> bool {
    schema["type"] == "string"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("string")))
}

fn is_integer(schema: &Value) -> bool {
    schema["type"] == "integer"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("integer")))
}

/// A schema with its `$ref` resolved.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn constrained(schema: &Value) -> bool {
    [
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "enum",
        "maxProperties",
        "propertyNames",
    ]
    .iter()
    .any(|k| schema.get(k).is_some())
}

// ---------------------------------------------------------------------------------------------
// Sending one variation of an operation's valid request.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Change {
    None,
    Query(String, Value),
    Header(Option<String>),
    Path(String, String),
    Body(Value),
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

/// How to send a valid request of an operation, and what a refusal of one value looks like.
struct Operation<'a> {
    base: &'a str,
    method: &'a str,
    path: &'a str,
    /// A valid body (the bank's reference and the key are filled in per request).
    body: Option<Value>,
    auth: bool,
    /// `true` for the bank: the `Idempotency-Key` must equal the body's `reference`.
    key_is_reference: bool,
    /// Valid values of the path parameters.
    path_params: &'a [(&'a str, &'a str)],
    /// Parameters left as in `path_params` (their valid values are what exists, such as a
    /// payment id, which no schema can tell).
    fixed: &'a [&'a str],
}

impl Operation<'_> {
    async fn send(&self, client: &reqwest::Client, change: &Change) -> Answer {
        let mut path = self.path.to_owned();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut body = self.body.clone();
        let fresh = uuid::Uuid::new_v4().to_string();
        let mut key = body.as_ref().map(|_| Some(fresh.clone()));
        if self.key_is_reference {
            if let Some(body) = body.as_mut() {
                body["reference"] = Value::from(fresh.clone());
            }
        }
        match change {
            Change::None => {}
            Change::Query(name, value) => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                query.push((name.clone(), text));
            }
            Change::Header(value) => {
                key = Some(value.clone());
                if self.key_is_reference {
                    if let (Some(body), Some(v)) = (body.as_mut(), value) {
                        body["reference"] = Value::from(v.clone());
                    }
                }
            }
            Change::Path(name, value) => {
                let encoded: String = value
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                path = path.replace(&format!("{{{name}}}"), &encoded);
            }
            Change::Body(new) => {
                body = Some(new.clone());
                if self.key_is_reference {
                    // Every request its own reference, unless the reference is what varies.
                    if let Some(body) = body
                        .as_mut()
                        .filter(|b| b["reference"] == self.body.as_ref().unwrap()["reference"])
                    {
                        body["reference"] = Value::from(fresh.clone());
                    }
                    let new = body.as_ref().unwrap();
                    if let Some(reference) = new["reference"].as_str() {
                        key = Some(Some(reference.to_owned()));
                    }
                }
            }
        }
        for (name, value) in self.path_params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        let method = reqwest::Method::from_bytes(self.method.to_uppercase().as_bytes()).unwrap();
        let mut request = client
            .request(method, format!("{}{path}", self.base))
            .query(&query);
        if self.auth {
            request = request.bearer_auth(key_for(self.method, self.path));
        }
        // A value a header cannot carry (the bank's key copies a bad reference) is left out.
        let key = key
            .flatten()
            .and_then(|k| reqwest::header::HeaderValue::from_bytes(k.as_bytes()).ok());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.bytes().await.unwrap();
        Answer {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

/// Walks one operation of `doc`; returns how many constrained values it checked.
async fn walk(doc: &Value, op: &Operation<'_>, client: &reqwest::Client) -> usize {
    let spec = &doc["paths"][op.path][op.method];
    assert!(
        spec.is_object(),
        "{} {} is not documented",
        op.method,
        op.path
    );
    let documented = |status: u16| spec["responses"].get(status.to_string()).is_some();
    let what = format!("{} {}", op.method, op.path);
    let mut checked = 0;

    let accepted = |answer: &Answer, change: &Change| {
        assert!(
            (200..300).contains(&answer.status) || answer.status == 402,
            "{what}: {change:?} is inside the documented schema but was refused: {} {}",
            answer.status,
            answer.body
        );
        assert!(
            documented(answer.status),
            "{what}: {} is not documented",
            answer.status
        );
    };
    let refused = |answer: &Answer, change: &Change, field: &str| {
        assert!(
            (400..500).contains(&answer.status),
            "{what}: {change:?} is outside the documented schema but was answered {} {}",
            answer.status,
            answer.body
        );
        assert_eq!(
            answer.content_type, "application/problem+json",
            "{what}: {change:?}"
        );
        assert!(
            answer.body["code"].is_string(),
            "{what}: {change:?}: {}",
            answer.body
        );
        if let Some(named) = answer.body["field"].as_str() {
            // The bank's key is the body's reference: a bad key is a bad reference too.
            let alias = op.key_is_reference && named == "reference";
            assert!(
                named == field || alias,
                "{what}: {change:?} refused for {named}: {}",
                answer.body
            );
        }
        assert!(
            documented(answer.status),
            "{what}: {} is not documented ({change:?})",
            answer.status
        );
    };

    // The valid request itself.
    let answer = op.send(client, &Change::None).await;
    accepted(&answer, &Change::None);

    // Parameters.
    for param in spec["parameters"].as_array().into_iter().flatten() {
        let name = param["name"].as_str().unwrap().to_owned();
        if op.fixed.contains(&name.as_str()) {
            continue;
        }
        let schema = resolve(doc, &param["schema"]);
        let location = param["in"].as_str().unwrap();
        let change = |value: Value| match location {
            "query" => Change::Query(name.clone(), value),
            "header" => Change::Header(value.as_str().map(str::to_owned)),
            "path" => Change::Path(name.clone(), value.as_str().unwrap().to_owned()),
            other => panic!("{what}: parameter in {other}"),
        };
        if param["required"] == true && location == "header" {
            let change = Change::Header(None);
            refused(&op.send(client, &change).await, &change, &name);
            checked += 1;
        }
        for value in free_cases(schema) {
            let text = value.as_str().map(str::to_owned);
            // A header cannot carry an empty, untrimmed or non-ASCII value as written.
            if location == "header"
                && text.as_ref().is_none_or(|t| {
                    t.is_empty() || t.trim() != t || !t.is_ascii() || t.contains(' ')
                })
            {
                continue;
            }
            let change = change(value);
            accepted(&op.send(client, &change).await, &change);
            checked += 1;
        }
        if !constrained(schema) {
            continue;
        }
        let (inside, mut outside) = bound_cases(schema);
        if location == "header" {
            // A header cannot carry leading or trailing whitespace or control bytes.
            outside.retain(|v| {
                v.as_str().is_none_or(|v| {
                    v.trim() == v && reqwest::header::HeaderValue::from_str(v).is_ok()
                })
            });
        }
        assert!(
            !outside.is_empty(),
            "{what}: no value outside the schema of {name}"
        );
        for value in inside {
            let change = change(value);
            accepted(&op.send(client, &change).await, &change);
            checked += 1;
            if op.path == "/v1/breaker/{action}" {
                // Leave the breaker as it was for the next request.
                let reset = Change::Path(name.clone(), "reset".to_owned());
                accepted(&op.send(client, &reset).await, &reset);
            }
        }
        for value in outside {
            let change = change(value);
            refused(&op.send(client, &change).await, &change, &name);
            checked += 1;
        }
    }

    // The body.
    if let Some(base) = &op.body {
        let reference = &spec["requestBody"]["content"]["application/json"]["schema"];
        let schema = resolve(doc, reference);
        assert_eq!(
            schema["additionalProperties"], false,
            "{what}: unknown fields are refused"
        );
        let mut unknown = base.clone();
        unknown["unknown_field"] = Value::from(1);
        let change = Change::Body(unknown);
        refused(&op.send(client, &change).await, &change, "unknown_field");
        checked += 1;
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            let mut missing = base.clone();
            missing.as_object_mut().unwrap().remove(required);
            let change = Change::Body(missing);
            refused(&op.send(client, &change).await, &change, required);
            checked += 1;
        }
        let properties = schema["properties"].as_object().unwrap();
        // Sibling enums, for bounds that hold for some completion only (an amount's bound
        // depends on the currency).
        let enums: Vec<(String, Vec<Value>)> = properties
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s["enum"].as_array()?.clone())))
            .collect();
        for (field, property) in properties {
            let property = resolve(doc, property);
            let with = |value: Value| {
                let mut body = base.clone();
                body[field.as_str()] = value;
                body
            };
            // The wrong type.
            let wrong = if is_integer(property) {
                json!("1")
            } else {
                json!(1)
            };
            let change = Change::Body(with(wrong));
            refused(&op.send(client, &change).await, &change, field);
            checked += 1;
            if property["type"] == "object" || property.get("maxProperties").is_some() {
                checked += walk_map(op, client, base, field, property, &accepted, &refused).await;
                continue;
            }
            for value in free_cases(property) {
                let change = Change::Body(with(value));
                accepted(&op.send(client, &change).await, &change);
                checked += 1;
            }
            if !constrained(property) {
                continue;
            }
            let (inside, outside) = bound_cases(property);
            assert!(
                !outside.is_empty(),
                "{what}: no value outside the schema of {field}"
            );
            // Completions: the base body, then each value of each sibling enum.
            let completions = |body: Value| {
                let mut all = vec![body.clone()];
                for (sibling, values) in &enums {
                    if sibling != field {
                        for v in values {
                            let mut b = body.clone();
                            b[sibling.as_str()] = v.clone();
                            all.push(b);
                        }
                    }
                }
                all
            };
            for value in inside {
                let mut last = None;
                for body in completions(with(value.clone())) {
                    let change = Change::Body(body);
                    let answer = op.send(client, &change).await;
                    if (200..300).contains(&answer.status) || answer.status == 402 {
                        last = None;
                        accepted(&answer, &change);
                        break;
                    }
                    last = Some((answer, change));
                }
                if let Some((answer, change)) = last {
                    accepted(&answer, &change);
                }
                checked += 1;
            }
            for value in outside {
                let bodies = completions(with(value));
                // Every completion is refused; sending them all for a long enum is enough
                // for the bounds that depend on it (the amount), a few for the rest.
                let take = if is_integer(property) {
                    bodies.len()
                } else {
                    3
                };
                for body in bodies.into_iter().take(take) {
                    let change = Change::Body(body);
                    refused(&op.send(client, &change).await, &change, field);
                }
                checked += 1;
            }
        }
    }
    checked
}

/// A map property: `maxProperties`, `propertyNames` and the values' schema.
async fn walk_map(
    op: &Operation<'_>,
    client: &reqwest::Client,
    base: &Value,
    field: &str,
    schema: &Value,
    accepted: &dyn Fn(&Answer, &Change),
    refused: &dyn Fn(&Answer, &Change, &str),
) -> usize {
    let value_schema = &schema["additionalProperties"];
    let value_max = value_schema["maxLength"].as_u64().unwrap_or(10) as usize;
    let names = &schema["propertyNames"];
    let name_min = names["minLength"].as_u64().unwrap_or(0) as usize;
    let name_max = names["maxLength"].as_u64().unwrap_or(16) as usize;
    let max_properties = schema["maxProperties"].as_u64().expect("a bounded map") as usize;
    let send_map = |map: Map<String, Value>| {
        let mut body = base.clone();
        body[field] = Value::Object(map);
        Change::Body(body)
    };
    let mut cases: Vec<(Map<String, Value>, bool)> = Vec::new();
    let n = |count: usize| -> Map<String, Value> {
        (0..count).map(|i| (format!("k{i}"), json!("v"))).collect()
    };
    cases.push((n(max_properties), true));
    cases.push((n(max_properties + 1), false));
    // Names and values counted in characters, as JSON Schema does.
    cases.push((Map::from_iter([("é".repeat(name_max), json!("v"))]), true));
    cases.push((
        Map::from_iter([("é".repeat(name_max + 1), json!("v"))]),
        false,
    ));
    if name_min > 0 {
        cases.push((Map::from_iter([("".to_owned(), json!("v"))]), false));
    }
    if value_schema["maxLength"].is_u64() {
        cases.push((
            Map::from_iter([("k".to_owned(), json!("é".repeat(value_max)))]),
            true,
        ));
        cases.push((
            Map::from_iter([("k".to_owned(), json!("é".repeat(value_max + 1)))]),
            false,
        ));
    }
    if value_schema["type"] == "string" {
        cases.push((Map::from_iter([("k".to_owned(), json!(1))]), false));
    }
    let count = cases.len();
    for (map, inside) in cases {
        let change = send_map(map);
        let answer = op.send(client, &change).await;
        if inside {
            accepted(&answer, &change);
        } else {
            refused(&answer, &change, field);
        }
    }
    count
}

/// Every constrained parameter and body property of `doc` belongs to an operation walked here.
fn assert_all_walked(doc: &Value, walked: &[(&str, &str)]) {
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, spec) in item.as_object().unwrap() {
            let params = spec["parameters"].as_array().into_iter().flatten();
            let constrained_param = params
                .filter(|p| constrained(resolve(doc, &p["schema"])))
                .map(|p| p["name"].clone())
                .collect::<Vec<_>>();
            let body = spec["requestBody"]["content"]["application/json"]["schema"].is_object();
            if !constrained_param.is_empty() || body {
                assert!(
                    walked.contains(&(method.as_str(), path.as_str())),
                    "{method} {path} has constraints ({constrained_param:?}, body: {body}) that no walk checks"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_constraint_of_the_api_document_is_what_the_api_enforces() {
    let system = start(|_| {}).await;
    let doc = document(&system.client, &system.api).await;
    // The currency list is generated from the accepted currencies, not typed by hand.
    let currencies = doc["components"]["schemas"]["CreatePayment"]["properties"]["currency"]
        ["enum"]
        .as_array()
        .unwrap();
    assert_eq!(
        currencies.len(),
        payment_types::currency::Currency::all().len()
    );
    // A payment to read back: `GET /v1/payments/{id}` is walked on it.
    let created = system
        .client
        .post(format!("{}/v1/payments", system.api))
        .bearer_auth(KEY)
        .header("idempotency-key", "contract-read")
        .json(&json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let payment_id = created["id"].as_str().unwrap().to_owned();
    let read_params = [("id", payment_id.as_str())];
    let ops = [
        Operation {
            base: &system.api,
            method: "get",
            path: "/v1/payments/{id}",
            body: None,
            auth: true,
            key_is_reference: false,
            path_params: &read_params,
            fixed: &["id"],
        },
        Operation {
            base: &system.api,
            method: "post",
            path: "/v1/payments",
            body: Some(json!({"amount": 1999, "currency": "TRY", "source": "tok_visa"})),
            auth: true,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.api,
            method: "get",
            path: "/v1/payments",
            body: None,
            auth: true,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.api,
            method: "get",
            path: "/v1/logs",
            body: None,
            auth: true,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.api,
            method: "get",
            path: "/v1/events",
            body: None,
            auth: true,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.api,
            method: "post",
            path: "/v1/breaker/{action}",
            body: None,
            auth: true,
            key_is_reference: false,
            path_params: &[("action", "reset")],
            fixed: &[],
        },
    ];
    assert_all_walked(
        &doc,
        &ops.iter().map(|o| (o.method, o.path)).collect::<Vec<_>>(),
    );
    let mut checked = 0;
    for op in &ops {
        checked += walk(&doc, op, &system.client).await;
    }
    assert!(checked > 40, "only {checked} values checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_constraint_of_the_bank_document_is_what_the_bank_enforces() {
    let system = start(|_| {}).await;
    let doc = document(&system.client, &system.bank).await;
    let ops = [
        Operation {
            base: &system.bank,
            method: "post",
            path: "/v1/charges",
            body: Some(
                json!({"amount": 1999, "currency": "TRY", "source": "tok_visa", "reference": "r"}),
            ),
            auth: false,
            key_is_reference: true,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.bank,
            method: "get",
            path: "/v1/ledger",
            body: None,
            auth: false,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
        Operation {
            base: &system.bank,
            method: "get",
            path: "/v1/logs",
            body: None,
            auth: false,
            key_is_reference: false,
            path_params: &[],
            fixed: &[],
        },
    ];
    let mut walked: Vec<(&str, &str)> = ops.iter().map(|o| (o.method, o.path)).collect();
    walked.push(("put", "/v1/chaos"));
    assert_all_walked(&doc, &walked);
    let mut checked = 0;
    for op in &ops {
        checked += walk(&doc, op, &system.client).await;
    }
    checked += walk_chaos(&doc, &system.bank, &system.client).await;
    assert!(checked > 20, "only {checked} values checked");
}

/// `PUT /v1/chaos`: one of a preset, a scenario or a profile (`oneOf` in the document), each
/// walked from its schema: enums, `minItems`/`maxItems`, numeric bounds of nested objects.
async fn walk_chaos(doc: &Value, bank: &str, client: &reqwest::Client) -> usize {
    let spec = &doc["paths"]["/v1/chaos"]["put"];
    let documented = |status: u16| spec["responses"].get(status.to_string()).is_some();
    let put = |body: Value| async move {
        let response = client
            .put(format!("{bank}/v1/chaos"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        (status, content_type, answer, body)
    };
    let accepted = |(status, _, answer, body): (u16, String, Value, Value)| {
        assert_eq!(
            status, 200,
            "PUT /v1/chaos {body} is inside the schema: {answer}"
        );
    };
    let refused = |(status, content_type, answer, body): (u16, String, Value, Value)| {
        assert!(
            (400..500).contains(&status) && documented(status),
            "PUT /v1/chaos {body} is outside the schema: {status} {answer}"
        );
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert!(answer["code"].is_string(), "{body}: {answer}");
    };
    let alternatives = spec["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
        .as_array()
        .expect("PUT /v1/chaos takes one of several shapes");
    let mut checked = 0;
    for alternative in alternatives {
        let schema = resolve(doc, alternative);
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(schema["additionalProperties"], false, "{schema}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // A valid body of this shape: its required members at a valid value.
        let valid = |name: &str, property: &Value| -> Value {
            let property = resolve(doc, property);
            if let Some(values) = property["enum"].as_array() {
                return values[0].clone();
            }
            if property["type"] == "array" {
                let item = resolve(doc, &property["items"]);
                let step: Map<String, Value> = item["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let r = r.as_str().unwrap();
                        let p = resolve(doc, &item["properties"][r]);
                        let v = p["enum"].get(0).cloned().unwrap_or_else(|| json!(0));
                        (r.to_owned(), v)
                    })
                    .collect();
                return json!([step]);
            }
            panic!("no valid value for {name}: {property}")
        };
        let base: Map<String, Value> = required
            .iter()
            .map(|r| ((*r).to_owned(), valid(r, &properties[*r])))
            .collect();
        let base = Value::Object(base);
        accepted(put(base.clone()).await);
        let mut unknown = base.clone();
        unknown["unknown_field"] = json!(1);
        refused(put(unknown).await);
        checked += 2;
        for (name, property) in properties {
            let property = resolve(doc, property);
            let with = |value: Value| {
                let mut body = base.clone();
                body[name.as_str()] = value;
                body
            };
            // One level of nesting: `errors`, `latency`.
            let leaves: Vec<(Vec<&str>, &Value)> = if property["type"] == "object" {
                let nested = property["properties"].as_object().unwrap();
                nested
                    .iter()
                    .map(|(k, p)| (vec![name.as_str(), k.as_str()], resolve(doc, p)))
                    .collect()
            } else {
                vec![(vec![name.as_str()], property)]
            };
            for (path, leaf) in leaves {
                let set = |value: Value| {
                    let mut body = base.clone();
                    let mut at = &mut body;
                    for key in &path[..path.len() - 1] {
                        if at.get(*key).is_none() {
                            at[*key] = json!({});
                        }
                        at = &mut at[*key];
                    }
                    at[*path.last().unwrap()] = value;
                    body
                };
                let number = leaf["type"] == "number";
                let step = if number { 0.001 } else { 1.0 };
                if is_integer(leaf) || number {
                    for value in free_cases(leaf) {
                        accepted(put(set(value)).await);
                    }
                    if let Some(min) = leaf["minimum"].as_f64() {
                        if number {
                            accepted(put(set(json!(min))).await);
                            refused(put(set(json!(min - step))).await);
                        } else {
                            accepted(put(set(json!(min as i64))).await);
                            refused(put(set(json!(min as i64 - 1))).await);
                        }
                    }
                    if let Some(max) = leaf["maximum"].as_f64() {
                        let max = if number {
                            json!(max)
                        } else {
                            json!(max as i64)
                        };
                        accepted(put(set(max.clone())).await);
                        let over = if number {
                            json!(max.as_f64().unwrap() + step)
                        } else {
                            json!(max.as_i64().unwrap() + 1)
                        };
                        refused(put(set(over)).await);
                    }
                    refused(put(set(json!("1"))).await);
                    checked += 1;
                } else if let Some(values) = leaf["enum"].as_array() {
                    for value in values {
                        accepted(put(set(value.clone())).await);
                    }
                    let first = values[0].as_str().unwrap();
                    refused(put(set(json!(format!("{first}x")))).await);
                    checked += 1;
                } else if property["type"] == "array" {
                    let item = base[name.as_str()][0].clone();
                    if let Some(min) = property["minItems"].as_u64() {
                        accepted(put(with(json!(vec![item.clone(); min as usize]))).await);
                        if min > 0 {
                            refused(put(with(json!(vec![item.clone(); min as usize - 1]))).await);
                        }
                    }
                    if let Some(max) = property["maxItems"].as_u64() {
                        accepted(put(with(json!(vec![item.clone(); max as usize]))).await);
                        refused(put(with(json!(vec![item.clone(); max as usize + 1]))).await);
                    }
                    // The items: each bounded member of a step.
                    let schema = resolve(doc, &property["items"]);
                    for (member, s) in schema["properties"].as_object().unwrap() {
                        let s = resolve(doc, s);
                        let one = |value: Value| {
                            let mut step = item.clone();
                            step[member.as_str()] = value;
                            with(json!([step]))
                        };
                        if let Some(max) = s["maximum"].as_i64() {
                            accepted(put(one(json!(max))).await);
                            refused(put(one(json!(max + 1))).await);
                        }
                        if let Some(values) = s["enum"].as_array() {
                            for value in values {
                                accepted(put(one(value.clone())).await);
                            }
                            refused(put(one(json!("nopex"))).await);
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // Leave the bank healthy.
    accepted(put(json!({"preset": "healthy"})).await);
    checked
}

// ---------------------------------------------------------------------------------------------
// Layer errors are problems too.
// ---------------------------------------------------------------------------------------------

/// [`e2e::raw_http::raw`] to a base URL (`http://host:port`).
async fn raw(base: &str, request: &[u8]) -> (u16, String, Value) {
    e2e::raw_http::raw(base.trim_start_matches("http://"), request).await
}

#[tokio::test]
async fn errors_from_the_http_layer_are_problem_json_with_a_code() {
    let system = start(|_| {}).await;
    let api = &system.api;
    let auth = format!("authorization: Bearer {KEY}\r\n");
    // Over the body limit, announced by Content-Length (2 MiB and 64 KiB + 1): answered before
    // the body is read, so none is sent.
    for length in [2 * 1024 * 1024, 64 * 1024 + 1] {
        let request = format!(
            "POST /v1/payments HTTP/1.1\r\nhost: t\r\n{auth}idempotency-key: big-{length}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        let answer = raw(api, request.as_bytes()).await;
        assert_problem(&format!("{length} bytes"), &answer, 413, "body_too_large");
    }
    // Over the limit, chunked (no Content-Length): refused once the limit is crossed.
    let chunk = "x".repeat(64 * 1024 + 1);
    let request = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: t\r\n{auth}idempotency-key: big-chunked\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_problem(
        "chunked",
        &raw(api, request.as_bytes()).await,
        413,
        "body_too_large",
    );
    // Method not allowed, with Allow; unknown routes, also under /docs.
    let answer = raw(api, b"DELETE /v1/payments HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("DELETE", &answer, 405, "method_not_allowed");
    assert!(
        answer.1.contains("\r\nallow: "),
        "405 names the allowed methods: {}",
        answer.1
    );
    let answer = raw(api, b"PATCH /health HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_problem("PATCH /health", &answer, 405, "method_not_allowed");
    for path in ["/nope", "/v1", "/docs/nope.js"] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
        assert_problem(path, &raw(api, request.as_bytes()).await, 404, "not_found");
    }
    // Malformed requests that reach our code.
    let post = |content_type: &str, body: &str| {
        format!(
            "POST /v1/payments HTTP/1.1\r\nhost: t\r\n{auth}idempotency-key: k-{}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            uuid::Uuid::new_v4(),
            body.len()
        )
    };
    let answer = raw(api, post("text/plain", "{}").as_bytes()).await;
    assert_problem("text/plain", &answer, 415, "unsupported_media_type");
    let answer = raw(api, post("application/json", "{\"amount\":").as_bytes()).await;
    assert_problem("truncated JSON", &answer, 400, "malformed_json");
    let answer = raw(api, post("application/json", "[1,2]").as_bytes()).await;
    assert_problem("not an object", &answer, 422, "invalid_body");
    // Bad query strings and path parameters.
    for query in [
        "limit=abc",
        "limit=%FF",
        "status=nope",
        "nope=1",
        "limit=1&limit=2",
    ] {
        let request = format!("GET /v1/payments?{query} HTTP/1.1\r\nhost: t\r\n{auth}\r\n");
        let answer = raw(api, request.as_bytes()).await;
        assert_problem(query, &answer, 400, "invalid_query");
    }
    let operator = format!("authorization: Bearer {OPERATOR_KEY}\r\n");
    let request = format!("GET /v1/logs?after=-1 HTTP/1.1\r\nhost: t\r\n{operator}\r\n");
    let answer = raw(api, request.as_bytes()).await;
    assert_problem("after=-1", &answer, 400, "invalid_query");
    for path in ["/v1/payments/%FF", "/v1/breaker/%C3%28"] {
        let method = if path.contains("breaker") {
            "POST"
        } else {
            "GET"
        };
        let auth = if path.contains("breaker") {
            &operator
        } else {
            &auth
        };
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: t\r\n{auth}content-length: 0\r\n\r\n");
        assert_problem(
            path,
            &raw(api, request.as_bytes()).await,
            400,
            "invalid_path",
        );
    }
}

#[tokio::test]
async fn a_request_over_the_request_timeout_is_a_408_problem() {
    let system = start(|config| {
        config.resilience.deadline_ms = 300;
        config.edge.request_timeout_ms = 1000;
    })
    .await;
    // Headers announce a body that never comes: the handler waits for it until the timeout.
    let request = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {KEY}\r\nidempotency-key: slow\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"amount\""
    );
    let started = std::time::Instant::now();
    let answer = raw(&system.api, request.as_bytes()).await;
    assert_problem("slow body", &answer, 408, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

// ---------------------------------------------------------------------------------------------
// The documents against the README, and their error answers.
// ---------------------------------------------------------------------------------------------

/// (statuses, codes) of each row of the README's outcome table for `POST /v1/payments`.
fn readme_outcomes() -> Vec<(Vec<u16>, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| situation | status | `code`"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(table.len() > 15, "the outcome table: {} rows", table.len());
    table
        .iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let statuses = cells[2]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| s.len() == 3)
                .map(|s| s.parse().unwrap())
                .collect();
            let codes = cells[3]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (statuses, codes)
        })
        .collect()
}

#[tokio::test]
async fn the_readme_outcome_table_agrees_with_the_document() {
    let system = start(|_| {}).await;
    let doc = document(&system.client, &system.api).await;
    let responses = doc["paths"]["/v1/payments"]["post"]["responses"]
        .as_object()
        .unwrap();
    let outcomes = readme_outcomes();
    for (statuses, codes) in &outcomes {
        for (i, status) in statuses.iter().enumerate() {
            let response = &responses
                .get(&status.to_string())
                .unwrap_or_else(|| panic!("README's {status} is not documented"));
            let description = response["description"].as_str().unwrap();
            // `400 / 415 / 413` pair with `a / b / c`; one status takes every code of its row.
            let mine: Vec<&String> = if statuses.len() == codes.len() && statuses.len() > 1 {
                vec![&codes[i]]
            } else {
                codes.iter().collect()
            };
            for code in mine {
                assert!(
                    description.contains(&format!("`{code}`")),
                    "README: {status} `{code}`; the document says: {description}"
                );
            }
        }
    }
    // And every status the document gives a payment is in the README.
    for status in responses.keys() {
        let status: u16 = status.parse().unwrap();
        assert!(
            outcomes.iter().any(|(s, _)| s.contains(&status)),
            "{status} is documented but not in the README's outcome table"
        );
    }
}

#[tokio::test]
async fn every_error_answer_in_both_documents_is_a_problem() {
    let system = start(|_| {}).await;
    for base in [&system.api, &system.bank] {
        let doc = document(&system.client, base).await;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, spec) in item.as_object().unwrap() {
                for (status, response) in spec["responses"].as_object().unwrap() {
                    if status.as_str() < "400" {
                        continue;
                    }
                    let content = response["content"].as_object();
                    let types: Vec<&String> = content.into_iter().flat_map(|c| c.keys()).collect();
                    assert_eq!(
                        types,
                        ["application/problem+json"],
                        "{base}: {method} {path} {status}"
                    );
                }
            }
        }
    }
}
