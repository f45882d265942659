-- Several banks (issue 19, docs/failover.md): a payment is with one bank at a time, and each
-- (payment, bank) pair it was ever sent to has its own reference, recorded before that bank is
-- called. See the SQLite migration 0004 for the rules; the shapes are the same.

ALTER TABLE payments ADD COLUMN bank TEXT NOT NULL DEFAULT 'bank';

CREATE TABLE payment_routes (
    payment_id UUID   NOT NULL,
    bank       TEXT   NOT NULL,
    reference  TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (payment_id, bank)
);

INSERT INTO payment_routes (payment_id, bank, reference, created_at)
SELECT id, bank, bank_reference, created_at FROM payments;
