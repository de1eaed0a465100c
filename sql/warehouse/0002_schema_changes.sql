-- Changes dobsob made to a dataset table's columns in place: a number column of a live table widened (BIGINT to
-- DECIMAL(18,2), ...), or any number column made VARCHAR because the portal sent a value no number type holds
-- exactly. Applied on every open; idempotent.
CREATE TABLE IF NOT EXISTS dobsob.schema_changes (
    table_name   VARCHAR NOT NULL,
    column_name  VARCHAR NOT NULL,
    from_type    VARCHAR NOT NULL,
    to_type      VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    changed_at   TIMESTAMP NOT NULL
);
