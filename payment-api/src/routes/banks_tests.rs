//! In-process tests of the several-banks surface (docs/failover.md) against the router, over
//! two banks in priority order: `a`, which refuses connections (nothing listens on its port,
//! so every attempt there is definitely not processed), and `b`, a real mock bank. A payment
//! therefore starts at `a` and moves to `b`: two routes.

use axum::{body::Body, http::Request, Router};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use super::{tests::send, *};
use crate::{config::Config, test_doubles::temp_dir};

const ACME: &str = "sk_test_acme_0123456789";
const BETA: &str = "sk_test_beta_0123456789";
const OPS: &str = "sk_test_ops_0123456789";
const BODY: &str = r#"{"amount":100,"currency":"TRY","source":"tok_visa"}"#;

/// A port nothing listens on: bound, then released, so a connection there is refused.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn mock_bank_url() -> String {
    let bank = mock_bank::Application::build(mock_bank::Config::for_tests())
        .await
        .unwrap();
    let url = format!("http://{}", bank.local_addr());
    tokio::spawn(bank.run_until_stopped(std::future::pending()));
    url
}

/// Banks `a` (refusing connections) then `b` (a mock bank), with `tune` applied to the config.
/// The store's directory comes last: it is removed when dropped, so keep it while the router is
/// used.
pub(super) async fn two_banks(
    tune: impl FnOnce(&mut Config),
) -> (Router, Arc<AppState>, tempfile::TempDir) {
    let b = mock_bank_url().await;
    let dir = temp_dir("api-banks");
    let mut config = Config::for_tests(
        b.parse().unwrap(),
        &format!("acme:{ACME},beta:{BETA}"),
        dir.path().to_path_buf(),
    );
    config.bank_url = None;
    config.banks = vec![format!("a={}", refused_url()), format!("b={b}")];
    config.operator_keys = Some(secrecy::SecretString::from(format!("alice:{OPS}")));
    tune(&mut config);
    let store = payment_store::open(None, dir.path()).await.unwrap();
    let state = test_state(&config, store);
    (router(state.clone()), state, dir)
}

pub(super) fn request(method: &str, uri: &str, key: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap()
}

pub(super) fn pay(key: &str, idempotency_key: &str) -> Request<Body> {
    Request::post("/v1/payments")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", idempotency_key)
        .body(Body::from(BODY))
        .unwrap()
}

