-- dobsob ledger, schema version 1. Applied by src/ledger/mod.rs inside one transaction; PRAGMA user_version
-- records the last migration applied.

-- One row per dataset ever synced: where it stands.
CREATE TABLE datasets (
    key                   TEXT PRIMARY KEY,
    socrata_id            TEXT NOT NULL,
    -- The incremental watermark: the last committed row in (:updated_at, :id) order, as the portal sent it.
    wm_updated_at         TEXT,
    wm_id                 TEXT,
    row_count             INTEGER,
    schema_fingerprint    TEXT,
    -- The portal's rowsUpdatedAt (epoch seconds) when the last successful sync started.
    source_rows_updated_at INTEGER,
    last_success_at       TEXT,
    last_attempt_at       TEXT,
    last_error            TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0
);

-- One row per dobsob command run that touched datasets.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    command      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    -- running | ok | failed | interrupted
    outcome      TEXT NOT NULL DEFAULT 'running',
    datasets_ok     INTEGER NOT NULL DEFAULT 0,
    datasets_failed INTEGER NOT NULL DEFAULT 0
);

-- One row per dataset per run.
CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    dataset_key   TEXT NOT NULL,
    -- full | incremental | unchanged
    mode          TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT NOT NULL DEFAULT 'running',
    rows_fetched  INTEGER NOT NULL DEFAULT 0,
    rows_upserted INTEGER NOT NULL DEFAULT 0,
    rows_deleted  INTEGER NOT NULL DEFAULT 0,
    bytes         INTEGER NOT NULL DEFAULT 0,
    pages         INTEGER NOT NULL DEFAULT 0,
    -- sha256 over the page hashes in order: one fingerprint of everything this attempt received.
    sha256        TEXT,
    error         TEXT
);
CREATE INDEX attempts_by_dataset ON attempts(dataset_key, id);

-- One row per page committed to the warehouse.
CREATE TABLE pages (
    attempt_id       INTEGER NOT NULL REFERENCES attempts(id),
    seq              INTEGER NOT NULL,
    rows             INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    first_updated_at TEXT,
    first_id         TEXT,
    last_updated_at  TEXT,
    last_id          TEXT,
    committed_at     TEXT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);
