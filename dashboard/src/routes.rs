//! The dashboard's HTTP surface: the page and its assets (embedded at compile time), `/health`,
//! and the small same-origin JSON API the page uses (`/api/*`).
//!
//! The page talks only to this server; this server adds the API keys and each bank's token. Every
//! `/api/*` request must name this server by an IP literal or `localhost` (so a DNS-rebinding
//! page cannot reach it under its own name), and every mutating one must carry `X-Dashboard: 1`
//! and, when the browser sends them, a same-origin `Origin` and `Sec-Fetch-Site`: a cross-site
//! form or script cannot send payments, change chaos or move the breaker.
//!
//! With several banks, chaos and breaker calls name their bank with `?bank=NAME` (the page's
//! name for it, from the overview's `banks`); without it they act on the first bank, as the
//! one-bank page always did.
//!
//! Every answer carries a content security policy that allows only this origin, with no inline
//! script or style, so the page can load nothing from elsewhere even if a payment description
//! contained markup.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{
    history::History,
    receiver::{self, Receiver, ReceiverChaos},
    shape,
    traffic::{PaymentSpec, SteadyRequest, Traffic, MAX_BURST},
    upstream::{Key, Upstream, UpstreamError},
};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The header every mutating `/api/*` request must carry. A cross-origin page cannot add it
/// without a CORS preflight, which this server never approves.
pub(crate) const CSRF_HEADER: &str = "x-dashboard";

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) history: Arc<History>,
    pub(crate) traffic: Arc<Traffic>,
    /// The demo webhook receiver (its secrets, deliveries and chaos).
    pub(crate) webhooks: Arc<Receiver>,
}

type Shared = State<Arc<AppState>>;

/// The router with every layer; pure, so tests drive it with `oneshot`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/overview", get(overview))
        .route("/logs", get(logs))
        .route("/payments", get(list_payments))
        .route("/payments/{id}", get(payment_details))
        .route("/payments/one", post(send_one))
        .route("/payments/burst", post(burst))
        .route("/payments/replay-last", post(replay_last))
        .route(
            "/traffic",
            get(traffic_state).post(start_traffic).delete(stop_traffic),
        )
        .route("/chaos", get(chaos).put(put_chaos))
        .route("/breaker/{action}", post(breaker))
        .route("/webhooks", get(webhooks_view))
        .route(
            "/webhooks/receiver-chaos",
            get(receiver_chaos).put(put_receiver_chaos),
        )
        .fallback(|| async { DashError::NotFound })
        .layer(middleware::from_fn(guard))
        .with_state(Arc::clone(&state));
    // Outside `/api` and its guard: the payment API posts here, from any host name, and what
    // authenticates a delivery is its signature.
    let hooks = Router::new()
        .route("/webhooks/receiver", post(receiver::receive))
        .with_state(Arc::clone(&state.webhooks));
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/health",
            get(|| async { Json(json!({ "status": "ok", "service": "dashboard" })) }),
        )
        .nest("/api", api)
        .merge(hooks)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Every way a `/api/*` call fails, each one status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DashError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            DashError::Upstream(UpstreamError::NoApiKey) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_api_key")
            }
            DashError::Upstream(UpstreamError::NoOperatorKey) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_operator_key")
            }
            DashError::Upstream(UpstreamError::Unreachable { .. }) => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            }
            DashError::Upstream(UpstreamError::UnknownBank(_)) => {
                (StatusCode::NOT_FOUND, "unknown_bank")
            }
            DashError::Conflict(_) => (StatusCode::CONFLICT, "not_supported"),
            DashError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            DashError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            DashError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard API call failed");
        }
        (
            status,
            Json(json!({ "error": code, "detail": self.to_string() })),
        )
            .into_response()
    }
}

/// The host check for every `/api/*` call, and the cross-site checks for mutating ones.
async fn guard(request: Request, next: Next) -> Result<Response, DashError> {
    check_request(request.method(), request.headers())?;
    Ok(next.run(request).await)
}

pub(crate) fn check_request(method: &Method, headers: &HeaderMap) -> Result<(), DashError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    if !host_is_local_name(host) {
        return Err(DashError::Forbidden(
            "open the dashboard by IP address or localhost",
        ));
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    if headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(DashError::Forbidden("missing X-Dashboard: 1"));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let expected = format!("http://{host}");
        if !origin.eq_ignore_ascii_case(&expected) {
            return Err(DashError::Forbidden("cross-origin request refused"));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return Err(DashError::Forbidden("cross-site request refused"));
        }
    }
    Ok(())
}

