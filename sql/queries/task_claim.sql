-- Claim: the worker side of SKIP LOCKED. The logic (claim order, paused queues, per-queue
-- concurrency limits) lives in pgqueue.claim() in sql/functions/claim.sql.

-- name: task_claim
-- Claim up to %(limit)s due tasks of the given queues and kinds (NULL: any kind) for one
-- worker. Each returned task is running, its attempts bumped: (attempts, worker_id) is the
-- lease.
--
-- The claim commits asynchronously (synchronous_commit off for this transaction only): the
-- WAL flush it would wait for was a quarter of the time from an enqueue's commit to the
-- handler's start. This is safe because nobody is told a claim happened except the worker
-- itself: if the database crashes before the WAL writer flushes it (within ~0.6 s), the
-- task is simply pending again with its attempt count as before, the worker's lease is
-- refused (exactly-once recording), and the task runs again: at-least-once, as after any
-- crash. Enqueues, outcomes and checkpoints stay synchronous: those are promises to others.
WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
SELECT c.*
  FROM async_commit,
       pgqueue.claim(%(worker_id)s, %(queues)s::text[], %(kinds)s::text[], %(limit)s) c;

-- name: task_next_run_at
-- When the earliest future task of these queues becomes due, so an idle worker can sleep
-- until then instead of polling. One ordered probe of tasks_scheduled_idx per queue (a plain
-- min() over `queue = ANY(...)` read every pending row, slower as the backlog grows).
-- Limits hold tasks back too (SPEC §12): the moment a full rate limit frees a slot, and the
-- end of an open circuit breaker's cool-down, count as "due" here; both read only the
-- settings rows of queues that set those limits.
SELECT least(
       (SELECT min(n.run_at)
          FROM unnest(%(queues)s::text[]) AS q(name)
         CROSS JOIN LATERAL (
               SELECT t.run_at FROM pgqueue.tasks t
                WHERE t.status = 'pending' AND t.run_at > t.created_at AND t.queue = q.name
                  AND t.run_at > now() AND t.kind = ANY(%(kinds)s::text[])
                ORDER BY t.run_at
                LIMIT 1) n),
       (SELECT min(r.rate_frees_at)
          FROM pgqueue.queues q CROSS JOIN LATERAL pgqueue.queue_room(q) r
         WHERE q.name = ANY(%(queues)s::text[]) AND q.rate_limit_tasks IS NOT NULL),
       (SELECT min(b.open_until) FROM pgqueue.breakers b
         WHERE b.queue = ANY(%(queues)s::text[]) AND b.open_until > now()));
