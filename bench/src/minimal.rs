//! `bench serve minimal`: a minimal durable payment server, the reference for what a payment
//! API with an idempotency key and a durable outcome has to cost on this machine.
//!
//! One SQLite table is both the idempotency key and the payment (`WITHOUT ROWID`, primary key
//! the `Idempotency-Key`; payment id, amount, currency, status, charge id), in WAL mode with
//! `synchronous=FULL`, checkpointing the log at 4,096 pages as the API's writer does.
//! `POST /v1/payments`:
//! 1. claim the key: `INSERT … ON CONFLICT DO NOTHING`, awaited until durably committed (a
//!    duplicate key answers 409);
//! 2. charge the stub bank over a pooled keep-alive client, with a reference derived from the
//!    payment id;
//! 3. settle: `UPDATE` with the charge id and status `succeeded`, awaited until durably
//!    committed;
//! 4. answer 201 `{"id":…,"status":"succeeded","charge_id":…,…}`.
//!
//! Both writes are group-committed by one writer thread (rusqlite): it drains the channel of
//! pending writes, runs them all in one `BEGIN IMMEDIATE … COMMIT` (one fsync per batch), then
//! answers each caller through its oneshot; batching is natural (the next batch queues while
//! one commits), as in the API's SQLite store. No auth, validation, logging, retries, breaker
//! or reconciliation: everything the API adds beyond durability and idempotency shows as its
//! distance below this.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use payment_types::bank::{Charge, ChargeRequest};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::serve::{http_client, HttpClient};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer; a full queue makes callers wait.
const QUEUE: usize = 1024;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS payments (
    idempotency_key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    charge_id TEXT
) WITHOUT ROWID";
const CLAIM: &str = "INSERT INTO payments (idempotency_key, id, amount, currency, status) \
                     VALUES (?1, ?2, ?3, ?4, 'pending') ON CONFLICT DO NOTHING";
const SETTLE: &str = "UPDATE payments SET status = 'succeeded', charge_id = ?2 \
                      WHERE idempotency_key = ?1 AND status = 'pending'";

/// A write for the writer thread.
#[derive(Debug)]
enum Write {
    Claim {
        key: String,
        id: String,
        amount: i64,
        currency: String,
    },
    Settle {
        key: String,
        charge_id: String,
    },
}

/// A write and where its result goes: whether it changed a row, once committed.
type Job = (Write, oneshot::Sender<Result<bool, String>>);

struct Minimal {
    client: HttpClient,
    charges: Uri,
    writer: mpsc::Sender<Job>,
}

impl Minimal {
    /// Queues `write` and waits until its batch is committed.
    async fn write(&self, write: Write) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send((write, reply))
            .await
            .map_err(|_| "the writer is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the writer dropped the write".to_owned())?
    }
}

pub(crate) fn router(charges: Uri, data_dir: &Path) -> anyhow::Result<Router> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let conn = open(&data_dir.join("minimal.db"))?;
    let (writer, queue) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("minimal-writer".to_owned())
        .spawn(move || write_loop(conn, queue))?;
    let state = Arc::new(Minimal {
        client: http_client(),
        charges,
        writer,
    });
    Ok(Router::new()
        .route("/v1/payments", post(pay))
        .with_state(state))
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The API's writer checkpoints at 4,096 pages (payment-store's `CHECKPOINT_PAGES`); so does
    // this, so that the gap between the two is features, not tuning.
    conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// The writer thread: takes whatever is queued (up to [`MAX_BATCH`]), commits it in one
/// transaction, answers each caller, repeats until every sender is gone.
fn write_loop(conn: Connection, mut queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&conn, &batch) {
            Ok(changed) => {
                for ((_, reply), changed) in batch.drain(..).zip(changed) {
                    let _ = reply.send(Ok(changed));
                }
            }
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                let error = error.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Runs the batch's writes in one `BEGIN IMMEDIATE … COMMIT`: whether each changed a row.
fn commit(conn: &Connection, batch: &[Job]) -> rusqlite::Result<Vec<bool>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut claim = conn.prepare_cached(CLAIM)?;
    let mut settle = conn.prepare_cached(SETTLE)?;
    let mut changed = Vec::with_capacity(batch.len());
    for (write, _) in batch {
        let rows = match write {
            Write::Claim {
                key,
                id,
                amount,
                currency,
            } => claim.execute((key, id, amount, currency))?,
            Write::Settle { key, charge_id } => settle.execute((key, charge_id))?,
        };
        changed.push(rows == 1);
    }
    drop((claim, settle));
    conn.execute_batch("COMMIT")?;
    Ok(changed)
}

/// The payment request body (the API's, without its checks).
#[derive(Deserialize)]
struct NewPayment {
    amount: i64,
    currency: String,
    source: String,
}

#[derive(Serialize)]
struct Payment {
    id: String,
    status: &'static str,
    charge_id: String,
    amount: i64,
    currency: String,
}

fn fail(status: StatusCode, why: &str) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

async fn pay(State(app): State<Arc<Minimal>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return fail(StatusCode::BAD_REQUEST, "idempotency_key_missing");
    };
    let Ok(payment) = serde_json::from_slice::<NewPayment>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "invalid_body");
    };
    let uuid = uuid::Uuid::now_v7().simple();
    let id = format!("pay_{uuid}");

    // 1. Claim the key, durably.
    let claim = Write::Claim {
        key: key.clone(),
        id: id.clone(),
        amount: payment.amount,
        currency: payment.currency.clone(),
    };
    match app.write(claim).await {
        Ok(true) => {}
        Ok(false) => return fail(StatusCode::CONFLICT, "duplicate_idempotency_key"),
        Err(_) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "store"),
    }

    // 2. Charge the bank.
    let charge = ChargeRequest {
        amount: payment.amount,
        currency: payment.currency.clone(),
        source: payment.source,
        reference: format!("ref_{uuid}"),
    };
    let Ok(charge_body) = serde_json::to_vec(&charge) else {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "encode");
    };
    let Ok(request) = Request::post(app.charges.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", &charge.reference)
        .body(Full::new(Bytes::from(charge_body)))
    else {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "request");
    };
    let charged = match app.client.request(request).await {
        Ok(response) if response.status().is_success() => {
            match response.into_body().collect().await {
                Ok(body) => serde_json::from_slice::<Charge>(&body.to_bytes()).ok(),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let Some(charged) = charged else {
        return fail(StatusCode::BAD_GATEWAY, "bank");
    };

    // 3. Settle, durably.
    let settle = Write::Settle {
        key,
        charge_id: charged.id.clone(),
    };
    match app.write(settle).await {
        Ok(true) => {}
        Ok(false) => return fail(StatusCode::CONFLICT, "not_pending"),
        Err(_) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "store"),
    }
    let answer = Payment {
        id,
        status: "succeeded",
        charge_id: charged.id,
        amount: payment.amount,
        currency: payment.currency,
    };
    (StatusCode::CREATED, Json(answer)).into_response()
}