/// `localhost` or an IP literal, with an optional port: names a rebinding attack cannot use.
fn host_is_local_name(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[derive(Debug, Deserialize)]
struct OverviewQuery {
    /// The last history sample the page has; only newer ones are sent.
    since: Option<u64>,
}

/// Each bank's answer to `GET path`, by bank name, all banks at once (a bank that hangs costs
/// its timeout once, not once per bank after it).
pub(crate) async fn bank_answers(
    upstream: &Arc<Upstream>,
    path: &'static str,
) -> BTreeMap<String, Result<Value, String>> {
    let mut calls = tokio::task::JoinSet::new();
    for bank in upstream.banks() {
        let upstream = Arc::clone(upstream);
        let name = bank.name.clone();
        calls.spawn(async move {
            let answer = ok_json(upstream.bank_get(&name, path).await);
            (name, answer)
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((name, answer)) = joined {
            answers.insert(name, answer);
        }
    }
    answers
}

/// How far back the cascades-per-minute rate looks.
const CASCADE_WINDOW_MS: u64 = 60_000;

/// `GET /api/overview`: API status and the banks' statuses, shaped, with history and traffic.
async fn overview(State(state): Shared, Query(query): Query<OverviewQuery>) -> Json<Value> {
    let (api, banks) = tokio::join!(
        state.upstream.api_get("/v1/status", Key::Operator),
        bank_answers(&state.upstream, "/v1/status"),
    );
    let now = crate::now_ms();
    let api = ok_json(api);
    let first = &state.upstream.banks()[0].name;
    let missing = || Err("no answer".to_owned());
    let bank = banks.get(first).cloned().unwrap_or_else(missing);
    let mut out = shape::overview(
        api.as_ref().map_err(Clone::clone),
        bank.as_ref().map_err(Clone::clone),
        &state.history.rolling(now, 10_000),
        &state.history.rolling(now, 60_000),
        now,
    );
    let rates = state.history.cascade_rates(now, CASCADE_WINDOW_MS);
    let status = api.as_ref().ok();
    let panels: Vec<Value> = shape::join_banks(status, state.upstream.banks())
        .iter()
        .map(|joined| {
            let chaos = joined.target.map(|t| match banks.get(&t.name) {
                Some(Ok(status)) => Ok(status),
                Some(Err(e)) => Err(e.as_str()),
                None => Err("no answer"),
            });
            shape::bank_panel(joined, status, chaos, rates.get(&joined.name), now)
        })
        .collect();
    out["banks"] = json!(panels);
    out["routing"] = status.map_or(Value::Null, shape::routing);
    // A page that knows a newer sample than exists saw an earlier dashboard process: it gets
    // everything again, and `reset` tells it to drop what it had.
    let latest = state.history.latest_seq();
    let since = query.since.filter(|s| latest.is_some_and(|l| *s <= l));
    out["history"] = json!({
        "interval_ms": crate::SAMPLE_INTERVAL.as_millis() as u64,
        "capacity": crate::history::CAPACITY,
        "reset": query.since.is_some() && since.is_none(),
        "samples": state.history.after(since),
    });
    out["traffic"] = json!(state.traffic.steady_state());
    out["sent"] = json!(state.traffic.recent());
    Json(out)
}

/// The JSON of a 2xx answer, or why there is none.
pub(crate) fn ok_json(
    answer: Result<crate::upstream::Answer, UpstreamError>,
) -> Result<Value, String> {
    match answer {
        Ok(a) if (200..300).contains(&a.status) => Ok(a.body),
        Ok(a) => Err(format!("answered {}", a.status)),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    after: Option<u64>,
    limit: Option<u32>,
    level: Option<String>,
    payment_id: Option<String>,
    request_id: Option<String>,
}

/// An id the page may filter by: short and plain, so it cannot smuggle query syntax.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The query string for `/v1/logs`, with every parameter checked.
pub(crate) fn logs_query(
    after: Option<u64>,
    limit: Option<u32>,
    level: Option<&str>,
    payment_id: Option<&str>,
    request_id: Option<&str>,
) -> Result<String, DashError> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(after) = after {
        pairs.push(("after", after.to_string()));
    }
    pairs.push(("limit", limit.unwrap_or(200).clamp(1, 500).to_string()));
    if let Some(level) = level.filter(|l| !l.is_empty()) {
        let level = level.to_ascii_uppercase();
        if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level.as_str()) {
            return Err(DashError::BadRequest(format!("unknown level {level}")));
        }
        pairs.push(("level", level));
    }
    for (name, id) in [("payment_id", payment_id), ("request_id", request_id)] {
        if let Some(id) = id.map(str::trim).filter(|id| !id.is_empty()) {
            if !valid_id(id) {
                return Err(DashError::BadRequest(format!("{name} is not a valid id")));
            }
            pairs.push((name, id.to_owned()));
        }
    }
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

/// The API's log page, or `available: false` when the API has no log endpoint (yet).
async fn fetch_logs(upstream: &Upstream, query: &str) -> Result<Value, DashError> {
    let answer = upstream
        .api_get(&format!("/v1/logs?{query}"), Key::Operator)
        .await?;
    Ok(match answer.status {
        200..=299 => {
            let mut body = answer.body;
            if let Some(o) = body.as_object_mut() {
                o.insert("available".into(), json!(true));
            }
            body
        }
        404 => json!({"available": false, "reason": "this API has no /v1/logs endpoint"}),
        status => json!({"available": false, "reason": format!("/v1/logs answered {status}")}),
    })
}

/// `GET /api/logs`: the API's log records, with the same cursor.
async fn logs(State(state): Shared, Query(q): Query<LogsQuery>) -> Result<Json<Value>, DashError> {
    let query = logs_query(
        q.after,
        q.limit,
        q.level.as_deref(),
        q.payment_id.as_deref(),
        q.request_id.as_deref(),
    )?;
    Ok(Json(fetch_logs(&state.upstream, &query).await?))
}

#[derive(Debug, Deserialize)]
struct PaymentsQuery {
    limit: Option<u32>,
    status: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/payments`: the newest payments.
async fn list_payments(
    State(state): Shared,
    Query(q): Query<PaymentsQuery>,
) -> Result<Response, DashError> {
    let mut query = format!("limit={}", q.limit.unwrap_or(20).clamp(1, 100));
    for (name, value) in [("status", &q.status), ("cursor", &q.cursor)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            if !valid_id(value) {
                return Err(DashError::BadRequest(format!("invalid {name}")));
            }
            query.push_str(&format!("&{name}={value}"));
        }
    }
    let mut answer = state
        .upstream
        .api_get(&format!("/v1/payments?{query}"), Key::Tenant)
        .await?;
    if let Some(rows) = answer.body["data"].as_array_mut() {
        rows.iter_mut().for_each(with_amount_display);
    }
    Ok(pass_through(answer))
}

/// Adds `amount_display`: the amount in major units with the currency's own decimals (19.99 TRY,
/// 1999 JPY, 1.999 KWD), from the same ISO 4217 data the API validates with.
fn with_amount_display(payment: &mut Value) {
    let currency = payment["currency"]
        .as_str()
        .and_then(payment_types::currency::Currency::from_code);
    if let (Some(currency), Some(amount)) = (currency, payment["amount"].as_i64()) {
        payment["amount_display"] = Value::from(currency.format(amount));
    }
}

/// `GET /api/payments/{id}`: the payment and its log lines.
async fn payment_details(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<Value>, DashError> {
    if !valid_id(&id) {
        return Err(DashError::BadRequest("invalid payment id".into()));
    }
    let query = logs_query(None, Some(500), None, Some(&id), None)?;
    let path = format!("/v1/payments/{id}");
    let (payment, logs) = tokio::join!(
        state.upstream.api_get(&path, Key::Tenant),
        fetch_logs(&state.upstream, &query),
    );
    let mut payment = payment?;
    with_amount_display(&mut payment.body);
    Ok(Json(json!({
        "status": payment.status,
        "payment": payment.body,
        "logs": logs.unwrap_or_else(|e| json!({"available": false, "reason": e.to_string()})),
    })))
}

/// An upstream answer passed on with its status and (redacted) JSON body.
fn pass_through(answer: crate::upstream::Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, Json(answer.body)).into_response()
}

/// A JSON body that may be empty (`{}` defaults).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, DashError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| DashError::BadRequest(e.to_string()))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DashError> {
    serde_json::from_slice(body).map_err(|e| DashError::BadRequest(e.to_string()))
}

/// `POST /api/payments/one`: one payment under a fresh key.
async fn send_one(State(state): Shared, body: axum::body::Bytes) -> Result<Json<Value>, DashError> {
    let spec: PaymentSpec = optional_body(&body)?;
    Ok(Json(json!(state.traffic.send_one(&spec).await?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BurstRequest {
    count: Option<u32>,
    #[serde(flatten)]
    spec: BurstSpec,
}

#[derive(Debug, Default, Deserialize)]
struct BurstSpec {
    amount: Option<i64>,
    currency: Option<String>,
    source: Option<String>,
}

/// `POST /api/payments/burst {"count": N}`: N payments (1..=200) at once.
async fn burst(State(state): Shared, body: axum::body::Bytes) -> Result<Json<Value>, DashError> {
    let request: BurstRequest = optional_body(&body)?;
    let count = request.count.unwrap_or(20);
    if !(1..=MAX_BURST).contains(&count) {
        return Err(DashError::BadRequest(format!(
            "count must be in 1..={MAX_BURST}"
        )));
    }
    tracing::info!(count, "payment burst from the dashboard");
    let spec = PaymentSpec {
        amount: request.spec.amount,
        currency: request.spec.currency,
        source: request.spec.source,
    };
    Ok(Json(json!(state.traffic.burst(count, &spec).await?)))
}

/// `POST /api/payments/replay-last`: the last payment again, same key.
async fn replay_last(State(state): Shared) -> Result<Json<Value>, DashError> {
    match state.traffic.replay_last().await {
        Some(result) => Ok(Json(json!(result?))),
        None => Err(DashError::BadRequest(
            "no payment sent yet: send one first".into(),
        )),
    }
}

async fn traffic_state(State(state): Shared) -> Json<Value> {
    Json(json!(state.traffic.steady_state()))
}

/// `POST /api/traffic {"rate_per_s": R, "duration_s": D, "decline_percent": P}`.
async fn start_traffic(
    State(state): Shared,
    body: axum::body::Bytes,
) -> Result<Json<Value>, DashError> {
    let request: SteadyRequest = json_body(&body)?;
    request.validate().map_err(DashError::BadRequest)?;
    // An operator action: INFO, like chaos changes and breaker actions.
    tracing::info!(
        rate_per_s = request.rate_per_s,
        duration_s = request.duration_s,
        decline_percent = request.decline_percent,
        "traffic started from the dashboard"
    );
    Ok(Json(json!(state.traffic.start_steady(request))))
}

async fn stop_traffic(State(state): Shared) -> Json<Value> {
    tracing::info!("traffic stopped from the dashboard");
    Json(json!(state.traffic.stop_steady()))
}

/// `?bank=NAME`: which bank a chaos or breaker call is for (the first without it).
#[derive(Debug, Default, Deserialize)]
struct BankQuery {
    bank: Option<String>,
}

impl BankQuery {
    /// The bank name, checked to be a plain name (it goes into an upstream query string).
    fn name(&self) -> Result<Option<&str>, DashError> {
        match self
            .bank
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            None => Ok(None),
            Some(name) if crate::config::valid_bank_name(name) => Ok(Some(name)),
            Some(_) => Err(DashError::BadRequest(
                "bank must be a name: letters, digits, - and _".into(),
            )),
        }
    }
}

/// `GET /api/chaos?bank=NAME`: a bank's chaos and its presets.
async fn chaos(
    State(state): Shared,
    Query(query): Query<BankQuery>,
) -> Result<Json<Value>, DashError> {
    let bank = state.upstream.bank(query.name()?)?.name.clone();
    let (chaos, presets) = tokio::join!(
        state.upstream.bank_get(&bank, "/v1/chaos"),
        state.upstream.bank_get(&bank, "/v1/chaos/presets"),
    );
    Ok(Json(json!({
        "bank": bank,
        "chaos": chaos?.body,
        "presets": presets.map(|p| p.body).unwrap_or(Value::Null),
    })))
}

/// Checks a chaos body: exactly one of a preset name, a scenario, or a profile object.
pub(crate) fn check_chaos(body: &Value) -> Result<(), DashError> {
    let object = body
        .as_object()
        .ok_or_else(|| DashError::BadRequest("chaos must be a JSON object".into()))?;
    match (object.get("preset"), object.get("scenario")) {
        (Some(preset), None) if object.len() == 1 => {
            let name = preset.as_str().unwrap_or("");
            if name.is_empty() || name.len() > 64 || !valid_id(name) {
                return Err(DashError::BadRequest("preset must be a name".into()));
            }
        }
        (None, Some(scenario)) if object.len() == 1 => {
            let steps = scenario.as_array().map_or(0, Vec::len);
            if !(1..=100).contains(&steps) {
                return Err(DashError::BadRequest(
                    "scenario must be a list of 1 to 100 steps".into(),
                ));
            }
        }
        (None, None) => {} // a profile: the bank validates its fields
        _ => {
            return Err(DashError::BadRequest(
                "give one of preset, scenario or a profile".into(),
            ))
        }
    }
    Ok(())
}

/// `PUT /api/chaos?bank=NAME`: passed to that bank with its own admin token; the bank's answer
/// comes back.
async fn put_chaos(
    State(state): Shared,
    Query(query): Query<BankQuery>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    let bank = state.upstream.bank(query.name()?)?.name.clone();
    let body: Value = json_body(&body)?;
    check_chaos(&body)?;
    let answer = state.upstream.bank_put_chaos(&bank, &body).await?;
    tracing::info!(bank = %bank, status = answer.status, "chaos changed from the dashboard");
    Ok(pass_through(answer))
}

/// The operator actions the page may take on the breaker.
const BREAKER_ACTIONS: &[&str] = &[
    "force-open",
    "force-closed",
    "disable",
    "metrics-only",
    "reset",
];

/// `POST /api/breaker/{action}?bank=NAME`: passed to the API with the operator key. Without
/// `bank`, the API's own default (its first bank's breaker), as with one bank.
async fn breaker(
    State(state): Shared,
    Path(action): Path<String>,
    Query(query): Query<BankQuery>,
) -> Result<Response, DashError> {
    if !BREAKER_ACTIONS.contains(&action.as_str()) {
        return Err(DashError::NotFound);
    }
    let path = match query.name()? {
        None => format!("/v1/breaker/{action}"),
        Some(bank) => format!(
            "/v1/breaker/{action}{}",
            breaker_target(&state, bank).await?
        ),
    };
    let answer = state
        .upstream
        .api_post(&path, Key::Operator, None, &[])
        .await?;
    tracing::info!(action = %action, bank = query.name()?.unwrap_or("(first)"), status = answer.status, "breaker action from the dashboard");
    Ok(pass_through(answer))
}

/// The query that makes the API act on the page's bank `bank`: `?bank=<the API's name>` when the
/// API has per-bank controls; nothing for its first bank on an API without them (its only
/// breaker control is the first bank's). Any other bank on such an API is refused here: the API
/// would ignore `?bank=` and move the first bank's breaker instead.
async fn breaker_target(state: &AppState, bank: &str) -> Result<String, DashError> {
    let answer = state.upstream.api_get("/v1/status", Key::Operator).await?;
    let status = ok_json(Ok(answer))
        .map_err(|e| DashError::Conflict(format!("cannot tell the API's banks: /v1/status {e}")))?;
    let joined = shape::join_banks(Some(&status), state.upstream.banks());
    let Some(found) = joined.iter().find(|j| j.name == bank) else {
        return Err(DashError::Upstream(UpstreamError::UnknownBank(
            bank.to_owned(),
        )));
    };
    match (&found.api_name, found.per_bank_controls(), found.priority) {
        (Some(name), true, _) => Ok(format!("?bank={name}")),
        (_, false, Some(1)) => Ok(String::new()),
        _ => Err(DashError::Conflict(format!(
            "this payment API has no breaker controls for bank {bank:?} (only its first bank's)"
        ))),
    }
}

#[cfg(test)]
mod tests;

/// `GET /api/webhooks`: the receiver's card (deliveries, registration, chaos; no secret).
async fn webhooks_view(State(state): Shared) -> Json<Value> {
    Json(state.webhooks.view())
}

/// `GET /api/webhooks/receiver-chaos`.
async fn receiver_chaos(State(state): Shared) -> Json<ReceiverChaos> {
    Json(state.webhooks.chaos())
}

/// `PUT /api/webhooks/receiver-chaos`: `{"fail_share", "hang_share", "hang_ms"}`.
async fn put_receiver_chaos(
    State(state): Shared,
    body: axum::body::Bytes,
) -> Result<Json<ReceiverChaos>, DashError> {
    let chaos: ReceiverChaos = json_body(&body)?;
    chaos.check().map_err(DashError::BadRequest)?;
    state.webhooks.set_chaos(chaos);
    tracing::info!(
        fail_share = chaos.fail_share,
        hang_share = chaos.hang_share,
        hang_ms = chaos.hang_ms,
        "webhook receiver chaos set"
    );
    Ok(Json(chaos))
}
