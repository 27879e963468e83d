-- Claim: the worker side of SKIP LOCKED. The logic (claim order, paused queues, per-queue
-- concurrency limits) lives in pgqueue.claim() in sql/functions/tasks.sql.

-- name: task_claim
-- Claim up to %(limit)s due tasks of the given queues and kinds for one worker. Each returned
-- task is running, its attempts bumped: (attempts, worker_id) is the lease.
SELECT * FROM pgqueue.claim(%(worker_id)s, %(queues)s::text[], %(kinds)s::text[], %(limit)s);

-- name: task_next_run_at
-- When the earliest pending task of these queues becomes due, so an idle worker can sleep
-- until then instead of polling. Served by tasks_claim_idx.
SELECT min(run_at) FROM pgqueue.tasks
 WHERE status = 'pending' AND queue = ANY(%(queues)s::text[]) AND kind = ANY(%(kinds)s::text[]);
