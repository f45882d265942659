//! The phases of one run, in order, and the processes they use (see the crate doc):
//! `bank` (mock bank alone), `two_hop` (proxy → stub, the ceiling), `minimal` (minimal durable
//! server → stub), `happy`, `replay`, `breaker_open` (the API on SQLite → stub), `postgres`
//! (a second API on PostgreSQL → stub).
//!
//! Every process but PostgreSQL and its API is started before the first phase, so no phase
//! runs while another process starts. The PostgreSQL server and its API are started after
//! `breaker_open` (their start-up, `initdb` included, ends before the `postgres` phase's
//! warm-up) and stopped right after it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use http::{header, Request};
use http_body_util::Full;
use hyper::body::Bytes;

use crate::load::{Expect, MakeRequest, Stop};
use crate::pg::PgServer;
use crate::report::{Commits, Report};
use crate::serve::Kind;
use crate::services::Service;
use crate::{
    measure, payment_request, simple_request, start_api, Args, API_KEY, OPERATOR_KEY, PAYMENT_BODY,
};

/// A new payment answered by the API.
const NEW_PAYMENT: Expect = Expect {
    status: 201,
    header: Some(("idempotent-replayed", "false")),
    body_contains: Some(r#""status":"succeeded""#),
};

/// Runs every phase; a phase that cannot run is skipped (and says why) only where noted.
pub(crate) async fn run(
    args: &Args,
    bin: &Path,
    work_dir: &Path,
    run_id: &str,
) -> anyhow::Result<Report> {
    let bank = Service::start("mock-bank", &bin.join("mock-bank"), work_dir, &[], &[]).await?;
    let stub = Service::start_reference(Kind::Stub, work_dir, &[]).await?;
    let stub_url = ["--bank-url".to_owned(), format!("http://{}", stub.addr)];
    let proxy = Service::start_reference(Kind::Proxy, work_dir, &stub_url).await?;
    let mut minimal_args = stub_url.to_vec();
    minimal_args.extend([
        "--data-dir".to_owned(),
        work_dir.join("minimal").display().to_string(),
    ]);
    let minimal = Service::start_reference(Kind::Minimal, work_dir, &minimal_args).await?;
    let api = start_api("payment-api", bin, work_dir, stub.addr, &[]).await?;

    let stop = Stop::Timed {
        warmup: Duration::from_secs(args.warmup_secs),
        measure: Duration::from_secs(args.duration_secs),
    };
    let mut report = Report::new(args.connections, args.duration_secs, args.warmup_secs);
    report.rss_start_bytes = api.rss_bytes();

    // 1. The mock bank alone: one hop, the baseline of `replay` and `breaker_open`.
    let make = charge_request(&bank, "/v1/charges", format!("bench-{run_id}-bank"), None);
    let succeeded = Expect {
        status: 201,
        header: None,
        body_contains: Some(r#""status":"succeeded""#),
    };
    report.push(
        measure(
            "bank",
            &bank,
            args,
            make,
            succeeded.clone(),
            stop,
            0,
            &[&bank],
        )
        .await,
    );

    // 2. The ceiling: proxy → stub, two hops and nothing else. Only the stub answers
    //    `"status":"succeeded"` (the proxy only forwards), on a route only the proxy serves.
    let make = charge_request(
        &proxy,
        "/v1/payments",
        format!("bench-{run_id}-2hop"),
        Some(API_KEY),
    );
    report.push(
        measure(
            "two_hop",
            &proxy,
            args,
            make,
            succeeded,
            stop,
            0,
            &[&proxy, &stub],
        )
        .await,
    );

    // 3. The minimal durable payment server → stub: the same request as `happy`. The body
    //    proves both writes and the charge (the answer comes after the settle, with the
    //    stub's charge id).
    let make = payment_request(minimal.addr, format!("bench-{run_id}-min"));
    let expect = Expect {
        status: 201,
        header: None,
        body_contains: Some(r#""status":"succeeded","charge_id":"ch_"#),
    };
    report.push(
        measure(
            "minimal",
            &minimal,
            args,
            make,
            expect,
            stop,
            0,
            &[&minimal, &stub],
        )
        .await,
    );

    // 4. The API's happy path: fresh keys, the stub charges, the outcome is stored durably.
    let happy_prefix = format!("bench-{run_id}-pay");
    let make = payment_request(api.addr, happy_prefix.clone());
    let commits_before = writer_commits(&api).await;
    let happy = measure(
        "happy",
        &api,
        args,
        make,
        NEW_PAYMENT,
        stop,
        256,
        &[&api, &stub],
    )
    .await;
    let keys: Arc<Vec<String>> = Arc::new(
        happy
            .result
            .accepted
            .iter()
            .enumerate()
            .flat_map(|(conn, seqs)| {
                let prefix = happy_prefix.clone();
                seqs.iter().map(move |seq| format!("{prefix}-{conn}-{seq}"))
            })
            .collect(),
    );
    report.push(happy);
    if let (Some(before), Some(after)) = (commits_before, writer_commits(&api).await) {
        report.happy_commits = Some(Commits {
            writes: after.writes.saturating_sub(before.writes),
            batches: after.batches.saturating_sub(before.batches),
        });
    }
    if keys.is_empty() {
        bail!("the happy path accepted no payment: nothing to replay (see the logs)");
    }

    // 5. Replays of stored keys (each connection cycles through all of them).
    let host = api.addr.to_string();
    let replay_keys = keys.clone();
    let make: Arc<MakeRequest> = Arc::new(move |conn, seq| {
        let key = &replay_keys[(conn * 7919 + seq as usize) % replay_keys.len()];
        Request::post("/v1/payments")
            .header(header::HOST, &host)
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key.as_str())
            .body(Full::new(Bytes::from_static(PAYMENT_BODY.as_bytes())))
            .expect("valid request")
    });
    let expect = Expect {
        status: 201,
        header: Some(("idempotent-replayed", "true")),
        body_contains: Some(r#""status":"succeeded""#),
    };
    report.push(measure("replay", &api, args, make, expect, stop, 0, &[&api, &stub]).await);

    // 6. New payments with the breaker forced open: refused before the store and the bank.
    let operator = [("authorization", format!("Bearer {OPERATOR_KEY}"))];
    let operator: Vec<(&str, &str)> = operator.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) =
        simple_request(api.addr, "POST", "/v1/breaker/force-open", &operator, "").await?;
    if !(200..300).contains(&status) {
        bail!("forcing the breaker open answered {status}: {body}");
    }
    let make = payment_request(api.addr, format!("bench-{run_id}-open"));
    let expect = Expect {
        status: 503,
        header: None,
        body_contains: Some(r#""breaker_open""#),
    };
    report.push(
        measure(
            "breaker_open",
            &api,
            args,
            make,
            expect,
            stop,
            0,
            &[&api, &stub],
        )
        .await,
    );
    let _ = simple_request(api.addr, "POST", "/v1/breaker/reset", &operator, "").await;
    report.rss_end_bytes = api.rss_bytes();

    // 7. A second API on PostgreSQL → the same stub; skipped (saying why) if it cannot start.
    eprintln!("bench: starting PostgreSQL for the postgres phase");
    match PgServer::start().await {
        Err(reason) => report.skip("postgres", format!("PostgreSQL did not start: {reason}")),
        Ok(pg) => {
            let flags = ["--database-url".to_owned(), pg.url().to_owned()];
            match start_api("payment-api-pg", bin, work_dir, stub.addr, &flags).await {
                Err(error) => report.skip(
                    "postgres",
                    format!("the payment API on PostgreSQL did not start: {error:#}"),
                ),
                Ok(api_pg) => {
                    let make = payment_request(api_pg.addr, format!("bench-{run_id}-pg"));
                    report.push(
                        measure(
                            "postgres",
                            &api_pg,
                            args,
                            make,
                            NEW_PAYMENT,
                            stop,
                            0,
                            &[&api_pg, &stub, &pg],
                        )
                        .await,
                    );
                    // The API goes before its database.
                    drop(api_pg);
                }
            }
            drop(pg);
        }
    }
    Ok(report)
}

/// Charges with a fresh reference each (`<prefix>-<conn>-<seq>`, also the `Idempotency-Key`):
/// the mock bank's `POST /v1/charges`, or the proxy's `POST /v1/payments` that forwards it.
fn charge_request(
    server: &Service,
    path: &'static str,
    prefix: String,
    bearer: Option<&'static str>,
) -> Arc<MakeRequest> {
    let host = server.addr.to_string();
    Arc::new(move |conn, seq| {
        let reference = format!("{prefix}-{conn}-{seq}");
        let body = format!(
            r#"{{"amount":1999,"currency":"TRY","source":"tok_visa","reference":"{reference}"}}"#
        );
        let mut request = Request::post(path)
            .header(header::HOST, &host)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", reference);
        if let Some(key) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        request
            .body(Full::new(Bytes::from(body)))
            .expect("valid request")
    })
}

/// The SQLite writer's counters from the API's `/metrics` (`None` if they cannot be read).
async fn writer_commits(api: &Service) -> Option<Commits> {
    let (status, text) = simple_request(api.addr, "GET", "/metrics", &[], "")
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|v| v as u64)
    };
    Some(Commits {
        writes: value("store_writer_writes_total")?,
        batches: value("store_writer_batches_total")?,
    })
}
