-- Operational reads for GET /queues, /workers, /stats and /metrics. Aggregates over the
-- tasks table: fine for a queue whose finished rows are purged by retention (the default);
-- the operator views in sql/views/ give the same numbers to psql users.

-- name: stats_queues
-- Per queue: counts by status, what is due now and how long the oldest due task has waited,
-- throughput over the last minute, and the queue's settings (pgqueue.queues) if it has any.
SELECT coalesce(t.queue, q.name) AS name,
       coalesce(t.pending, 0) AS pending, coalesce(t.running, 0) AS running,
       coalesce(t.completed, 0) AS completed, coalesce(t.failed, 0) AS failed,
       coalesce(t.cancelled, 0) AS cancelled, coalesce(t.due, 0) AS due,
       coalesce(t.oldest_due_age_s, 0)::float8 AS oldest_due_age_s,
       coalesce(t.completed_last_minute, 0) AS completed_last_minute,
       coalesce(q.paused, false) AS paused, q.concurrency_limit
  FROM (SELECT queue,
               count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'running') AS running,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS due,
               extract(epoch FROM now() - min(run_at) FILTER (
                   WHERE status = 'pending' AND run_at <= now())) AS oldest_due_age_s,
               count(*) FILTER (WHERE status = 'completed'
                                  AND completed_at > now() - interval '1 minute')
                   AS completed_last_minute
          FROM pgqueue.tasks GROUP BY queue) t
  FULL JOIN pgqueue.queues q ON q.name = t.queue
 ORDER BY 1;

-- name: stats_workers
-- Live workers (local and remote) with the age of their last heartbeat.
SELECT id, host, pid, queues, kinds, concurrency, running, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_s
  FROM pgqueue.workers ORDER BY id;

-- name: stats_usage_by_user
-- Task counts and summed usage per owner; %(user_id)s (when not NULL) limits it to one owner.
SELECT user_id, count(*) AS tasks,
       coalesce(sum((usage->>'input_tokens')::bigint), 0)::bigint AS input_tokens,
       coalesce(sum((usage->>'output_tokens')::bigint), 0)::bigint AS output_tokens,
       coalesce(sum((usage->>'cost')::numeric), 0)::float8 AS cost
  FROM pgqueue.tasks
 WHERE %(user_id)s::text IS NULL OR user_id = %(user_id)s::text
 GROUP BY user_id ORDER BY user_id NULLS FIRST;

-- name: stats_usage_by_queue
-- Task counts and summed usage per queue; %(user_id)s (when not NULL) counts one owner's only.
SELECT queue, count(*) AS tasks,
       coalesce(sum((usage->>'input_tokens')::bigint), 0)::bigint AS input_tokens,
       coalesce(sum((usage->>'output_tokens')::bigint), 0)::bigint AS output_tokens,
       coalesce(sum((usage->>'cost')::numeric), 0)::float8 AS cost
  FROM pgqueue.tasks
 WHERE %(user_id)s::text IS NULL OR user_id = %(user_id)s::text
 GROUP BY queue ORDER BY queue;

-- name: stats_tasks_by_queue_status
-- The task-count gauge of /metrics.
SELECT queue, status::text, count(*) FROM pgqueue.tasks GROUP BY queue, status;

-- name: stats_set_snapshot
-- GET /stats reads three aggregates in one snapshot, so they add up.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;

-- name: stats_tasks_by_status
-- Task counts by status; %(user_id)s (when not NULL) counts one owner's only.
SELECT status::text, count(*) FROM pgqueue.tasks
 WHERE %(user_id)s::text IS NULL OR user_id = %(user_id)s::text
 GROUP BY status;
