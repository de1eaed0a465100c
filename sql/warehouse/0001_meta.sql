-- dobsob's own tables inside the warehouse, in schema "dobsob" so that "main" holds only the datasets.
-- Applied on every open; idempotent.
CREATE SCHEMA IF NOT EXISTS dobsob;

-- Where each dataset's sync stands, committed in the same transaction as the rows it describes. This is the
-- truth the ledger is repaired from after a crash.
CREATE TABLE IF NOT EXISTS dobsob.sync_state (
    dataset            VARCHAR PRIMARY KEY,
    -- 'full': a full load is filling load_table; 'incremental': the table named like the dataset is live.
    phase              VARCHAR NOT NULL,
    load_table         VARCHAR,
    -- Full load: the last :id loaded (server order).
    cursor_id          VARCHAR,
    -- Full load: the newest row when the load started, where the incremental pass will begin.
    -- Incremental: the watermark, the last row committed in (:updated_at, :id) order.
    wm_updated_at      VARCHAR,
    wm_id              VARCHAR,
    schema_fingerprint VARCHAR NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

-- Values that would not cast to their column's type are kept here, verbatim, instead of becoming NULL.
CREATE TABLE IF NOT EXISTS dobsob.uncastable (
    table_name   VARCHAR NOT NULL,
    socrata_id   VARCHAR NOT NULL,
    column_name  VARCHAR NOT NULL,
    data_type    VARCHAR NOT NULL,
    raw_value    VARCHAR NOT NULL
);

-- The column mapping of each dataset table: Socrata field and type to DuckDB column and type.
CREATE TABLE IF NOT EXISTS dobsob.columns (
    table_name     VARCHAR NOT NULL,
    position       INTEGER NOT NULL,
    column_name    VARCHAR NOT NULL,
    socrata_type   VARCHAR NOT NULL,
    duckdb_type    VARCHAR NOT NULL
);
