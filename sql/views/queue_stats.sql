-- pgqueue.queue_stats: one row per queue — what waits, what runs, what finished, how late
-- the backlog is, throughput over the last minute, and the queue's settings.
-- A queue appears once it has tasks or a row in pgqueue.queues (paused or limited).
CREATE OR REPLACE VIEW pgqueue.queue_stats AS
SELECT coalesce(t.queue, q.name) AS queue,
       coalesce(t.pending, 0) AS pending,
       coalesce(t.due, 0) AS due,
       coalesce(t.running, 0) AS running,
       coalesce(t.completed, 0) AS completed,
       coalesce(t.failed, 0) AS failed,
       coalesce(t.cancelled, 0) AS cancelled,
       round(coalesce(t.oldest_due_age_s, 0)::numeric, 1) AS oldest_due_age_s,
       coalesce(t.completed_last_minute, 0) AS completed_last_minute,
       coalesce(q.paused, false) AS paused,
       q.concurrency_limit,
       -- §12 limits (migration 0010), each NULL/false when not set
       q.rate_limit_tasks,
       q.rate_limit_per_s,
       q.per_user_concurrency,
       coalesce(q.fair, false) AS fair,
       q.breaker_failures,
       q.breaker_cool_down_s,
       -- kinds whose circuit breaker is open or probing now (pgqueue.breaker_state)
       CASE WHEN q.breaker_failures IS NOT NULL THEN pgqueue.open_breakers(q.name)
            ELSE '{}' END AS open_breakers,
       -- all of them in one line, for `pgqueue status` and psql
       nullif(concat_ws(', ',
           'concurrency ' || q.concurrency_limit,
           'rate ' || q.rate_limit_tasks || '/' || q.rate_limit_per_s || 's',
           'per-user ' || q.per_user_concurrency,
           CASE WHEN q.fair THEN 'fair' END,
           'breaker ' || q.breaker_failures || '/' || q.breaker_cool_down_s || 's'), '') AS limits
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
          FROM pgqueue.tasks GROUP BY queue) t
  FULL JOIN pgqueue.queues q ON q.name = t.queue;

COMMENT ON VIEW pgqueue.queue_stats IS 'Per queue: counts by status, due now, oldest due age, throughput, paused, limits.';
