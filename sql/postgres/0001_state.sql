-- dobsob's own tables in a PostgreSQL warehouse, in schema "dobsob" (the datasets' tables are in the schema the
-- user chose). Applied on every open, under an advisory lock so that workers opening at once do not race;
-- idempotent. The same facts as the DuckDB warehouse's sql/warehouse/, in PostgreSQL's types.
CREATE SCHEMA IF NOT EXISTS dobsob;

CREATE TABLE IF NOT EXISTS dobsob.meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

-- Where each dataset's sync stands, committed in the same transaction as the rows it describes.
CREATE TABLE IF NOT EXISTS dobsob.sync_state (
    dataset            text PRIMARY KEY,
    phase              text NOT NULL CHECK (phase IN ('full', 'incremental')),
    load_table         text,
    cursor_id          text,
    wm_updated_at      text,
    wm_id              text,
    schema_fingerprint text NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- Values that would not cast to their column's type, kept verbatim (the column holds NULL).
CREATE TABLE IF NOT EXISTS dobsob.uncastable (
    table_name   text NOT NULL,
    socrata_id   text NOT NULL,
    column_name  text NOT NULL,
    data_type    text NOT NULL,
    raw_value    text NOT NULL
);
CREATE INDEX IF NOT EXISTS uncastable_row ON dobsob.uncastable (table_name, socrata_id);

-- The column mapping of each dataset table: Socrata field and type to PostgreSQL column and type.
CREATE TABLE IF NOT EXISTS dobsob.columns (
    table_name     text NOT NULL,
    position       integer NOT NULL,
    column_name    text NOT NULL,
    socrata_type   text NOT NULL,
    pg_type        text NOT NULL
);

-- Changes dobsob made to a table's columns in place (none so far: numeric holds every portal number).
CREATE TABLE IF NOT EXISTS dobsob.schema_changes (
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    from_type    text NOT NULL,
    to_type      text NOT NULL,
    reason       text NOT NULL,
    changed_at   timestamptz NOT NULL
);

-- From the catalog and the portal's metadata, written when a dataset syncs.
CREATE TABLE IF NOT EXISTS dobsob.datasets_info (
    key          text PRIMARY KEY,
    socrata_id   text NOT NULL,
    name         text,
    portal_name  text,
    description  text,
    source_url   text,
    frequency    text,
    priority     text,
    described_at timestamptz
);

-- Each dataset's sync history as every worker saw it: what decides "due" for `sync --schedule-check` on any
-- worker, and what `dobsob_datasets` shows. A worker writes a row only when its facts are newer.
CREATE TABLE IF NOT EXISTS dobsob.datasets_state (
    key                    text PRIMARY KEY,
    rows                   bigint,
    source_rows            bigint,
    last_success_at        timestamptz,
    last_attempt_at        timestamptz,
    last_outcome           text,
    last_error             text,
    consecutive_failures   bigint,
    watermark_updated_at   text,
    watermark_id           text,
    source_last_updated_at timestamptz,
    due_at                 timestamptz,
    stale_at               timestamptz,
    published_at           timestamptz,
    worker                 text
);

-- Who syncs a dataset now. The claim itself is a session advisory lock (released by the server when a
-- worker's connection ends); this row only says who took it and when, for the others' reports.
CREATE TABLE IF NOT EXISTS dobsob.claims (
    dataset  text PRIMARY KEY,
    worker   text NOT NULL,
    since    timestamptz NOT NULL
);
