-- dobsob ledger, schema version 3: why an attempt did nothing. Attempts may now end 'skipped' (not due, or
-- a full load needed under --incremental-only); runs or attempts a killed process left 'running' are
-- marked 'abandoned' by the next run.
ALTER TABLE attempts ADD COLUMN reason TEXT;
