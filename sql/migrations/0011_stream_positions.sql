-- 0011 — commit-ordered stream positions: which transaction wrote each audit row.
--
-- A stream resume ("every change after event E", SPEC §5) cannot go by events.id: ids are
-- drawn when a row is inserted, not when its transaction commits, so a transaction that drew
-- id 10 and committed after the one that drew id 11 would be skipped by "id > 11". What a
-- reader can know exactly is a snapshot: the set of transactions whose work it sees. Each
-- audit row now records its (top-level) transaction, and a stream position is built from
-- snapshots: "everything visible in snapshot A, plus the rows of snapshot B up to id i"
-- (docs/architecture.md, "Gap-free stream positions"). A replay is then the rows whose
-- transaction that position does not cover, whenever it committed.
--
-- No default on ADD COLUMN (that would rewrite the table); rows written before this
-- migration keep NULL: older than any position, never replayed.
ALTER TABLE pgqueue.events ADD COLUMN xid xid8;
ALTER TABLE pgqueue.events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

-- "Not visible in snapshot S" is (xid = ANY(S's in-progress list) OR xid >= S.xmax): two index
-- probes, however old the oldest running transaction is. Keys grow with time, so inserts
-- land on the rightmost leaf.
CREATE INDEX events_xid_idx ON pgqueue.events (xid);

-- The newest transaction whose audit rows were deleted (retention, purge): a position that
-- does not cover it may have lost rows to the delete, and a resume from it is refused
-- (since_expired) rather than silently missing changes. One row, written only by deletes.
CREATE TABLE pgqueue.stream_horizon (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    xid     xid8 NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION pgqueue.on_events_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgqueue.stream_horizon (xid)
    SELECT max(o.xid) FROM old_rows o HAVING max(o.xid) IS NOT NULL
    ON CONFLICT (one) DO UPDATE
        SET xid = greatest(pgqueue.stream_horizon.xid, excluded.xid), set_at = now();
    RETURN NULL;
END
$$;

CREATE TRIGGER events_delete_horizon AFTER DELETE ON pgqueue.events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.on_events_delete();
