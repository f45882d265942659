-- Payments and their idempotency keys (PostgreSQL).
-- Times are BIGINT milliseconds since the Unix epoch (UTC), as in the SQLite backend, so both
-- backends round-trip exactly the same values.

CREATE TABLE payments (
    id                UUID    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    idempotency_key   TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'declined', 'failed')),
    amount            BIGINT  NOT NULL,
    currency          TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    description       TEXT,
    metadata          JSONB,
    bank_reference    TEXT    NOT NULL UNIQUE,
    bank_charge_id    TEXT,
    decline_code      TEXT,
    failure_reason    TEXT,
    attempts          BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    next_reconcile_at BIGINT,
    last_attempt_at   BIGINT,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);

-- The reconciler's scan: pending payments by due time.
CREATE INDEX payments_status_next_reconcile ON payments (status, next_reconcile_at);
-- A tenant's listing, newest first, with the (created_at, id) cursor.
CREATE INDEX payments_tenant_created ON payments (tenant, created_at, id);
-- The operators' listing across tenants.
CREATE INDEX payments_created ON payments (created_at, id);

CREATE TABLE idempotency_keys (
    tenant           TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    -- The key is inserted before its payment in the claim transaction, hence deferred.
    payment_id       UUID    NOT NULL UNIQUE
                     REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED,
    state            TEXT    NOT NULL CHECK (state IN ('in_flight', 'pending', 'completed')),
    response_status  INTEGER,
    response_headers JSONB,                -- array of [name, value] pairs, order kept
    response_body    BYTEA,
    created_at       BIGINT  NOT NULL,
    completed_at     BIGINT,
    PRIMARY KEY (tenant, idempotency_key)
);

-- The reaper: completed keys by completion time.
CREATE INDEX idempotency_keys_state_completed ON idempotency_keys (state, completed_at);
