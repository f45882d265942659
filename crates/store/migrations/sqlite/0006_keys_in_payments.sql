-- One row per payment that is also its idempotency record (issue 18): the key's columns move
-- into the payment row, and the idempotency_keys table goes.
--
-- Before, a claim inserted two rows (the key, then its payment) and a settlement updated both,
-- reading the payment's (tenant, key) in between to address the key: 6 statements and 9
-- B-trees written per payment. Now a claim is one INSERT and a settlement one UPDATE (plus the
-- outbox's event), and a payment writes 8 B-trees: the key's rowid table and its primary key
-- are replaced by one unique index on payments.
--
-- - The key is live while `fingerprint` is set. `payments_key` holds live keys only (partial,
--   unique on (tenant, idempotency_key)), so a claim's `INSERT … ON CONFLICT … DO NOTHING` is
--   decided by it, exactly as by the old table's primary key.
-- - Reaping a key (after its retention; payments are kept) clears `fingerprint` and the stored
--   response and sets `key_state` to 'reaped': the key leaves `payments_key`, so it may be
--   claimed again by a new payment, and the old payment stays, as before.
-- - The partial index is on `fingerprint IS NOT NULL`, not on `key_state`, on purpose: a
--   settlement changes `key_state` (in_flight or pending to completed), and SQLite rewrites an
--   index entry whenever a column of the index's WHERE changes; `fingerprint` changes only
--   when the key is reaped.
-- - A key's creation time is its payment's `created_at`: the claim wrote both with the same
--   time. `key_completed_at` is the key's completion (the reaper's clock).
-- - The reaper's index holds completed keys only (partial), as before.
--
-- Every key belongs to exactly one payment (inserted and deleted in the same transactions), so
-- the copy below gives each payment its key, if it still has one; a payment whose key was
-- already reaped gets the defaults: 'reaped', no fingerprint.

ALTER TABLE payments ADD COLUMN fingerprint TEXT;
ALTER TABLE payments ADD COLUMN key_state TEXT NOT NULL DEFAULT 'reaped'
    CHECK (key_state = 'in_flight' OR key_state = 'pending' OR key_state = 'completed'
           OR key_state = 'reaped');
ALTER TABLE payments ADD COLUMN response_status INTEGER;
ALTER TABLE payments ADD COLUMN response_headers TEXT;      -- JSON array of [name, value] pairs
ALTER TABLE payments ADD COLUMN response_body BLOB;
ALTER TABLE payments ADD COLUMN key_completed_at INTEGER;

UPDATE payments SET (fingerprint, key_state, response_status, response_headers, response_body,
                     key_completed_at) =
    (SELECT k.fingerprint, k.state, k.response_status, k.response_headers, k.response_body,
            k.completed_at
     FROM idempotency_keys k
     WHERE k.tenant = payments.tenant AND k.idempotency_key = payments.idempotency_key
       AND k.payment_id = payments.id)
WHERE EXISTS (SELECT 1 FROM idempotency_keys k
              WHERE k.tenant = payments.tenant AND k.idempotency_key = payments.idempotency_key
                AND k.payment_id = payments.id);

DROP TABLE idempotency_keys;

-- The claim's unique constraint and the replay's lookup: live keys only.
CREATE UNIQUE INDEX payments_key ON payments (tenant, idempotency_key)
    WHERE fingerprint IS NOT NULL;
-- The reaper (`key_state = 'completed' AND key_completed_at < ?`): completed keys only.
CREATE INDEX payments_key_completed ON payments (key_completed_at)
    WHERE key_state = 'completed';
