-- Operational reads for GET /queues, /workers, /stats and /metrics. Aggregates over the
-- tasks table: fine for a queue whose finished rows are purged by retention (the default);
-- the operator views in sql/views/ give the same numbers to psql users.

-- name: stats_queues
-- Per queue: counts by status, due now, age of the oldest due task, throughput over the last
-- minute, settings. Read from the operator view so psql and GET /queues cannot disagree.
SELECT queue AS name, pending, running, completed, failed, cancelled, due,
       oldest_due_age_s::float8 AS oldest_due_age_s, completed_last_minute, paused,
       concurrency_limit
  FROM pgqueue.queue_stats
 ORDER BY queue;

-- name: stats_queues_of_user
-- GET /queues for a user token: the same columns, counting only %(user_id)s's tasks, for the
-- queues that user has tasks in (another tenant's backlog is not theirs to see, SPEC §4).
-- Served by tasks_user_idx; the settings columns are the queue's own.
SELECT t.queue AS name, t.pending, t.running, t.completed, t.failed, t.cancelled, t.due,
       round(coalesce(t.oldest_due_age_s, 0)::numeric, 1)::float8 AS oldest_due_age_s,
       t.completed_last_minute, coalesce(q.paused, false) AS paused, q.concurrency_limit
  FROM (SELECT queue,
               count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS due,
               count(*) FILTER (WHERE status = 'running') AS running,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               extract(epoch FROM now() - min(run_at) FILTER (
                   WHERE status = 'pending' AND run_at <= now())) AS oldest_due_age_s,
               count(*) FILTER (WHERE status = 'completed'
                                  AND completed_at > now() - interval '1 minute')
                   AS completed_last_minute
          FROM pgqueue.tasks
         WHERE user_id = %(user_id)s::text
         GROUP BY queue) t
  LEFT JOIN pgqueue.queues q ON q.name = t.queue
 ORDER BY t.queue;

-- name: stats_workers
-- Live workers (local and remote) with the age of their last heartbeat.
SELECT id, host, pid, queues, kinds, concurrency, running, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_s
  FROM pgqueue.workers ORDER BY id;

-- name: stats_usage_by_user
-- Task counts and summed usage per owner; %(user_id)s (when not NULL) limits it to one owner.
-- Sums are numeric and clamped (pgqueue.usage_tokens/usage_cost): no task's usage, however
-- large, makes /stats fail for anyone (SPEC §2 "Bounded numbers").
SELECT user_id, count(*) AS tasks,
       pgqueue.usage_tokens(sum((usage->>'input_tokens')::numeric)) AS input_tokens,
       pgqueue.usage_tokens(sum((usage->>'output_tokens')::numeric)) AS output_tokens,
       pgqueue.usage_cost(sum((usage->>'cost')::numeric)) AS cost
  FROM pgqueue.tasks
 WHERE %(user_id)s::text IS NULL OR user_id = %(user_id)s::text
 GROUP BY user_id ORDER BY user_id NULLS FIRST;

-- name: stats_usage_by_queue
-- Task counts and summed usage per queue; %(user_id)s (when not NULL) counts one owner's only.
SELECT queue, count(*) AS tasks,
       pgqueue.usage_tokens(sum((usage->>'input_tokens')::numeric)) AS input_tokens,
       pgqueue.usage_tokens(sum((usage->>'output_tokens')::numeric)) AS output_tokens,
       pgqueue.usage_cost(sum((usage->>'cost')::numeric)) AS cost
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
