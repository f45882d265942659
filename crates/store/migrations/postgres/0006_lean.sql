-- A leaner PostgreSQL schema (issue 18), as SQLite's `0003_lean.sql`: fewer index entries per
-- payment, the same rows and the same answers.
--
-- A settlement changes `status`, which is indexed, so it is never a HOT update: PostgreSQL
-- writes a new tuple and an entry in every index of `payments` whose predicate the new version
-- satisfies. So each index costs every payment an entry at its claim and another at its
-- settlement.
-- - `bank_reference` is no longer UNIQUE: nothing looks a payment up by it, and it is derived
--   from the payment's id (`pay_<id>`, `pay_<id>_<bank>` after a move: see
--   `NewPayment::bank_reference`), which is the primary key; `payment_routes` is keyed by
--   (payment, bank).
-- - The reconciler's index holds pending payments only (partial), in the order its scan reads
--   them (`next_reconcile_at, created_at`), and counts them for `pending_count`. A final
--   payment leaves it, so a settlement writes no entry there.

ALTER TABLE payments DROP CONSTRAINT payments_bank_reference_key;

DROP INDEX payments_status_next_reconcile;
CREATE INDEX payments_pending_due ON payments (next_reconcile_at, created_at)
    WHERE status = 'pending';
