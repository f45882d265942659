-- Several banks (issue 19, docs/failover.md): a payment is with one bank at a time, and each
-- (payment, bank) pair it was ever sent to has its own reference, recorded before that bank is
-- called.
-- - payments.bank: the bank the payment is with now (its bank_reference is the one it has
--   there). Payments from before this migration were with the one bank of `--bank-url`, which
--   the API names `bank`.
-- - payment_routes: one row per (payment, bank), written by the claim (the first bank) and by
--   each move to another bank (in the same transaction as the payment's new bank), so after a
--   crash every bank that may hold a charge for the payment is known. A release (nothing was
--   processed anywhere) deletes the payment's routes with it.

ALTER TABLE payments ADD COLUMN bank TEXT NOT NULL DEFAULT 'bank';

CREATE TABLE payment_routes (
    payment_id TEXT    NOT NULL,
    bank       TEXT    NOT NULL,
    reference  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (payment_id, bank)
) WITHOUT ROWID;

INSERT INTO payment_routes (payment_id, bank, reference, created_at)
SELECT id, bank, bank_reference, created_at FROM payments;
