-- A leaner storage shape (issue 18): fewer B-trees written per payment, the same rows.
--
-- Before, a payment wrote 10 B-trees: payments (rowid) and its autoindexes on id and
-- bank_reference, three indexes on payments, idempotency_keys (rowid) and its autoindexes on
-- (tenant, idempotency_key) and payment_id, and the reaper's index. Now it writes 7:
-- - payments is WITHOUT ROWID, keyed by id: the row lives in the id's B-tree (payment ids are
--   time-ordered, so new rows append); no separate rowid table.
-- - bank_reference is no longer UNIQUE: nothing looks a payment up by it, and it is derived from
--   the payment's id (`pay_<id>`: see `NewPayment::bank_reference`), which is the primary key.
-- - idempotency_keys keeps its rowid: its rows grow several-fold when the response is stored at
--   settlement, and idempotency keys arrive in random order, so keyed by (tenant, key) the wide
--   rows would be inserted and grown all over the tree (measured: twice the WAL pages written
--   per payment with random keys). The (tenant, key) primary key stays a narrow index; the rows
--   append in rowid order.
-- - idempotency_keys.payment_id has no index and no foreign key any more: the store addresses a
--   payment's key by (tenant, idempotency_key), read from the payment row, and checks the
--   key's payment_id in the same WHERE. The foreign key needed that index (SQLite looks up the
--   children when a parent row is inserted or deleted). Every key is inserted in the same
--   transaction as its payment, whose id is the primary key, and deleted with it by a release,
--   so a key still names exactly one payment and each payment has at most one key.
-- - the reconciler's index holds pending payments only (partial), in the order its scan reads
--   them (next_reconcile_at, created_at, id), and counts them for `pending_count`. A final
--   payment leaves it.
-- - the reaper's index holds completed keys only (partial): a claim does not write it.
-- - the CHECKs on status and state are chains of `=` instead of `IN (…)`: SQLite evaluates an
--   IN list of more than two constants through a temporary B-tree it builds (and frees) on every
--   execution of the statement, i.e. on every INSERT or UPDATE of the row; an OR chain is a few
--   comparisons. Same rule, same NULL handling (the columns are NOT NULL anyway).
--
-- SQLite cannot change a table to WITHOUT ROWID or drop a column constraint in place, so the
-- tables are created anew, filled, and swapped in; all in this migration's transaction.

CREATE TABLE payments_lean (
    id                TEXT    PRIMARY KEY NOT NULL,
    tenant            TEXT    NOT NULL,
    idempotency_key   TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status = 'pending' OR status = 'succeeded'
                                              OR status = 'declined' OR status = 'failed'),
    amount            INTEGER NOT NULL,
    currency          TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    description       TEXT,
    metadata          TEXT,                -- JSON object
    bank_reference    TEXT    NOT NULL,    -- pay_<id>: unique because the id is
    bank_charge_id    TEXT,
    decline_code      TEXT,
    failure_reason    TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    next_reconcile_at INTEGER,
    last_attempt_at   INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO payments_lean (id, tenant, idempotency_key, status, amount, currency, source,
    description, metadata, bank_reference, bank_charge_id, decline_code, failure_reason,
    attempts, lease_owner, lease_expires_at, next_reconcile_at, last_attempt_at, created_at,
    updated_at)
SELECT id, tenant, idempotency_key, status, amount, currency, source,
    description, metadata, bank_reference, bank_charge_id, decline_code, failure_reason,
    attempts, lease_owner, lease_expires_at, next_reconcile_at, last_attempt_at, created_at,
    updated_at
FROM payments ORDER BY id;

CREATE TABLE idempotency_keys_lean (
    tenant           TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    payment_id       TEXT    NOT NULL,     -- the payment inserted with this key
    state            TEXT    NOT NULL CHECK (state = 'in_flight' OR state = 'pending'
                                             OR state = 'completed'),
    response_status  INTEGER,
    response_headers TEXT,                 -- JSON array of [name, value] pairs
    response_body    BLOB,
    created_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    PRIMARY KEY (tenant, idempotency_key)
);

INSERT INTO idempotency_keys_lean (rowid, tenant, idempotency_key, fingerprint, payment_id,
    state, response_status, response_headers, response_body, created_at, completed_at)
SELECT rowid, tenant, idempotency_key, fingerprint, payment_id,
    state, response_status, response_headers, response_body, created_at, completed_at
FROM idempotency_keys ORDER BY rowid;

-- The child first: with foreign keys on, dropping the parent while a key still referenced it
-- would be a violation.
DROP TABLE idempotency_keys;
DROP TABLE payments;
ALTER TABLE payments_lean RENAME TO payments;
ALTER TABLE idempotency_keys_lean RENAME TO idempotency_keys;

-- The reconciler's scan (`status = 'pending' AND next_reconcile_at <= ?`, oldest first, with
-- `created_at, id` breaking ties) and `pending_count`: pending payments only.
CREATE INDEX payments_pending_due ON payments (next_reconcile_at, created_at)
    WHERE status = 'pending';
-- A tenant's listing, newest first, with the (created_at, id) cursor.
CREATE INDEX payments_tenant_created ON payments (tenant, created_at, id);
-- The operators' listing across tenants.
CREATE INDEX payments_created ON payments (created_at, id);
-- The reaper (`state = 'completed' AND completed_at < ?`): completed keys only.
CREATE INDEX idempotency_keys_completed ON idempotency_keys (completed_at)
    WHERE state = 'completed';
