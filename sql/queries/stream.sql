-- Stream positions and replays (SPEC §5 "Resume without gaps"; docs/architecture.md,
-- "Gap-free stream positions"). A position is (A, B, i): every audit row visible in
-- snapshot A, plus the rows visible in snapshot B with id <= i.

-- name: stream_snapshot
-- The current snapshot: where a stream that starts now stands.
SELECT pg_current_snapshot()::text;

-- name: event_replay
-- The audit rows after position (A, B, after_id) that the coverage selects, in delivery
-- order (first B's remaining rows, then the newer ones, each by id), and the snapshot they
-- were read in (on every row; alone on one row of NULLs when there are none). The statement
-- reads in that very snapshot: pg_current_snapshot() is the statement's own.
-- "Not visible in A" is written (xid = ANY(A's in-progress xids) OR xid >= A.xmax) so that
-- events_xid_idx finds the rows in two probes, whatever A.xmin is (an old open transaction
-- elsewhere in the cluster holds xmin back, not xmax).
WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS now)
SELECT s.now::text AS snapshot, x.*
  FROM s LEFT JOIN LATERAL (
    SELECT e.id, e.xid::text AS xid, e.task_id, e.event, e.status, t.queue, t.user_id,
           pg_visible_in_snapshot(e.xid, %(b)s::pg_snapshot) AS in_b
      FROM pgqueue.events e JOIN pgqueue.tasks t ON t.id = e.task_id
     WHERE (e.xid = ANY(%(a_xip)s::text[]::xid8[]) OR e.xid >= %(a_xmax)s::xid8)
       AND NOT (e.id <= %(after_id)s AND pg_visible_in_snapshot(e.xid, %(b)s::pg_snapshot))
       AND (%(everything)s OR e.task_id = ANY(%(task_ids)s::uuid[])
            OR t.queue = ANY(%(queues)s::text[]))
       AND (%(owner)s::text IS NULL OR t.user_id = %(owner)s::text)
     ORDER BY in_b DESC, e.id
     LIMIT %(limit)s
  ) x ON true;

-- name: stream_horizon_get
-- The newest transaction whose audit rows were deleted (NULL: none ever were).
SELECT (SELECT xid::text FROM pgqueue.stream_horizon);
