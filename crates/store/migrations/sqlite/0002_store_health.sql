-- Readiness: `Store::ping` commits a tiny write here, so a store that can read but not write
-- (a held lock, a full disk, a read-only file) is reported not ready. One row, updated in place.
CREATE TABLE store_health (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    beats    INTEGER NOT NULL DEFAULT 0,    -- heartbeats committed so far
    beat_at  INTEGER                        -- the last one, ms since the epoch (database clock)
);

INSERT INTO store_health (id, beats) VALUES (1, 0);
