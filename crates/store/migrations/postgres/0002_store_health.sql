-- Readiness: `Store::ping` commits a tiny write here, so a store that can read but not write
-- (a full disk, a read-only standby, a lock it cannot get within the ping's timeout) is reported
-- not ready. One row, updated in place.
CREATE TABLE store_health (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    beats    BIGINT  NOT NULL DEFAULT 0,    -- heartbeats committed so far
    beat_at  BIGINT                         -- the last one, ms since the epoch (database clock)
);

INSERT INTO store_health (id, beats) VALUES (1, 0);
