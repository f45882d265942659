-- Webhooks (issue 20, docs/webhooks.md): endpoints per tenant, the event outbox, one delivery
-- per (event, endpoint) and every attempt. The shapes and rules are the SQLite migration
-- 0005's.

CREATE TABLE webhook_endpoints (
    id                          TEXT    PRIMARY KEY,
    tenant                      TEXT    NOT NULL,
    url                         TEXT    NOT NULL,
    event_types                 TEXT    NOT NULL,
    secret                      TEXT    NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  BIGINT,
    created_at                  BIGINT  NOT NULL,
    updated_at                  BIGINT  NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, created_at);

CREATE TABLE webhook_events (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    payment_id  UUID    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant, id);

CREATE TABLE webhook_deliveries (
    event_id         TEXT    NOT NULL,
    endpoint_id      TEXT    NOT NULL,
    tenant           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    failures         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    event_id     TEXT    NOT NULL,
    endpoint_id  TEXT    NOT NULL,
    attempt      BIGINT  NOT NULL,
    at           BIGINT  NOT NULL,
    status       INTEGER,
    latency_ms   BIGINT  NOT NULL,
    error        TEXT,
    PRIMARY KEY (event_id, endpoint_id, attempt)
);
