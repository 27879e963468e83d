-- Operational reads for GET /queues, /workers, /stats and /metrics. Aggregates over the
-- tasks table: fine for a queue whose finished rows are purged by retention (the default);
-- the operator views in sql/views/ give the same numbers to psql users.

-- name: stats_queues
-- Per queue: counts by status, due now, age of the oldest due task, throughput over the last
-- minute, settings. Read from the operator view so psql and GET /queues cannot disagree.
SELECT queue AS name, pending, running, completed, failed, cancelled, due,
       oldest_due_age_s::float8 AS oldest_due_age_s, completed_last_minute, paused,
       concurrency_limit, rate_limit_tasks, rate_limit_per_s, per_user_concurrency, fair,
       breaker_failures, breaker_cool_down_s, open_breakers
  FROM pgqueue.queue_stats
 ORDER BY queue;

-- name: stats_queues_of_user
-- GET /queues for a user token: the same columns, counting only %(user_id)s's tasks, for the
-- queues that user has tasks in (another tenant's backlog is not theirs to see, SPEC §4).
-- Served by tasks_user_idx; the settings columns are the queue's own.
SELECT t.queue AS name, t.pending, t.running, t.completed, t.failed, t.cancelled, t.due,
       round(coalesce(t.oldest_due_age_s, 0)::numeric, 1)::float8 AS oldest_due_age_s,
       t.completed_last_minute, coalesce(q.paused, false) AS paused, q.concurrency_limit,
       q.rate_limit_tasks, q.rate_limit_per_s, q.per_user_concurrency,
       coalesce(q.fair, false) AS fair, q.breaker_failures, q.breaker_cool_down_s,
       CASE WHEN q.breaker_failures IS NOT NULL THEN pgqueue.open_breakers(q.name)
            ELSE '{}' END AS open_breakers
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
-- Workers with a heartbeat row (local and remote), the age of their last heartbeat, the
-- tasks they run by the tasks table and whether they are alive, both from the operator view
-- (GET /workers and `pgqueue status` show the same rows; WorkerStatus).
SELECT w.id, w.host, w.pid, w.queues, w.kinds, w.concurrency, w.running, w.started_at,
       w.heartbeat_at, extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_s,
       s.running_tasks, s.alive
  FROM pgqueue.workers w JOIN pgqueue.worker_status s ON s.id = w.id
 ORDER BY w.id;

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

-- name: stats_held_back
-- Due tasks held back now by each §12 rule, per queue (the pgqueue_tasks_held_back gauge).
SELECT queue, reason, tasks FROM pgqueue.held_back;

-- name: stats_event_ids
-- /metrics: the ids of the audit rows after %(after)s, oldest first, at most %(limit)s. The
-- caller finds the end of the unbroken run of ids from there (an id missing may belong to
-- a transaction that has not committed yet; see pgqueue/api/metrics.py).
SELECT id FROM pgqueue.events WHERE id > %(after)s ORDER BY id LIMIT %(limit)s;

-- name: stats_event_max_id
-- /metrics: where a process starts reading the audit trail (its counters start at zero).
SELECT coalesce(max(id), 0) FROM pgqueue.events;

-- name: stats_task_observations
-- /metrics, §15: the starts and attempt ends recorded in events (after, upto], per queue,
-- kind and event, bucketed by %(bounds)s (width_bucket: 0 below the first bound, n past
-- the last). For 'started' the seconds are from when the task fell due (the event before
-- it: its time, or the run_at it set); for an attempt's end (completed, failed,
-- retry_scheduled, requeued, cancelled) from its 'started', when the event just before it
-- (progress, checkpoints and cancel requests aside) is one — a pending task cancelled has
-- no run time. Both lookups walk events_task_idx backwards from the row.
SELECT coalesce(t.queue, '?') AS queue, coalesce(t.kind, '?') AS kind, e.event,
       width_bucket(s.seconds, %(bounds)s::float8[]) AS bucket,
       count(*) AS n, coalesce(sum(s.seconds), 0)::float8 AS total
  FROM pgqueue.events e
  LEFT JOIN pgqueue.tasks t ON t.id = e.task_id
  LEFT JOIN LATERAL (
        SELECT p.event, p.at,
               CASE WHEN p.event IN ('created', 'retry_scheduled')
                    THEN (p.data->>'run_at')::timestamptz END AS run_at
          FROM pgqueue.events p
         WHERE p.task_id = e.task_id AND p.id < e.id
           AND p.event NOT IN ('progress', 'checkpoint', 'cancel_requested')
         ORDER BY p.id DESC
         LIMIT 1) prev ON true
  CROSS JOIN LATERAL (
        SELECT CASE
                   WHEN e.event = 'started' AND prev.at IS NOT NULL
                   THEN greatest(extract(epoch FROM e.at - greatest(prev.at,
                                                                    coalesce(prev.run_at, prev.at))), 0)
                   WHEN e.event <> 'started' AND prev.event = 'started'
                   THEN greatest(extract(epoch FROM e.at - prev.at), 0)
               END::float8 AS seconds) s
 WHERE e.id > %(after)s AND e.id <= %(upto)s
   AND e.event IN ('started', 'completed', 'failed', 'retry_scheduled', 'requeued', 'cancelled')
 GROUP BY 1, 2, 3, 4;