/// The status and the body's bytes, as sent.
async fn raw(app: &Router, request: Request<Body>) -> (u16, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn routes(view: &Value) -> Vec<(String, String)> {
    view["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("no routes in {view}"))
        .iter()
        .map(|route| {
            assert!(
                route["created_at"]
                    .as_str()
                    .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()),
                "{route}"
            );
            (
                route["bank"].as_str().unwrap().to_owned(),
                route["reference"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn expand_routes_lists_every_bank_a_payment_was_sent_to_oldest_first() {
    let (app, _, _dir) = two_banks(|_| {}).await;
    let (status, created) = raw(&app, pay(ACME, "order-1")).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&created));
    let payment: Value = serde_json::from_slice(&created).unwrap();
    assert_eq!(payment["bank"], "b", "a refused the connection: moved to b");
    assert!(payment.get("routes").is_none(), "{payment}");
    let id = payment["id"].as_str().unwrap();
    let simple = Uuid::parse_str(id).unwrap().simple().to_string();
    let expected = vec![
        ("a".to_owned(), format!("pay_{simple}")),
        ("b".to_owned(), format!("pay_{simple}_b")),
    ];

    // The tenant: one payment, and the list, with its routes.
    let (status, _, one) = send(
        app.clone(),
        request("GET", &format!("/v1/payments/{id}?expand=routes"), ACME),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(routes(&one), expected);
    assert_eq!(one["bank_reference"], expected[1].1.as_str());
    let (status, _, page) = send(
        app.clone(),
        request("GET", "/v1/payments?expand=routes&limit=100", ACME),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(routes(&page["data"][0]), expected);

    // The operator too, with the tenant.
    let (status, _, read) = send(
        app.clone(),
        request("GET", &format!("/v1/payments/{id}?expand=routes"), OPS),
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["tenant"], "acme");
    assert_eq!(routes(&read), expected);

    // Without `expand` nothing changes: the read has no `routes`, and the replay is the 201's
    // bytes.
    let (_, _, plain) = send(
        app.clone(),
        request("GET", &format!("/v1/payments/{id}"), ACME),
    )
    .await;
    assert!(plain.get("routes").is_none(), "{plain}");
    let mut without_routes = one.clone();
    without_routes.as_object_mut().unwrap().remove("routes");
    assert_eq!(plain, without_routes);
    let (_, _, list) = send(app.clone(), request("GET", "/v1/payments", ACME)).await;
    assert!(list["data"][0].get("routes").is_none(), "{list}");
    let (status, replay) = raw(&app, pay(ACME, "order-1")).await;
    assert_eq!(status, 201);
    assert_eq!(replay, created, "the replay is byte-identical");
}

#[tokio::test]
async fn a_payment_sent_to_one_bank_has_one_route_and_pages_carry_routes_per_payment() {
    // b first: nothing cascades.
    let (app, _, _dir) = two_banks(|config| config.banks.reverse()).await;
    let mut ids = Vec::new();
    for key in ["k1", "k2", "k3"] {
        let (status, _, body) = send(app.clone(), pay(ACME, key)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["bank"], "b");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Pages of two, newest first, each payment with its own single route.
    let mut seen = Vec::new();
    let mut uri = "/v1/payments?expand=routes&limit=2".to_owned();
    loop {
        let (status, _, page) = send(app.clone(), request("GET", &uri, ACME)).await;
        assert_eq!(status, 200, "{page}");
        for view in page["data"].as_array().unwrap() {
            let id = view["id"].as_str().unwrap();
            let simple = Uuid::parse_str(id).unwrap().simple().to_string();
            assert_eq!(
                routes(view),
                [("b".to_owned(), format!("pay_{simple}"))],
                "{view}"
            );
            seen.push(id.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/payments?expand=routes&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn an_unknown_expand_value_is_400_invalid_query_and_another_tenants_payment_stays_404() {
    let (app, _, _dir) = two_banks(|_| {}).await;
    let (_, _, payment) = send(app.clone(), pay(ACME, "order-1")).await;
    let id = payment["id"].as_str().unwrap();
    for query in [
        "expand=route",
        "expand=",
        "expand=routes,routes",
        "expand=ROUTES",
        "expand=routes&expand=routes",
    ] {
        for uri in [
            format!("/v1/payments/{id}?{query}"),
            format!("/v1/payments?{query}"),
        ] {
            let (status, headers, body) = send(app.clone(), request("GET", &uri, ACME)).await;
            assert_eq!(status, 400, "{uri}: {body}");
            assert_eq!(body["code"], "invalid_query", "{uri}");
            assert_eq!(headers["content-type"], "application/problem+json");
        }
    }
    // Another tenant's payment is not found, routes or not.
    let (status, _, body) = send(
        app.clone(),
        request("GET", &format!("/v1/payments/{id}?expand=routes"), BETA),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "payment_not_found");
}

#[tokio::test]
async fn status_lists_each_banks_cascades_by_reason_its_transitions_and_its_breaker_panel() {
    let (app, state, _dir) = two_banks(|_| {}).await;
    for key in ["k1", "k2"] {
        let (status, _, body) = send(app.clone(), pay(ACME, key)).await;
        assert_eq!(status, 201, "{body}");
    }
    state.payments.banks[1].pipeline().breaker().force_open();
    let (status, _, body) = send(app.clone(), request("GET", "/v1/status", OPS)).await;
    assert_eq!(status, 200, "{body}");
    let banks = body["banks"].as_array().unwrap();
    let names: Vec<&str> = banks.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    let reasons = [
        "breaker_open",
        "bulkhead_full",
        "connect_refused",
        "bank_refused",
        "decline",
    ];
    for (bank, connect_refused) in [(&banks[0], 2), (&banks[1], 0)] {
        let cascades = bank["cascades"].as_object().unwrap();
        let keys: Vec<&str> = cascades.keys().map(String::as_str).collect();
        let mut expected_keys = reasons.to_vec();
        expected_keys.sort_unstable();
        let mut keys = keys.clone();
        keys.sort_unstable();
        assert_eq!(keys, expected_keys, "every reason, always: {bank}");
        for reason in reasons {
            let expected = if reason == "connect_refused" {
                connect_refused
            } else {
                0
            };
            assert_eq!(cascades[reason], expected, "{reason}: {bank}");
        }
        assert_eq!(bank["cascaded_away"], connect_refused, "the sum");
        // What a breaker panel needs: state, window counts and rates, next probe when open.
        for field in [
            "state",
            "failure_rate",
            "slow_call_rate",
            "window",
            "minimum_calls",
            "open_remaining_ms",
            "next_probe_at_unix_ms",
        ] {
            assert!(bank["breaker"].get(field).is_some(), "{field}: {bank}");
        }
    }
    // a: closed, its refused connections counted as failures in its window, no next probe.
    assert_eq!(banks[0]["breaker"]["state"], "closed");
    assert_eq!(banks[0]["breaker"]["window"]["failures"], 2);
    assert!(banks[0]["breaker"]["next_probe_at_unix_ms"].is_null());
    assert_eq!(banks[0]["transitions"], serde_json::json!([]));
    // b: forced open by the operator, in its own history only.
    assert_eq!(banks[1]["breaker"]["state"], "forced_open");
    let transitions = banks[1]["transitions"].as_array().unwrap();
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(transitions[0]["to"], "forced_open");
    assert_eq!(
        body["transitions"],
        serde_json::json!([]),
        "the top level is a's"
    );

    // /metrics: the same counts, by bank and reason.
    let response = app
        .clone()
        .oneshot(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {OPS}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for reason in reasons {
        for bank in ["a", "b"] {
            let series = format!("bank_cascaded_away_total{{bank=\"{bank}\",reason=\"{reason}\"}}");
            assert!(text.contains(&series), "{series} missing");
        }
    }
}

#[tokio::test]
async fn an_open_breaker_shows_when_its_next_probe_is() {
    let (app, state, _dir) = two_banks(|_| {}).await;
    let breaker = state.payments.banks[0].pipeline().breaker();
    // Five refused connections in a row open a's breaker (the consecutive-failures trip).
    for _ in 0..5 {
        let permit = breaker.try_acquire().unwrap();
        permit.record_elapsed(
            resilience::breaker::Outcome::Failure,
            std::time::Duration::from_millis(1),
        );
    }
    let before = chrono::Utc::now().timestamp_millis() as u64;
    let (_, _, body) = send(app.clone(), request("GET", "/v1/status", OPS)).await;
    let panel = &body["banks"][0]["breaker"];
    assert_eq!(panel["state"], "open", "{panel}");
    let remaining = panel["open_remaining_ms"].as_u64().unwrap();
    let next = panel["next_probe_at_unix_ms"].as_u64().unwrap();
    // The open wait is 5 s with up to 10% jitter.
    assert!(remaining > 0 && remaining <= 5500, "{panel}");
    assert!(
        next >= before && next <= before + 5500 + 1000,
        "{next} vs {before}: {panel}"
    );
    assert_eq!(body["banks"][0]["transitions"][0]["to"], "open");
}

#[tokio::test]
async fn breaker_controls_act_on_the_bank_named_by_bank_and_on_the_first_bank_without_it() {
    let (app, state, _dir) = two_banks(|_| {}).await;
    let breaker = |i: usize| state.payments.banks[i].pipeline().breaker().state();
    use resilience::breaker::State;

    let (status, _, snapshot) = send(
        app.clone(),
        request("POST", "/v1/breaker/force-open?bank=b", OPS),
    )
    .await;
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["state"], "forced_open");
    assert_eq!((breaker(0), breaker(1)), (State::Closed, State::ForcedOpen));
    let history = state.payments.banks[1].pipeline().breaker().history();
    let reason = serde_json::to_value(&history[0].reason).unwrap();
    assert_eq!(reason["actor"], "alice", "{reason}");

    // Without `bank`: the first bank, as with one bank.
    let (status, _, _) = send(app.clone(), request("POST", "/v1/breaker/force-open", OPS)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (breaker(0), breaker(1)),
        (State::ForcedOpen, State::ForcedOpen)
    );
    let (status, _, _) = send(
        app.clone(),
        request("POST", "/v1/breaker/reset?bank=a", OPS),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((breaker(0), breaker(1)), (State::Closed, State::ForcedOpen));

    // An unknown bank, or a misspelt parameter, changes nothing.
    let before = state.payments.banks[1].pipeline().breaker().history().len();
    for (uri, status, code) in [
        ("/v1/breaker/reset?bank=c", 404, "bank_not_found"),
        ("/v1/breaker/reset?bank=", 404, "bank_not_found"),
        ("/v1/breaker/reset?bnak=b", 400, "invalid_query"),
    ] {
        let (got, headers, body) = send(app.clone(), request("POST", uri, OPS)).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(body["code"], code, "{uri}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    assert_eq!((breaker(0), breaker(1)), (State::Closed, State::ForcedOpen));
    assert_eq!(
        state.payments.banks[1].pipeline().breaker().history().len(),
        before
    );
    // A tenant key acts on no bank.
    let (status, _, _) = send(
        app.clone(),
        request("POST", "/v1/breaker/reset?bank=b", ACME),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(breaker(1), State::ForcedOpen);

    // The document lists this server's banks as the values of `bank`.
    let (_, _, doc) = send(app.clone(), request("GET", "/openapi.json", OPS)).await;
    let params = doc["paths"]["/v1/breaker/{action}"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let bank = params.iter().find(|p| p["name"] == "bank").unwrap();
    assert_eq!(bank["schema"]["enum"], serde_json::json!(["a", "b"]));
}

#[tokio::test]
async fn status_shows_each_banks_effective_settings_with_its_overrides() {
    let (app, state, _dir) = two_banks(|config| {
        config.bank_settings = vec!["b.bulkhead=16".into(), "b.breaker-open-ms=9000".into()];
    })
    .await;
    let (_, _, body) = send(app.clone(), request("GET", "/v1/status", OPS)).await;
    let (a, b) = (&body["banks"][0]["settings"], &body["banks"][1]["settings"]);
    assert_eq!(
        a["bulkhead"]["max_concurrent"], 64,
        "a: the shared flag: {a}"
    );
    assert_eq!(b["bulkhead"]["max_concurrent"], 16, "{b}");
    assert_eq!(b["breaker"]["open_duration_ms"], 9000, "{b}");
    assert_eq!(a["breaker"]["open_duration_ms"], 5000, "{a}");
    // The same settings the pipelines run with.
    assert_eq!(body["banks"][1]["bulkhead"]["max_concurrent"], 16);
    assert_eq!(
        state.payments.banks[1]
            .pipeline()
            .bulkhead()
            .snapshot()
            .max_concurrent,
        16
    );
    assert_eq!(
        body["config"]["bank_settings"],
        serde_json::json!(["b.bulkhead=16", "b.breaker-open-ms=9000"])
    );
}

#[tokio::test]
async fn status_says_the_routing_mode_and_each_banks_score() {
    let (app, _, _dir) = two_banks(|config| {
        config.routing.mode = crate::config::RoutingMode::Health;
        config.routing.routing_min_samples = 2;
        config.routing.routing_window = 4;
    })
    .await;
    // Two payments: a refuses each connection (2 failures), b charges each.
    for key in ["k1", "k2"] {
        let (status, _, body) = send(app.clone(), pay(ACME, key)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, _, body) = send(app.clone(), request("GET", "/v1/status", OPS)).await;
    let routing = &body["routing"];
    assert_eq!(routing["mode"], "health", "{routing}");
    assert_eq!(routing["window"], 4);
    assert_eq!(routing["min_samples"], 2);
    assert_eq!(routing["min_success"], 0.5);
    assert_eq!(routing["exploration"], 0.05);
    let (a, b) = (&body["banks"][0], &body["banks"][1]);
    assert_eq!(
        (a["score"].as_f64(), a["score_samples"].as_u64()),
        (Some(0.0), Some(2))
    );
    assert_eq!(a["dropped"], true);
    assert_eq!(
        (b["score"].as_f64(), b["score_samples"].as_u64()),
        (Some(1.0), Some(2))
    );
    assert_eq!(b["dropped"], false);

    // Priority mode: the same scores, nothing dropped.
    let (app, _, _dir) = two_banks(|_| {}).await;
    let (_, _, body) = send(app.clone(), request("GET", "/v1/status", OPS)).await;
    assert_eq!(body["routing"]["mode"], "priority");
    assert!(body["banks"][0]["score"].is_null(), "not judged yet");
    assert_eq!(body["banks"][0]["dropped"], false);
}
