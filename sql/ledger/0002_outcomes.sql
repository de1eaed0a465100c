-- dobsob ledger, schema version 2: drift as an outcome with both counts, and the warnings of an attempt.

-- ok | drift | failed | interrupted: how the last attempt that got that far ended.
ALTER TABLE datasets ADD COLUMN last_outcome TEXT;
-- The source's row count at the end of the last sync.
ALTER TABLE datasets ADD COLUMN source_count INTEGER;
ALTER TABLE attempts ADD COLUMN source_count INTEGER;
-- Values kept verbatim in the warehouse's dobsob.uncastable (text in a number column, ...).
ALTER TABLE datasets ADD COLUMN uncastable INTEGER;

-- What the portal did that dobsob noticed and worked around (a capped $limit, a column the metadata lacks,
-- an incomplete id listing), one row per warning per attempt.
CREATE TABLE warnings (
    attempt_id   INTEGER NOT NULL REFERENCES attempts(id),
    dataset_key  TEXT NOT NULL,
    message      TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX warnings_by_dataset ON warnings(dataset_key, attempt_id);
