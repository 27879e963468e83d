-- Claim: the worker side of SKIP LOCKED. The logic (claim order, paused queues, per-queue
-- concurrency limits) lives in pgqueue.claim() in sql/functions/tasks.sql.

-- name: task_claim
-- Claim up to %(limit)s due tasks of the given queues and kinds (NULL: any kind) for one
-- worker. Each returned task is running, its attempts bumped: (attempts, worker_id) is the
-- lease.
SELECT * FROM pgqueue.claim(%(worker_id)s, %(queues)s::text[], %(kinds)s::text[], %(limit)s);

-- name: task_next_run_at
-- When the earliest future task of these queues becomes due, so an idle worker can sleep
-- until then instead of polling. One ordered probe of tasks_scheduled_idx per queue (a plain
-- min() over `queue = ANY(...)` read every pending row: 26 ms with 120,000 of them).
SELECT min(n.run_at)
  FROM unnest(%(queues)s::text[]) AS q(name)
 CROSS JOIN LATERAL (
       SELECT t.run_at FROM pgqueue.tasks t
        WHERE t.status = 'pending' AND t.run_at > t.created_at AND t.queue = q.name
          AND t.run_at > now() AND t.kind = ANY(%(kinds)s::text[])
        ORDER BY t.run_at
        LIMIT 1) n;
