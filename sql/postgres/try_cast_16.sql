-- Casts that give NULL instead of an error (see try_cast_15.sql), on PostgreSQL 16 and newer through
-- pg_input_is_valid: plain SQL functions the planner inlines, no subtransaction.
CREATE OR REPLACE FUNCTION dobsob.try_numeric(v text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN pg_input_is_valid(v, 'numeric') THEN v::numeric END $$;
CREATE OR REPLACE FUNCTION dobsob.try_double(v text) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN pg_input_is_valid(v, 'double precision') THEN v::double precision END $$;
CREATE OR REPLACE FUNCTION dobsob.try_timestamp(v text) RETURNS timestamp
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT CASE WHEN pg_input_is_valid(v, 'timestamp') THEN v::timestamp END $$;
CREATE OR REPLACE FUNCTION dobsob.try_timestamptz(v text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT CASE WHEN pg_input_is_valid(v, 'timestamptz') THEN v::timestamptz END $$;
