-- Changes dobsob made to a dataset table's columns in place, e.g. a decimal column widened to VARCHAR because
-- the portal sent a value DECIMAL(38,18) cannot hold exactly. Applied on every open; idempotent.
CREATE TABLE IF NOT EXISTS dobsob.schema_changes (
    table_name   VARCHAR NOT NULL,
    column_name  VARCHAR NOT NULL,
    from_type    VARCHAR NOT NULL,
    to_type      VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    changed_at   TIMESTAMP NOT NULL
);
