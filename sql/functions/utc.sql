-- Timestamps rendered into JSON by SQL, in UTC whatever the session's TimeZone.
--
-- to_jsonb(timestamptz) writes the session's offset, and pgqueue sets no session TimeZone
-- (through PgBouncer in transaction mode a session setting would not stick, SPEC §17): a
-- server configured for Europe/Berlin would store "+01:00" in a checkpoint. The API speaks
-- RFC 3339 UTC, so SQL that puts a time into JSON goes through this.
-- IMMUTABLE: the pattern has digits only (no month or day names), so neither the locale nor
-- the session's TimeZone changes the text.
CREATE OR REPLACE FUNCTION pgqueue.utc_text(at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;
