-- One row per payment that is also its idempotency record (issue 18), as on SQLite
-- (`migrations/sqlite/0006_keys_in_payments.sql`): the key's columns move into the payment
-- row, and the idempotency_keys table goes.
--
-- Before, a claim inserted a key row (a heap tuple and three index entries) and a settlement
-- wrote a new version of it (its state is indexed, so never a HOT update: a tuple and three
-- index entries again). Now both are columns of the payment row that the claim inserts and the
-- settlement updates anyway.
--
-- - The key is live while `fingerprint` is set. `payments_key` holds live keys only (partial,
--   unique on (tenant, idempotency_key)): a claim's `INSERT … ON CONFLICT (tenant,
--   idempotency_key) WHERE fingerprint IS NOT NULL DO NOTHING` is decided by it, and a
--   concurrent claim of the same key waits for the first one's transaction, as it did on the
--   old table's primary key.
-- - Reaping a key (after its retention; payments are kept) clears `fingerprint` and the stored
--   response and sets `key_state` to 'reaped': it leaves `payments_key`, so it may be claimed
--   again by a new payment, and the old payment stays, as before.
-- - A key's creation time is its payment's `created_at` (the claim wrote both with the same
--   time); `key_completed_at` is the reaper's clock.

ALTER TABLE payments
    ADD COLUMN fingerprint TEXT,
    ADD COLUMN key_state TEXT NOT NULL DEFAULT 'reaped'
        CHECK (key_state IN ('in_flight', 'pending', 'completed', 'reaped')),
    ADD COLUMN response_status INTEGER,
    ADD COLUMN response_headers JSONB,        -- array of [name, value] pairs, order kept
    ADD COLUMN response_body BYTEA,
    ADD COLUMN key_completed_at BIGINT;

UPDATE payments p SET fingerprint = k.fingerprint, key_state = k.state,
    response_status = k.response_status, response_headers = k.response_headers,
    response_body = k.response_body, key_completed_at = k.completed_at
FROM idempotency_keys k
WHERE k.payment_id = p.id AND k.tenant = p.tenant AND k.idempotency_key = p.idempotency_key;

DROP TABLE idempotency_keys;

-- The claim's unique constraint and the replay's lookup: live keys only.
CREATE UNIQUE INDEX payments_key ON payments (tenant, idempotency_key)
    WHERE fingerprint IS NOT NULL;
-- The reaper (`key_state = 'completed' AND key_completed_at < ?`): completed keys only.
CREATE INDEX payments_key_completed ON payments (key_completed_at)
    WHERE key_state = 'completed';
