-- What the warehouse holds, for analysts who open it without dobsob: one row per dataset in the view
-- main.dobsob_datasets. Applied on every open; idempotent.

-- From the catalog and the portal's metadata, written when a dataset syncs (also when it is unchanged, so a
-- description edited on the portal shows up).
CREATE TABLE IF NOT EXISTS dobsob.datasets_info (
    key          VARCHAR PRIMARY KEY,
    socrata_id   VARCHAR NOT NULL,
    -- The catalog's name, and the portal's own name and description.
    name         VARCHAR,
    portal_name  VARCHAR,
    description  VARCHAR,
    -- The dataset's page on the portal.
    source_url   VARCHAR,
    frequency    VARCHAR,
    priority     VARCHAR,
    described_at TIMESTAMPTZ
);

-- From the ledger, rewritten at every publish.
CREATE TABLE IF NOT EXISTS dobsob.datasets_state (
    key                    VARCHAR PRIMARY KEY,
    rows                   BIGINT,
    source_rows            BIGINT,
    last_success_at        TIMESTAMPTZ,
    last_attempt_at        TIMESTAMPTZ,
    last_outcome           VARCHAR,
    last_error             VARCHAR,
    consecutive_failures   BIGINT,
    watermark_updated_at   VARCHAR,
    watermark_id           VARCHAR,
    source_last_updated_at TIMESTAMPTZ,
    -- When `sync --schedule-check` syncs it again: last success + the period of its frequency - 1 hour (the
    -- default --grace); the same time as `dobsob status --json`'s next_due_at.
    due_at                 TIMESTAMPTZ,
    published_at           TIMESTAMPTZ
);
-- When the copy is stale: last success + the period of its frequency (warehouses before this column get it
-- here, NULL until the next publish).
ALTER TABLE dobsob.datasets_state ADD COLUMN IF NOT EXISTS stale_at TIMESTAMPTZ;

CREATE OR REPLACE VIEW main.dobsob_datasets AS
SELECT i.key, i.socrata_id, i.name, i.portal_name, i.description, i.source_url, i.frequency, i.priority,
       s.rows, s.source_rows, s.last_success_at, s.source_last_updated_at,
       s.watermark_updated_at, s.watermark_id,
       s.due_at, s.stale_at, (s.last_success_at IS NULL OR now() > s.stale_at) AS stale,
       s.last_outcome, s.last_error, s.consecutive_failures, s.last_attempt_at, s.published_at
FROM dobsob.datasets_info i LEFT JOIN dobsob.datasets_state s USING (key)
ORDER BY i.key;
