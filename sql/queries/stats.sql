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
