-- Facts about the warehouse file itself; 'format' is the version of dobsob's warehouse layout that wrote it,
-- so that an older dobsob refuses a file a newer one wrote instead of changing it. Applied on every open;
-- idempotent.
CREATE TABLE IF NOT EXISTS dobsob.meta (
    key    VARCHAR PRIMARY KEY,
    value  VARCHAR NOT NULL
);
