-- Webhooks (issue 20, docs/webhooks.md): endpoints per tenant, the event outbox, one delivery
-- per (event, endpoint) and every attempt.
--
-- Cost per payment: an event row is written by the transaction of each state change it
-- announces (settle, and mark pending for a 202), so a payment writes two more B-trees per
-- event: webhook_events (keyed by its time-ordered id: rows append) and its tenant index. The
-- fan-out to webhook_deliveries writes only for a tenant with a matching endpoint; for the
-- others it is a read of webhook_endpoints_tenant.

CREATE TABLE webhook_endpoints (
    id                          TEXT    PRIMARY KEY NOT NULL,   -- we_<uuid>
    tenant                      TEXT    NOT NULL,
    url                         TEXT    NOT NULL,
    event_types                 TEXT    NOT NULL,               -- JSON array of type names
    secret                      TEXT    NOT NULL,               -- whsec_...: never logged
    previous_secret             TEXT,                           -- signs until ..._expires_at
    previous_secret_expires_at  INTEGER,
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
) WITHOUT ROWID;

-- A tenant's endpoints (the listing, and the fan-out of each event).
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, created_at);

CREATE TABLE webhook_events (
    id          TEXT    PRIMARY KEY NOT NULL,   -- evt_<uuid v7>: sorts by creation time
    tenant      TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    payment_id  TEXT    NOT NULL,
    payload     TEXT    NOT NULL,               -- the exact body every delivery sends
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A tenant's events, newest first, with the id as the cursor.
CREATE INDEX webhook_events_tenant ON webhook_events (tenant, id);

CREATE TABLE webhook_deliveries (
    event_id         TEXT    NOT NULL,
    endpoint_id      TEXT    NOT NULL,
    tenant           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state = 'pending' OR state = 'delivered'
                                             OR state = 'failed'),
    attempts         INTEGER NOT NULL DEFAULT 0,    -- every attempt ever (numbers the rows)
    failures         INTEGER NOT NULL DEFAULT 0,    -- failed attempts since (re)queued
    next_attempt_at  INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
) WITHOUT ROWID;

-- The worker's scan and the backlog: pending deliveries only, by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
-- Deleting an endpoint drops its pending deliveries.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    event_id     TEXT    NOT NULL,
    endpoint_id  TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status       INTEGER,               -- the HTTP status, when an answer came
    latency_ms   INTEGER NOT NULL,
    error        TEXT,
    PRIMARY KEY (event_id, endpoint_id, attempt)
) WITHOUT ROWID;
