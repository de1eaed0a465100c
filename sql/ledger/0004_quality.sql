-- dobsob ledger, schema version 4: the data-quality profile of each attempt that changed a dataset, and the
-- columns as the portal describes them (for the dashboard).

-- One row per attempt that profiled its table: the profile (JSON: rows, distinct ids, uncastable values,
-- per column NULLs and min/max) and what it showed against the profile before (JSON: a list of anomalies).
CREATE TABLE profiles (
    attempt_id   INTEGER PRIMARY KEY REFERENCES attempts(id),
    dataset_key  TEXT NOT NULL,
    at           TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    profile      TEXT NOT NULL,
    anomalies    TEXT NOT NULL
);
CREATE INDEX profiles_by_dataset ON profiles(dataset_key, attempt_id);

-- The dataset's columns at its last successful sync, in the portal's order, with the portal's names and
-- descriptions (replaced whole by each success).
CREATE TABLE columns (
    dataset_key  TEXT NOT NULL,
    position     INTEGER NOT NULL,
    field_name   TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    PRIMARY KEY (dataset_key, position)
);

-- Requests each attempt sent to the portal (retries included), for the run history.
ALTER TABLE attempts ADD COLUMN requests INTEGER NOT NULL DEFAULT 0;
