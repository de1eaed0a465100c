-- Casts that give NULL instead of an error, for a value that does not fit its column's type (the page's
-- other values load; the cell is kept in dobsob.uncastable). PostgreSQL 15 and older have no
-- pg_input_is_valid: an exception block, which costs a subtransaction per call, so the load's SQL calls these
-- only for values a cheaper test could not settle.
CREATE OR REPLACE FUNCTION dobsob.try_numeric(v text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN RETURN v::numeric; EXCEPTION WHEN others THEN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION dobsob.try_double(v text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN RETURN v::double precision; EXCEPTION WHEN others THEN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION dobsob.try_timestamp(v text) RETURNS timestamp
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN RETURN v::timestamp; EXCEPTION WHEN others THEN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION dobsob.try_timestamptz(v text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN RETURN v::timestamptz; EXCEPTION WHEN others THEN RETURN NULL; END $$;
